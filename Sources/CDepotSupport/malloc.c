#include "depot_support.h"
#if defined(__GLIBC__)
#include <malloc.h>
#endif

void depot_tune_malloc(int arenas, int keep_bytes) {
#if defined(__GLIBC__)
    mallopt(M_ARENA_MAX, arenas);
    mallopt(M_MMAP_THRESHOLD, keep_bytes);
    mallopt(M_TRIM_THRESHOLD, keep_bytes * 4);
#else
    (void)arenas;
    (void)keep_bytes;
#endif
}

#if defined(__GLIBC__)
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

static size_t heap_in_use(void) {
    struct mallinfo2 m = mallinfo2();
    return m.uordblks + m.hblkhd;
}

static atomic_int sampler_running;
static atomic_size_t sampler_peak;
static pthread_t sampler_thread;

static void *sampler(void *unused) {
    (void)unused;
    struct timespec pause = {0, 500 * 1000};
    while (atomic_load(&sampler_running)) {
        size_t now = heap_in_use();
        size_t peak = atomic_load(&sampler_peak);
        while (now > peak && !atomic_compare_exchange_weak(&sampler_peak, &peak, now)) {}
        nanosleep(&pause, NULL);
    }
    return NULL;
}
#endif

size_t depot_heap_in_use(void) {
#if defined(__GLIBC__)
    return heap_in_use();
#else
    return 0;
#endif
}

int depot_heap_sampler_start(void) {
#if defined(__GLIBC__)
    atomic_store(&sampler_peak, heap_in_use());
    atomic_store(&sampler_running, 1);
    return pthread_create(&sampler_thread, NULL, sampler, NULL);
#else
    return -1;
#endif
}

size_t depot_heap_sampler_stop(void) {
#if defined(__GLIBC__)
    size_t now = heap_in_use();
    atomic_store(&sampler_running, 0);
    pthread_join(sampler_thread, NULL);
    return now > atomic_load(&sampler_peak) ? now : atomic_load(&sampler_peak);
#else
    return 0;
#endif
}
