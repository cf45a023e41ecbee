#define _GNU_SOURCE
#include "depot_support.h"
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

int depot_start_writeback(int fd, int64_t offset, int64_t length) {
#if defined(__linux__)
    /* SYNC_FILE_RANGE_WRITE alone starts writeback and returns; it neither waits nor checks
       the file's writeback error state (only the WAIT flags do), so a later fdatasync still
       reports any error that writeback meets. */
    return sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE) == 0 ? 0 : errno;
#else
    (void)fd; (void)offset; (void)length;
    return 0;
#endif
}

int64_t depot_copy_file_range(int in_fd, int64_t in_offset, int out_fd, int64_t out_offset, int64_t length) {
#if defined(__linux__)
    off64_t in = (off64_t)in_offset, out = (off64_t)out_offset;
    ssize_t n = copy_file_range(in_fd, &in, out_fd, &out, (size_t)length, 0);
    return n < 0 ? -(int64_t)errno : (int64_t)n;
#else
    (void)in_fd; (void)in_offset; (void)out_fd; (void)out_offset; (void)length;
    return -ENOSYS;
#endif
}
