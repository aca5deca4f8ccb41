/* trim-threshold - one workload under four ways of setting glibc's M_TRIM_THRESHOLD.
 *
 *   trim-threshold default|mallopt|env|tunables
 *
 * Workload: 64 blocks of 64 KiB (4 MiB), each written, then all freed in allocation order.
 * 64 KiB is below the mmap threshold, so the blocks come from the heap (brk). Freed in order,
 * each block merges with the free block below it; the last one merges into the top chunk,
 * and glibc trims the top (one brk call) if the top chunk is then >= M_TRIM_THRESHOLD.
 *
 * Modes:
 *   default   nothing set: threshold 128 KiB, the break falls at "free".
 *   mallopt   mallopt(M_TRIM_THRESHOLD, 16 MiB) before the workload: the break stays high.
 *   env       nothing done in the program; run it with MALLOC_TRIM_THRESHOLD_=<bytes> in the
 *             environment (glibc reads it at startup). Prints the variable as it sees it.
 *   tunables  the same with GLIBC_TUNABLES=glibc.malloc.trim_threshold=<bytes>.
 *
 * Output:
 *   HL pid pid=P
 *   HL mode name=default|mallopt|env|tunables
 *   HL mallopt param=-1 value=16777216 ret=1          mallopt mode only
 *   HL env name=MALLOC_TRIM_THRESHOLD_ value=<v>      env mode ("set=0" instead of value= if unset)
 *   HL env name=GLIBC_TUNABLES value=<v>              tunables mode (idem)
 *   HL brk phase=start ...   HL rss anon=...
 *   HL brk phase=alloc ...   HL rss anon=...
 *   HL brk phase=free ...    HL rss anon=...
 *   HL done
 * The HL env values are printed as found, except that bytes outside '!'..'~' become '?'.
 * Note: they (and the name) contain upper-case letters, '_', '.' and '=', which the general
 * report regex's value class [0-9a-z-] does not cover; parse HL env lines separately.
 */
#define _GNU_SOURCE
#include "../report.h"
#include "common.h"

#include <malloc.h>

#define NBLOCKS 64
#define BLOCK (64 * 1024)
#define BIG_THRESHOLD (16 * 1024 * 1024)
#define USAGE "usage: trim-threshold default|mallopt|env|tunables\n"

static char *volatile blocks[NBLOCKS];

static void print_env(const char *name)
{
    const char *v = getenv(name);
    if (!v) {
        hl_line("HL env name=%s set=0", name);
        return;
    }
    char buf[160];
    size_t n = 0;
    for (; v[n] && n < sizeof buf - 1; n++)
        buf[n] = (v[n] > ' ' && v[n] <= '~') ? v[n] : '?';
    buf[n] = '\0';
    hl_line("HL env name=%s value=%s", name, n ? buf : "?");
}

int main(int argc, char **argv)
{
    if (argc != 2)
        sc_usage(USAGE);
    const char *mode = argv[1];
    int m_default = strcmp(mode, "default") == 0, m_mallopt = strcmp(mode, "mallopt") == 0;
    int m_env = strcmp(mode, "env") == 0, m_tun = strcmp(mode, "tunables") == 0;
    if (!(m_default || m_mallopt || m_env || m_tun))
        sc_usage(USAGE);

    hl_pid();
    hl_line("HL mode name=%s", mode);
    if (m_mallopt) {
        int r = mallopt(M_TRIM_THRESHOLD, BIG_THRESHOLD);
        hl_mallopt(M_TRIM_THRESHOLD, BIG_THRESHOLD, r);
    }
    if (m_env)
        print_env("MALLOC_TRIM_THRESHOLD_");
    if (m_tun)
        print_env("GLIBC_TUNABLES");
    sc_phase("start");

    for (int i = 0; i < NBLOCKS; i++) {
        char *p = malloc(BLOCK);
        if (!p)
            hl_die("malloc");
        sc_fill(p, BLOCK, i + 1);
        blocks[i] = p;
    }
    sc_phase("alloc");

    for (int i = 0; i < NBLOCKS; i++) {
        free(blocks[i]);
        blocks[i] = NULL;
    }
    sc_phase("free");

    hl_done();
    return 0;
}
