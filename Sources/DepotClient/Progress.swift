import DepotCore
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Progress of a push or pull on stderr: a redrawn line (bytes, rate, ETA, bytes saved by
/// dedup) on a terminal, one plain line per file otherwise, nothing when quiet.
public final class TransferProgress: Sendable {
    public enum Style: Sendable { case bar, lines, quiet }

    struct State {
        var file = ""
        var files = 0
        var done: Int64 = 0
        var total: Int64 = 0
        var saved: Int64 = 0
        var started = Date()
        var lastDraw = Date.distantPast
        var drawn = false
    }

    public let style: Style
    let verb: String
    private let state = Locked(State())
    private let wire: TransferCounters

    public init(style: Style, verb: String, wire: TransferCounters) {
        self.style = style
        self.verb = verb
        self.wire = wire
    }

    /// `.bar` on a terminal, else `.lines`.
    public static func automatic(quiet: Bool) -> Style {
        quiet ? .quiet : (isatty(STDERR_FILENO) == 1 ? .bar : .lines)
    }

    /// Starts the transfer: `work` is the total of the units later passed to `advance` (a
    /// push counts each file's bytes twice: hashed, then sent or found present).
    func begin(files: Int, work: Int64) {
        state.withLock { s in
            s.files = files
            s.total = work
            s.started = Date()
        }
        draw(force: true)
    }

    /// The file now being worked on (shown on the line).
    func working(on file: String) {
        state.withLock { s in s.file = file }
        draw(force: false)
    }

    /// `n` units done; `saved` bytes that did not move thanks to deduplication.
    func advance(_ n: Int64, saved: Int64 = 0) {
        state.withLock { s in
            s.done += n
            s.saved += saved
        }
        draw(force: false)
    }

    /// Ends the current file with a summary line.
    func finish(_ line: String) {
        guard style != .quiet else { return }
        let clear = state.withLock { s -> Bool in
            let d = s.drawn
            s.drawn = false
            return d
        }
        let prefix = style == .bar && clear ? "\r\u{1B}[2K" : ""
        FileHandle.standardError.write(Data((prefix + "\(verb) \(line)\n").utf8))
    }

    private func draw(force: Bool) {
        guard style == .bar else { return }
        let line: String? = state.withLock { s in
            let now = Date()
            guard force || now.timeIntervalSince(s.lastDraw) >= 0.2 else { return nil }
            s.lastDraw = now
            s.drawn = true
            let elapsed = max(now.timeIntervalSince(s.started), 0.001)
            let rate = Double(s.done) / elapsed
            let percent = s.total > 0 ? Int(100 * Double(s.done) / Double(s.total)) : 100
            let files = s.files > 1 ? " (\(s.files) files)" : ""
            var text = "\(verb) \(s.file)\(files)  \(percent)%  \(Self.bytes(Int64(rate / 2)))/s"
            if rate > 0, s.total > s.done { text += "  ETA \(Int(Double(s.total - s.done) / rate))s" }
            text += "  \(verb == "push" ? "sent" : "received") \(Self.bytes(verb == "push" ? wire.sent : wire.received))"
            if s.saved > 0 { text += "  saved \(Self.bytes(s.saved))" }
            return text
        }
        if let line { FileHandle.standardError.write(Data(("\r\u{1B}[2K" + line).utf8)) }
    }

    /// Human-readable bytes (binary units).
    public static func bytes(_ n: Int64) -> String { ByteCount.text(n) }
}
