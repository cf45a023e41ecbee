#define _GNU_SOURCE
#include "depot_support.h"
#include <errno.h>
#include <spawn.h>

int depot_spawn_addchdir(void *actions, const char *dir) {
#if defined(__GLIBC__)
    return posix_spawn_file_actions_addchdir_np((posix_spawn_file_actions_t *)actions, dir);
#else
    (void)actions; (void)dir;
    return ENOSYS;
#endif
}
