/* A non-leader thread calls execve while another thread keeps mapping memory. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

static void *execer(void *arg) {
    (void)arg;
    usleep(2000);
    char *argv[] = {"true", NULL};
    execv("/bin/true", argv);
    return NULL;
}

static void *churn(void *arg) {
    (void)arg;
    for (;;) {
        void *p = mmap(NULL, 65536, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        munmap(p, 65536);
    }
    return NULL;
}

int main(void) {
    pthread_t a, b;
    pthread_create(&b, NULL, churn, NULL);
    pthread_create(&a, NULL, execer, NULL);
    pause();
    return 1;
}
