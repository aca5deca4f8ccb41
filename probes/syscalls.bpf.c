// heapline: memory syscalls, process lifecycle and RSS of the traced process tree.
// Filtering happens here: only tasks whose tgid is in `traced` produce records.

// rss_stat's mm_id -> the owning tgid and the latest counters of that address space
BPF_TABLE("lru_hash", u32, struct rss_state, rss_state, 16384);
// tgid -> exit_group() status
BPF_HASH(exit_codes, u32, s32, 65536);
// tid -> clone flags of a fork/clone in flight
BPF_HASH(cloning, u32, u64, 65536);
// tid -> the syscall in flight (entry time and arguments)
BPF_HASH(inflight, u32, struct pending, 65536);
static __always_inline int enter(u16 kind, u64 a0, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32, tid = (u32)id;
    if (!is_active(tgid))
        return 0;
    struct pending p = {};
    p.ts = bpf_ktime_get_ns();
    p.kind = kind;
    p.a[0] = a0; p.a[1] = a1; p.a[2] = a2; p.a[3] = a3; p.a[4] = a4; p.a[5] = a5;
    if (inflight.update(&tid, &p))
        count_lost(LOST_INFLIGHT_FULL);
    return 0;
}

static __always_inline int leave(u16 kind, long ret) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = (u32)id;
    struct pending *p = inflight.lookup(&tid);
    if (!p)
        return 0;
    if (p->kind != kind) {
        inflight.delete(&tid);
        return 0;
    }
    struct event *e = reserve();
    if (!e) {
        count_lost(LOST_RING_FULL);
        inflight.delete(&tid);
        return 0;
    }
    u64 now = bpf_ktime_get_ns();
    e->ts = p->ts;
    e->dur = now - p->ts;
    e->pid = id >> 32;
    e->tid = tid;
    e->kind = kind;
    e->aux = 0;
    e->cpu = bpf_get_smp_processor_id();
    e->a[0] = p->a[0]; e->a[1] = p->a[1]; e->a[2] = p->a[2];
    e->a[3] = p->a[3]; e->a[4] = p->a[4]; e->a[5] = p->a[5];
    e->ret = ret;
    submit(e);
    inflight.delete(&tid);
    return 0;
}

// ---- memory syscalls ------------------------------------------------------------------

TRACEPOINT_PROBE(syscalls, sys_enter_brk) {
    return enter(K_BRK, args->brk, 0, 0, 0, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_brk) { return leave(K_BRK, args->ret); }

TRACEPOINT_PROBE(syscalls, sys_enter_mmap) {
    // the kernel uses fd as an int: store it sign-extended, as strace prints it (-1, not 4294967295)
    u64 fd = (u64)(s64)(s32)args->fd;
    return enter(K_MMAP, args->addr, args->len, args->prot, args->flags, fd, args->off);
}
TRACEPOINT_PROBE(syscalls, sys_exit_mmap) { return leave(K_MMAP, args->ret); }

TRACEPOINT_PROBE(syscalls, sys_enter_munmap) {
    return enter(K_MUNMAP, args->addr, args->len, 0, 0, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_munmap) { return leave(K_MUNMAP, args->ret); }

TRACEPOINT_PROBE(syscalls, sys_enter_mremap) {
    // new_addr is only an argument with MREMAP_FIXED (otherwise the register holds whatever was there)
    u64 new_addr = (args->flags & MREMAP_FIXED_FLAG) ? args->new_addr : 0;
    return enter(K_MREMAP, args->addr, args->old_len, args->new_len, args->flags, new_addr, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_mremap) { return leave(K_MREMAP, args->ret); }

TRACEPOINT_PROBE(syscalls, sys_enter_madvise) {
    return enter(K_MADVISE, args->start, args->len_in, (u32)args->behavior, 0, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_madvise) { return leave(K_MADVISE, args->ret); }

TRACEPOINT_PROBE(syscalls, sys_enter_mprotect) {
    return enter(K_MPROTECT, args->start, args->len, args->prot, 0, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_mprotect) { return leave(K_MPROTECT, args->ret); }

// ---- process lifecycle ----------------------------------------------------------------

static __always_inline int note_clone(u64 flags) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32, tid = (u32)id;
    if (!is_active(tgid))
        return 0;
    flags &= ~CSIGNAL_MASK;  // the exit signal is not a flag
    cloning.update(&tid, &flags);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_clone) { return note_clone(args->clone_flags); }
TRACEPOINT_PROBE(syscalls, sys_enter_clone3) {
    u64 flags = 0;
    bpf_probe_read_user(&flags, sizeof(flags), (void *)args->uargs);
    return note_clone(flags);
}
TRACEPOINT_PROBE(syscalls, sys_enter_fork) { return note_clone(0); }
TRACEPOINT_PROBE(syscalls, sys_enter_vfork) { return note_clone(VFORK_FLAGS); }

static __always_inline int clone_done(void) {
    u32 tid = (u32)bpf_get_current_pid_tgid();
    cloning.delete(&tid);
    return 0;
}
TRACEPOINT_PROBE(syscalls, sys_exit_clone) { return clone_done(); }
TRACEPOINT_PROBE(syscalls, sys_exit_clone3) { return clone_done(); }
TRACEPOINT_PROBE(syscalls, sys_exit_fork) { return clone_done(); }
TRACEPOINT_PROBE(syscalls, sys_exit_vfork) { return clone_done(); }

// Runs in the parent, before the child can run: the child is traced from its first instruction.
TRACEPOINT_PROBE(sched, sched_process_fork) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32, tid = (u32)id;
    if (!is_active(tgid))
        return 0;
    u32 child = args->child_pid;
    u64 flags = 0;
    u64 *f = cloning.lookup(&tid);
    if (f)
        flags = *f;
    u64 thread = (flags & CLONE_THREAD_FLAG) ? 1 : 0;
    if (!thread && FOLLOW_CHILDREN) {
        u8 active = TRACE_ACTIVE;
        if (traced.update(&child, &active))
            count_lost(LOST_PROCESS_TABLE_FULL);
    }
    emit(K_FORK, tgid, tid, child, flags, thread, f ? 1 : 0);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exec) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32, tid = (u32)id;
    u8 *st = traced.lookup(&tgid);
    if (!st)
        return 0;
    u8 active = TRACE_ACTIVE;
    traced.update(&tgid, &active);
    emit(K_EXEC, tgid, tid, args->old_pid, 0, 0, 0);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_exit_group) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32;
    if (!is_active(tgid))
        return 0;
    s32 code = args->error_code & 0xff;
    exit_codes.update(&tgid, &code);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32, tid = (u32)id;
    u8 *st = traced.lookup(&tgid);
    if (!st)
        return 0;
    inflight.delete(&tid);
    cloning.delete(&tid);
    u64 last = args->group_dead ? 1 : 0;
    s32 *code = exit_codes.lookup(&tgid);
    u64 known = code ? 1 : 0;
    u64 value = code ? (u64)*code : 0;
    if (*st == TRACE_ACTIVE)
        emit(K_EXIT, tgid, tid, value, known, last, 0);
    if (last) {
        traced.delete(&tgid);
        exit_codes.delete(&tgid);
    }
    return 0;
}

// ---- resident memory --------------------------------------------------------------------

// Runs on every page-fault-driven counter change, so the common case is one lookup: the state of
// an address space already known. A new one is adopted only from a task of a traced process.
TRACEPOINT_PROBE(kmem, rss_stat) {
    u32 mm = args->mm_id;
    int member = args->member;
    if (member < 0 || member > 3)
        return 0;
    struct rss_state *s = rss_state.lookup(&mm);
    if (args->curr) {
        u32 me = bpf_get_current_pid_tgid() >> 32;
        if (!is_active(me))
            return 0;  // not traced, or exiting: the teardown is not the program's RSS
        if (!s || s->pid != me) {  // first sight of this address space (or an id reused)
            struct rss_state fresh = {};
            fresh.pid = me;
            rss_state.update(&mm, &fresh);
            s = rss_state.lookup(&mm);
            if (!s)
                return 0;
        }
    } else if (!s || !is_active(s->pid)) {
        return 0;  // another task changed an address space we do not trace
    }
    u64 now = bpf_ktime_get_ns();
    s->bytes[member & 3] = args->size;
    if (member == MM_ANON && args->size > s->anon_max)
        s->anon_max = args->size;  // the peak survives the coalescing
    s->last_update = now;
    if (now - s->last_emit < RSS_INTERVAL_NS)
        return 0;
    s->last_emit = now;
    emit_rss(s->pid, s->bytes[MM_ANON], s->bytes[MM_FILE], s->bytes[MM_SHMEM], s->bytes[MM_SWAP], s->anon_max);
    s->anon_max = s->bytes[MM_ANON];
    return 0;
}
