/* Three threads; the process is killed by SIGTERM (one "+++ killed by" line per thread). */
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

static void *idle(void *arg) {
    (void)arg;
    for (;;) pause();
    return NULL;
}

int main(void) {
    pthread_t t;
    pthread_create(&t, NULL, idle, NULL);
    pthread_create(&t, NULL, idle, NULL);
    usleep(1000);
    raise(SIGTERM);
    return 0;
}
