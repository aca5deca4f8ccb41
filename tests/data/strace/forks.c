/* Processes: fork children that exit, are killed by SIGKILL, crash with SIGSEGV, exec; vfork+exec;
 * raw fork/vfork syscalls. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void touch(void) {
    void *p = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    munmap(p, 8192);
}

int main(void) {
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    int st;
    pid_t c = fork();
    if (c == 0) { touch(); _exit(7); }
    waitpid(c, &st, 0);
    c = fork();
    if (c == 0) { touch(); raise(SIGKILL); _exit(1); }
    waitpid(c, &st, 0);
    c = fork();
    if (c == 0) { touch(); *(volatile int *)8 = 1; _exit(1); }
    waitpid(c, &st, 0);
    c = fork();
    if (c == 0) {
        char *argv[] = {"true", NULL};
        execv("/nonexistent/true", argv);
        execv("/bin/true", argv);
        _exit(127);
    }
    waitpid(c, &st, 0);
    c = vfork();
    if (c == 0) {
        char *argv[] = {"true", NULL};
        execv("/bin/true", argv);
        _exit(127);
    }
    waitpid(c, &st, 0);
    c = syscall(SYS_fork);
    if (c == 0) { touch(); syscall(SYS_exit_group, 0); }
    waitpid(c, &st, 0);
    c = syscall(SYS_vfork);
    if (c == 0) syscall(SYS_exit_group, 9);
    waitpid(c, &st, 0);
    touch();
    return 0;
}
