import DepotAPI
import DepotCore
import DepotRegistry
import DepotStore
import DepotTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import Logging
import Testing

@testable import DepotServer

/// `/readyz`: 200 while the catalog answers and the pack storage is readable, 503 with a JSON
/// body naming what failed otherwise; `/healthz` stays 200 either way (the process is alive).
@Suite struct ReadinessTests {
    func report(_ r: TestResponse) throws -> ReadinessReport {
        try WireJSON.decode(ReadinessReport.self, from: r.bytes, what: "readiness")
    }

    @Test func readyWhileCatalogAndPacksAnswerAndNotWhilePacksAreGone() async throws {
        try await withRegistry { c, registry, _ in
            // A probe has 2 s (Readiness.defaultTimeout); on a machine loaded by the whole suite
            // (its PostgreSQL run opens hundreds of connections) the first one can miss it: ask
            // again, as a load balancer would, for at most 30 s.
            var ok = try await c.req(.get, "/readyz")
            for _ in 0..<30 where ok.status.code != 200 {
                try await Task.sleep(for: .seconds(1))
                ok = try await c.req(.get, "/readyz")
            }
            #expect(ok.status.code == 200)
            #expect(
                try report(ok)
                    == ReadinessReport(ready: true, checks: [.init(name: "catalog", ok: true), .init(name: "storage", ok: true)]))
            let head = try await c.req(.head, "/readyz")
            #expect(head.status.code == 200 && head.bytes.isEmpty)

            // The packs volume goes away (an unmounted disk): not ready, naming it; still alive.
            let packs = registry.store.root + "/packs"
            try FileSystem.rename(packs, packs + ".away")
            let gone = try await c.req(.get, "/readyz")
            #expect(gone.status.code == 503)
            let r = try report(gone)
            #expect(!r.ready && r.checks.map(\.name) == ["catalog", "storage"])
            #expect(r.checks[0].ok && !r.checks[1].ok)
            #expect(r.checks[1].error?.contains("packs/") == true && r.checks[1].error?.contains("ENOENT") == true, "\(r)")
            #expect(try await c.req(.head, "/readyz").status.code == 503)
            #expect(try await c.req(.get, "/healthz").status.code == 200)

            try FileSystem.rename(packs + ".away", packs)
            #expect(try await c.req(.get, "/readyz").status.code == 200)
        }
    }

    /// A probe that fails is named with its error; one that does not answer counts as failed
    /// after the timeout, and is not started again while it hangs (requests share its run).
    @Test func failingAndHangingProbes() async throws {
        let hang = HangingProbe()
        let readiness = Readiness(
            // 1 s, not less: the failing probe answers at once, but on a loaded CI machine its task
            // once took over 0.2 s to be scheduled and was reported as not answering.
            probes: [FailingProbe(), hang], timeout: .seconds(1), logger: Logger(label: "test"))
        try await withRegistry(readiness: readiness) { c, _, _ in
            for _ in 0..<3 {
                let r = try await c.req(.get, "/readyz")
                #expect(r.status.code == 503)
                let body = try report(r)
                #expect(body.checks.map(\.name) == ["s3", "slow"])
                #expect(body.checks[0].error == "HEAD bucket: 403 AccessDenied")
                #expect(body.checks[1].error?.hasPrefix("no answer within") == true, "\(body)")
            }
            #expect(hang.starts.withLock { $0 } == 1)
            hang.release()
            // Once it answers, the next request runs it again.
            var last = 0
            for _ in 0..<50 where last != 2 {
                _ = try await c.req(.get, "/readyz")
                last = hang.starts.withLock { $0 }
                if last != 2 { try await Task.sleep(for: .milliseconds(20)) }
            }
            #expect(last == 2)
        }
        hang.release()
    }
}

struct FailingProbe: ReadinessProbe {
    var name: String { "s3" }
    func check() async throws { throw DepotError.storage("HEAD bucket: 403 AccessDenied") }
}

/// Hangs until released (the first run only).
final class HangingProbe: ReadinessProbe {
    let starts = Locked(0)
    private let gate = AsyncStream<Void>.makeStream()
    var name: String { "slow" }

    func check() async throws {
        let n = starts.withLock { n in
            n += 1
            return n
        }
        if n == 1 { for await _ in gate.stream {} }
    }

    func release() { gate.continuation.finish() }
}
