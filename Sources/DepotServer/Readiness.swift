import DepotAPI
import DepotCore
import DepotRegistry
import Foundation
import Logging

/// One dependency `GET /readyz` checks: this replica is ready when every probe succeeds.
/// A storage backend other than local packs (an S3 bucket: a HEAD on it) adds its own probe in
/// `Readiness.probes(registry:config:)`.
public protocol ReadinessProbe: Sendable {
    /// Names the dependency in the answer ("catalog", "storage").
    var name: String { get }
    /// Returns when the dependency answers; throws what failed. Blocking work goes through
    /// `offload`. A check that does not return is reported after `Readiness.timeout` and is not
    /// started again until it does.
    func check() async throws
}

/// The catalog answers a trivial query (the one-row store counters `/metrics` reads too).
struct CatalogProbe: ReadinessProbe {
    let registry: Registry
    var name: String { "catalog" }

    func check() async throws {
        let registry = self.registry
        _ = try await offload { try registry.store.stats(exact: false) }
    }
}

/// Local packs: the storage root and its `packs/` directory can be opened and searched.
struct LocalPacksProbe: ReadinessProbe {
    let root: String
    var name: String { "storage" }

    func check() async throws {
        let root = self.root
        try await offload {
            for (path, shown) in [(root, "storage root"), (root + "/packs", "packs/")] {
                let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
                guard fd >= 0 else {
                    throw DepotError.storage("\(shown) cannot be opened: \(FileSystem.Probe.errnoName(errno))")
                }
                close(fd)
                guard access(path, R_OK | X_OK) == 0 else {
                    throw DepotError.storage("\(shown) is not readable: \(FileSystem.Probe.errnoName(errno))")
                }
            }
        }
    }
}

/// Runs the probes for `/readyz`. Concurrent requests share one run of each probe; a probe that
/// has not answered within `timeout` counts as failed, and later requests wait for that same run
/// (never starting another beside it: a hung mount or catalog holds one thread, not one a request).
public final class Readiness: Sendable {
    /// How long a probe may take before it counts as failed (Kubernetes' default probe timeout is 1 s;
    /// deploy/kubernetes sets 3 s).
    public static let defaultTimeout: Duration = .seconds(2)

    let probes: [any ReadinessProbe]
    let timeout: Duration
    let logger: Logger
    private let running = Locked<[Int: (started: ContinuousClock.Instant, task: Task<String?, Never>)]>([:])
    private let lastFailures = Locked<[String]?>(nil)

    public init(probes: [any ReadinessProbe], timeout: Duration = Readiness.defaultTimeout, logger: Logger) {
        self.probes = probes
        self.timeout = timeout
        self.logger = logger
    }

    /// The probes of a server: the catalog, and the pack storage of `config.storage`.
    static func probes(registry: Registry, config: ServerConfig) -> [any ReadinessProbe] {
        [CatalogProbe(registry: registry), LocalPacksProbe(root: registry.store.root)]
    }

    /// Every probe's outcome, run side by side. State changes are logged (not every request).
    func report() async -> ReadinessReport {
        let checks = await withTaskGroup(of: (Int, String?).self) { group in
            for i in probes.indices { group.addTask { (i, await self.outcome(i)) } }
            var out = [ReadinessReport.Check?](repeating: nil, count: probes.count)
            for await (i, failure) in group { out[i] = .init(name: probes[i].name, ok: failure == nil, error: failure) }
            return out.compactMap { $0 }
        }
        let failures = checks.compactMap { c in c.error.map { "\(c.name): \($0)" } }
        let previous = lastFailures.withLock { last in
            defer { last = failures }
            return last
        }
        if previous != failures {
            if failures.isEmpty {
                logger.info("ready: \(probes.map(\.name).joined(separator: ", ")) answer")
            } else {
                logger.warning("not ready: \(failures.joined(separator: "; "))")
            }
        }
        return ReadinessReport(ready: failures.isEmpty, checks: checks)
    }

    /// nil when probe `i` succeeded, else what failed.
    private func outcome(_ i: Int) async -> String? {
        let probe = probes[i]
        let (started, task) = running.withLock { running in
            if let current = running[i] { return current }
            let task = Task { () -> String? in
                var failure: String?
                do { try await probe.check() } catch let e as DepotError { failure = Self.text(e) } catch {
                    failure = Self.bounded("\(error)")
                }
                self.running.withLock { _ = $0.removeValue(forKey: i) }
                return failure
            }
            running[i] = (ContinuousClock.now, task)
            return (ContinuousClock.now, task)
        }
        let deadline = started + timeout
        let slot = Locked<CheckedContinuation<String?, Never>?>(nil)
        let late = "no answer within \(timeout)"
        return await withCheckedContinuation { continuation in
            slot.withLock { $0 = continuation }
            let timer = Task {
                try? await Task.sleep(until: deadline, clock: .continuous)
                slot.withLock { c in
                    c?.resume(returning: late)
                    c = nil
                }
            }
            Task {
                let failure = await task.value
                timer.cancel()
                slot.withLock { c in
                    c?.resume(returning: failure)
                    c = nil
                }
            }
        }
    }

    /// An error's message without the kind prefix, on one line and bounded.
    static func text(_ e: DepotError) -> String {
        let full: String
        switch e {
        case .storage(let m), .io(let m), .invalidArgument(let m): full = m
        default: full = e.description
        }
        return bounded(full)
    }

    /// The first line, at most 300 characters.
    static func bounded(_ text: String) -> String {
        let line = text.split(separator: "\n").first.map(String.init) ?? text
        return line.count > 300 ? String(line.prefix(300)) + "…" : line
    }
}
