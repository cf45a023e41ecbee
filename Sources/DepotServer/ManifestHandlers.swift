import DepotAPI
import DepotAuth
import DepotCatalog
import DepotCore
import DepotRegistry
import DepotStore
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// Manifest reads, writes and deletes (`/v2/<name>/manifests/<reference>`).
struct ManifestHandlers: RouteHandlers {
    let registry: Registry
    let metrics: ServerMetrics
    /// Refuses signature artifacts that name a trusted key but do not verify.
    let trust: TrustService

    /// GET and HEAD. A reference that can name nothing is simply not found (the distribution
    /// spec's conformance suite and other registries answer 404 here; only a PUT says TAG_INVALID).
    func get(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let (name, ref) = (match.name!, match["reference"])
        let reference: Reference
        do { reference = try RequestParsing.reference(ref) } catch {
            throw RegistryError(
                .manifestUnknown, "manifest '\(ref.prefix(200))' is not a valid tag or digest, so it is not in \(name.prefix(200))")
        }
        return try await getManifest(try RequestParsing.name(name), reference, head: request.method == .head)
    }

    func put(_ match: RouteMatch, _ request: Request) async throws -> Response {
        try await putManifest(try Self.name(match), try RequestParsing.reference(match["reference"]), request)
    }

    func delete(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let (n, r) = (try Self.name(match), try RequestParsing.reference(match["reference"]))
        let actor = Actor(Self.actor(request))
        try await offload { try registry.deleteManifest(n, r, actor: actor) }
        return Reply.empty(202)
    }

    /// A manifest whose annotations claim to be a job's output (`dev.depot.job.*`,
    /// `dev.depot.lineage.job`) is accepted only from the principal holding that job's lease,
    /// so no other push can pass itself off as a pipeline's result (or poison its memo key).
    func requireJobLease(_ bytes: [UInt8], _ p: Principal, repository: String) async throws {
        struct Annotated: Decodable { var annotations: [String: String]? }
        guard let a = (try? WireJSON.decode(Annotated.self, from: bytes, what: "manifest"))?.annotations else { return }
        guard a.keys.contains(where: { $0.hasPrefix(Annotation.Job.prefix) || $0 == Annotation.Lineage.job }) else { return }
        guard let text = a[Annotation.Lineage.job], let id = Int64(text), id > 0 else {
            throw RegistryError(
                .denied,
                "annotations \(Annotation.Job.prefix)* need \(Annotation.Lineage.job) naming the job whose lease this push is under")
        }
        let db = registry.store.catalog
        let job = try await offload { try db.read { try $0.job(id) } }
        guard let job, job.state == .running, let runner = job.runner, runner.hasSuffix(" [\(p.id)]") else {
            throw RegistryError(
                .denied,
                "this manifest claims to be job \(id)'s output, but \(p.id) does not hold that running job's lease: only its runner may push it"
            )
        }
        // The output goes where the job's input is, under the job's own memo key: a lease on one
        // job must not let its holder plant an output (and a memo entry) for another.
        guard job.inputRepository == repository, a[Annotation.Job.key] == nil || a[Annotation.Job.key] == job.key else {
            throw RegistryError(
                .denied, "job \(id)'s output belongs in \(job.inputRepository), under the job's own \(Annotation.Job.key)")
        }
    }

    func getManifest(_ name: RepositoryName, _ reference: Reference, head: Bool) async throws -> Response {
        // A cache hit is answered here; only a miss goes to the blocking pool (two thread hops,
        // most of a cached GET's cost: 32-34k vs 22k req/s here, docs/ARCHITECTURE.md).
        let m: ManifestRecord
        if let hit = registry.cachedManifest(name, reference) {
            m = hit
        } else {
            m = try await offload { try registry.manifest(name, reference) }
        }
        metrics.sent(head ? 0 : m.content.count)
        return Reply.bytes(
            m.content, contentType: m.mediaType,
            headers: [.dockerContentDigest: m.digest.description, .eTag: "\"\(m.digest)\""], head: head)
    }

    func putManifest(_ name: RepositoryName, _ reference: Reference, _ request: Request) async throws -> Response {
        if let declared = try RequestParsing.contentLength(request), declared > ManifestParser.maxSize {
            throw RegistryError(.sizeInvalid, "manifest exceeds \(ManifestParser.maxSize) bytes", kind: .tooLarge)
        }
        let body = try await RequestParsing.collect(
            request, limit: ManifestParser.maxSize, what: "manifest",
            rate: RateFloor(limits: registry.uploads.limits, start: .now))
        metrics.received(body.readableBytes)
        let bytes = Array(body.readableBytesView)
        if let p = Caller.principal { try await requireJobLease(bytes, p, repository: name.value) }
        let contentType = request.headers[.contentType]
        let actor = Actor(Self.actor(request))
        let expect = try Self.ifMatch(request)
        let trust = self.trust
        let (digest, parsed) = try await offload {
            try trust.checkPushedSignature(name, bytes)
            return try registry.putManifest(name, reference, contentType: contentType, bytes: bytes, actor: actor, expect: expect)
        }
        var h: HTTPFields = [.location: "/v2/\(name)/manifests/\(digest)", .dockerContentDigest: digest.description]
        if let subject = parsed.subject { h[.ociSubject] = subject.digest.description }
        return Reply.empty(201, h)
    }
}
