// heapline: malloc, free and friends, one record per call, paired in the kernel.
//
// Entry probes sit on an instruction the kernel emulates (tracer/record/backends/bpf/probesites.py chooses it, at the
// function's entry or a few instructions in, where the argument registers are still intact); the
// uprobe is filtered by perf to the traced process and the tasks it creates, so nothing here
// looks at pids. One program serves the entry probes of many functions (it finds which one by
// the probed address in `sites`) and one serves every return probe: each probe event inherited
// into a new task costs that task's creation ~10 us, so there are a few events, not one per
// function. The entry keeps the arguments in per-thread storage; the return probe adds the
// result and writes one record. free() and operator delete have no return probe: their record is
// written at entry.
//
// Calls made by the allocator itself (glibc's realloc(NULL, n) calls malloc, realloc(p, 0)
// calls free) are part of the outer call: a call entered while an outer one is in flight on the
// same thread, deeper on its stack (or level with it: a tail call), is not recorded.

MAP_TASK_STORAGE(alloc_calls, struct alloc_call);
// Records are written into this CPU's batch and the batch is sent to alloc_ring when full or when
// its first record is older than BATCH_AGE_NS (at the next record on that CPU; user space reads
// what is left in the batches after the probes are detached). A probe that finds the batch taken
// writes its record straight into the events ring instead, as the syscall probes do. Uprobe
// programs attached through perf events run with preemption disabled, so the batch is found taken
// only on kernels that run them preemptibly (a writer preempted mid-record keeps it).
MAP_RINGBUF(alloc_ring, ALLOC_RING_PAGES);
MAP_PERCPU_ARRAY(alloc_batch, struct batch, 1);
#ifdef STACKS
// user stacks of allocations, taken at the return probe: there the instruction pointer is the
// return address in the caller and the frame pointer the caller's, so frame-pointer unwinding
// starts at the allocation site itself
MAP_STACK_TRACE(stacks, STACKS);
#endif
// per probe slot (the SLOT argument below): bytes the code before the entry site pushed or
// reserved, so that every entry is compared at the stack pointer the function was entered with
MAP_ARRAY(site_shift, u64, SLOTS);

static __always_inline struct alloc_call *current_call(int create) {
    struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
    return TASK_STORAGE_GET(alloc_calls, task, 0, create ? BPF_LOCAL_STORAGE_GET_F_CREATE : 0);
}

static __always_inline u64 shift_of(int slot) {
    u64 *shift = LOOKUP(site_shift, &slot);
    return shift ? *shift : 0;
}

// Is a call entering at (sp, slot) inside the outer call in flight? Only asked while one is in
// flight, so the common path never looks the shifts up.
static __always_inline int inside_outer(struct alloc_call *c, u64 sp, int slot) {
    return c->depth && sp + shift_of(slot) <= c->sp + shift_of(c->slot);
}

// Send a batch to user space. The ring may refuse it for a moment (see reserve() in
// common.bpf.c): then the records stay in the batch, which is sent at the next record.
static __always_inline void send_batch(struct batch *b) {
#pragma unroll
    for (int i = 0; i < RESERVE_TRIES; i++) {
        if (RB_OUTPUT(alloc_ring, b, sizeof(*b), BPF_RB_NO_WAKEUP) == 0) {
            b->n = 0;
            b->used = 0;
            return;
        }
    }
}

// Record one call: into this CPU's batch, sent when full or old; or, when the batch is taken or
// full because the ring refused it, as a record of its own in the events ring.
static __always_inline void put_record(struct event *r, u64 now) {
    int zero = 0;
    struct batch *b = LOOKUP(alloc_batch, &zero);
    if (b) {
        if (!__sync_lock_test_and_set(&b->busy, 1)) {
            if (b->n >= BATCH)
                send_batch(b);
            if (b->n < BATCH) {
                u32 i = b->n & (BATCH - 1);
                b->ts[i] = r->ts;
                b->dur[i] = r->dur;
                b->pid[i] = r->pid;
                b->tid[i] = r->tid;
                b->kind[i] = r->kind;
                b->aux[i] = r->aux;
                b->a0[i] = r->a[0];
                b->a1[i] = r->a[1];
                b->a2[i] = r->a[2];
                b->a3[i] = r->a[3];
                b->a4[i] = r->a[4];
                b->ret[i] = r->ret;
                b->used |= (r->aux ? USED_AUX : 0) | (r->a[1] ? USED_A1 : 0) | (r->a[2] ? USED_A2 : 0) |
                           (r->a[3] ? USED_A3 : 0) | (r->a[4] ? USED_A4 : 0);
                if (i == 0) {
                    b->first_ts = now;
                    b->cpu = r->cpu;
                }
                b->n = i + 1;
                if (i + 1 == BATCH || now - b->first_ts > BATCH_AGE_NS)
                    send_batch(b);
                asm volatile("" ::: "memory");  // the record and the count are written before the batch is let go
                b->busy = 0;
                return;
            }
            b->busy = 0;
        }
        count_lost(BATCH_BUSY);
    }
    struct event *e = reserve();
    if (!e) {
        count_lost(LOST_RING_FULL);
        return;
    }
    __builtin_memcpy(e, r, sizeof(*r));
    submit(e);
}

static __always_inline int alloc_enter(struct pt_regs *ctx, int slot, u16 kind, u16 aux, u64 a0, u64 a1, u64 a2) {
    struct alloc_call *c = current_call(1);
    if (!c) {
        count_lost(LOST_TASK_STORAGE);
        return 0;
    }
    c->direct_ptr = 0;  // see alloc_direct
    u64 sp = PT_REGS_SP(ctx);
    // made by the allocator inside an outer call: deeper on the stack, or at the same depth when
    // the outer function tail-calls it (glibc's reallocarray jumps to realloc)
    if (inside_outer(c, sp, slot)) {
        c->depth++;
        return 0;
    }
    c->depth = 1;  // a new outer call (an older one that never returned, e.g. longjmp, is dropped)
    c->sp = sp;
    c->slot = slot;
    c->kind = kind;
    c->aux = aux;
    c->ts = bpf_ktime_get_ns();
    c->a[0] = a0;
    c->a[1] = a1;
    c->a[2] = a2;
    return 0;
}

static __always_inline int alloc_return(struct pt_regs *ctx) {
    struct alloc_call *c = current_call(0);
    if (!c || !c->depth)
        return 0;  // the call began before tracing did
    if (c->depth > 1) {
        c->depth--;
        return 0;
    }
    c->depth = 0;
    u16 kind = c->kind;
    u64 id = bpf_get_current_pid_tgid();
    u64 now = bpf_ktime_get_ns();
    struct event r = {};
    r.ts = c->ts;
    r.dur = now - c->ts;
    r.pid = id >> 32;
    r.tid = (u32)id;
    r.kind = kind;
    r.aux = c->aux;
    r.cpu = bpf_get_smp_processor_id();
    r.a[0] = c->a[0];
    r.a[1] = c->a[1];
    r.a[2] = c->a[2];
    if (kind == K_POSIX_MEMALIGN && PT_REGS_RC(ctx) == 0) {
        u64 ptr = 0;  // the block is returned through the memptr argument
        bpf_probe_read_user(&ptr, sizeof(ptr), (void *)c->a[0]);
        r.a[3] = ptr;
    }
#ifdef STACKS
    if (STACKS_ON) {
        int sid = GET_STACKID(stacks, ctx, BPF_F_USER_STACK);
        r.a[4] = sid >= 0 ? (u64)sid + 1 : 0;  // 0: no stack (the table was full or the walk failed)
    }
#endif
    r.ret = PT_REGS_RC(ctx);
    put_record(&r, now);
    return 0;
}

// free() and operator delete: one record at entry, unless made inside an outer allocator call,
// or unless it is the free() an operator delete tail-calls (jemalloc's delete is `jmp free`): same
// thread, same entry stack pointer, same pointer, nothing in between.
static __always_inline int alloc_direct(struct pt_regs *ctx, int slot, u16 kind, u16 aux, u64 a0, u64 a1) {
    // only a delete needs a slot of its own (to recognise the free it tail-calls)
    struct alloc_call *c = current_call(kind == K_DELETE);
    u64 sp = PT_REGS_SP(ctx);
    if (c) {
        if (inside_outer(c, sp, slot))
            return 0;
        if (c->direct_ptr) {
            u64 entry = sp + shift_of(slot);
            if (kind == K_FREE && c->direct_ptr == a0 && c->direct_sp == entry) {
                c->direct_ptr = 0;
                return 0;
            }
            c->direct_ptr = 0;
        }
        if (kind == K_DELETE) {
            c->direct_ptr = a0;
            c->direct_sp = sp + shift_of(slot);
        }
    } else if (kind == K_DELETE) {
        count_lost(LOST_TASK_STORAGE);
        return 0;
    }
    u64 id = bpf_get_current_pid_tgid();
    u64 now = bpf_ktime_get_ns();
    struct event r = {};
    r.ts = now;
    r.pid = id >> 32;
    r.tid = (u32)id;
    r.kind = kind;
    r.aux = aux;
    r.cpu = bpf_get_smp_processor_id();
    r.a[0] = a0;
    r.a[1] = a1;
    put_record(&r, now);
    return 0;
}

// What each probed instruction is (struct site, heapline.h), found by its address:
// sites[group * SITE_KEYS + (address & (SITE_KEYS - 1))] (a library is loaded at a page boundary,
// so the low 12 bits of a site's address are those of its ELF address).
// tracer/record/backends/bpf/alloc.py fills it, spreading the sites over groups so that no two in a
// group share their low bits; each group is one tracefs event with one program.
MAP_ARRAY(sites, struct site, SITE_GROUPS * SITE_KEYS);

static __always_inline int site_enter(struct pt_regs *ctx, u32 group) {
    u32 key = group * SITE_KEYS + (PT_REGS_IP(ctx) & (SITE_KEYS - 1));
    struct site *s = LOOKUP(sites, &key);
    if (!s || !s->kind)
        return 0;
    u32 nargs = s->flags & SITE_NARGS;
    u64 a0 = PT_REGS_PARM1(ctx);
    u64 a1 = nargs >= 2 ? PT_REGS_PARM2(ctx) : 0;
    u64 a2 = nargs >= 3 ? PT_REGS_PARM3(ctx) : 0;
    if (s->flags & SITE_INT) {
        a0 = (u64)(s64)(int)a0;
        a1 = (u64)(s64)(int)a1;
    }
    int slot = s->slot;
    if (s->flags & SITE_DIRECT)
        return alloc_direct(ctx, slot, s->kind, s->aux, a0, a1);
    return alloc_enter(ctx, slot, s->kind, s->aux, a0, a1, a2);
}

// the entry program of each group, and the one return program (the call in flight says what returns)
_Static_assert(SITE_GROUPS == 4, "one alloc_enter_g<N> below for each of the SITE_GROUPS groups");
UPROBE int alloc_enter_g0(struct pt_regs *ctx) { return site_enter(ctx, 0); }
UPROBE int alloc_enter_g1(struct pt_regs *ctx) { return site_enter(ctx, 1); }
UPROBE int alloc_enter_g2(struct pt_regs *ctx) { return site_enter(ctx, 2); }
UPROBE int alloc_enter_g3(struct pt_regs *ctx) { return site_enter(ctx, 3); }
UPROBE int alloc_return_any(struct pt_regs *ctx) { return alloc_return(ctx); }
