/* exit_code - mallocs a little, then exits with a chosen code.
 *
 *   exit_code [code]      code 0..255, default 7
 *
 * Prints: HL pid, HL brk phase=end, HL exit code=<code>, HL done, then exit(code).
 */
#define _GNU_SOURCE
#include "report.h"

#include <string.h>

#define NBLOCKS 16
#define BLOCK 256

static char *volatile blocks[NBLOCKS];

int main(int argc, char **argv)
{
    int code = 7;
    if (argc > 1) {
        char *end;
        errno = 0;
        long v = strtol(argv[1], &end, 10);
        if (errno || end == argv[1] || *end != '\0' || v < 0 || v > 255)
            hl_die("parse code (0..255)");
        code = (int)v;
    }

    hl_pid();
    for (int i = 0; i < NBLOCKS; i++) {
        char *p = malloc(BLOCK);
        if (!p)
            hl_die("malloc");
        memset(p, i, BLOCK);
        blocks[i] = p;
    }
    hl_brk("end");
    hl_exit(code);
    hl_done();
    exit(code);
}
