// What differs between the two ways heapline's programs are built and loaded, so that one source
// serves both:
//
//  - bcc (tracer/record/backends/bpf/bccload.py): compiled with LLVM at every recording, the map
//    operations written in bcc's dialect first (`traced.lookup(&k)`), every option a -D flag.
//  - CO-RE (HEAPLINE_CORE, tracer/record/backends/bpf/coreload.py): built once by `make` with clang
//    against the kernel's BTF (vmlinux.h) and loaded through libbpf. The options of a recording
//    cannot be -D flags there: the ring sizes are set on the maps before loading, and the others
//    are read from `cfg` (.rodata.cfg, written before loading, so the verifier sees them as
//    constants and drops what they switch off).
//
// The shared values of heapline.h are -D flags in both (make passes those of abi.py, and
// ABI_STAMP, a digest of them that the loader compares with its own).
#pragma once

#ifdef HEAPLINE_CORE

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#ifndef ABI_STAMP
#error "ABI_STAMP is given by make (python -m tracer.record.backends.bpf.abi --stamp)"
#endif

char LICENSE[] SEC("license") = "GPL";

// the options of one recording (coreload.py Config, every field 64 bits)
struct config {
    u64 abi_stamp;  // ABI_STAMP of the build: the loader refuses an object built with other values
    u64 rss_interval_ns;
    u64 follow_children;
    u64 batch_age_ns;
    u64 stacks;  // allocation stacks are taken
};
const volatile struct config cfg SEC(".rodata.cfg") = {.abi_stamp = ABI_STAMP};

#define RINGBUF_PAGES 1     // sized by the loader
#define SPARE_PAGES 1       // sized by the loader
#define ALLOC_RING_PAGES 1  // sized by the loader
#define STACKS 1            // sized by the loader (1 entry when stacks are not taken)
#define RSS_INTERVAL_NS (cfg.rss_interval_ns)
#define FOLLOW_CHILDREN (cfg.follow_children)
#define BATCH_AGE_NS (cfg.batch_age_ns)
#define STACKS_ON (cfg.stacks)

#define MAP_RINGBUF(name, pages)                                                                                   \
    struct {                                                                                                       \
        __uint(type, BPF_MAP_TYPE_RINGBUF);                                                                        \
        __uint(max_entries, (pages) * 4096);                                                                       \
    } name SEC(".maps")
#define MAP_OF(kind, name, k, v, n)                                                                                \
    struct {                                                                                                       \
        __uint(type, kind);                                                                                        \
        __type(key, k);                                                                                            \
        __type(value, v);                                                                                          \
        __uint(max_entries, n);                                                                                    \
    } name SEC(".maps")
#define MAP_HASH(name, k, v, n) MAP_OF(BPF_MAP_TYPE_HASH, name, k, v, n)
#define MAP_LRU_HASH(name, k, v, n) MAP_OF(BPF_MAP_TYPE_LRU_HASH, name, k, v, n)
#define MAP_ARRAY(name, v, n) MAP_OF(BPF_MAP_TYPE_ARRAY, name, int, v, n)
#define MAP_PERCPU_ARRAY(name, v, n) MAP_OF(BPF_MAP_TYPE_PERCPU_ARRAY, name, int, v, n)
#define MAP_TASK_STORAGE(name, v)                                                                                  \
    struct {                                                                                                       \
        __uint(type, BPF_MAP_TYPE_TASK_STORAGE);                                                                   \
        __uint(map_flags, BPF_F_NO_PREALLOC);                                                                      \
        __type(key, int);                                                                                          \
        __type(value, v);                                                                                          \
    } name SEC(".maps")
#define MAP_STACK_TRACE(name, n)                                                                                   \
    struct {                                                                                                       \
        __uint(type, BPF_MAP_TYPE_STACK_TRACE);                                                                    \
        __uint(key_size, sizeof(u32));                                                                             \
        __uint(value_size, 127 * sizeof(u64));                                                                     \
        __uint(max_entries, n);                                                                                    \
    } name SEC(".maps")

#define LOOKUP(map, key) bpf_map_lookup_elem(&map, key)
#define UPDATE(map, key, value) bpf_map_update_elem(&map, key, value, BPF_ANY)
#define DELETE(map, key) bpf_map_delete_elem(&map, key)
#define RB_RESERVE(map, size) bpf_ringbuf_reserve(&map, size, 0)
#define RB_OUTPUT(map, data, size, flags) bpf_ringbuf_output(&map, data, size, flags)
#define TASK_STORAGE_GET(map, task, value, flags) bpf_task_storage_get(&map, task, value, flags)
#define GET_STACKID(map, ctx, flags) bpf_get_stackid(ctx, &map, flags)

// a syscall's tracepoint and its arguments (by position: the generic layout of every sys_enter_*)
#define SYSCALL_ENTER(name)                                                                                        \
    SEC("tracepoint/syscalls/sys_enter_" #name)                                                                    \
    int sys_enter_##name(struct trace_event_raw_sys_enter *args)
#define SYSCALL_EXIT(name)                                                                                         \
    SEC("tracepoint/syscalls/sys_exit_" #name)                                                                     \
    int sys_exit_##name(struct trace_event_raw_sys_exit *args)
#define SYSARG(name, index) (args->args[index])
#define TRACEPOINT(category, event)                                                                                \
    SEC("tracepoint/" #category "/" #event)                                                                        \
    int category##__##event(struct trace_event_raw_##event *args)
#define UPROBE SEC("uprobe")

#else  // bcc

#include <uapi/linux/ptrace.h>

#define STACKS_ON 1  // STACKS is defined only when stacks are taken

#define MAP_RINGBUF(name, pages) BPF_RINGBUF_OUTPUT(name, pages)
#define MAP_HASH(name, k, v, n) BPF_HASH(name, k, v, n)
#define MAP_LRU_HASH(name, k, v, n) BPF_TABLE("lru_hash", k, v, name, n)
#define MAP_ARRAY(name, v, n) BPF_ARRAY(name, v, n)
#define MAP_PERCPU_ARRAY(name, v, n) BPF_PERCPU_ARRAY(name, v, n)
#define MAP_TASK_STORAGE(name, v) BPF_TASK_STORAGE(name, v)
#define MAP_STACK_TRACE(name, n) BPF_STACK_TRACE(name, n)

// bcc refuses a map operation written inside a macro: the loader writes LOOKUP(map, ...),
// UPDATE, DELETE, RB_RESERVE, RB_OUTPUT, TASK_STORAGE_GET and GET_STACKID as bcc's own
// `map.lookup(...)` before compiling (bccload.py, DIALECT)

#define SYSCALL_ENTER(name) TRACEPOINT_PROBE(syscalls, sys_enter_##name)
#define SYSCALL_EXIT(name) TRACEPOINT_PROBE(syscalls, sys_exit_##name)
#define SYSARG(name, index) (args->name)
#define TRACEPOINT(category, event) TRACEPOINT_PROBE(category, event)
#define UPROBE

#endif
