import DepotCore
import DepotRegistry
import Hummingbird
import HummingbirdCore
import NIOCore
import NIOHTTPTypes

/// The request context of every Depot route: Hummingbird's core context plus the client's
/// address, which upload limits are counted by.
public struct DepotRequestContext: RequestContext, RemoteAddressRequestContext {
    public var coreContext: CoreRequestContextStorage
    public let remoteAddress: SocketAddress?
    /// The connection, so a stalled response can be cut off (`StallWatchdog`).
    let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        remoteAddress = source.channel.remoteAddress
        channel = source.channel
    }

    /// The address as text: an IPv4 or IPv6 address, nil for a Unix socket or an unknown peer.
    var clientAddress: String? { remoteAddress?.ipAddress }
}

/// Closes a connection that does not deliver its first complete request head within `timeout`
/// of opening. Hummingbird's idle timeout only counts whole HTTP parts, and a slow-loris client
/// sends a header byte at a time, never completing one; this handler sits after the HTTP
/// decoder, so it sees a head only once all of it has arrived. Between later requests of a
/// keep-alive connection the idle timeout applies instead: re-arming this shorter timer there
/// closed idle keep-alive connections under clients that do not reconnect (the test client).
final class HeaderTimeoutHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart

    let timeout: TimeAmount
    private var timer: Scheduled<Void>?
    private var sawHead = false

    init(timeout: TimeAmount) { self.timeout = timeout }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { arm(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        arm(context)
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) { disarm() }

    func channelInactive(context: ChannelHandlerContext) {
        disarm()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if !sawHead, case .head = unwrapInboundIn(data) {
            sawHead = true
            disarm()
        }
        context.fireChannelRead(data)
    }

    private func arm(_ context: ChannelHandlerContext) {
        guard !sawHead, timer == nil else { return }
        let channel = context.channel
        timer = context.eventLoop.assumeIsolatedUnsafeUnchecked().scheduleTask(in: timeout) { [weak self] in
            guard let self, !self.sawHead else { return }
            channel.close(promise: nil)
        }
    }

    private func disarm() {
        timer?.cancel()
        timer = nil
    }
}

/// A counter of operations in progress with a ceiling: `enter` fails instead of waiting, so a
/// flood of expensive requests (recipe commits re-read every chunk they name) is answered with
/// 429 at once rather than queued behind one another.
final class ConcurrencyGate: Sendable {
    let limit: Int
    private let count = Locked(0)

    init(limit: Int) { self.limit = limit }

    func tryEnter() -> Bool {
        count.withLock { n in
            guard n < limit else { return false }
            n += 1
            return true
        }
    }

    func leave() { count.withLock { $0 -= 1 } }
}

/// The minimum average byte rate of an upload body (`uploads.min_bytes_per_second` after
/// `uploads.rate_grace_seconds`). Checked as each part of the body arrives; a client that sends
/// nothing at all is closed by the connection idle timeout instead.
struct RateFloor: Sendable {
    let minBytesPerSecond: Int64
    let graceSeconds: Double
    let start: ContinuousClock.Instant

    init(limits: UploadLimits, start: ContinuousClock.Instant) {
        minBytesPerSecond = limits.minBytesPerSecond
        graceSeconds = limits.rateGraceSeconds
        self.start = start
    }

    func seconds(_ now: ContinuousClock.Instant) -> Double {
        let d = (now - start).components
        return Double(d.seconds) + Double(d.attoseconds) / 1e18
    }

    func isMet(received: Int64, now: ContinuousClock.Instant) -> Bool {
        guard minBytesPerSecond > 0 else { return true }
        let elapsed = seconds(now)
        guard elapsed > graceSeconds else { return true }
        return Double(received) >= Double(minBytesPerSecond) * elapsed
    }

    func error(received: Int64) -> RegistryError {
        RegistryError(
            .blobUploadInvalid,
            "upload too slow: \(received) bytes in \(Int(seconds(.now))) s is under the registry's minimum of \(minBytesPerSecond) "
                + "bytes/s; what arrived is kept, resume from the upload's Range", kind: .timedOut)
    }
}

/// An expensive read-only computation (a full audit-chain verification) run one at a time: while
/// one runs, other requests are answered 429 rather than starting their own scan, so any number
/// of requests keeps at most one thread busy. A result younger than `maxAge` is reused (zero:
/// never).
final class SharedRecentResult<Value: Sendable>: Sendable {
    let maxAge: Duration
    private let state = Locked((running: false, last: (at: ContinuousClock.Instant, value: Value)?.none))

    init(maxAge: Duration) { self.maxAge = maxAge }

    func result(_ compute: () async throws -> Value) async throws -> Value {
        let now = ContinuousClock.now
        let cached: Value? = try state.withLock { s in
            if maxAge > .zero, let last = s.last, now - last.at < maxAge { return last.value }
            guard !s.running else { throw RegistryError(.tooManyRequests, "a verification is already running; retry in a few seconds") }
            s.running = true
            return nil
        }
        if let cached { return cached }
        do {
            let value = try await compute()
            state.withLock { $0 = (running: false, last: (ContinuousClock.now, value)) }
            return value
        } catch {
            state.withLock { $0.running = false }
            throw error
        }
    }
}

extension ResponseBodyWriter {
    /// `write`, then one hop through the connection's event loop. The writer returns once a
    /// buffer is queued for the loop (`eventLoop.execute`), before the loop has written it and
    /// found the socket full; until then the writer still counts as writable. With many
    /// connections on a loop that lag let each streamed response queue part after part: 64 slow
    /// blob pulls held 28 MB each. After the hop the loop has taken the part and the writer
    /// knows whether to wait, so a response holds the part being written and the next one.
    mutating func write(_ buffer: ByteBuffer, pacedBy loop: (any EventLoop)?) async throws {
        try await write(buffer)
        if let loop { try await loop.submit {}.get() }
    }
}

/// Closes the connection of a streamed response that has made no progress for `timeout`: a
/// client that requests a large blob and never reads it would otherwise hold its connection,
/// a blob reader and a batch or two of buffered bytes forever (Hummingbird's idle timeout does
/// not run while a response is being written). Armed only for multi-batch responses.
struct StallWatchdog: Sendable {
    private let last: Locked<ContinuousClock.Instant>
    private let task: Task<Void, Never>?

    init(channel: (any Channel)?, timeout: Duration) {
        let last = Locked(ContinuousClock.now)
        self.last = last
        guard let channel else {
            task = nil
            return
        }
        task = Task {
            while !Task.isCancelled {
                do { try await Task.sleep(for: timeout / 4) } catch { return }
                if ContinuousClock.now - last.withLock({ $0 }) > timeout {
                    channel.close(promise: nil)
                    return
                }
            }
        }
    }

    /// A part of the response was handed to the socket.
    func progress() { last.withLock { $0 = .now } }

    func stop() { task?.cancel() }
}

/// A process-wide budget of bytes: `take` fails instead of waiting when it would go over.
final class ByteBudget: Sendable {
    let limit: Int
    private let used = Locked(0)

    init(limit: Int) { self.limit = limit }

    func take(_ n: Int) -> Bool {
        used.withLock { u in
            guard n <= limit - u else { return false }
            u += n
            return true
        }
    }

    func give(_ n: Int) { used.withLock { $0 -= n } }
}
