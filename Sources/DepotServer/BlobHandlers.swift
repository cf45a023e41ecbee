import DepotAPI
import DepotCore
import DepotRegistry
import DepotStore
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// Blob reads and deletes (`/v2/<name>/blobs/<digest>`). A GET streams from the store in
/// batches; ranges are honoured.
struct BlobHandlers: RouteHandlers {
    let registry: Registry
    let metrics: ServerMetrics
    /// The idle timeout bounds how long a large blob's body may stall.
    let limits: ServerConfig.ServerLimits

    func get(_ match: RouteMatch, _ request: Request, _ context: DepotRequestContext) async throws -> Response {
        try await getBlob(try Self.name(match), try RequestParsing.digest(match["digest"]), request, context)
    }

    func delete(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let (n, d) = (try Self.name(match), try RequestParsing.digest(match["digest"]))
        let actor = Actor(Self.actor(request))
        try await offload { try registry.deleteBlob(n, d, actor: actor) }
        return Reply.empty(202)
    }

    func getBlob(_ name: RepositoryName, _ digest: Digest, _ request: Request, _ context: DepotRequestContext) async throws -> Response {
        guard let blob = try await offload({ try registry.blob(name, digest) }) else {
            throw RegistryError(.blobUnknown, "blob \(digest) is not in \(name)")
        }
        var headers: HTTPFields = [.contentType: "application/octet-stream", .acceptRanges: "bytes", .eTag: "\"\(digest)\""]
        headers[.dockerContentDigest] = digest.description
        let range: Range<Int64>?
        do {
            range = try RequestParsing.byteRange(request, size: blob.size)
        } catch let e as RegistryError {
            return Reply.error(
                RegistryError(e.code, e.message, kind: .rangeNotSatisfiable), headers: [.contentRange: "bytes */\(blob.size)"],
                head: request.method == .head)
        }
        var status = 200
        if let range {
            status = 206
            headers[.contentRange] = "bytes \(range.lowerBound)-\(range.upperBound - 1)/\(blob.size)"
        }
        let length = range.map { $0.upperBound - $0.lowerBound } ?? blob.size
        headers[.contentLength] = String(length)
        RequestTrace.annotate { a in
            a["depot.blob.digest"] = digest.description
            a["depot.blob.size"] = Int(blob.size)
            if let range { a["depot.blob.range"] = "\(range.lowerBound)-\(range.upperBound - 1)" }
        }
        if request.method == .head || length == 0 {
            return Response(status: .init(code: status), headers: headers, body: ResponseBody())
        }
        let reader = try await offload { try registry.store.reader(digest, range: range, as: ByteBuffer.self) }
        // The first batch is read before the headers go out, so a pack that cannot be read (EIO,
        // damage) is an OCI error response, not a 200 whose connection drops. A failure later on
        // can only cut the body short (Content-Length tells the client it is incomplete).
        // Awaited, not offloaded: while the GET waits its turn on the store's read pool, it holds
        // no blocking-pool thread (a storm of new GETs would otherwise fill that pool and stall
        // manifest and token requests behind it).
        let first = try await reader.nextAsync()
        let metrics = self.metrics
        let channel: (any Channel)? = length > 4 << 20 ? context.channel : nil
        let stallTimeout = Duration.milliseconds(Int64(limits.idleTimeoutSeconds * 1000))
        let loop = context.channel.eventLoop
        let body = ResponseBody(contentLength: Int(length)) { writer in
            let watchdog = StallWatchdog(channel: channel, timeout: stallTimeout)
            defer { watchdog.stop() }
            var next = first
            while let batch = next {
                metrics.sent(batch.readableBytes)
                // Paced by the loop, a GET holds about three batches whatever the load: the one
                // being written, the next and the one read ahead.
                try await writer.write(batch, pacedBy: loop)
                watchdog.progress()
                next = try await reader.nextAsync()
            }
            try await writer.finish(nil)
        }
        return Response(status: .init(code: status), headers: headers, body: body)
    }
}
