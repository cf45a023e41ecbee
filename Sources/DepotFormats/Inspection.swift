import DepotAPI
import DepotCore
import Foundation
import Synchronization

/// Knobs that bound what inspecting one manifest's layers may cost the server. Every layer is
/// hostile input: without these, one crafted file could keep a manifest PUT (and a thread) busy
/// for minutes or fill memory. Defaults suit a registry; `config/depot.yaml` `formats:` sets them.
public struct InspectionLimits: Sendable, Equatable {
    /// Bytes one blob's inspection may read from the store (every read counts, re-reads too).
    public var maxBytesPerBlob: Int64 = 64 << 20
    /// Wall time one blob's inspection may take once it holds a worker slot.
    public var maxSecondsPerBlob: Double = 2
    /// Wall time all of one manifest's inspections may take; later layers get a budget entry.
    public var maxSecondsPerManifest: Double = 10
    /// Size of the stored metadata JSON document; a larger one is cut down and marked truncated.
    public var maxDocumentBytes = 1 << 20
    /// Inspections that run at once, process-wide; further callers wait their turn (FIFO).
    public var concurrency = 2
    /// Results remembered by blob digest, process-wide (least recently used are dropped).
    public var cacheEntries = 256

    public init() {}
}

/// Thrown by readers when a blob's inspection spent its byte or time budget. Not a format error:
/// the layer is recorded as `budget_exceeded`, the manifest is still accepted.
public struct InspectionBudgetExceeded: Error, CustomStringConvertible, Sendable {
    public var reason: String
    public var description: String { "inspection budget exceeded: \(reason)" }
}

/// One blob's budget: bytes read so far against the cap, and a deadline. Readers reach it through
/// the `BudgetedSource` they read from (every read is charged), and in-memory parsers (the text
/// proto) check `checkTime()` as they go.
final class InspectionBudget {
    let maxBytes: Int64
    let deadline: ContinuousClock.Instant
    private(set) var bytesRead: Int64 = 0

    init(maxBytes: Int64, seconds: Double) {
        self.maxBytes = maxBytes
        deadline = ContinuousClock.now.advanced(by: .milliseconds(Int64(max(0, seconds) * 1000)))
    }

    /// Charges `count` bytes before they are read, so an oversized read never allocates.
    func charge(_ count: Int) throws {
        let (sum, overflow) = bytesRead.addingReportingOverflow(Int64(max(0, count)))
        guard !overflow, sum <= maxBytes else {
            throw InspectionBudgetExceeded(reason: "reading more than \(maxBytes) bytes")
        }
        bytesRead = sum
        try checkTime()
    }

    func checkTime() throws {
        guard ContinuousClock.now < deadline else { throw InspectionBudgetExceeded(reason: "took longer than the time limit") }
    }
}

/// A ByteSource whose every read is charged to a budget.
struct BudgetedSource: ByteSource {
    let base: any ByteSource
    let budget: InspectionBudget
    var size: Int64 { base.size }

    func read(at offset: Int64, count: Int) throws -> [UInt8] {
        // Charge what can actually come back: reads are clamped to the end of the file.
        let available = max(0, min(Int64(max(0, count)), base.size - offset))
        try budget.charge(Int(available))
        return try base.read(at: offset, count: count)
    }
}

/// What inspecting one blob under a path found.
public enum InspectionOutcome: Sendable {
    /// Metadata of a recognised file. An open document (each reader reports its own fields), so
    /// JSONValue rather than one struct per format.
    case recognized([String: JSONValue])
    /// Not a format the inspector knows.
    case unrecognized
    /// A recognised file that is malformed or lies (the message names the problem).
    case invalid(String)
    /// The inspection stopped at a budget; the message says which.
    case budgetExceeded(String)
}

/// Runs format inspections for the registry under `InspectionLimits`: a fixed number at once
/// (callers queue in arrival order), each with a byte and time budget, and remembers results by
/// blob digest so the same bytes are never inspected twice while they stay in the cache.
public final class InspectionService: Sendable {
    public let limits: InspectionLimits
    private let gate: InspectionGate
    private let cache: Mutex<LRUCache>
    private let runs = Atomic<Int>(0)

    public init(limits: InspectionLimits = InspectionLimits()) {
        self.limits = limits
        gate = InspectionGate(width: max(1, limits.concurrency))
        cache = Mutex(LRUCache(capacity: max(0, limits.cacheEntries)))
    }

    /// Inspects `source` (the blob `digest`) as the file `path`. The result depends on the bytes,
    /// on the reader the file name selects and on the platform, so those make up the cache key.
    public func inspect(path: String, digest: String, source: any ByteSource, platform: String?) -> InspectionOutcome {
        let key = "\(digest)|\(FormatInspector.readerKey(path))|\(platform ?? "")"
        if let hit = cache.withLock({ $0.get(key) }) { return hit }
        var cacheable = true
        let outcome = gate.run { () -> InspectionOutcome in
            runs.add(1, ordering: .relaxed)
            let budget = InspectionBudget(maxBytes: limits.maxBytesPerBlob, seconds: limits.maxSecondsPerBlob)
            do {
                guard
                    let meta = try FormatInspector.inspect(
                        path: path, source: BudgetedSource(base: source, budget: budget),
                        platform: platform, budget: budget)
                else { return .unrecognized }
                return .recognized(meta)
            } catch let e as InspectionBudgetExceeded {
                return .budgetExceeded(e.description)
            } catch DepotError.invalidArgument(let m) {
                return .invalid(m)
            } catch {
                // Store read errors are not a property of the bytes: report, but do not cache.
                cacheable = false
                return .invalid("\(error)")
            }
        }
        if cacheable { cache.withLock { $0.put(key, outcome) } }
        return outcome
    }

    /// `FormatInspector.triton` in a worker slot under the per-blob time budget; throws
    /// `InspectionBudgetExceeded` when the budget runs out.
    public func triton(config: String, files: [String]) throws -> [String: JSONValue] {
        try gate.run {
            let budget = InspectionBudget(maxBytes: limits.maxBytesPerBlob, seconds: limits.maxSecondsPerBlob)
            return try Triton.check(config: config, files: files, budget: budget)
        }
    }

    /// Cached results (tests).
    public var cachedCount: Int { cache.withLock { $0.count } }

    /// Inspections that read a blob (cache misses), since start.
    public var inspectionsRun: Int { runs.load(ordering: .relaxed) }
}

/// A counting gate that admits callers in arrival order: at most `width` run at once.
final class InspectionGate: @unchecked Sendable {
    private let condition = NSCondition()
    private let width: Int
    private var active = 0
    private var nextTicket: UInt64 = 0
    private var serving: UInt64 = 0

    init(width: Int) { self.width = width }

    func run<T>(_ body: () throws -> T) rethrows -> T {
        condition.lock()
        let ticket = nextTicket
        nextTicket += 1
        while ticket != serving || active >= width { condition.wait() }
        serving += 1
        active += 1
        condition.broadcast()
        condition.unlock()
        defer {
            condition.lock()
            active -= 1
            condition.broadcast()
            condition.unlock()
        }
        return try body()
    }
}

/// A small least-recently-used map from key to outcome (linear list: capacities are a few hundred).
struct LRUCache {
    private var entries: [String: (outcome: InspectionOutcome, used: UInt64)] = [:]
    private var clock: UInt64 = 0
    let capacity: Int

    init(capacity: Int) { self.capacity = capacity }

    var count: Int { entries.count }

    mutating func get(_ key: String) -> InspectionOutcome? {
        guard let e = entries[key] else { return nil }
        clock += 1
        entries[key] = (e.outcome, clock)
        return e.outcome
    }

    mutating func put(_ key: String, _ outcome: InspectionOutcome) {
        guard capacity > 0 else { return }
        // A budget outcome can depend on load (time), so it is not remembered.
        if case .budgetExceeded = outcome { return }
        clock += 1
        if entries[key] == nil, entries.count >= capacity, let oldest = entries.min(by: { $0.value.used < $1.value.used }) {
            entries[oldest.key] = nil
        }
        entries[key] = (outcome, clock)
    }
}

/// The stored metadata document: `{"files": [...], "triton": {...}}` as sorted-key JSON, at most
/// `maxBytes` long. An oversized document keeps files whole in order while they fit, then only
/// each file's identity (path, digest, size, format) marked `truncated`, then omits the rest; the
/// top level says `"truncated": true` and how many files were cut or omitted.
public enum MetadataDocument {
    /// Sorted-key JSON (WireJSON), or nil for a value JSON cannot carry (a non-finite number).
    static func json(_ value: JSONValue) -> [UInt8]? {
        try? WireJSON.encode(value)
    }

    public static func encode(files: [[String: JSONValue]], triton: [String: JSONValue]?, maxBytes: Int) -> String? {
        var document: [String: JSONValue] = ["files": .array(files.map(JSONValue.object))]
        if let triton { document["triton"] = .object(triton) }
        guard let full = json(.object(document)) else { return nil }
        if full.count <= maxBytes { return String(decoding: full, as: UTF8.self) }

        // Room for the top-level keys and separators: a few hundred bytes.
        var budget = maxBytes - 512
        var tritonPart: JSONValue?
        if let triton {
            if let t = json(.object(triton)), t.count <= budget / 4 {
                tritonPart = .object(triton)
                budget -= t.count
            } else {
                tritonPart = ["truncated": true]
            }
        }
        var kept: [JSONValue] = []
        var cut = 0
        var omitted = 0
        for file in files {
            if let whole = json(.object(file)), whole.count + 1 <= budget {
                kept.append(.object(file))
                budget -= whole.count + 1
                continue
            }
            var stub: [String: JSONValue] = ["truncated": true]
            for key in ["path", "digest", "size", "format", "error", "budget_exceeded"] {
                if let v = file[key] { stub[key] = v }
            }
            if let s = json(.object(stub)), s.count + 1 <= budget {
                kept.append(.object(stub))
                budget -= s.count + 1
                cut += 1
            } else {
                omitted += 1
            }
        }
        var small: [String: JSONValue] = [
            "files": .array(kept), "truncated": true, "files_truncated": JSONValue(cut), "files_omitted": JSONValue(omitted),
        ]
        if let tritonPart { small["triton"] = tritonPart }
        guard let data = json(.object(small)), data.count <= maxBytes else { return nil }
        return String(decoding: data, as: UTF8.self)
    }
}
