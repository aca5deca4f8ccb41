// Shared definitions of heapline's BPF programs. struct event mirrors
// tracer/events.py EVENT_DTYPE byte for byte; change both together.
#pragma once

#define K_BRK 1
#define K_MMAP 2
#define K_MUNMAP 3
#define K_MREMAP 4
#define K_MADVISE 5
#define K_MPROTECT 6
#define K_FORK 16
#define K_EXEC 17
#define K_EXIT 18
#define K_RSS 19
#define K_MALLOC 32
#define K_CALLOC 33
#define K_REALLOC 34
#define K_REALLOCARRAY 35
#define K_FREE 36
#define K_POSIX_MEMALIGN 37
#define K_ALIGNED_ALLOC 38
#define K_MEMALIGN 39
#define K_VALLOC 40
#define K_PVALLOC 41
#define K_MALLOC_TRIM 42
#define K_MALLOPT 43
#define K_NEW 44
#define K_DELETE 45

// aux bits of K_NEW / K_DELETE
#define NEW_ARRAY 1
#define NEW_ALIGNED 2

// indexes of the per-CPU `lost` counters (tracer/record/backends/bpf/backend.py names them)
#define LOST_RING_FULL 0           // no ring had room for a record
#define LOST_INFLIGHT_FULL 1       // too many syscalls in flight at once
#define LOST_PROCESS_TABLE_FULL 2  // a child could not be followed
#define LOST_TASK_STORAGE 3        // no per-thread slot for an allocator call in flight
#define SPARE_USED 4               // not a loss: records that went to the spare ring
#define BATCH_BUSY 5               // not a loss: allocator records written on their own (batch taken or full)
#define LOST_REASONS 6

#define RESERVE_TRIES 4

#define TRACE_ACTIVE 1
#define TRACE_PENDING_EXEC 2

#define CLONE_THREAD_FLAG 0x00010000ULL
#define CSIGNAL_MASK 0xffULL
#define VFORK_FLAGS (0x00004000ULL | 0x00000100ULL)  // CLONE_VFORK | CLONE_VM
#define MREMAP_FIXED_FLAG 2ULL

struct event {
    u64 ts;    // CLOCK_MONOTONIC ns at syscall entry (or at the event)
    u64 dur;   // ns from syscall entry to exit
    u32 pid;   // tgid
    u32 tid;
    u16 kind;
    u16 aux;
    u32 cpu;
    u64 a[6];
    s64 ret;
};

struct pending {
    u64 ts;
    u64 a[6];
    u16 kind;
};

// rss_stat's member: the kernel's MM_FILEPAGES, MM_ANONPAGES, MM_SWAPENTS, MM_SHMEMPAGES
#define MM_FILE 0
#define MM_ANON 1
#define MM_SWAP 2
#define MM_SHMEM 3

struct rss_state {
    s64 bytes[4];  // indexed by member
    s64 anon_max;  // highest anon since the last record
    u64 last_update;
    u64 last_emit;
    u32 pid;
};

// an allocator call in flight on one thread (BPF task storage)
struct alloc_call {
    u64 ts;
    u64 a[3];
    u64 sp;     // stack pointer at the entry probe: deeper calls are the allocator's own
    u16 kind;
    u16 aux;
    u32 depth;  // 0: none; 1: an outer call; more: calls made inside it
    u32 slot;   // the probe slot of the outer call (its site's stack shift)
    u64 direct_ptr;  // the last free/delete recorded, until the next allocator call (tail calls)
    u64 direct_sp;
};

#define SLOTS 20  // probe slots of alloc.bpf.c

// Allocator records are gathered per CPU and go to their ring a batch at a time (one ring
// reservation per BATCH calls instead of one per call), column by column: user space takes each
// field of a whole batch as one contiguous run. Mirrors tracer/record/backends/bpf/ringbuf.py BATCH_DTYPE;
// BATCH (records per batch, a power of two) is its BATCH_SLOTS, passed by the loader.
#ifndef BATCH
#error "BATCH is given by tracer/record/backends/bpf/backend.py"
#endif
// Most calls (malloc, free) leave aux and a1..a4 zero: `used` says which of them some record of
// the batch set (USED_* bits), so user space reads only those columns. Every record of a batch
// was made on its CPU: the CPU is said once.
#define USED_AUX 1
#define USED_A1 2
#define USED_A2 4
#define USED_A3 8
#define USED_A4 16
struct batch {
    u32 n;         // records written
    u32 used;      // USED_* bits
    u64 busy;      // 1 while a probe on this CPU writes into the batch
    u64 first_ts;  // when its first record was written
    u32 cpu;       // the CPU of every record
    u32 pad;
    u64 ts[BATCH];
    u64 dur[BATCH];
    u32 pid[BATCH];
    u32 tid[BATCH];
    u16 kind[BATCH];
    u16 aux[BATCH];
    u64 a0[BATCH];
    u64 a1[BATCH];
    u64 a2[BATCH];
    u64 a3[BATCH];
    u64 a4[BATCH];
    // no a5: allocator calls have no sixth value (user space fills the column with zeros)
    s64 ret[BATCH];
};
