// heapline's in-process allocator path (`heapline record --alloc preload`): loaded into a launched
// command with LD_PRELOAD, it defines malloc and friends, calls the allocator's own function
// (found with dlsym(RTLD_NEXT)), passes its result through untouched, and writes one record per
// call into a shared-memory ring the collector drains with numpy
// (tracer/record/backends/bpf/preload.py). The records are those probes/alloc.bpf.c writes: the
// same kinds, aux bits and arguments, pid and tid, ts on CLOCK_MONOTONIC (bpf_ktime_get_ns's clock)
// at entry and dur to the return; free() is recorded at entry with dur 0.
//
// The ring (abi.py PRELOAD_HEADER_DTYPE, checked below): a header, a sequence word per slot, the
// slots. A writer claims slot `head` with a compare-and-swap while head - tail < capacity, marks
// its sequence word PRELOAD_CLAIMED | pid, fills the record and stores head + 1 into the word
// (release). Nothing is kept in a private buffer: a record is in shared memory as soon as its
// call returns, so threads and processes that exit, or are killed, leave nothing unwritten. When
// the ring is full the record is counted in `lost`, or, with PRELOAD_BLOCK, the writer waits for
// the collector (unless the collector is gone).
//
// Nesting: a per-thread mark is set while a recorded call runs; calls made meanwhile (the
// allocator's own, dlsym's) are passed through unrecorded, as alloc.bpf.c counts a call made
// inside an outer one as part of it. While the real functions are being looked up, allocations
// (dlsym may calloc) are served from a small static arena and not recorded: without this library
// they would not exist.
//
// Forks: the mapping is shared, so a child writes into the same ring under its own pid (cached,
// refreshed by a pthread_atfork handler). An exec drops the mapping; the new program maps the ring
// again if it keeps the environment (LD_PRELOAD and HEAPLINE_PRELOAD_RING).
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;
typedef int64_t s64;
#include "../heapline.h"  // struct event, the kind codes, the aux bits: every value from abi.py

#if !defined(PRELOAD_MAGIC) || !defined(PRELOAD_VERSION) || !defined(PRELOAD_BLOCK) || !defined(PRELOAD_CLAIMED)
#error "PRELOAD_* are given by tracer/record/backends/bpf/abi.py"
#endif

#define ENV_RING "HEAPLINE_PRELOAD_RING"
#define EXPORT __attribute__((visibility("default")))
#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)

// abi.py PRELOAD_HEADER_DTYPE, byte for byte
struct ring {
    u64 magic;
    u64 capacity;  // slots, a power of two
    u32 flags;     // PRELOAD_BLOCK
    u32 version;
    u32 collector;  // the collector's pid (a blocked writer stops waiting once it is gone)
    u8 pad0[36];
    u64 head;  // next slot to claim (writers)
    u8 pad1[56];
    u64 tail;  // first slot not yet taken (the collector)
    u8 pad2[56];
    u64 lost;   // records not written: the ring was full
    u64 waits;  // times a writer waited for room (PRELOAD_BLOCK)
    u8 pad3[48];
};
_Static_assert(sizeof(struct ring) == SIZEOF_RING, "struct ring is not the size of abi.py PRELOAD_HEADER_DTYPE");
CHECK_FIELD(ring, magic, RING_MAGIC);
CHECK_FIELD(ring, capacity, RING_CAPACITY);
CHECK_FIELD(ring, flags, RING_FLAGS);
CHECK_FIELD(ring, version, RING_VERSION);
CHECK_FIELD(ring, collector, RING_COLLECTOR);
CHECK_FIELD(ring, head, RING_HEAD);
CHECK_FIELD(ring, tail, RING_TAIL);
CHECK_FIELD(ring, lost, RING_LOST);
CHECK_FIELD(ring, waits, RING_WAITS);

// ---- the real functions, in tracer/record/backends/bpf/catalogue.py's order ----------------------

enum fn {
    F_MALLOC, F_FREE, F_CALLOC, F_REALLOC, F_REALLOCARRAY, F_POSIX_MEMALIGN, F_ALIGNED_ALLOC,
    F_MEMALIGN, F_VALLOC, F_PVALLOC, F_MALLOC_TRIM, F_MALLOPT, F_COUNT
};
static const char *const fn_names[F_COUNT] = {
    "malloc", "free", "calloc", "realloc", "reallocarray", "posix_memalign", "aligned_alloc",
    "memalign", "valloc", "pvalloc", "malloc_trim", "mallopt",
};
static const u16 fn_kinds[F_COUNT] = {
    K_MALLOC, K_FREE, K_CALLOC, K_REALLOC, K_REALLOCARRAY, K_POSIX_MEMALIGN, K_ALIGNED_ALLOC,
    K_MEMALIGN, K_VALLOC, K_PVALLOC, K_MALLOC_TRIM, K_MALLOPT,
};
static void *real[F_COUNT];
// the kind each function is recorded as: where two names are one function of the allocator
// (glibc's memalign and aligned_alloc), the first in the catalogue's order, as the uprobe path
// probes one address once
static u16 kind_of[F_COUNT];

enum { UNINIT, INITIALIZING, READY, OFF };
static int state = UNINIT;
static struct ring *ring;
static u64 *seqs;
static struct event *slots;
static u64 mask;
static u32 pid;            // this process (refreshed in a forked child)
static int collector_gone;
// Each thread's word, in a pthread key: its tid << 1 (0 until first asked), and INSIDE while a
// recorded call runs on it. Not __thread: a library with a TLS segment takes a slot in every
// thread's dtv, which the loader allocates with calloc, and the program's allocations would then
// differ from an untraced run's by those bytes. A key below PTHREAD_KEY_2NDLEVEL_SIZE lives in
// the thread's descriptor: no allocation, a few instructions.
#define INSIDE 1u
static pthread_key_t key;

// the static arena for allocations made while the real functions are looked up
static _Alignas(64) char arena[16384];
static size_t arena_used;

static int in_arena(const void *p) { return (const char *)p >= arena && (const char *)p < arena + sizeof(arena); }

static void *arena_alloc(size_t n) {
    size_t at = (arena_used + 15) & ~(size_t)15;
    if (n > sizeof(arena) - at)
        return NULL;
    arena_used = at + n;
    return arena + at;
}

static inline u64 now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (u64)t.tv_sec * 1000000000ull + (u64)t.tv_nsec;
}

static void after_fork_child(void) {
    pid = (u32)getpid();
    pthread_setspecific(key, NULL);  // the child's one thread: its tid is asked again
}

// ---- the ring -------------------------------------------------------------------------------------

static void wait_for_room(void) {
    static const struct timespec pause = {0, 20000};
    __atomic_fetch_add(&ring->waits, 1, __ATOMIC_RELAXED);
    nanosleep(&pause, NULL);
}

// Claim a slot; NULL when the ring is full and the record is counted lost instead.
static inline struct event *claim(u64 *at) {
    u64 h = __atomic_load_n(&ring->head, __ATOMIC_RELAXED);
    u32 waited = 0;
    for (;;) {
        u64 t = __atomic_load_n(&ring->tail, __ATOMIC_ACQUIRE);
        if (UNLIKELY(h - t >= ring->capacity)) {
            if (!(__atomic_load_n(&ring->flags, __ATOMIC_RELAXED) & PRELOAD_BLOCK) || collector_gone) {
                __atomic_fetch_add(&ring->lost, 1, __ATOMIC_RELAXED);
                return NULL;
            }
            // every ~50 ms of waiting, ask whether the collector is still there
            if (++waited % 2500 == 0 && kill((pid_t)ring->collector, 0) != 0 && errno == ESRCH)
                collector_gone = 1;
            wait_for_room();
            h = __atomic_load_n(&ring->head, __ATOMIC_RELAXED);
            continue;
        }
        if (__atomic_compare_exchange_n(&ring->head, &h, h + 1, 1, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
            break;
    }
    *at = h;
    __atomic_store_n(&seqs[h & mask], PRELOAD_CLAIMED | pid, __ATOMIC_RELAXED);
    return &slots[h & mask];
}

static inline void put(uintptr_t *me, enum fn f, u16 aux, u64 ts, u64 dur, u64 a0, u64 a1, u64 a2, u64 a3, s64 ret) {
    int saved = errno;  // the caller sees the allocator's errno, whatever the ring does
    u64 at;
    struct event *e = claim(&at);
    if (LIKELY(e != NULL)) {
        e->ts = ts;
        e->dur = dur;
        e->pid = pid;
        if (UNLIKELY(*me < 2))
            *me = (uintptr_t)syscall(SYS_gettid) << 1;
        e->tid = (u32)(*me >> 1);
        e->kind = kind_of[f];
        e->aux = aux;
        int cpu = sched_getcpu();
        e->cpu = cpu < 0 ? 0 : (u32)cpu;
        e->a[0] = a0;
        e->a[1] = a1;
        e->a[2] = a2;
        e->a[3] = a3;
        e->a[4] = 0;
        e->a[5] = 0;
        e->ret = ret;
        __atomic_store_n(&seqs[at & mask], at + 1, __ATOMIC_RELEASE);
    }
    errno = saved;
}

// ---- start-up ---------------------------------------------------------------------------------------

// The ring's path from the environment the program was started with. This can run before the C
// library has set `environ` up (the loader's own first allocations come here), so it is read from
// /proc/self/environ with plain system calls, and from getenv() where /proc is not mounted.
static int ring_path(char *out, size_t size) {
    static char buf[65536];
    const size_t keylen = sizeof(ENV_RING "=") - 1;
    int fd = (int)syscall(SYS_openat, AT_FDCWD, "/proc/self/environ", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        size_t len = 0;
        for (;;) {
            long n = syscall(SYS_read, fd, buf + len, sizeof(buf) - 1 - len);
            if (n <= 0)
                break;
            len += (size_t)n;
            if (len == sizeof(buf) - 1)
                break;
        }
        syscall(SYS_close, fd);
        buf[len] = 0;
        for (size_t i = 0; i < len; i += strlen(buf + i) + 1) {
            if (strncmp(buf + i, ENV_RING "=", keylen) == 0) {
                size_t n = strlen(buf + i + keylen);
                if (n == 0 || n >= size)
                    return -1;
                memcpy(out, buf + i + keylen, n + 1);
                return 0;
            }
        }
        return -1;
    }
    const char *v = getenv(ENV_RING);
    if (!v || !*v || strlen(v) >= size)
        return -1;
    memcpy(out, v, strlen(v) + 1);
    return 0;
}

static int map_ring(void) {
    char path[4096];
    if (ring_path(path, sizeof(path)) != 0)
        return -1;
    int fd = (int)syscall(SYS_openat, AT_FDCWD, path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return -1;
    struct ring head;
    if (pread(fd, &head, sizeof(head), 0) != (ssize_t)sizeof(head) || head.magic != PRELOAD_MAGIC ||
        head.version != PRELOAD_VERSION || !head.capacity || (head.capacity & (head.capacity - 1))) {
        close(fd);
        return -1;
    }
    size_t bytes = sizeof(struct ring) + head.capacity * (sizeof(u64) + sizeof(struct event));
    void *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (m == MAP_FAILED)
        return -1;
    ring = m;
    seqs = (u64 *)((char *)m + sizeof(struct ring));
    slots = (struct event *)(seqs + head.capacity);
    mask = head.capacity - 1;
    return 0;
}

// Look the real functions up and map the ring, once; calls made meanwhile (the lookup's own, on
// this thread) are passed through unrecorded. Another thread arriving meanwhile waits.
static void init(void) {
    int expect = UNINIT;
    if (!__atomic_compare_exchange_n(&state, &expect, INITIALIZING, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        while (__atomic_load_n(&state, __ATOMIC_ACQUIRE) == INITIALIZING)
            sched_yield();
        return;
    }
    int saved = errno;
    for (int i = 0; i < F_COUNT; i++) {
        real[i] = dlsym(RTLD_NEXT, fn_names[i]);
        kind_of[i] = fn_kinds[i];
        for (int j = 0; j < i; j++) {
            if (real[i] && real[j] == real[i]) {
                kind_of[i] = kind_of[j];
                break;
            }
        }
    }
    pid = (u32)getpid();
    // without a ring (the environment lost it) calls are passed through, unrecorded
    int ok = real[F_MALLOC] && real[F_FREE] && real[F_CALLOC] && real[F_REALLOC] &&
             pthread_key_create(&key, NULL) == 0 && map_ring() == 0;
    if (ok)
        pthread_atfork(NULL, NULL, after_fork_child);
    errno = saved;
    __atomic_store_n(&state, ok ? READY : OFF, __ATOMIC_RELEASE);
}

__attribute__((constructor)) static void start(void) {
    if (__atomic_load_n(&state, __ATOMIC_ACQUIRE) == UNINIT)
        init();
}

// ---- the functions ----------------------------------------------------------------------------------

typedef void *(*malloc_fn)(size_t);
typedef void (*free_fn)(void *);
typedef void *(*calloc_fn)(size_t, size_t);
typedef void *(*realloc_fn)(void *, size_t);
typedef void *(*reallocarray_fn)(void *, size_t, size_t);
typedef int (*posix_memalign_fn)(void **, size_t, size_t);
typedef void *(*aligned_fn)(size_t, size_t);
typedef int (*trim_fn)(size_t);
typedef int (*mallopt_fn)(int, int);

#define REAL(f, type) ((type)real[f])

// Whether to record this call: the library records, and no recorded call runs on this thread
// (else it is one the allocator makes inside that call). Then the thread is marked INSIDE until
// end(); otherwise the caller passes the call on (real[f] is set, unless the lookup is running).
static inline int begin(uintptr_t *me) {
    if (UNLIKELY(state != READY)) {
        if (state == UNINIT)
            init();
        if (state != READY)
            return 0;
    }
    uintptr_t w = (uintptr_t)pthread_getspecific(key);
    if (UNLIKELY(w & INSIDE))
        return 0;
    pthread_setspecific(key, (void *)(w | INSIDE));
    *me = w;
    return 1;
}

static inline void end(uintptr_t me) { pthread_setspecific(key, (void *)me); }

// begin() for a function the allocator may lack (then the caller passes the call on, if it can)
static inline int begin_fn(uintptr_t *me, enum fn f) {
    if (!begin(me))
        return 0;
    if (UNLIKELY(!real[f])) {
        end(*me);
        return 0;
    }
    return 1;
}

EXPORT void *malloc(size_t n) {
    uintptr_t me;
    if (UNLIKELY(!begin(&me)))
        return real[F_MALLOC] ? REAL(F_MALLOC, malloc_fn)(n) : arena_alloc(n);
    u64 t0 = now_ns();
    void *p = REAL(F_MALLOC, malloc_fn)(n);
    u64 t1 = now_ns();
    put(&me, F_MALLOC, 0, t0, t1 - t0, n, 0, 0, 0, (s64)(uintptr_t)p);
    end(me);
    return p;
}

EXPORT void free(void *p) {
    if (UNLIKELY(in_arena(p)))
        return;
    uintptr_t me;
    if (UNLIKELY(!begin(&me))) {
        if (real[F_FREE])
            REAL(F_FREE, free_fn)(p);
        return;
    }
    put(&me, F_FREE, 0, now_ns(), 0, (u64)(uintptr_t)p, 0, 0, 0, 0);
    REAL(F_FREE, free_fn)(p);
    end(me);
}

EXPORT void *calloc(size_t n, size_t size) {
    uintptr_t me;
    if (UNLIKELY(!begin(&me))) {
        if (real[F_CALLOC])
            return REAL(F_CALLOC, calloc_fn)(n, size);
        if (size && n > (size_t)-1 / size)
            return NULL;
        return arena_alloc(n * size);  // static storage: zeroed already, never reused
    }
    u64 t0 = now_ns();
    void *p = REAL(F_CALLOC, calloc_fn)(n, size);
    u64 t1 = now_ns();
    put(&me, F_CALLOC, 0, t0, t1 - t0, n, size, 0, 0, (s64)(uintptr_t)p);
    end(me);
    return p;
}

EXPORT void *realloc(void *old, size_t n) {
    if (UNLIKELY(in_arena(old))) {  // a block of the lookup's: moved to the real allocator
        size_t room = (size_t)(arena + sizeof(arena) - (char *)old);
        void *p = malloc(n);
        if (p)
            memcpy(p, old, n < room ? n : room);
        return p;
    }
    uintptr_t me;
    if (UNLIKELY(!begin(&me))) {
        if (real[F_REALLOC])
            return REAL(F_REALLOC, realloc_fn)(old, n);
        return old ? NULL : arena_alloc(n);
    }
    u64 t0 = now_ns();
    void *p = REAL(F_REALLOC, realloc_fn)(old, n);
    u64 t1 = now_ns();
    put(&me, F_REALLOC, 0, t0, t1 - t0, (u64)(uintptr_t)old, n, 0, 0, (s64)(uintptr_t)p);
    end(me);
    return p;
}

EXPORT void *reallocarray(void *old, size_t n, size_t size) {
    uintptr_t me;
    if (UNLIKELY(!begin_fn(&me, F_REALLOCARRAY))) {
        if (real[F_REALLOCARRAY])
            return REAL(F_REALLOCARRAY, reallocarray_fn)(old, n, size);
        if (size && n > (size_t)-1 / size) {
            errno = ENOMEM;
            return NULL;
        }
        return realloc(old, n * size);
    }
    u64 t0 = now_ns();
    void *p = REAL(F_REALLOCARRAY, reallocarray_fn)(old, n, size);
    u64 t1 = now_ns();
    put(&me, F_REALLOCARRAY, 0, t0, t1 - t0, (u64)(uintptr_t)old, n, size, 0, (s64)(uintptr_t)p);
    end(me);
    return p;
}

EXPORT int posix_memalign(void **out, size_t align, size_t size) {
    uintptr_t me;
    if (UNLIKELY(!begin_fn(&me, F_POSIX_MEMALIGN)))
        return real[F_POSIX_MEMALIGN] ? REAL(F_POSIX_MEMALIGN, posix_memalign_fn)(out, align, size) : ENOMEM;
    u64 t0 = now_ns();
    int rc = REAL(F_POSIX_MEMALIGN, posix_memalign_fn)(out, align, size);
    u64 t1 = now_ns();
    put(&me, F_POSIX_MEMALIGN, 0, t0, t1 - t0, (u64)(uintptr_t)out, align, size, rc == 0 ? (u64)(uintptr_t)*out : 0,
        (s64)(u32)rc);
    end(me);
    return rc;
}

// aligned_alloc, memalign, valloc, pvalloc: a pointer from one or two size arguments
static inline void *aligned(enum fn f, size_t a0, size_t a1, int nargs) {
    uintptr_t me;
    if (UNLIKELY(!begin_fn(&me, f))) {
        if (!real[f])
            return NULL;
        return nargs == 2 ? REAL(f, aligned_fn)(a0, a1) : REAL(f, malloc_fn)(a0);
    }
    u64 t0 = now_ns();
    void *p = nargs == 2 ? REAL(f, aligned_fn)(a0, a1) : REAL(f, malloc_fn)(a0);
    u64 t1 = now_ns();
    put(&me, f, 0, t0, t1 - t0, a0, nargs == 2 ? a1 : 0, 0, 0, (s64)(uintptr_t)p);
    end(me);
    return p;
}

EXPORT void *aligned_alloc(size_t align, size_t size) { return aligned(F_ALIGNED_ALLOC, align, size, 2); }
EXPORT void *memalign(size_t align, size_t size) { return aligned(F_MEMALIGN, align, size, 2); }
EXPORT void *valloc(size_t size) { return aligned(F_VALLOC, size, 0, 1); }
EXPORT void *pvalloc(size_t size) { return aligned(F_PVALLOC, size, 0, 1); }

EXPORT int malloc_trim(size_t pad) {
    uintptr_t me;
    if (UNLIKELY(!begin_fn(&me, F_MALLOC_TRIM)))
        return real[F_MALLOC_TRIM] ? REAL(F_MALLOC_TRIM, trim_fn)(pad) : 0;
    u64 t0 = now_ns();
    int rc = REAL(F_MALLOC_TRIM, trim_fn)(pad);
    u64 t1 = now_ns();
    put(&me, F_MALLOC_TRIM, 0, t0, t1 - t0, pad, 0, 0, 0, (s64)(u32)rc);
    end(me);
    return rc;
}

EXPORT int mallopt(int param, int value) {
    uintptr_t me;
    if (UNLIKELY(!begin_fn(&me, F_MALLOPT)))
        return real[F_MALLOPT] ? REAL(F_MALLOPT, mallopt_fn)(param, value) : 0;
    u64 t0 = now_ns();
    int rc = REAL(F_MALLOPT, mallopt_fn)(param, value);
    u64 t1 = now_ns();
    // the arguments sign-extended, as alloc.bpf.c reads them (SITE_INT)
    put(&me, F_MALLOPT, 0, t0, t1 - t0, (u64)(s64)param, (u64)(s64)value, 0, 0, (s64)(u32)rc);
    end(me);
    return rc;
}
