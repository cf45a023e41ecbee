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

#if defined(__linux__)
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/// Writes `step` and `err` to the error pipe and exits (child side of depot_spawn_limited).
static void depot_spawn_fail(int fd, int step, int err) {
    int report[2] = {step, err};
    ssize_t ignored = write(fd, report, sizeof report);
    (void)ignored;
    _exit(127);
}

int depot_spawn_limited(const char *path, char *const argv[], char *const envp[], const char *dir, const char *log,
                        const int *resources, const unsigned long long *values, int count, int *pid_out, int *failed_step) {
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0) { *failed_step = 0; return errno; }
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(pipefd[0]); close(pipefd[1]);
        *failed_step = 0;
        return e;
    }
    if (pid == 0) {
        // Child: only async-signal-safe calls from here to execve.
        int report = pipefd[1];
        setpgid(0, 0);
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        for (int sig = 1; sig < NSIG; sig++) sigaction(sig, &dfl, NULL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        int in = open("/dev/null", O_RDONLY);
        if (in < 0) depot_spawn_fail(report, 1, errno);
        int out = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (out < 0) depot_spawn_fail(report, 1, errno);
        // Move the error pipe above the standard descriptors before dup2 may overwrite it.
        if (report < 3) {
            int moved = fcntl(report, F_DUPFD_CLOEXEC, 3);
            if (moved < 0) _exit(127);
            report = moved;
        }
        if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0) depot_spawn_fail(report, 1, errno);
        if (dir != NULL && chdir(dir) != 0) depot_spawn_fail(report, 2, errno);
        // Nothing of the runner's (catalog, sockets, caches) is inherited: close every other descriptor.
        int maxfd = (int)sysconf(_SC_OPEN_MAX);
        if (maxfd < 0 || maxfd > 1 << 20) maxfd = 1 << 20;
#ifdef SYS_close_range
        if (syscall(SYS_close_range, 3, report - 1, 0) != 0) {
            for (int fd = 3; fd < report; fd++) close(fd);
        }
        if (syscall(SYS_close_range, report + 1, ~0U, 0) != 0) {
            for (int fd = report + 1; fd < maxfd; fd++) close(fd);
        }
#else
        for (int fd = 3; fd < maxfd; fd++) if (fd != report) close(fd);
#endif
        for (int i = 0; i < count; i++) {
            struct rlimit limit = {(rlim_t)values[i], (rlim_t)values[i]};
            // CPU time: SIGXCPU at the limit (a clear signal), SIGKILL 5 s of CPU later.
            if (resources[i] == RLIMIT_CPU) limit.rlim_max = limit.rlim_cur + 5;
            if (setrlimit((__rlimit_resource_t)resources[i], &limit) != 0) depot_spawn_fail(report, 3, errno);
        }
        execve(path, argv, envp);
        depot_spawn_fail(report, 4, errno);
    }
    close(pipefd[1]);
    int report[2] = {0, 0};
    ssize_t n;
    do { n = read(pipefd[0], report, sizeof report); } while (n < 0 && errno == EINTR);
    close(pipefd[0]);
    if (n == (ssize_t)sizeof report) {
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
        *failed_step = report[0];
        return report[1] != 0 ? report[1] : EIO;
    }
    *pid_out = pid;
    return 0;
}
#else
int depot_spawn_limited(const char *path, char *const argv[], char *const envp[], const char *dir, const char *log,
                        const int *resources, const unsigned long long *values, int count, int *pid_out, int *failed_step) {
    (void)path; (void)argv; (void)envp; (void)dir; (void)log; (void)resources; (void)values; (void)count; (void)pid_out;
    *failed_step = 0;
    return ENOSYS;
}
#endif
