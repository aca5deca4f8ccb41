// Shared definitions of heapline's BPF programs: the structs they share with user space, and the
// checks that the loader gave every shared value.
#pragma once

// Every value these programs share with the Python is given by the loader as a -D flag, from
// tracer/record/backends/bpf/abi.py (which takes each from where the Python keeps it); none is
// defined here. A value left out stops the build here, and so does a struct laid out otherwise
// than the Python reads it (the _Static_asserts below each struct).

// kind codes K_<NAME>: tracer/events.py Kind, every one (K_RESIDENT and K_PAGES are written by user space:
// they are checked all the same, so that this list and Kind stay one)
#if !defined(K_BRK) || !defined(K_MMAP) || !defined(K_MUNMAP) || !defined(K_MREMAP) || !defined(K_MADVISE) ||     \
    !defined(K_MPROTECT) || !defined(K_FORK) || !defined(K_EXEC) || !defined(K_EXIT) || !defined(K_RSS) ||       \
    !defined(K_MALLOC) || !defined(K_CALLOC) || !defined(K_REALLOC) || !defined(K_REALLOCARRAY) ||               \
    !defined(K_FREE) || !defined(K_POSIX_MEMALIGN) || !defined(K_ALIGNED_ALLOC) || !defined(K_MEMALIGN) ||      \
    !defined(K_VALLOC) || !defined(K_PVALLOC) || !defined(K_MALLOC_TRIM) || !defined(K_MALLOPT) ||              \
    !defined(K_NEW) || !defined(K_DELETE) || !defined(K_RESIDENT) || !defined(K_PAGES)
#error "the kind codes K_* are given by tracer/record/backends/bpf/abi.py (tracer/events.py Kind)"
#endif

// aux bits of K_NEW / K_DELETE records: NEW_ARRAY (new[], delete[]), NEW_ALIGNED
#if !defined(NEW_ARRAY) || !defined(NEW_ALIGNED)
#error "NEW_ARRAY and NEW_ALIGNED are given by tracer/record/backends/bpf/abi.py"
#endif

// indexes of the per-CPU `lost` counters, LOST_COUNTERS of them: LOST_RING_FULL (no ring had room
// for a record), LOST_INFLIGHT_FULL (too many syscalls in flight at once), LOST_PROCESS_TABLE_FULL
// (a child could not be followed), LOST_TASK_STORAGE (no per-thread slot for an allocator call in
// flight); not losses: SPARE_USED (records that went to the spare ring), BATCH_BUSY (allocator
// records written on their own, their CPU's batch taken or full)
#if !defined(LOST_RING_FULL) || !defined(LOST_INFLIGHT_FULL) || !defined(LOST_PROCESS_TABLE_FULL) ||              \
    !defined(LOST_TASK_STORAGE) || !defined(SPARE_USED) || !defined(BATCH_BUSY) || !defined(LOST_COUNTERS)
#error "the lost counters (LOST_*, SPARE_USED, BATCH_BUSY) are given by tracer/record/backends/bpf/abi.py"
#endif

// the state of a tgid in `traced`: TRACE_ACTIVE, or TRACE_PENDING_EXEC for a launched child held before execve
#if !defined(TRACE_ACTIVE) || !defined(TRACE_PENDING_EXEC)
#error "TRACE_ACTIVE and TRACE_PENDING_EXEC are given by tracer/record/backends/bpf/abi.py"
#endif

// the kernel's flags the probes test (tracer/decode.py): CLONE_THREAD_FLAG, CSIGNAL_MASK (the exit
// signal in clone flags), VFORK_FLAGS (CLONE_VFORK | CLONE_VM), MREMAP_FIXED_FLAG; and rss_stat's
// member: MM_FILE, MM_ANON, MM_SWAP, MM_SHMEM (the kernel's MM_FILEPAGES, MM_ANONPAGES, MM_SWAPENTS,
// MM_SHMEMPAGES)
#if !defined(CLONE_THREAD_FLAG) || !defined(CSIGNAL_MASK) || !defined(VFORK_FLAGS) ||                             \
    !defined(MREMAP_FIXED_FLAG) || !defined(MM_FILE) || !defined(MM_ANON) || !defined(MM_SWAP) || !defined(MM_SHMEM)
#error "the kernel's flags and rss_stat members are given by tracer/record/backends/bpf/abi.py"
#endif

// allocator probes: SLOTS probe slots of alloc.bpf.c; the `sites` table: SITE_GROUPS groups of
// SITE_KEYS entries, a site's flags SITE_NARGS (mask: argument registers read), SITE_INT,
// SITE_DIRECT; allocator batches: BATCH records per batch (a power of two), USED_<FIELD> bits
#if !defined(SLOTS) || !defined(SITE_GROUPS) || !defined(SITE_KEYS) || !defined(SITE_NARGS) ||                   \
    !defined(SITE_INT) || !defined(SITE_DIRECT)
#error "SLOTS and SITE_* are given by tracer/record/backends/bpf/abi.py"
#endif
#if !defined(BATCH) || !defined(USED_AUX) || !defined(USED_A1) || !defined(USED_A2) || !defined(USED_A3) ||        \
    !defined(USED_A4)
#error "BATCH and USED_* are given by tracer/record/backends/bpf/abi.py (its BATCH_SLOTS and OPTIONAL)"
#endif
_Static_assert(BATCH > 0 && (BATCH & (BATCH - 1)) == 0, "BATCH is a power of two");
_Static_assert(SITE_KEYS > 0 && (SITE_KEYS & (SITE_KEYS - 1)) == 0, "SITE_KEYS is a power of two");

// Field `field` of `struct s` is where the Python reads it: at OFFSETOF_<NAME>, SIZEOF_<NAME> bytes
// (abi.py passes both for every field of EVENT_DTYPE, BATCH_DTYPE and its ctypes Site).
#define CHECK_FIELD(s, field, name)                                                                                  \
    _Static_assert(__builtin_offsetof(struct s, field) == OFFSETOF_##name &&                                         \
                       sizeof(((struct s *)0)->field) == SIZEOF_##name,                                              \
                   "struct " #s " ." #field " is not where tracer/record/backends/bpf/abi.py reads it")

#define RESERVE_TRIES 4  // attempts at a ring reservation (C only)

// one record: tracer/events.py EVENT_DTYPE, byte for byte
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
_Static_assert(sizeof(struct event) == SIZEOF_EVENT, "struct event is not the size of tracer/events.py EVENT_DTYPE");
CHECK_FIELD(event, ts, EVENT_TS);
CHECK_FIELD(event, dur, EVENT_DUR);
CHECK_FIELD(event, pid, EVENT_PID);
CHECK_FIELD(event, tid, EVENT_TID);
CHECK_FIELD(event, kind, EVENT_KIND);
CHECK_FIELD(event, aux, EVENT_AUX);
CHECK_FIELD(event, cpu, EVENT_CPU);
CHECK_FIELD(event, a[0], EVENT_A0);
CHECK_FIELD(event, a[1], EVENT_A1);
CHECK_FIELD(event, a[2], EVENT_A2);
CHECK_FIELD(event, a[3], EVENT_A3);
CHECK_FIELD(event, a[4], EVENT_A4);
CHECK_FIELD(event, a[5], EVENT_A5);
CHECK_FIELD(event, ret, EVENT_RET);

struct pending {
    u64 ts;
    u64 a[6];
    u16 kind;
};

struct rss_state {
    s64 bytes[4];  // indexed by member (MM_*)
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

// Allocator records are gathered per CPU and go to their ring a batch at a time (one ring
// reservation per BATCH calls instead of one per call), column by column: user space takes each
// field of a whole batch as one contiguous run. Most calls (malloc, free) leave aux and a1..a4
// zero: `used` says which of them some record of the batch set (USED_* bits), so user space reads
// only those columns. Every record of a batch was made on its CPU: the CPU is said once.
// tracer/record/backends/bpf/abi.py BATCH_DTYPE, byte for byte.
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
_Static_assert(sizeof(struct batch) == SIZEOF_BATCH, "struct batch is not the size of abi.py BATCH_DTYPE");
CHECK_FIELD(batch, n, BATCH_N);
CHECK_FIELD(batch, used, BATCH_USED);
CHECK_FIELD(batch, busy, BATCH_BUSY);
CHECK_FIELD(batch, first_ts, BATCH_FIRST_TS);
CHECK_FIELD(batch, cpu, BATCH_CPU);
CHECK_FIELD(batch, pad, BATCH_PAD);
CHECK_FIELD(batch, ts, BATCH_TS);
CHECK_FIELD(batch, dur, BATCH_DUR);
CHECK_FIELD(batch, pid, BATCH_PID);
CHECK_FIELD(batch, tid, BATCH_TID);
CHECK_FIELD(batch, kind, BATCH_KIND);
CHECK_FIELD(batch, aux, BATCH_AUX);
CHECK_FIELD(batch, a0, BATCH_A0);
CHECK_FIELD(batch, a1, BATCH_A1);
CHECK_FIELD(batch, a2, BATCH_A2);
CHECK_FIELD(batch, a3, BATCH_A3);
CHECK_FIELD(batch, a4, BATCH_A4);
CHECK_FIELD(batch, ret, BATCH_RET);

// What a probed instruction of the allocator is (alloc.bpf.c's `sites` table, filled by
// tracer/record/backends/bpf/alloc.py): abi.py's ctypes Site, byte for byte. Its flags: how many
// argument registers it reads (SITE_NARGS bits), whether they are ints to sign-extend (SITE_INT,
// mallopt), whether its record is written at entry (SITE_DIRECT: free, operator delete).
struct site {
    u16 kind;  // 0: not a probed instruction
    u16 aux;
    u8 slot;
    u8 flags;
    u16 pad;
};
_Static_assert(sizeof(struct site) == SIZEOF_SITE, "struct site is not the size of abi.py Site");
CHECK_FIELD(site, kind, SITE_KIND);
CHECK_FIELD(site, aux, SITE_AUX);
CHECK_FIELD(site, slot, SITE_SLOT);
CHECK_FIELD(site, flags, SITE_FLAGS);
CHECK_FIELD(site, pad, SITE_PAD);
