"""Load the probes as the CO-RE object `make` built (probes/core.bpf.c), through libbpf, without bcc.

bcc compiles the probes with LLVM at every recording (most of a short recording's time, and most of
the recorder's memory: libbcc carries LLVM). The object built once against the kernel's BTF loads in
milliseconds: libbpf relocates its field accesses to the running kernel, creates the maps at the
sizes set here and loads the programs. What a recording chooses (ring sizes, RSS interval, children,
batch age, stacks) is set before loading: the map sizes, and the `cfg` struct of probes/loader.h.

:class:`CoreObject` answers the part of bcc's ``BPF`` object the backend uses (``obj["traced"]``
as a table with ctypes keys and values, ``funcs``, ``load_func``, ``tracepoint_fds``,
``detach_tracepoint``, ``cleanup``), so rings.py and alloc.py serve both loaders unchanged.
"""

from __future__ import annotations

import ctypes as ct
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tracer.record.backends.bpf import abi
from tracer.record.backends.bpf.abi import BATCH_DTYPE, Site

STACK_DEPTH = 127  # frames per stack (the kernel's PERF_MAX_STACK_DEPTH, bcc's BPF_STACK_TRACE)


class CoreUnavailable(Exception):
    """The object cannot be used here; the message says why in one sentence."""


class Config(ct.Structure):
    """probes/loader.h ``struct config``."""

    _fields_ = [("abi_stamp", ct.c_uint64), ("rss_interval_ns", ct.c_uint64), ("follow_children", ct.c_uint64),
                ("batch_age_ns", ct.c_uint64), ("stacks", ct.c_uint64)]


class RssState(ct.Structure):
    """probes/heapline.h ``struct rss_state``."""

    _fields_ = [("bytes", ct.c_int64 * 4), ("anon_max", ct.c_int64), ("last_update", ct.c_uint64),
                ("last_emit", ct.c_uint64), ("pid", ct.c_uint32)]


# the maps user space reads or writes: (key type, value type, one value per CPU)
MAPS: dict[str, tuple[Any, Any, bool]] = {
    "traced": (ct.c_uint32, ct.c_uint8, False),
    "lost": (ct.c_int, ct.c_uint64, True),
    "rss_state": (ct.c_uint32, RssState, False),
    "alloc_batch": (ct.c_int, ct.c_uint8 * BATCH_DTYPE.itemsize, True),
    "sites": (ct.c_int, Site, False),
    "site_shift": (ct.c_int, ct.c_uint64, False),
    "stacks": (ct.c_uint32, ct.c_uint64 * STACK_DEPTH, False),
    "events": (None, None, False),
    "spare": (None, None, False),
    "alloc_ring": (None, None, False),
}
ALLOC_PROGRAMS = ("alloc_enter_g", "alloc_return_")  # name prefixes of the uprobe programs


def _libbpf() -> ct.CDLL:
    try:
        lib = ct.CDLL("libbpf.so.1", use_errno=True)
    except OSError as e:
        raise CoreUnavailable("libbpf is not installed (Debian's libbpf1)") from e
    p, i, s, sz = ct.c_void_p, ct.c_int, ct.c_char_p, ct.c_size_t
    for name, res, args in [
        ("bpf_object__open_file", p, [s, p]), ("bpf_object__load", i, [p]), ("bpf_object__close", None, [p]),
        ("bpf_object__find_map_by_name", p, [p, s]), ("bpf_object__next_program", p, [p, p]),
        ("bpf_map__fd", i, [p]), ("bpf_map__key_size", ct.c_uint32, [p]), ("bpf_map__value_size", ct.c_uint32, [p]),
        ("bpf_map__set_max_entries", i, [p, ct.c_uint32]), ("bpf_map__initial_value", p, [p, ct.POINTER(sz)]),
        ("bpf_map__set_initial_value", i, [p, p, sz]),
        ("bpf_program__name", s, [p]), ("bpf_program__section_name", s, [p]), ("bpf_program__fd", i, [p]),
        ("bpf_program__set_autoload", i, [p, ct.c_bool]), ("bpf_program__attach", p, [p]),
        ("bpf_link__destroy", i, [p]), ("libbpf_num_possible_cpus", i, []),
        ("bpf_map_lookup_elem", i, [i, p, p]), ("bpf_map_update_elem", i, [i, p, p, ct.c_uint64]),
        ("bpf_map_delete_elem", i, [i, p]), ("bpf_map_get_next_key", i, [i, p, p]),
        ("libbpf_set_print", p, [p]),
    ]:
        try:
            fn = getattr(lib, name)
        except AttributeError as e:
            raise CoreUnavailable(f"this libbpf has no {name} (libbpf 1.0 or later is needed)") from e
        fn.restype, fn.argtypes = res, args
    return lib


_PRINT = ct.CFUNCTYPE(ct.c_int, ct.c_int, ct.c_char_p, ct.c_void_p)
_libc = ct.CDLL(None)
_libc.vsnprintf.argtypes = [ct.c_char_p, ct.c_size_t, ct.c_char_p, ct.c_void_p]
LIBBPF_WARN = 0
_said: list[str] = []


@_PRINT
def _keep_warnings(level: int, fmt: bytes, args: int) -> int:
    """libbpf's messages: its warnings are kept (the reason a load failed), the rest dropped."""
    if level == LIBBPF_WARN:
        buf = ct.create_string_buffer(1024)
        _libc.vsnprintf(buf, len(buf), fmt, args)
        _said.append(buf.value.decode(errors="replace").strip())
    return 0


def _reason(default: str) -> str:
    """The most telling line libbpf said: the verifier's or loader's own words."""
    for line in reversed(_said):
        if line and not line.startswith("libbpf: -- BEGIN") and not line.startswith("libbpf: -- END"):
            return line.removeprefix("libbpf: ")
    return default


@dataclass
class Program:
    name: str
    fd: int


class Table:
    """One map, read and written by its fd with ctypes keys and values, as bcc's tables are."""

    def __init__(self, lib: ct.CDLL, fd: int, key: Any, value: Any, per_cpu: bool, cpus: int) -> None:
        self.lib, self.map_fd, self.key, self.value, self.per_cpu, self.cpus = lib, fd, key, value, per_cpu, cpus

    def _key(self, key: Any) -> Any:
        return key if isinstance(key, ct._SimpleCData | ct.Structure) else self.key(key)

    def __getitem__(self, key: Any) -> Any:
        out = (self.value * self.cpus)() if self.per_cpu else self.value()
        if self.lib.bpf_map_lookup_elem(self.map_fd, ct.byref(self._key(key)), ct.byref(out)) < 0:
            raise KeyError(key)
        return list(out) if self.per_cpu else out

    def __setitem__(self, key: Any, value: Any) -> None:
        if self.per_cpu:
            value = (self.value * self.cpus)(*([value] * self.cpus))
        if self.lib.bpf_map_update_elem(self.map_fd, ct.byref(self._key(key)), ct.byref(value), 0) < 0:
            err = ct.get_errno()
            raise OSError(err, f"updating a map: {os.strerror(err)}")

    def keys(self) -> Iterator[Any]:
        prev, cur = None, self.key()
        while self.lib.bpf_map_get_next_key(self.map_fd, None if prev is None else ct.byref(prev), ct.byref(cur)) == 0:
            yield cur
            prev, cur = cur, self.key()

    def items(self) -> Iterator[tuple[Any, Any]]:
        for k in list(self.keys()):
            try:
                yield k, self[k]
            except KeyError:  # removed meanwhile
                continue

    def clear(self) -> None:
        """Arrays: every element zero; hashes: every key removed."""
        for k in list(self.keys()):
            if self.lib.bpf_map_delete_elem(self.map_fd, ct.byref(k)) < 0:  # an array's elements stay
                self[k] = self.value()

    def walk(self, stack_id: int) -> Iterator[int]:
        """The addresses of one stack (stacks table), innermost first."""
        for addr in self[ct.c_uint32(stack_id)]:
            if not addr:
                break
            yield addr


class CoreObject:
    """The loaded object: its maps by name, its programs, and the attached tracepoints."""

    def __init__(self, path: str, *, ring_bytes: int, spare_bytes: int, alloc_ring_bytes: int, config: Config,
                 alloc: bool, stack_entries: int) -> None:  # fmt: skip
        if not os.path.isfile(path):
            raise CoreUnavailable(f"the CO-RE object {path} is not built (make builds it)")
        self.lib = lib = _libbpf()
        _said.clear()
        lib.libbpf_set_print(ct.cast(_keep_warnings, ct.c_void_p))
        self.obj = lib.bpf_object__open_file(path.encode(), None)
        if not self.obj:
            raise CoreUnavailable(f"libbpf could not open {path}: {_reason(os.strerror(ct.get_errno()))}")
        self.tables: dict[str, Table] = {}
        self.funcs: dict[str, Program] = {}
        self.tracepoint_fds: dict[str, int] = {}  # "category:event" -> link
        try:
            self._configure(path, config, ring_bytes, spare_bytes, alloc_ring_bytes, stack_entries, alloc)
            if lib.bpf_object__load(self.obj) < 0:
                raise CoreUnavailable(f"the kernel refused the CO-RE object: {_reason('no reason given')}")
            self._collect()
            self._attach_tracepoints()
        except BaseException:
            self.cleanup()
            raise

    def _map(self, name: str) -> int:
        m = self.lib.bpf_object__find_map_by_name(self.obj, name.encode())
        if not m:
            raise CoreUnavailable(f"the CO-RE object has no map {name} (rebuild it with make)")
        return m

    def _programs(self) -> Iterator[int]:
        prog = self.lib.bpf_object__next_program(self.obj, None)
        while prog:
            yield prog
            prog = self.lib.bpf_object__next_program(self.obj, prog)

    def _configure(self, path: str, config: Config, ring: int, spare: int, alloc_ring: int, stacks: int,
                   alloc: bool) -> None:  # fmt: skip
        lib = self.lib
        cfg = self._map(".rodata.cfg")
        size = ct.c_size_t()
        built = lib.bpf_map__initial_value(cfg, ct.byref(size))
        if not built or size.value != ct.sizeof(Config):
            raise CoreUnavailable("the CO-RE object's configuration is not the loader's (rebuild it with make)")
        if Config.from_address(built).abi_stamp != abi.stamp():
            raise CoreUnavailable(f"{path} was built with other shared values than abi.py's (rebuild it with make)")
        config.abi_stamp = abi.stamp()
        lib.bpf_map__set_initial_value(cfg, ct.byref(config), ct.sizeof(config))
        for name, entries in (("events", ring), ("spare", spare), ("alloc_ring", alloc_ring), ("stacks", stacks)):
            lib.bpf_map__set_max_entries(self._map(name), entries)
        for name, (key, value, _) in MAPS.items():
            m = self._map(name)
            if key is not None and (lib.bpf_map__key_size(m), lib.bpf_map__value_size(m)) != (
                    ct.sizeof(key), ct.sizeof(value)):  # fmt: skip
                raise CoreUnavailable(f"the CO-RE object's map {name} is not laid out as the loader reads it")
        for prog in self._programs():
            if not alloc and lib.bpf_program__name(prog).decode().startswith(ALLOC_PROGRAMS):
                lib.bpf_program__set_autoload(prog, False)

    def _collect(self) -> None:
        lib = self.lib
        cpus = lib.libbpf_num_possible_cpus()
        for name, (key, value, per_cpu) in MAPS.items():
            self.tables[name] = Table(lib, lib.bpf_map__fd(self._map(name)), key, value, per_cpu, cpus)
        for prog in self._programs():
            fd = lib.bpf_program__fd(prog)
            if fd >= 0:
                name = lib.bpf_program__name(prog).decode()
                self.funcs[name] = Program(name, fd)

    def _attach_tracepoints(self) -> None:
        for prog in self._programs():
            section = self.lib.bpf_program__section_name(prog).decode()
            if not section.startswith("tracepoint/") or self.lib.bpf_program__fd(prog) < 0:
                continue
            link = self.lib.bpf_program__attach(prog)
            if not link:
                raise CoreUnavailable(f"attaching {section} failed: {_reason(os.strerror(ct.get_errno()))}")
            self.tracepoint_fds[section.removeprefix("tracepoint/").replace("/", ":")] = link

    # -- what the backend asks of bcc's BPF object -----------------------------------------------

    def __getitem__(self, name: str) -> Table:
        return self.tables[name]

    def load_func(self, name: str, _prog_type: int) -> Program:
        try:
            return self.funcs[name]
        except KeyError:
            raise CoreUnavailable(f"the CO-RE object has no loaded program {name}") from None

    def bcc_attacher(self) -> Any:
        """bcc's own uprobe attach and detach for these programs, the rare case where heapline shares a
        probe site with a bcc Python tool (alloc.BccProbes): imports bcc, compiles nothing."""
        from bcc import BPF

        core = self

        class Shared(BPF):  # type: ignore[misc]
            def __init__(self) -> None:  # no compile: only the attach bookkeeping bcc's methods use
                self.uprobe_fds: dict = {}
                self.kprobe_fds: dict = {}

            def load_func(self, name: str | bytes, prog_type: int, *_: Any, **__: Any) -> Program:
                return core.load_func(name.decode() if isinstance(name, bytes) else name, prog_type)

            def cleanup(self) -> None:
                for ev_name in list(self.uprobe_fds):
                    self.detach_uprobe_event(ev_name)

            def __del__(self) -> None:
                pass

        return Shared()

    def detach_tracepoint(self, name: str) -> None:
        link = self.tracepoint_fds.pop(name, None)
        if link:
            self.lib.bpf_link__destroy(link)

    def cleanup(self) -> None:
        for name in list(self.tracepoint_fds):
            self.detach_tracepoint(name)
        if self.obj:
            self.lib.bpf_object__close(self.obj)
            self.obj = None
        self.tables.clear()
        self.funcs.clear()
