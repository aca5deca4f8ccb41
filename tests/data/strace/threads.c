/* Threads: four workers churn mmap/madvise/munmap, joined; then two more are left running
 * inside mmap/munmap loops while main calls exit_group. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

static void *churn(void *arg) {
    long n = (long)arg;
    for (long i = 0; n < 0 || i < n; i++) {
        void *p = mmap(NULL, 65536, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        madvise(p, 65536, MADV_DONTNEED);
        munmap(p, 65536);
    }
    return NULL;
}

int main(void) {
    pthread_t t[6];
    for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, churn, (void *)20L);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    for (int i = 4; i < 6; i++) pthread_create(&t[i], NULL, churn, (void *)-1L);
    usleep(2000);
    exit(3);
}
