import CDepotSupport
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A stage's command running in its own process group, its stdout and stderr appended to a
/// log file. The whole group is killed on timeout or cancellation, so a shell script's
/// children do not outlive the job.
final class StageProcess: @unchecked Sendable { // pid is written once, before sharing
    let pid: pid_t

    /// How a stage process ended.
    enum Outcome: Equatable {
        case exited(Int32)
        case signalled(Int32)
    }

    init(argv: [String], environment: [String: String], directory: String, log: String) throws {
        guard let program = argv.first else { throw RunnerError("empty command") }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let chdir = depot_spawn_addchdir(&actions, directory)
        guard chdir == 0 else { throw RunnerError("cannot set the stage's working directory: \(String(cString: strerror(chdir)))") }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setpgroup(&attributes, 0)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        sigaddset(&defaults, SIGPIPE)
        sigaddset(&defaults, SIGTERM)
        sigaddset(&defaults, SIGINT)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        var unblocked = sigset_t()
        sigemptyset(&unblocked)
        posix_spawnattr_setsigmask(&attributes, &unblocked)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))
        let cArgs = argv.map { strdup($0) } + [nil]
        let cEnv = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for p in cArgs { free(p) }
            for p in cEnv { free(p) }
        }
        var child: pid_t = 0
        // posix_spawnp searches PATH of *this* process for a bare program name.
        let rc = posix_spawnp(&child, program, &actions, &attributes, cArgs, cEnv)
        guard rc == 0 else {
            throw RunnerError("cannot start '\(program)': \(String(cString: strerror(rc)))")
        }
        pid = child
    }

    /// Kills the process group.
    func kill() {
        _ = Glibc.kill(-pid, SIGKILL)
        _ = Glibc.kill(pid, SIGKILL)
    }

    /// Waits for the exit, polling so the caller can stop on timeout or cancellation:
    /// `shouldStop` returns a reason to kill, or nil to keep waiting.
    func wait(shouldStop: @Sendable () async -> String?) async -> (Outcome, killedBecause: String?) {
        var killedBecause: String?
        while true {
            var status: Int32 = 0
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid {
                // The group may have children left (a backgrounded process): they go too.
                _ = Glibc.kill(-pid, SIGKILL)
                let low = status & 0x7f
                if low == 0 { return (.exited((status >> 8) & 0xff), killedBecause) }
                return (.signalled(low), killedBecause)
            }
            if r < 0 && errno != EINTR { return (.signalled(SIGKILL), killedBecause ?? "lost track of the process") }
            if killedBecause == nil, let reason = await shouldStop() {
                killedBecause = reason
                kill()
            }
            try? await Task.sleep(for: .milliseconds(100))
        }
    }
}

/// A runner-side failure with a message for the job's log.
struct RunnerError: Error, CustomStringConvertible {
    var description: String
    var permanent = false
    init(_ message: String, permanent: Bool = false) {
        description = message
        self.permanent = permanent
    }
}
