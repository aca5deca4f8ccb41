"""Which library serves malloc: running processes, programs before they run, and what cannot be traced."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

pytest.importorskip("elftools")

from tracer.errors import HeaplineError  # noqa: E402
from tracer.record.backends.bpf.allocators import (  # noqa: E402
    AllocatorLib,
    NoAllocator,
    _listed_paths,
    find_for_launch,
    find_for_pid,
)

LIB_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/lib64", "/usr/lib")
SLEEP = shutil.which("sleep") or "/bin/sleep"
TRUE = shutil.which("true") or "/bin/true"


def system_lib(name: str) -> str | None:
    for d in LIB_DIRS:
        path = os.path.join(d, name)
        if os.path.exists(path):
            return path
    return None


def need_lib(name: str, package: str) -> str:
    path = system_lib(name)
    if path is None:
        pytest.skip(f"{package} is not installed")
    return path


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "LD_LIBRARY_PATH")}
    env.update(extra)
    return env


def mapped(pid: int, needle: str) -> bool:
    try:
        with open(f"/proc/{pid}/maps") as f:
            return needle in f.read()
    except OSError:
        return False


@contextmanager
def running(argv: list[str], env: dict[str, str], needle: str) -> Iterator[int]:
    """A child process, once it has mapped ``needle`` (so it is past exec and the loader)."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not mapped(proc.pid, needle):
            assert proc.poll() is None, f"{argv} exited early"
            assert time.monotonic() < deadline, f"{argv} never mapped {needle}"
            time.sleep(0.01)
        time.sleep(0.05)  # the loader may still be mapping the rest
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def compile_c(tmp_path: Path, source: str, name: str, *flags: str) -> str:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip("no C compiler")
    src = tmp_path / f"{name}.c"
    src.write_text(source)
    out = tmp_path / name
    r = subprocess.run([gcc, "-O1", "-o", str(out), str(src), *flags], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot build {name} ({' '.join(flags)}): {r.stderr.strip().splitlines()[-1:]}")
    return str(out)


def assert_glibc(lib: AllocatorLib) -> None:
    assert lib.family == "glibc"
    assert os.path.basename(lib.shown_path) == "libc.so.6"
    assert {"malloc", "free", "calloc", "realloc", "posix_memalign", "memalign", "aligned_alloc"} <= lib.exported
    assert not any(n.startswith("_Z") for n in lib.exported)
    assert lib.build_id and len(lib.build_id) == 40
    assert os.path.exists(lib.path)


# ---- running processes ---------------------------------------------------------------------------


def test_running_sleep_is_glibc() -> None:
    with running([SLEEP, "30"], clean_env(), "libc.so.6") as pid:
        lib = find_for_pid(pid)
    assert_glibc(lib)
    assert lib.path == lib.shown_path  # same mount namespace: no /proc/PID/root detour


def test_running_sleep_with_preloaded_jemalloc() -> None:
    jemalloc = need_lib("libjemalloc.so.2", "libjemalloc2")
    with running([SLEEP, "30"], clean_env(LD_PRELOAD="libjemalloc.so.2"), "libjemalloc") as pid:
        lib = find_for_pid(pid)
    assert lib.family == "jemalloc"
    assert os.path.realpath(lib.path) == os.path.realpath(jemalloc)
    assert {"malloc", "free", "mallocx"} & lib.exported == {"malloc", "free"}  # mallocx is not an allocator entry
    assert {"_Znwm", "_ZdlPv"} <= lib.exported


@pytest.mark.parametrize(
    "soname, package, family",
    [
        ("libtcmalloc_minimal.so.4", "libtcmalloc-minimal4", "tcmalloc"),
        ("libmimalloc.so.2", "libmimalloc2.0", "mimalloc"),
    ],
)
def test_running_sleep_with_other_allocators(soname: str, package: str, family: str) -> None:
    path = need_lib(soname, package)
    with running([SLEEP, "30"], clean_env(LD_PRELOAD=path), soname.split(".so")[0]) as pid:
        lib = find_for_pid(pid)
    assert lib.family == family
    assert {"malloc", "free", "_Znwm", "_ZdlPv"} <= lib.exported


def test_linked_allocator_wins_over_libc(tmp_path: Path) -> None:
    jemalloc = need_lib("libjemalloc.so.2", "libjemalloc2")
    prog = compile_c(
        tmp_path,
        "#include <unistd.h>\nint main(void) { sleep(30); return 0; }\n",
        "linked",
        "-Wl,--no-as-needed",
        jemalloc,
    )
    assert find_for_launch(prog, clean_env()).family == "jemalloc"
    with running([prog], clean_env(), "libjemalloc") as pid:
        assert find_for_pid(pid).family == "jemalloc"


def test_library_deleted_after_loading(tmp_path: Path) -> None:
    jemalloc = need_lib("libjemalloc.so.2", "libjemalloc2")
    copy = tmp_path / "libjemalloc.so.2"
    shutil.copyfile(jemalloc, copy)
    with running([SLEEP, "30"], clean_env(LD_PRELOAD=str(copy)), str(copy)) as pid:
        copy.unlink()
        lib = find_for_pid(pid)
        assert lib.family == "jemalloc" and lib.shown_path == str(copy)
        assert lib.path.startswith(f"/proc/{pid}/map_files/") and os.path.exists(lib.path)


def test_process_in_another_mount_namespace() -> None:
    unshare = shutil.which("unshare")
    if os.geteuid() != 0 or unshare is None:
        pytest.skip("needs root and unshare(1) to make a mount namespace")
    if subprocess.run([unshare, "--mount", TRUE], capture_output=True).returncode != 0:
        pytest.skip("cannot create a mount namespace here")
    with running([unshare, "--mount", SLEEP, "30"], clean_env(), "libc.so.6") as pid:
        deadline = time.monotonic() + 5
        while os.readlink(f"/proc/{pid}/exe") != os.path.realpath(SLEEP) or not mapped(pid, "libc.so.6"):
            assert time.monotonic() < deadline, "unshare never ran sleep"
            time.sleep(0.01)
        time.sleep(0.05)
        lib = find_for_pid(pid)
    assert lib.family == "glibc"
    assert lib.path == f"/proc/{pid}/root{lib.shown_path}"


def test_missing_process() -> None:
    with pytest.raises(NoAllocator, match="does not exist"):
        find_for_pid(2**22 + 12345)


def test_running_static_program(tmp_path: Path) -> None:
    prog = compile_c(
        tmp_path, "#include <unistd.h>\nint main(void) { sleep(30); return 0; }\n", "static_sleep", "-static"
    )
    with running([prog], clean_env(), "static_sleep") as pid:
        with pytest.raises(NoAllocator, match="statically linked"):
            find_for_pid(pid)


# ---- programs before they run --------------------------------------------------------------------


def test_launch_true_without_preload() -> None:
    assert_glibc(find_for_launch(TRUE, clean_env()))


def test_launch_true_with_preload() -> None:
    jemalloc = need_lib("libjemalloc.so.2", "libjemalloc2")
    lib = find_for_launch(TRUE, clean_env(LD_PRELOAD="libjemalloc.so.2"))
    assert lib.family == "jemalloc" and os.path.realpath(lib.path) == os.path.realpath(jemalloc)
    lib = find_for_launch(TRUE, clean_env(LD_PRELOAD=jemalloc))
    assert lib.family == "jemalloc"


def test_launch_preload_that_does_not_exist_is_ignored_like_the_loader_does() -> None:
    assert_glibc(find_for_launch(TRUE, clean_env(LD_PRELOAD="libdoes-not-exist.so")))


def test_launch_uses_ld_library_path(tmp_path: Path) -> None:
    libdir = tmp_path / "lib"
    libdir.mkdir()
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("no C compiler")
    (tmp_path / "f.c").write_text("int f(void) { return 0; }\n")
    subprocess.run([gcc, "-shared", "-fPIC", "-o", str(libdir / "libf.so"), str(tmp_path / "f.c")], check=True)
    prog = compile_c(tmp_path, "int f(void);\nint main(void) { return f(); }\n", "needs_f", f"-L{libdir}", "-lf")
    with pytest.raises(NoAllocator, match="libf.so"):
        find_for_launch(prog, clean_env())
    assert_glibc(find_for_launch(prog, clean_env(LD_LIBRARY_PATH=str(libdir))))


def test_program_that_defines_malloc_itself(tmp_path: Path) -> None:
    source = """
#include <stddef.h>
static char arena[1 << 20];
static size_t used;
void *malloc(size_t n) { void *p = arena + used; used += (n + 15) & ~(size_t)15; return p; }
void free(void *p) { (void)p; }
int main(void) { return malloc(1) == NULL; }
"""
    prog = compile_c(tmp_path, source, "own_malloc", "-rdynamic")
    lib = find_for_launch(prog, clean_env())
    assert lib.path == prog and lib.family == "unknown" and lib.exported == {"malloc", "free"}


def test_static_program(tmp_path: Path) -> None:
    prog = compile_c(tmp_path, "int main(void) { return 0; }\n", "static_true", "-static")
    with pytest.raises(NoAllocator, match="statically linked") as info:
        find_for_launch(prog, clean_env())
    assert info.value.reason.endswith(".") and "\n" not in info.value.reason
    assert isinstance(info.value, HeaplineError)


@pytest.mark.parametrize(
    "content, match",
    [
        (b"#!\necho hi\n", "names no interpreter"),
        (b"#!/nonexistent/sh -e\necho hi\n", "Cannot read /nonexistent/sh"),
        (b"", "not an ELF"),
        (b"\x7fELF\x02\x01\x01" + b"\x00" * 9 + b"garbage", "not a readable ELF"),
    ],
)
def test_not_an_elf_program(tmp_path: Path, content: bytes, match: str) -> None:
    p = tmp_path / "prog"
    p.write_bytes(content)
    p.chmod(0o755)
    with pytest.raises(NoAllocator, match=match):
        find_for_launch(str(p), clean_env())


def test_unreadable_paths(tmp_path: Path) -> None:
    with pytest.raises(NoAllocator, match="No such file"):
        find_for_launch(str(tmp_path / "missing"), clean_env())
    with pytest.raises(NoAllocator, match="directory"):
        find_for_launch(str(tmp_path), clean_env())


def test_python_itself_needs_no_special_case() -> None:
    lib = find_for_launch(os.path.realpath(sys.executable), clean_env())
    assert lib.family in ("glibc", "jemalloc", "tcmalloc", "mimalloc", "musl", "unknown")
    assert "malloc" in lib.exported


def test_loader_list_output_parsing() -> None:
    glibc = """\tlinux-vdso.so.1 (0x00007ffd5c3f6000)
\tlibjemalloc.so.2 => /lib/x86_64-linux-gnu/libjemalloc.so.2 (0x00007f1f98e00000)
\tlibmissing.so => not found
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f1f98c1e000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f1f991ae000)
"""
    assert _listed_paths(glibc) == [
        "/lib/x86_64-linux-gnu/libjemalloc.so.2",
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/lib64/ld-linux-x86-64.so.2",
    ]
    musl = (
        "\t/lib/ld-musl-x86_64.so.1 (0x7f0c1a2b3000)\n"
        "\tlibc.musl-x86_64.so.1 => /lib/ld-musl-x86_64.so.1 (0x7f0c1a2b3000)\n"
    )
    assert _listed_paths(musl) == ["/lib/ld-musl-x86_64.so.1", "/lib/ld-musl-x86_64.so.1"]


def test_a_script_gets_its_interpreters_allocator(tmp_path: Path) -> None:
    """The kernel runs a script's #! interpreter (which may be a script itself, 4 levels deep)."""
    sh = find_for_launch("/bin/sh", clean_env())
    prev = "/bin/sh"
    for depth in range(1, 6):
        p = tmp_path / f"s{depth}"
        p.write_text(f"#!{prev} -e\necho hi\n")
        p.chmod(0o755)
        prev = str(p)
        if depth <= 4:
            lib = find_for_launch(prev, clean_env())
            assert (lib.path, lib.family) == (sh.path, sh.family)
        else:
            with pytest.raises(NoAllocator, match="nested more than 4 deep"):
                find_for_launch(prev, clean_env())
