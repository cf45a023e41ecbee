#ifndef DEPOT_SUPPORT_H
#define DEPOT_SUPPORT_H
#include <stddef.h>
#include <stdint.h>

/// CRC-32C (Castagnoli) of `length` bytes, continuing from `crc` (0 to start).
/// Uses the SSE4.2 crc32 instruction (8 bytes a step, three streams interleaved) where the
/// CPU has it, a table-driven loop elsewhere; both give identical results.
uint32_t depot_crc32c(uint32_t crc, const void *data, size_t length);

/// The same CRC by the table-driven loop alone, whatever the CPU (tests compare the two).
uint32_t depot_crc32c_portable(uint32_t crc, const void *data, size_t length);

/// Whether depot_sha256_blocks_x2 can run here (x86-64 with the SHA extensions): 1 or 0.
int depot_sha256_x2_available(void);

/// Runs SHA-256's block function over two independent streams at once: `blocks` 64-byte blocks
/// from `da` into the state `ha` (h0..h7, as OpenSSL's SHA256_CTX.h holds them) and as many
/// from `db` into `hb`. No padding, no length: the caller does those. Returns 0, or -1 (and
/// touches nothing) where depot_sha256_x2_available() is 0.
int depot_sha256_blocks_x2(uint32_t *ha, const void *da, uint32_t *hb, const void *db, size_t blocks);

/// Byte planes of `elements` elements of `width` bytes: byte k of element e of `input` goes to
/// `output[k * elements + e]` (group), and back (ungroup). SSE2 for widths 2 and 4 on x86-64,
/// scalar loops otherwise; the buffers must not overlap.
void depot_bytes_group(const void *input, size_t elements, size_t width, void *output);
void depot_bytes_ungroup(const void *input, size_t elements, size_t width, void *output);

/// Starts writing back `length` bytes of `fd` from `offset` to the device without waiting
/// (Linux sync_file_range with SYNC_FILE_RANGE_WRITE; a no-op elsewhere). Durability still
/// comes from fdatasync; this only leaves it less to do. Returns 0 or an errno.
int depot_start_writeback(int fd, int64_t offset, int64_t length);

/// Copies up to `length` bytes from `in_fd` at `in_offset` to `out_fd` at `out_offset` inside
/// the kernel (neither file's position moves): Linux copy_file_range, one copy through the page
/// cache instead of two, or shared blocks where the file system can (reflink). Returns the
/// bytes copied (0 at the input's end), or -errno; -ENOSYS elsewhere.
int64_t depot_copy_file_range(int in_fd, int64_t in_offset, int out_fd, int64_t out_offset, int64_t length);

/// Tunes glibc's malloc for a server that moves MiB-sized buffers between threads (no-op
/// elsewhere): at most `arenas` arenas (freed memory otherwise stays resident per thread), and
/// buffers up to `keep_bytes` served from the heap and kept there instead of being mmapped and
/// unmapped each time (every fresh mapping costs a page fault per 4 KiB).
void depot_tune_malloc(int arenas, int keep_bytes);

/// Adds "change directory to `dir`" to posix_spawn file actions (glibc's
/// posix_spawn_file_actions_addchdir_np, which needs _GNU_SOURCE). Returns 0 or an errno.
/// `actions` is a posix_spawn_file_actions_t *.
int depot_spawn_addchdir(void *actions, const char *dir);

/// Bytes of heap in use (glibc mallinfo2: allocated arena blocks plus mmapped blocks; 0 elsewhere).
size_t depot_heap_in_use(void);

/// Tests measure peak heap use: start a thread sampling depot_heap_in_use every 0.5 ms, and stop
/// it returning the highest value seen. One sampler at a time. Start returns 0 or an errno.
int depot_heap_sampler_start(void);
size_t depot_heap_sampler_stop(void);

/// Starts `path` (an absolute path; no PATH search) as a child in a new process group: stdin
/// /dev/null, stdout and stderr appended to `log`, working directory `dir`, every other descriptor
/// closed, default signal dispositions, an empty signal mask, and the `count` resource limits
/// (`resources[i]` an RLIMIT_* constant, soft and hard both `values[i]`). Returns 0 with the
/// child's pid in `pid_out`, or an errno with `failed_step`: 0 fork, 1 standard descriptors,
/// 2 chdir, 3 setrlimit, 4 execve (the failed child is reaped).
int depot_spawn_limited(const char *path, char *const argv[], char *const envp[], const char *dir, const char *log,
                        const int *resources, const unsigned long long *values, int count, int *pid_out, int *failed_step);

#endif
