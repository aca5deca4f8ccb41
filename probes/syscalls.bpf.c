// heapline: memory syscalls, process lifecycle and RSS of the traced process tree.
// Filtering happens here: only tasks whose tgid is in `traced` produce records.

// rss_stat's mm_id -> the owning tgid and the latest counters of that address space
MAP_LRU_HASH(rss_state, u32, struct rss_state, 16384);
// tgid -> exit_group() status
MAP_HASH(exit_codes, u32, s32, 65536);
// tid -> clone flags of a fork/clone in flight
MAP_HASH(cloning, u32, u64, 65536);
// tid -> the syscall in flight (entry time and arguments)
MAP_HASH(inflight, u32, struct pending, 65536);
static __always_inline int enter(u16 kind, u64 a0, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32, tid = (u32)id;
    if (!is_active(tgid))
        return 0;
    struct pending p = {};
    p.ts = bpf_ktime_get_ns();
    p.kind = kind;
    p.a[0] = a0; p.a[1] = a1; p.a[2] = a2; p.a[3] = a3; p.a[4] = a4; p.a[5] = a5;
    if (UPDATE(inflight, &tid, &p))
        count_lost(LOST_INFLIGHT_FULL);
    return 0;
}

static __always_inline int leave(u16 kind, long ret) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = (u32)id;
    struct pending *p = LOOKUP(inflight, &tid);
    if (!p)
        return 0;
    if (p->kind != kind) {
        DELETE(inflight, &tid);
        return 0;
    }
    struct event *e = reserve();
    if (!e) {
        count_lost(LOST_RING_FULL);
        DELETE(inflight, &tid);
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
    DELETE(inflight, &tid);
    return 0;
}

// ---- memory syscalls ------------------------------------------------------------------

SYSCALL_ENTER(brk) {
    return enter(K_BRK, SYSARG(brk, 0), 0, 0, 0, 0, 0);
}
SYSCALL_EXIT(brk) { return leave(K_BRK, args->ret); }

SYSCALL_ENTER(mmap) {
    // the kernel uses fd as an int: store it sign-extended, as strace prints it (-1, not 4294967295)
    u64 fd = (u64)(s64)(s32)SYSARG(fd, 4);
    return enter(K_MMAP, SYSARG(addr, 0), SYSARG(len, 1), SYSARG(prot, 2), SYSARG(flags, 3), fd, SYSARG(off, 5));
}
SYSCALL_EXIT(mmap) { return leave(K_MMAP, args->ret); }

SYSCALL_ENTER(munmap) {
    return enter(K_MUNMAP, SYSARG(addr, 0), SYSARG(len, 1), 0, 0, 0, 0);
}
SYSCALL_EXIT(munmap) { return leave(K_MUNMAP, args->ret); }

SYSCALL_ENTER(mremap) {
    // new_addr is only an argument with MREMAP_FIXED (otherwise the register holds whatever was there)
    u64 new_addr = (SYSARG(flags, 3) & MREMAP_FIXED_FLAG) ? SYSARG(new_addr, 4) : 0;
    return enter(K_MREMAP, SYSARG(addr, 0), SYSARG(old_len, 1), SYSARG(new_len, 2), SYSARG(flags, 3), new_addr, 0);
}
SYSCALL_EXIT(mremap) { return leave(K_MREMAP, args->ret); }

SYSCALL_ENTER(madvise) {
    return enter(K_MADVISE, SYSARG(start, 0), SYSARG(len_in, 1), (u32)SYSARG(behavior, 2), 0, 0, 0);
}
SYSCALL_EXIT(madvise) { return leave(K_MADVISE, args->ret); }

SYSCALL_ENTER(mprotect) {
    return enter(K_MPROTECT, SYSARG(start, 0), SYSARG(len, 1), SYSARG(prot, 2), 0, 0, 0);
}
SYSCALL_EXIT(mprotect) { return leave(K_MPROTECT, args->ret); }

// ---- process lifecycle ----------------------------------------------------------------

static __always_inline int note_clone(u64 flags) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32, tid = (u32)id;
    if (!is_active(tgid))
        return 0;
    flags &= ~CSIGNAL_MASK;  // the exit signal is not a flag
    UPDATE(cloning, &tid, &flags);
    return 0;
}

SYSCALL_ENTER(clone) { return note_clone(SYSARG(clone_flags, 0)); }
SYSCALL_ENTER(clone3) {
    u64 flags = 0;
    bpf_probe_read_user(&flags, sizeof(flags), (void *)SYSARG(uargs, 0));
    return note_clone(flags);
}
SYSCALL_ENTER(fork) { return note_clone(0); }
SYSCALL_ENTER(vfork) { return note_clone(VFORK_FLAGS); }

static __always_inline int clone_done(void) {
    u32 tid = (u32)bpf_get_current_pid_tgid();
    DELETE(cloning, &tid);
    return 0;
}
SYSCALL_EXIT(clone) { return clone_done(); }
SYSCALL_EXIT(clone3) { return clone_done(); }
SYSCALL_EXIT(fork) { return clone_done(); }
SYSCALL_EXIT(vfork) { return clone_done(); }

// Runs in the parent, before the child can run: the child is traced from its first instruction.
TRACEPOINT(sched, sched_process_fork) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32, tid = (u32)id;
    if (!is_active(tgid))
        return 0;
    u32 child = args->child_pid;
    u64 flags = 0;
    u64 *f = LOOKUP(cloning, &tid);
    if (f)
        flags = *f;
    u64 thread = (flags & CLONE_THREAD_FLAG) ? 1 : 0;
    if (!thread && FOLLOW_CHILDREN) {
        u8 active = TRACE_ACTIVE;
        if (UPDATE(traced, &child, &active))
            count_lost(LOST_PROCESS_TABLE_FULL);
    }
    emit(K_FORK, tgid, tid, child, flags, thread, f ? 1 : 0);
    return 0;
}

TRACEPOINT(sched, sched_process_exec) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32, tid = (u32)id;
    u8 *st = LOOKUP(traced, &tgid);
    if (!st)
        return 0;
    u8 active = TRACE_ACTIVE;
    UPDATE(traced, &tgid, &active);
    // the program it now runs: the kernel's comm, set from the file's name (15 bytes at most)
    union { char c[16]; u64 w[2]; } comm = {};
    bpf_get_current_comm(comm.c, sizeof(comm.c));
    emit(K_EXEC, tgid, tid, args->old_pid, comm.w[0], comm.w[1], 0);
    return 0;
}

SYSCALL_ENTER(exit_group) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32;
    if (!is_active(tgid))
        return 0;
    s32 code = SYSARG(error_code, 0) & 0xff;
    UPDATE(exit_codes, &tgid, &code);
    return 0;
}

TRACEPOINT(sched, sched_process_exit) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32, tid = (u32)id;
    u8 *st = LOOKUP(traced, &tgid);
    if (!st)
        return 0;
    DELETE(inflight, &tid);
    DELETE(cloning, &tid);
    u64 last = args->group_dead ? 1 : 0;
    s32 *code = LOOKUP(exit_codes, &tgid);
    u64 known = code ? 1 : 0;
    u64 value = code ? (u64)*code : 0;
    if (*st == TRACE_ACTIVE)
        emit(K_EXIT, tgid, tid, value, known, last, 0);
    if (last) {
        DELETE(traced, &tgid);
        DELETE(exit_codes, &tgid);
    }
    return 0;
}

// ---- resident memory --------------------------------------------------------------------

// Runs on every page-fault-driven counter change, so the common case is one lookup: the state of
// an address space already known. A new one is adopted only from a task of a traced process.
TRACEPOINT(kmem, rss_stat) {
    u32 mm = args->mm_id;
    int member = args->member;
    if (member < 0 || member > 3)
        return 0;
    struct rss_state *s = LOOKUP(rss_state, &mm);
    if (args->curr) {
        u32 me = bpf_get_current_pid_tgid() >> 32;
        if (!is_active(me))
            return 0;  // not traced, or exiting: the teardown is not the program's RSS
        if (!s || s->pid != me) {  // first sight of this address space (or an id reused)
            struct rss_state fresh = {};
            fresh.pid = me;
            UPDATE(rss_state, &mm, &fresh);
            s = LOOKUP(rss_state, &mm);
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
