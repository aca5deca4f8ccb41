#!/bin/sh
# Regenerates the fixtures in this directory from the C programs next to it.
# Needs gcc, strace and setarch; run it from anywhere. The options are the ones the
# strace backend passes (tracer/record/backends/strace_parse.py: strace_args, follow=True); keep them in sync.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for p in calls threads forks thread_exec killed churn; do
    gcc -O1 -pthread -o "$work/$p" "$here/$p.c"
done
opts="-f --absolute-timestamps=format:unix,precision:ns --syscall-times=ns -q --seccomp-bpf
 -e trace=brk,mmap,munmap,mremap,madvise,mprotect,clone,clone3,fork,vfork,execve,execveat,exit,exit_group
 -e signal=!SIGCHLD,SIGURG,SIGWINCH,SIGCONT -e inject=exit_group:delay_enter=30000"
cd "$work"
# calls: the same run twice without ASLR, numeric (-X raw, what the backend parses) and decoded.
setarch -R strace $opts -X raw -o "$here/calls.raw.txt" ./calls || true
setarch -R strace $opts -o "$here/calls.strace.txt" ./calls || true
for p in threads forks thread_exec killed; do
    strace $opts -X raw -o "$here/$p.raw.txt" "./$p" || true
done
# attach: strace -p PID -f (no --seccomp-bpf: it does not apply to -p), detached by SIGINT.
./churn & target=$!
sleep 0.2
strace -p "$target" -f --absolute-timestamps=format:unix,precision:ns --syscall-times=ns -q \
    -e trace=brk,mmap,munmap,mremap,madvise,mprotect,clone,clone3,fork,vfork,execve,execveat,exit,exit_group \
    -e 'signal=!SIGCHLD,SIGURG,SIGWINCH,SIGCONT' -X raw -o "$here/attach.raw.txt" & tracer=$!
sleep 0.05
kill -INT "$tracer"
wait "$tracer" || true
kill "$target"
# The programs' working directory and environment size show up in execve lines; keep them neutral.
sed -i -E 's|execve\("\./|execve("/tmp/|; s|, 0x[0-9a-f]+ /\* [0-9]+ vars \*/|, 0x7ffc00000000 /* 20 vars */|' \
    "$here"/*.txt
