# heapline: two commands on a fresh Debian/Ubuntu machine.
#   make demo   install what is needed, build the workloads, record one, print where the results are
#   make test   install what is needed, run the whole test suite
PYTHON_SYS ?= /usr/bin/python3
VENV       := .venv
PY         := $(VENV)/bin/python
APT_PKGS   := python3-bpfcc python3-venv strace gcc g++ make linux-headers-$(shell dpkg --print-architecture 2>/dev/null || echo amd64) \
              libjemalloc2 libtcmalloc-minimal4 libmimalloc2.0 chromium bpfcc-tools golang-go \
              clang bpftool libbpf1 libbpf-dev
# golang-go: its `go tool pprof` is the reader the tests check `heapline export --pprof` with
# the peers bench/ compares heapline with
BENCH_PKGS := ltrace heaptrack bpftrace sqlite3
SUDO       := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test deps system-deps bench-deps bench venv workloads preload probes lint clean plotly

demo: deps probes workloads
	@mkdir -p out
	$(SUDO) $(VENV)/bin/heapline record -o out/phases.trace -- workloads/bin/phases
	$(VENV)/bin/heapline summary out/phases.trace | tee out/phases.summary.txt
	$(VENV)/bin/heapline summary out/phases.trace --json > out/phases.summary.json
	@echo "trace:   out/phases.trace"
	@echo "summary: out/phases.summary.txt and out/phases.summary.json"

test: deps probes workloads
	$(PY) -m ruff check tracer viz tests bench
	$(PY) -m pytest -q -rs

deps: system-deps venv

# Debian's python3-bpfcc carries bcc's Python bindings (they are not on PyPI).
system-deps:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

bench-deps: deps
	@missing=""; for p in $(BENCH_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

bench: bench-deps probes workloads
	$(SUDO) $(PY) bench/syscall_overhead.py
	$(SUDO) $(PY) bench/alloc_overhead.py
	$(PY) bench/report_bench.py
	$(PY) bench/replay_bench.py
	$(SUDO) $(PY) bench/startup.py
	$(SUDO) $(PY) bench/programs.py

$(VENV)/.done: pyproject.toml
	$(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	ln -sfn $$($(PYTHON_SYS) -c 'import bcc, os; print(os.path.dirname(bcc.__file__))') \
		$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/bcc
	touch $@

venv: $(VENV)/.done

# the allocator library `record --alloc preload` loads into a command (package data next to its
# source); every value it shares with the Python comes from abi.py as -D flags, as for the probes
PRELOAD_SO := probes/preload/libheapline_preload.so
$(PRELOAD_SO): probes/preload/heapline_preload.c probes/heapline.h tracer/record/backends/bpf/abi.py \
               tracer/record/backends/bpf/catalogue.py tracer/events.py tracer/decode.py | $(VENV)/.done
	gcc -O2 -g -fPIC -shared -fno-omit-frame-pointer -fvisibility=hidden -Wall -Wextra -Werror \
		$$($(PY) -m tracer.record.backends.bpf.abi) -o $@ $< -ldl

preload: $(PRELOAD_SO)


# The probes as one CO-RE object, built once against this kernel's BTF and loaded through libbpf
# (tracer/record/backends/bpf/coreload.py); without it, recordings compile them with bcc.
BTF        := /sys/kernel/btf/vmlinux
PROBES_OBJ := probes/build/heapline.bpf.o
ABI_PY     := tracer/events.py tracer/decode.py tracer/record/backends/bpf/abi.py tracer/record/backends/bpf/catalogue.py

probes: $(PROBES_OBJ)

probes/build/vmlinux.h: $(BTF)
	@mkdir -p probes/build
	bpftool btf dump file $(BTF) format c > $@.tmp && mv $@.tmp $@

$(PROBES_OBJ): probes/build/vmlinux.h $(wildcard probes/*.c probes/*.h) $(ABI_PY) $(VENV)/.done
	clang -target bpf -g -O2 -mcpu=v3 -D__TARGET_ARCH_x86 -DHEAPLINE_CORE -Iprobes/build -Iprobes \
		$$($(PY) -m tracer.record.backends.bpf.abi) -c probes/core.bpf.c -o $@.tmp && mv $@.tmp $@

workloads: preload
	$(MAKE) -s -C workloads
	$(MAKE) -s -C workloads/scenarios

# the plotly.js partial bundle the report inlines, vendored in viz/static with its licence (needs npm;
# nothing else does)
PLOTLY_VERSION ?= 4.1.1
plotly:
	@tmp=$$(mktemp -d) && cd $$tmp && npm pack -q plotly.js-basic-dist-min@$(PLOTLY_VERSION) >/dev/null && \
	tar xzf plotly.js-basic-dist-min-$(PLOTLY_VERSION).tgz && \
	cp package/plotly-basic.min.js $(CURDIR)/viz/static/plotly-basic.min.js && \
	cp package/LICENSE $(CURDIR)/viz/static/plotly-basic.LICENSE && rm -rf $$tmp
	@head -2 viz/static/plotly-basic.min.js | tail -1

lint: venv
	$(PY) -m ruff check tracer viz tests bench

clean:
	rm -rf $(VENV) out $(PRELOAD_SO) probes/build
	$(MAKE) -s -C workloads clean
	$(MAKE) -s -C workloads/scenarios clean
