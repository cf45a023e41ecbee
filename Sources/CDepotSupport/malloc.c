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
