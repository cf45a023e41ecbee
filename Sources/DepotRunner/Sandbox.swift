import CDepotSupport
import DepotClient
import DepotCore
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// How stages are confined: `bubblewrap` (the default) or `off` (unconfined, as the runner's user).
public enum SandboxMode: String, Sendable, CaseIterable {
    case bubblewrap
    case off
}

/// Resource limits of one stage; 0 means none.
public struct StageLimits: Sendable, Equatable {
    /// Address space of each process (RLIMIT_AS). CUDA reserves far more address space than it
    /// uses: a GPU runner sets 0.
    public var memoryBytes: Int64 = 8 << 30
    /// CPU seconds of each process (RLIMIT_CPU); 0: the stage's timeout.
    public var cpuSeconds = 0
    /// Size of any one file a stage writes (RLIMIT_FSIZE), its log included.
    public var fileBytes: Int64 = 16 << 30
    /// Processes and threads of the stage's user (RLIMIT_NPROC).
    public var processes = 1024
    /// What the stage may add to its workspace (and its log), polled while it runs.
    public var workspaceBytes: Int64 = 32 << 30

    public init() {}

    func summary(timeoutSeconds: Int) -> String {
        func size(_ b: Int64) -> String { b == 0 ? "unlimited" : TransferProgress.bytes(b) }
        let cpu = cpuSeconds > 0 ? cpuSeconds : timeoutSeconds
        return
            "memory \(size(memoryBytes)), cpu \(cpu) s, file size \(size(fileBytes)), processes \(processes == 0 ? "unlimited" : String(processes)), workspace \(size(workspaceBytes))"
    }
}

/// Settings of the stage sandbox (`pipelines.sandbox`, `pipelines.runner.limits`, `depot runner --sandbox`).
public struct SandboxOptions: Sendable {
    public var mode: SandboxMode = .bubblewrap
    /// The bubblewrap executable (a name is looked up in PATH).
    public var bwrap = "bwrap"
    /// Host paths a stage may read besides the system, the Python and the hooks (e.g. /opt/tensorrt).
    public var readOnlyPaths: [String] = []
    /// Device nodes passed through (e.g. /dev/nvidia0); nil: the /dev/nvidia* nodes present at start.
    public var devices: [String]?
    /// Paths no stage may see even when they lie inside a path it reads (the storage root and the
    /// config file of `depot serve`); the runner's work directory always is one.
    public var hiddenPaths: [String] = []
    /// When the runner is root, stages run as this uid (plus the job slot: one uid per concurrent job),
    /// so that RLIMIT_NPROC counts only that job's processes.
    public var firstUID: UInt32 = 2_000_000_000
    public var limits = StageLimits()

    public init() {}
}

/// The stage sandbox of one runner: probed once at start, then used for every stage command.
///
/// As root, bubblewrap runs privileged (no user namespace: one mapped to root would exempt the stage
/// from RLIMIT_NPROC) and `setpriv` drops the command to an unprivileged uid of its own, with no
/// capabilities and no_new_privs. As any other user, bubblewrap makes a user namespace and the stage
/// runs as uid 65534 in it. Either way: its own pid, network, IPC and UTS namespaces, a read-only
/// view of the system, the Python and the hooks only, the workspace the only writable path.
final class Sandbox: Sendable {
    enum State: Sendable, Equatable {
        case confined
        case off
        case unavailable(String)
    }

    static let workspaceInside = "/workspace"

    let options: SandboxOptions
    private let probed: Locked<State>
    var state: State { probed.withLock { $0 } }
    let bwrapPath: String
    let setprivPath: String
    let rootMode: Bool
    /// Host paths bound read-only at the same place (parents before children).
    let readOnly: [String]
    /// Top-level symlinks of a merged /usr (`/bin -> usr/bin`).
    let symlinks: [(link: String, target: String)]
    let devices: [String]
    /// Hidden paths that lie inside a read-only path: covered (an empty tmpfs, or /dev/null for a file).
    let hidden: [String]
    /// The Python that runs built-ins (its real executable path, found at start).
    let python: String
    private let slots: Locked<Set<Int>>

    init(options: SandboxOptions, runner: RunnerOptions) {
        self.options = options
        workDirectory = runner.workDirectory
        rootMode = geteuid() == 0
        slots = Locked([])
        probed = Locked(.off)
        let fm = FileManager.default
        bwrapPath = Self.which(options.bwrap) ?? options.bwrap
        setprivPath = Self.which("setpriv") ?? "/usr/bin/setpriv"
        // Only built-ins use the Python, and they need the hooks directory.
        let pythonInfo = runner.hooksDirectory == nil ? nil : Self.pythonPaths(runner.python)
        python = pythonInfo?.executable ?? runner.python

        var paths: [String] = ["/usr"]
        var links: [(String, String)] = []
        for top in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
            if let target = try? fm.destinationOfSymbolicLink(atPath: top) {
                links.append((top, target))
            } else if fm.fileExists(atPath: top) {
                paths.append(top)
            }
        }
        symlinks = links
        // The pieces of /etc programs need: the loader's cache, certificates, users, name resolution, time.
        for name in [
            "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "ssl", "ca-certificates", "ca-certificates.conf", "pki",
            "crypto-policies", "passwd", "group", "nsswitch.conf", "hosts", "host.conf", "resolv.conf", "gai.conf", "protocols",
            "services", "localtime", "timezone", "mime.types", "os-release", "debian_version",
        ] {
            let p = "/etc/" + name
            if fm.fileExists(atPath: p) { paths.append(p) }
        }
        // Never a directory that holds the runner's work directory (with the embedded runner: the storage root).
        let work = URL(fileURLWithPath: runner.workDirectory).standardizedFileURL.path
        let extra = (pythonInfo?.paths ?? []) + [runner.hooksDirectory].compactMap { $0 } + options.readOnlyPaths
        for p in extra {
            let path = URL(fileURLWithPath: p).standardizedFileURL.path
            guard path.hasPrefix("/"), fm.fileExists(atPath: path), !Self.contains(path, work) else { continue }
            paths.append(path)
        }
        readOnly = Self.minimal(paths)
        hidden = Self.minimal([work] + options.hiddenPaths.map { URL(fileURLWithPath: $0).standardizedFileURL.path })
        if let list = options.devices {
            devices = list
        } else {
            devices = ((try? fm.contentsOfDirectory(atPath: "/dev")) ?? []).filter { $0.hasPrefix("nvidia") }.sorted().map { "/dev/" + $0 }
        }

        guard options.mode == .bubblewrap else { return }
        if Self.which(options.bwrap) == nil {
            probed.withLock { $0 = .unavailable("bubblewrap ('\(options.bwrap)') was not found in PATH") }
        } else if rootMode, Self.which("setpriv") == nil {
            probed.withLock { $0 = .unavailable("setpriv (util-linux) was not found in PATH; it drops stages to their own uid") }
        } else {
            // Confirmed (or not) by `probe` when the runner starts.
            probed.withLock { $0 = .confined }
        }
    }

    private let workDirectory: String

    /// Runs the check once (the runner does at start, before it leases anything).
    func probe() async {
        guard state == .confined else { return }
        let found = await check(workDirectory: workDirectory)
        probed.withLock { $0 = found }
    }

    /// What the sandbox is, for the runner's start-up message and every job's log.
    func describe(timeoutSeconds: Int, network: Bool) -> String {
        switch state {
        case .off:
            return
                "sandbox OFF (pipelines.sandbox: off): the stage runs unconfined as uid \(geteuid()), with the runner's view of files, processes and network; limits: \(options.limits.summary(timeoutSeconds: timeoutSeconds))"
        case .unavailable(let why):
            return "sandbox unavailable: \(why)"
        case .confined:
            let who =
                rootMode ? "an unprivileged uid of its own (\(options.firstUID)+slot), no capabilities" : "uid 65534 in a user namespace"
            return
                "sandbox: bubblewrap, \(who); own pid/ipc/uts namespaces, \(network ? "the host's network (network: true)" : "no network"); read-only: \(readOnly.joined(separator: " ")); writable: the workspace only; limits: \(options.limits.summary(timeoutSeconds: timeoutSeconds))"
        }
    }

    /// The refusal when stages cannot be confined and the operator did not turn the sandbox off.
    var unavailableMessage: String? {
        guard case .unavailable(let why) = state else { return nil }
        return
            "stages do not run without a sandbox: \(why). Install bubblewrap (apt-get install bubblewrap) or, to run stages unconfined, set pipelines.sandbox: off (depot runner --sandbox off)"
    }

    // MARK: Job slots (one outside uid each)

    func acquireSlot() -> Int {
        slots.withLock { used in
            var slot = 0
            while used.contains(slot) { slot += 1 }
            used.insert(slot)
            return slot
        }
    }

    func releaseSlot(_ slot: Int) { _ = slots.withLock { $0.remove(slot) } }

    func uid(slot: Int) -> UInt32 { options.firstUID &+ UInt32(slot) }

    // MARK: Commands

    /// A stage command ready for `StageProcess`.
    struct Launch {
        var path: String
        var argv: [String]
        /// Resource limits (RLIMIT_*, value).
        var limits: [(Int32, UInt64)]
        /// The workspace as the stage sees it.
        var workspace: String
    }

    /// The workspace layout every stage gets: input (read-only in the sandbox), output, tmp (its /tmp), shm (its /dev/shm).
    static func prepareWorkspace(_ workspace: String) throws {
        for sub in ["input", "output", "tmp", "shm"] {
            try FileManager.default.createDirectory(atPath: workspace + "/" + sub, withIntermediateDirectories: true)
        }
    }

    /// Hands the workspace to the stage's uid (root only; nothing to do otherwise).
    func handOver(_ workspace: String, slot: Int) throws {
        guard state == .confined, rootMode else { return }
        let uid = uid(slot: slot)
        try Self.chownTree(workspace, uid: uid, gid: uid)
    }

    func launch(argv: [String], workspace: String, slot: Int, network: Bool, timeoutSeconds: Int) throws -> Launch {
        guard let program = argv.first else { throw RunnerError("empty command") }
        let l = options.limits
        var limits: [(Int32, UInt64)] = []
        if l.memoryBytes > 0 { limits.append((Int32(RLIMIT_AS.rawValue), UInt64(l.memoryBytes))) }
        limits.append((Int32(RLIMIT_CPU.rawValue), UInt64(l.cpuSeconds > 0 ? l.cpuSeconds : max(1, timeoutSeconds))))
        if l.fileBytes > 0 { limits.append((Int32(RLIMIT_FSIZE.rawValue), UInt64(l.fileBytes))) }
        switch state {
        case .unavailable(let why):
            throw RunnerError(unavailableMessage ?? why, permanent: true)
        case .off:
            guard let path = Self.which(program) else { throw RunnerError("cannot start '\(program)': not found in PATH") }
            return Launch(path: path, argv: argv, limits: limits, workspace: workspace)
        case .confined:
            // The same message as without a sandbox when the program does not exist at all.
            guard Self.which(program) != nil else { throw RunnerError("cannot start '\(program)': not found") }
            if l.processes > 0 { limits.append((Int32(__RLIMIT_NPROC.rawValue), UInt64(l.processes))) }
            var extra: [String] = []
            // An exec stage's own program, when it lives outside what is already visible.
            // (Through a top-level link like /bin -> usr/bin it is already there.)
            if program.hasPrefix("/"), FileManager.default.fileExists(atPath: program),
                !symlinks.contains(where: { Self.contains($0.link, program) })
            {
                let real = URL(fileURLWithPath: program).resolvingSymlinksInPath().path
                if !readOnly.contains(where: { Self.contains($0, program) || Self.contains($0, real) }),
                    !hidden.contains(where: { Self.contains($0, program) || Self.contains($0, real) })
                {
                    extra.append(program)
                }
            }
            let args = bwrapArguments(workspace: workspace, slot: slot, network: network, extraReadOnly: extra) + argv
            return Launch(path: bwrapPath, argv: args, limits: limits, workspace: Self.workspaceInside)
        }
    }

    func bwrapArguments(workspace: String, slot: Int, network: Bool, extraReadOnly: [String] = []) -> [String] {
        var a = [bwrapPath]
        if rootMode {
            a += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
            if !network { a += ["--unshare-net"] }
        } else {
            a += ["--unshare-all", "--unshare-user", "--disable-userns", "--uid", "65534", "--gid", "65534"]
            if network { a += ["--share-net"] }
        }
        a += ["--die-with-parent", "--new-session", "--hostname", "depot-stage"]
        let ro = Self.minimal(readOnly + extraReadOnly)
        // The stage's /tmp first: a read-only path that lies under /tmp (a checkout in /tmp holding
        // the hooks) is then mounted over it, not hidden by it.
        a += ["--bind", workspace + "/tmp", "/tmp"]
        // Parents of mount points are made 0755 (bubblewrap copies a source parent's mode: /root is 0700).
        var made: Set<String> = ["/", "/tmp"]
        let mounts = ro + devices + [Self.workspaceInside]
        for path in ro + devices {
            var parents: [String] = []
            var p = (path as NSString).deletingLastPathComponent
            while p != "/" && !p.isEmpty {
                parents.append(p)
                p = (p as NSString).deletingLastPathComponent
            }
            for parent in parents.reversed() where !made.contains(parent) {
                // Not inside another mount (that would be the host's directory).
                if mounts.contains(where: { $0 != parent && Self.contains($0, parent) }) { break }
                made.insert(parent)
                a += ["--perms", "0755", "--dir", parent]
            }
        }
        for path in ro { a += ["--ro-bind", path, path] }
        for path in hidden where ro.contains(where: { Self.contains($0, path) }) && FileManager.default.fileExists(atPath: path) {
            var isDir: ObjCBool = false
            _ = FileManager.default.fileExists(atPath: path, isDirectory: &isDir)
            a += isDir.boolValue ? ["--tmpfs", path] : ["--ro-bind", "/dev/null", path]
        }
        for (link, target) in symlinks { a += ["--symlink", target, link] }
        a += ["--proc", "/proc", "--dev", "/dev"]
        for d in devices where FileManager.default.fileExists(atPath: d) { a += ["--dev-bind", d, d] }
        let inside = Self.workspaceInside
        a += ["--bind", workspace, inside, "--ro-bind", workspace + "/input", inside + "/input"]
        a += ["--bind", workspace + "/shm", "/dev/shm"]
        // The sandbox's own root (a tmpfs holding the mount points) is read-only too: in a user
        // namespace the stage would own it, and a tmpfs fills memory.
        a += ["--remount-ro", "/", "--chdir", inside]
        if rootMode {
            let uid = String(uid(slot: slot))
            a += [
                "--", setprivPath, "--reuid=\(uid)", "--regid=\(uid)", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all",
                "--no-new-privs", "--",
            ]
        } else {
            a += ["--"]
        }
        return a
    }

    /// The environment a confined stage sees in place of the runner's HOME, TMPDIR and USER.
    func adjust(_ env: inout [String: String]) {
        guard state == .confined else { return }
        env["HOME"] = "/tmp"
        env["TMPDIR"] = "/tmp"
        env["USER"] = "nobody"
        env["LOGNAME"] = "nobody"
    }

    // MARK: Helpers

    /// Runs a trivial command (`test -w` on the workspace) in the sandbox once, at start: it works, or why not.
    func check(workDirectory: String) async -> State {
        let ws = workDirectory + "/probe-\(UUID().uuidString.prefix(8))"
        let log = ws + ".log"
        defer {
            try? FileManager.default.removeItem(atPath: ws)
            try? FileManager.default.removeItem(atPath: log)
        }
        do {
            try FileManager.default.createDirectory(atPath: workDirectory, withIntermediateDirectories: true)
            try Self.prepareWorkspace(ws)
            let slot = acquireSlot()
            defer { releaseSlot(slot) }
            try handOver(ws, slot: slot)
            let launch = try self.launch(
                argv: ["/bin/sh", "-c", "test -w /workspace/output && test ! -w /workspace/input"], workspace: ws, slot: slot,
                network: false,
                timeoutSeconds: 30)
            let process = try StageProcess(launch: launch, environment: ["PATH": "/usr/bin:/bin"], directory: ws, log: log)
            let deadline = Date().addingTimeInterval(30)
            let (ended, killed) = await process.wait { Date() > deadline ? "no answer in 30 s" : nil }
            let outcome: StageProcess.Outcome? = killed == nil ? ended : nil
            if outcome == .exited(0) { return .confined }
            let said = ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
            return .unavailable(
                "\(bwrapPath) does not work here (\(outcome.map { "\($0)" } ?? "no answer in 30 s"))\(said.isEmpty ? "" : ": " + String(said.suffix(500)))"
            )
        } catch {
            return .unavailable("\(bwrapPath) does not work here: \(error)")
        }
    }

    /// `path` is `dir` or inside it.
    static func contains(_ dir: String, _ path: String) -> Bool {
        dir == "/" || path == dir || path.hasPrefix(dir.hasSuffix("/") ? dir : dir + "/")
    }

    /// Sorted, without paths inside another one.
    static func minimal(_ paths: [String]) -> [String] {
        var out: [String] = []
        for p in Set(paths).sorted() where !out.contains(where: { contains($0, p) }) { out.append(p) }
        return out
    }

    /// An executable: `name` itself when it has a slash, else the first match in PATH.
    static func which(_ name: String) -> String? {
        if name.contains("/") { return access(name, X_OK) == 0 ? name : nil }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for dir in path.split(separator: ":") where !dir.isEmpty {
            let candidate = "\(dir)/\(name)"
            var st = stat()
            if stat(candidate, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }

    /// Where a Python lives: its executable (a venv's, not resolved) and the directories it reads
    /// (prefixes, the real interpreter's, sys.path). Nil when it cannot be run.
    static func pythonPaths(_ python: String) -> (executable: String, paths: [String])? {
        guard let exe = which(python) else { return nil }
        let script =
            "import os, sys\nfor p in [sys.executable, sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, os.path.dirname(os.path.realpath(sys.executable))] + sys.path: print(p)"
        let out = Pipe()
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = ["-c", script]
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        p.standardInput = FileHandle.nullDevice
        do { try p.run() } catch { return nil }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { return nil }
        let lines = String(decoding: data, as: UTF8.self).split(separator: "\n").map(String.init)
        guard let executable = lines.first, executable.hasPrefix("/") else { return nil }
        let paths = lines.dropFirst().filter { $0.hasPrefix("/") && !$0.hasSuffix(".zip") }
        return (executable, Array(paths))
    }

    /// lchown of a tree, never following links.
    static func chownTree(_ root: String, uid: UInt32, gid: UInt32) throws {
        guard lchown(root, uid, gid) == 0 else {
            throw RunnerError("cannot hand \(root) to uid \(uid): \(String(cString: strerror(errno)))")
        }
        guard let dir = opendir(root) else { return }
        defer { closedir(dir) }
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
            if name == "." || name == ".." { continue }
            let path = root + "/" + name
            var st = stat()
            guard lstat(path, &st) == 0 else { continue }
            if (st.st_mode & S_IFMT) == S_IFDIR {
                try chownTree(path, uid: uid, gid: gid)
            } else if lchown(path, uid, gid) != 0 {
                throw RunnerError("cannot hand \(path) to uid \(uid): \(String(cString: strerror(errno)))")
            }
        }
    }

    /// Bytes a tree takes: per entry the larger of its size and its allocated blocks; links are not followed.
    static func usage(_ root: String) -> Int64 {
        var st = stat()
        guard lstat(root, &st) == 0 else { return 0 }
        var total = max(Int64(st.st_size), Int64(st.st_blocks) * 512)
        guard (st.st_mode & S_IFMT) == S_IFDIR, let dir = opendir(root) else { return total }
        defer { closedir(dir) }
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
            if name == "." || name == ".." { continue }
            total += usage(root + "/" + name)
        }
        return total
    }
}
