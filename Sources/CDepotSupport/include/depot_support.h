#ifndef DEPOT_SUPPORT_H
#define DEPOT_SUPPORT_H
#include <stddef.h>
#include <stdint.h>

/// CRC-32C (Castagnoli) of `length` bytes, continuing from `crc` (0 to start).
/// Uses the SSE4.2 crc32 instruction (8 bytes a step) where the CPU has it,
/// a table-driven loop elsewhere; both give identical results.
uint32_t depot_crc32c(uint32_t crc, const void *data, size_t length);

/// Caps glibc's malloc arenas (no-op elsewhere). Buffers allocated on one thread and freed
/// on another otherwise keep one arena's worth of freed memory resident per thread.
void depot_limit_malloc_arenas(int arenas);

#endif
