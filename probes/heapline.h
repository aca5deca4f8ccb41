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

#define LOST_RING_FULL 0           // the ring buffer had no room
#define LOST_INFLIGHT_FULL 1       // too many syscalls in flight at once
#define LOST_PROCESS_TABLE_FULL 2  // a child could not be followed
#define LOST_REASONS 3

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
