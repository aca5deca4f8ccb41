// heapline's programs as one CO-RE object, built by make (clang -target bpf against vmlinux.h, with
// -DHEAPLINE_CORE and abi.py's values) and loaded through libbpf by
// tracer/record/backends/bpf/coreload.py. bcc is given the same three files as one text.
#include "common.bpf.c"
#include "syscalls.bpf.c"
#include "alloc.bpf.c"
