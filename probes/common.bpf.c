// heapline: what every probe shares: the rings, the traced set, the loss counters.
//
// Followed by syscalls.bpf.c and alloc.bpf.c: compiled by bcc at each recording (alloc.bpf.c only
// when allocator calls are traced), or built once by make as one CO-RE object (core.bpf.c; see
// loader.h for what differs). The Python side defines every value heapline.h lists
// (tracer/record/backends/bpf/abi.py), and these options of a recording
// (tracer/record/backends/bpf/backend.py; with the CO-RE object, loader.h's `cfg` and map sizes):
//   RINGBUF_PAGES     size of the event ring buffer in pages (power of two)
//   SPARE_PAGES       size of the spare ring (power of two)
//   RSS_INTERVAL_NS   at most one RSS record per address space per this interval
//   FOLLOW_CHILDREN   1 to trace fork()ed children too
//   ALLOC_RING_PAGES  size of the allocator batches' ring (power of two)
//   BATCH_AGE_NS      a batch older than this is sent at its CPU's next record
//   STACKS            when set: allocation stacks are kept, up to this many
//
// Each record is a fixed-size struct event (mirrors tracer/events.py EVENT_DTYPE), submitted
// without waking the consumer; user space drains the rings on a timer.

#include "loader.h"
#include "heapline.h"

MAP_RINGBUF(events, RINGBUF_PAGES);
// Where a record goes when `events` refuses it although it has room (its lock was not taken in
// time); a different ring has a different lock.
MAP_RINGBUF(spare, SPARE_PAGES);

// tgid -> TRACE_ACTIVE, or TRACE_PENDING_EXEC for a launched child held before execve
MAP_HASH(traced, u32, u8, 65536);
// events that could not be recorded, per CPU and per reason (LOST_* in heapline.h), and SPARE_USED
// and BATCH_BUSY
MAP_PERCPU_ARRAY(lost, u64, LOST_COUNTERS);

static __always_inline void count_lost(int reason) {
    u64 *n = LOOKUP(lost, &reason);
    if (n)
        (*n)++;
}

// bpf_ringbuf_reserve() can fail for a moment while the ring has room (this kernel takes the
// ring's lock with a spinlock that may give up); retry, then use the spare ring. What still
// fails is counted by the caller.
static __always_inline struct event *reserve(void) {
    struct event *e;
#pragma unroll
    for (int i = 0; i < RESERVE_TRIES; i++) {
        e = RB_RESERVE(events, sizeof(struct event));
        if (e)
            return e;
    }
    e = RB_RESERVE(spare, sizeof(struct event));
    if (e)
        count_lost(SPARE_USED);
    return e;
}

// submit to whichever ring the record came from (the helper finds it from the record itself)
static __always_inline void submit(struct event *e) {
    bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
}

static __always_inline int is_active(u32 tgid) {
    u8 *st = LOOKUP(traced, &tgid);
    return st && *st == TRACE_ACTIVE;
}

// An event that is not a syscall (lifecycle, RSS): emitted at once.
static __always_inline void emit5(u16 kind, u32 pid, u32 tid, u64 a0, u64 a1, u64 a2, u64 a3, u64 a4) {
    struct event *e = reserve();
    if (!e) {
        count_lost(LOST_RING_FULL);
        return;
    }
    e->ts = bpf_ktime_get_ns();
    e->dur = 0;
    e->pid = pid;
    e->tid = tid;
    e->kind = kind;
    e->aux = 0;
    e->cpu = bpf_get_smp_processor_id();
    e->a[0] = a0; e->a[1] = a1; e->a[2] = a2; e->a[3] = a3; e->a[4] = a4; e->a[5] = 0;
    e->ret = 0;
    submit(e);
}

static __always_inline void emit(u16 kind, u32 pid, u32 tid, u64 a0, u64 a1, u64 a2, u64 a3) {
    emit5(kind, pid, tid, a0, a1, a2, a3, 0);
}

// RSS of an address space: a4 is the highest anon RSS since its previous record
static __always_inline void emit_rss(u32 pid, u64 anon, u64 file, u64 shmem, u64 swap, u64 anon_max) {
    emit5(K_RSS, pid, pid, anon, file, shmem, swap, anon_max);
}
