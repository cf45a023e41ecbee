import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Test-only fault injection for the POSIX wrappers in `PosixFile.swift`: a test arms a fault
/// ("the next 2 `fdatasync`s of a path containing `/packs/` fail with EIO") and the wrapper
/// behaves as if the kernel had returned that errno, without touching the file.
///
/// Cost when disarmed: `check` is one relaxed atomic load of the armed count, inlined.
///
/// Why in-process only (no environment variable, no config key): nothing outside the process
/// can arm a fault, so a production server cannot pick one up from a stray `DEPOT_...` variable
/// or a copied test config. The only way in is calling `arm`, which no code under `Sources/`
/// does (tests call it; a test checks that no file under `Sources/` does). Every fault
/// needs a non-empty path filter, so a fault armed by one test cannot hit another test's store
/// running in parallel (each test uses its own temporary directory).
public enum FaultInjection {
    /// The operations a fault can be armed for, each consulted by one wrapper family.
    public enum Operation: String, Sendable, CaseIterable {
        /// `open(2)` of a file (`PosixFile.init`) and `opendir(3)` (`FileSystem.list`).
        case open
        /// `stat(2)` (`FileSystem.probe`).
        case stat
        /// `pread`/`preadv`/`read` (`PosixFile.read...`).
        case read
        /// `pwrite`/`pwritev`/`write` (`PosixFile.write...`): ENOSPC for a full disk.
        case write
        /// `fdatasync`/`fsync` (`PosixFile.sync`, `FileSystem.syncDirectory`).
        case fdatasync
    }

    /// One armed fault.
    public struct Fault: Sendable {
        public let id: Int
        public let operation: Operation
        public let errno: Int32
        /// The fault fires only for paths containing this (never empty).
        public let pathContains: String
        /// How many more times it fires; nil: until disarmed.
        public var remaining: Int?
    }

    private static let armedCount = Atomic<Int>(0)
    private static let faults = Locked<(next: Int, list: [Fault], fired: [Int: Int])>((1, [], [:]))

    /// Arms a fault; returns its id (for `disarm` and `firedCount`).
    @discardableResult
    public static func arm(_ operation: Operation, errno code: Int32, pathContains: String, count: Int? = nil) -> Int {
        precondition(!pathContains.isEmpty, "a fault needs a path filter (tests run in parallel)")
        precondition(count.map { $0 > 0 } ?? true, "count must be positive")
        return faults.withLock { s in
            let id = s.next
            s.next += 1
            s.list.append(Fault(id: id, operation: operation, errno: code, pathContains: pathContains, remaining: count))
            armedCount.store(s.list.count, ordering: .relaxed)
            return id
        }
    }

    /// Disarms one fault (a no-op if it already ran out).
    public static func disarm(_ id: Int) {
        faults.withLock { s in
            s.list.removeAll { $0.id == id }
            armedCount.store(s.list.count, ordering: .relaxed)
        }
    }

    /// Disarms every fault whose filter contains `pathContains` (a test's directory).
    public static func disarmAll(pathContains: String) {
        faults.withLock { s in
            s.list.removeAll { $0.pathContains.contains(pathContains) }
            armedCount.store(s.list.count, ordering: .relaxed)
        }
    }

    /// How many times fault `id` has fired.
    public static func firedCount(_ id: Int) -> Int { faults.withLock { $0.fired[id] ?? 0 } }

    /// The errno to fail `operation` on `path` with, or nil to go ahead. Called by the wrappers.
    @inline(__always)
    public static func check(_ operation: Operation, _ path: String) -> Int32? {
        if armedCount.load(ordering: .relaxed) == 0 { return nil }
        return slowCheck(operation, path)
    }

    @inline(never)
    private static func slowCheck(_ operation: Operation, _ path: String) -> Int32? {
        faults.withLock { s in
            guard let i = s.list.firstIndex(where: { $0.operation == operation && path.contains($0.pathContains) }) else {
                return nil
            }
            let fault = s.list[i]
            s.fired[fault.id, default: 0] += 1
            if let left = fault.remaining {
                if left <= 1 { s.list.remove(at: i) } else { s.list[i].remaining = left - 1 }
                armedCount.store(s.list.count, ordering: .relaxed)
            }
            return fault.errno
        }
    }
}
