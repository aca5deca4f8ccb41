// heapline: malloc, free and friends, one record per call, paired in the kernel.
//
// Entry probes sit on an instruction the kernel emulates (tracer/probesites.py chooses it, at the
// function's entry or a few instructions in, where the argument registers are still intact); the
// uprobe is filtered to the traced process by perf, so nothing here looks at pids. The entry
// keeps the arguments in per-thread storage; the return probe adds the result and writes one
// record. free() and operator delete have no return probe: their record is written at entry.
//
// Calls made by the allocator itself (glibc's realloc(NULL, n) calls malloc, realloc(p, 0)
// calls free) are part of the outer call: a call entered while an outer one is in flight on the
// same thread, deeper on its stack (or level with it: a tail call), is not recorded.

BPF_TASK_STORAGE(alloc_calls, struct alloc_call);
#ifdef STACKS
// user stacks of allocations, taken at the return probe: there the instruction pointer is the
// return address in the caller and the frame pointer the caller's, so frame-pointer unwinding
// starts at the allocation site itself
BPF_STACK_TRACE(stacks, STACKS);
#endif
// per probe slot (the SLOT argument below): bytes the code before the entry site pushed or
// reserved, so that every entry is compared at the stack pointer the function was entered with
BPF_ARRAY(site_shift, u64, SLOTS);

static __always_inline struct alloc_call *current_call(int create) {
    struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
    return alloc_calls.task_storage_get(task, 0, create ? BPF_LOCAL_STORAGE_GET_F_CREATE : 0);
}

static __always_inline u64 shift_of(int slot) {
    u64 *shift = site_shift.lookup(&slot);
    return shift ? *shift : 0;
}

// Is a call entering at (sp, slot) inside the outer call in flight? Only asked while one is in
// flight, so the common path never looks the shifts up.
static __always_inline int inside_outer(struct alloc_call *c, u64 sp, int slot) {
    return c->depth && sp + shift_of(slot) <= c->sp + shift_of(c->slot);
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

static __always_inline int alloc_return(struct pt_regs *ctx, u16 kind) {
    struct alloc_call *c = current_call(0);
    if (!c || !c->depth)
        return 0;  // the call began before tracing did
    if (c->depth > 1) {
        c->depth--;
        return 0;
    }
    c->depth = 0;
    if (c->kind != kind)
        return 0;
    struct event *e = reserve();
    if (!e) {
        count_lost(LOST_RING_FULL);
        return 0;
    }
    u64 id = bpf_get_current_pid_tgid();
    u64 now = bpf_ktime_get_ns();
    e->ts = c->ts;
    e->dur = now - c->ts;
    e->pid = id >> 32;
    e->tid = (u32)id;
    e->kind = kind;
    e->aux = c->aux;
    e->cpu = bpf_get_smp_processor_id();
    e->a[0] = c->a[0];
    e->a[1] = c->a[1];
    e->a[2] = c->a[2];
    e->a[3] = 0;
    if (kind == K_POSIX_MEMALIGN && PT_REGS_RC(ctx) == 0) {
        u64 ptr = 0;  // the block is returned through the memptr argument
        bpf_probe_read_user(&ptr, sizeof(ptr), (void *)c->a[0]);
        e->a[3] = ptr;
    }
    e->a[4] = 0;
#ifdef STACKS
    int sid = stacks.get_stackid(ctx, BPF_F_USER_STACK);
    e->a[4] = sid >= 0 ? (u64)sid + 1 : 0;  // 0: no stack (the table was full or the walk failed)
#endif
    e->a[5] = 0;
    e->ret = PT_REGS_RC(ctx);
    submit(e);
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
    struct event *e = reserve();
    if (!e) {
        count_lost(LOST_RING_FULL);
        return 0;
    }
    u64 id = bpf_get_current_pid_tgid();
    e->ts = bpf_ktime_get_ns();
    e->dur = 0;
    e->pid = id >> 32;
    e->tid = (u32)id;
    e->kind = kind;
    e->aux = aux;
    e->cpu = bpf_get_smp_processor_id();
    e->a[0] = a0;
    e->a[1] = a1;
    e->a[2] = 0;
    e->a[3] = 0;
    e->a[4] = 0;
    e->a[5] = 0;
    e->ret = 0;
    submit(e);
    return 0;
}

#define P1 PT_REGS_PARM1(ctx)
#define P2 PT_REGS_PARM2(ctx)
#define P3 PT_REGS_PARM3(ctx)
#define INT(x) ((u64)(s64)(int)(x))

// name_enter / name_return pairs, attached by tracer/backends/alloc.py; the slot numbers are
// tracer/backends/alloc.py SLOTS
#define CALL(name, slot, K, aux, a0, a1, a2)                                                         \
    int name##_enter(struct pt_regs *ctx) { return alloc_enter(ctx, slot, K, aux, a0, a1, a2); }  \
    int name##_return(struct pt_regs *ctx) { return alloc_return(ctx, K); }
#define DIRECT(name, slot, K, aux, a0, a1) \
    int name##_enter(struct pt_regs *ctx) { return alloc_direct(ctx, slot, K, aux, a0, a1); }

CALL(malloc, 0, K_MALLOC, 0, P1, 0, 0)
CALL(calloc, 1, K_CALLOC, 0, P1, P2, 0)
CALL(realloc, 2, K_REALLOC, 0, P1, P2, 0)
CALL(reallocarray, 3, K_REALLOCARRAY, 0, P1, P2, P3)
CALL(posix_memalign, 4, K_POSIX_MEMALIGN, 0, P1, P2, P3)
CALL(aligned_alloc, 5, K_ALIGNED_ALLOC, 0, P1, P2, 0)
CALL(memalign, 6, K_MEMALIGN, 0, P1, P2, 0)
CALL(valloc, 7, K_VALLOC, 0, P1, 0, 0)
CALL(pvalloc, 8, K_PVALLOC, 0, P1, 0, 0)
CALL(malloc_trim, 9, K_MALLOC_TRIM, 0, P1, 0, 0)
CALL(mallopt, 10, K_MALLOPT, 0, INT(P1), INT(P2), 0)
// operator new: aux bit 0 = new[], bit 1 = aligned (a1 = alignment)
CALL(op_new, 11, K_NEW, 0, P1, 0, 0)
CALL(op_new_array, 12, K_NEW, NEW_ARRAY, P1, 0, 0)
CALL(op_new_aligned, 13, K_NEW, NEW_ALIGNED, P1, P2, 0)
CALL(op_new_array_aligned, 14, K_NEW, NEW_ARRAY | NEW_ALIGNED, P1, P2, 0)

DIRECT(free, 15, K_FREE, 0, P1, 0)
// operator delete: a1 = the size given to sized delete
DIRECT(op_delete, 16, K_DELETE, 0, P1, 0)
DIRECT(op_delete_array, 17, K_DELETE, NEW_ARRAY, P1, 0)
DIRECT(op_delete_sized, 18, K_DELETE, 0, P1, P2)
DIRECT(op_delete_array_sized, 19, K_DELETE, NEW_ARRAY, P1, P2)
