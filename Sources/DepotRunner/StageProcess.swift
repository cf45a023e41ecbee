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

    /// Starts `launch` (the sandbox's command line, or the stage's own when the sandbox is off)
    /// with only its standard descriptors, in `directory`, under the launch's resource limits.
    init(launch: Sandbox.Launch, environment: [String: String], directory: String, log: String) throws {
        let cArgs = launch.argv.map { strdup($0) } + [nil]
        let cEnv = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for p in cArgs { free(p) }
            for p in cEnv { free(p) }
        }
        let resources = launch.limits.map { $0.0 }
        let values = launch.limits.map { CUnsignedLongLong($0.1) }
        var child: Int32 = 0
        var step: Int32 = 0
        let rc = depot_spawn_limited(launch.path, cArgs, cEnv, directory, log, resources, values, Int32(resources.count), &child, &step)
        guard rc == 0 else {
            let what = [
                "cannot fork", "cannot open the log", "cannot enter the workspace", "cannot set a resource limit", "cannot execute",
            ]
            throw RunnerError("cannot start '\(launch.path)': \(what[Int(max(0, min(4, step)))]): \(String(cString: strerror(rc)))")
        }
        pid = child
    }

    /// Waits at most `seconds` for the exit without an async context (the start-up probe);
    /// nil: it did not end in time and was killed.
    func waitBlocking(seconds: Double) -> Outcome? {
        let deadline = Date().addingTimeInterval(seconds)
        while true {
            var status: Int32 = 0
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid { return reaped(status) }
            if r < 0 && errno != EINTR { return nil }
            if Date() > deadline {
                kill()
                _ = waitpid(pid, &status, 0)
                return nil
            }
            usleep(10_000)
        }
    }

    /// The outcome of an exit `waitpid` reported. The group may have children left (a
    /// backgrounded process): they go too.
    private func reaped(_ status: Int32) -> Outcome {
        _ = Glibc.kill(-pid, SIGKILL)
        let low = status & 0x7f
        return low == 0 ? .exited((status >> 8) & 0xff) : .signalled(low)
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
            if r == pid { return (reaped(status), killedBecause) }
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
