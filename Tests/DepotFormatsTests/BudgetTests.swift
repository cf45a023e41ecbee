import CDepotSupport
import DepotAPI
import DepotCore
import DepotFormats
import DepotTestSupport
import Foundation
import Synchronization
import Testing

/// CPU time of the calling thread, in seconds.
func threadCPUSeconds() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
}

struct Cost {
    /// Wall time (ContinuousClock).
    var seconds: Double
    /// CPU time of the inspecting thread: what the inspection costs, whatever else the machine runs.
    var cpuSeconds: Double
    /// Peak heap added.
    var peakMiB: Double
}

/// Runs `body` and returns its result and cost: wall time, the thread's CPU time, and the peak
/// heap it added (glibc's heap in use, sampled every 0.5 ms by a C thread, minus what was in use
/// before). Inputs are built before the call, so only the inspection is measured; its result
/// stays alive until the end, so the metadata it returns counts too.
func measured<T>(_ label: String, _ body: () -> T) -> (result: T, cost: Cost) {
    let base = depot_heap_in_use()
    let started = depot_heap_sampler_start()
    let clock = ContinuousClock()
    let start = clock.now
    let cpuStart = threadCPUSeconds()
    let result = body()
    let cpu = threadCPUSeconds() - cpuStart
    let elapsed = clock.now - start
    let peak = started == 0 ? depot_heap_sampler_stop() : depot_heap_in_use()
    let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    let cost = Cost(seconds: seconds, cpuSeconds: cpu, peakMiB: Double(peak > base ? peak - base : 0) / Double(1 << 20))
    print(
        "inspection budget: \(label): \(String(format: "%.3f", seconds)) s (CPU \(String(format: "%.3f", cpu)) s), "
            + "peak +\(String(format: "%.1f", cost.peakMiB)) MiB")
    return (result, cost)
}

/// The metadata of a recognised file, or nil (with the outcome recorded as an issue).
func recognized(_ outcome: InspectionOutcome) -> [String: JSONValue]? {
    if case .recognized(let meta) = outcome { return meta }
    Issue.record("expected metadata, got \(outcome)")
    return nil
}

func isBudgetExceeded(_ outcome: InspectionOutcome) -> Bool {
    if case .budgetExceeded = outcome { return true }
    return false
}

/// Hostile inputs of a few MiB are described in full, with bounded lists and counts that stay
/// exact: every reader is linear in its input and keeps bounded lists.
///
/// What each inspection costs (wall and CPU time, peak heap) is printed for the record, never
/// asserted: a timing or heap bound fails on a busy machine for reasons that are not the
/// reader's (CI measured +77 MiB of process heap from tests running beside this one). The
/// costs are benchmarked by `scripts/bench/inspection.sh`, and in production the per-blob
/// time budget stops a reader that is slower than it should be (`budgetsStopInspection`).
@Suite(.serialized) struct BudgetTests {
    /// `unit` repeated to just under the 4 MiB config.pbtxt limit.
    func repeated(_ unit: String) -> [UInt8] {
        let u = Array(unit.utf8)
        var out: [UInt8] = []
        out.reserveCapacity(4 << 20)
        while out.count + u.count <= (4 << 20) - 64 { out += u }
        return out
    }

    /// Inspects as the registry does; the time budget is raised (unless `limits` is given) so
    /// that a slow machine cannot turn a description into a budget outcome.
    func inspect(_ path: String, _ bytes: [UInt8], limits: InspectionLimits? = nil) -> InspectionOutcome {
        var roomy = InspectionLimits()
        roomy.maxSecondsPerBlob = 60
        return InspectionService(limits: limits ?? roomy).inspect(
            path: path, digest: "sha256:test", source: BytesSource(bytes), platform: nil)
    }

    @Test func hostileTextProto() throws {
        // 300,000 repeats of one scalar field: each append copied the whole array before.
        let scalars = repeated("input_dims: 1 ")
        let a = measured("config.pbtxt, 4 MiB of 'input_dims: 1'") { inspect("config.pbtxt", scalars) }
        let meta = try #require(recognized(a.result))
        #expect(meta["format"] == "triton-config")

        // The same through lists that are merged into one field.
        let lists = repeated("dims: [1, 2] ")
        let b = measured("config.pbtxt, 4 MiB of 'dims: [1, 2]'") { inspect("config.pbtxt", lists) }
        #expect(recognized(b.result) != nil)

        // 230,000 input messages: the parse tree would hold a dictionary each; past 100,000
        // messages the inspection stops at its budget instead, and the summary lists 1,000.
        let messages = repeated("input { dims: 1 } ")
        let c = measured("config.pbtxt, 4 MiB of 'input { dims: 1 }'") { inspect("config.pbtxt", messages) }
        #expect(isBudgetExceeded(c.result))
        let fewer = repeated(String(repeating: " ", count: 200) + "input { dims: 1 } ")
        let d = measured("config.pbtxt, 4 MiB of 20,000 inputs") { inspect("config.pbtxt", fewer) }
        let summary = try #require(recognized(d.result))
        #expect(summary["inputs"]?.array?.count == 1000)
        #expect(summary["input_count"] == JSONValue(fewer.count / 218))
    }

    @Test func hostileSavedModel() throws {
        // 120,000 meta graphs with three distinct tags each: the tag union used a list scan.
        var sm = PB()
        sm.int(1, 1)
        for i in 0..<120_000 {
            sm.message(2) { mg in mg.message(1) { info in for t in 0..<3 { info.string(4, "t\(i * 3 + t)") } } }
        }
        let many = sm.bytes
        let a = measured("saved_model.pb, \(many.count >> 10) KiB, 120,000 meta graphs") { inspect("saved_model.pb", many) }
        let meta = try #require(recognized(a.result))
        #expect(meta["meta_graph_count"] == 120_000)
        #expect(meta["tags"]?.array?.count == 1000)
        #expect(meta["meta_graphs"]?.array?.count == 100)

        // One meta graph with 400,000 tags.
        var one = PB()
        one.message(2) { mg in mg.message(1) { info in for t in 0..<400_000 { info.string(4, "t\(t)") } } }
        let wide = one.bytes
        let b = measured("saved_model.pb, \(wide.count >> 10) KiB, 400,000 tags in one meta graph") { inspect("saved_model.pb", wide) }
        let meta2 = try #require(recognized(b.result))
        #expect(meta2["tags"]?.array?.count == 100)
    }

    /// A ZIP with one stored pickle at offset 0 and `names` central-directory entries, all
    /// pointing at that one local header.
    func zipSharingOnePickle(_ pickle: [UInt8], names: [String]) -> [UInt8] {
        let first = Array(names[0].utf8)
        var out = le(0x0403_4b50, 4) + le(20, 2) + le(0, 2) + le(0, 2) + le(0, 4) + le(0, 4)
        out += le(UInt64(pickle.count), 4) + le(UInt64(pickle.count), 4) + le(UInt64(first.count), 2) + le(0, 2) + first + pickle
        let cdOffset = out.count
        for n in names {
            let name = Array(n.utf8)
            out += le(0x0201_4b50, 4) + le(20, 2) + le(20, 2) + le(0, 2) + le(0, 2) + le(0, 4) + le(0, 4)
            out += le(UInt64(pickle.count), 4) + le(UInt64(pickle.count), 4) + le(UInt64(name.count), 2) + le(0, 2) + le(0, 2)
            out += le(0, 2) + le(0, 2) + le(0, 4) + le(0, 4) + name
        }
        let cdSize = out.count - cdOffset
        out += le(0x0605_4b50, 4) + le(0, 2) + le(0, 2) + le(UInt64(names.count), 2) + le(UInt64(names.count), 2)
        out += le(UInt64(cdSize), 4) + le(UInt64(cdOffset), 4) + le(0, 2)
        return out
    }

    @Test func hostileZipOfPickles() throws {
        // One pickle importing 100,000 distinct callables, then os.system; 65,535 directory
        // entries name it. It is scanned once, lists 1,000 imports, and still flags os.system.
        var pickle: [UInt8] = [0x80, 0x02]
        for i in 0..<100_000 { pickle += P.global("m\(i)", "f") + [0x30] }
        pickle += P.global("os", "system") + [0x2e]
        let names = (0..<65_535).map { "a/\($0)/data.pkl" }
        let shared = zipSharingOnePickle(pickle, names: names)
        let a = measured("zip, \(shared.count >> 10) KiB, 65,535 entries to one pickle of 100,000 imports") { inspect("m.pt", shared) }
        let meta = try #require(recognized(a.result))
        #expect(meta["entry_count"] == 65_535)
        #expect(meta["pickles"]?.array?.count == 1)
        #expect(meta["import_count"] == 100_001)
        #expect(meta["imports"]?.array?.count == 1000)
        #expect(meta["imports_truncated"] == true)
        #expect(meta["dangerous_imports"] == ["os.system"])
        #expect(meta["unsafe"] == true)

        // 5,000 distinct pickles: 1,000 are scanned, the rest counted and the result marked incomplete.
        let entries = (0..<5_000).map { i in ("a/\(i)/data.pkl", [0x80, 0x02] + P.global("mod\(i)", "f") + [0x2e], 0) }
        let distinct = makeZip(entries)
        let b = measured("zip, \(distinct.count >> 10) KiB, 5,000 distinct pickles") { inspect("m.pt", distinct) }
        let meta2 = try #require(recognized(b.result))
        #expect(meta2["unscanned_pickles"] == 4_000)
        #expect(meta2["complete"] == false)
        #expect(meta2["pickle_count"] == 1_000)
        #expect(meta2["pickles"]?.array?.count == 100)
        #expect(meta2["unsafe"] == true)
    }

    @Test func hostileONNX() throws {
        var m = PB()
        m.int(1, 8)
        m.message(7) { g in
            for i in 0..<100_000 {
                g.message(1) { n in
                    n.string(1, "n\(i)")
                    n.string(4, "Op\(i)")
                }
            }
            for i in 0..<20_000 {
                g.message(11) { v in
                    v.string(1, "in\(i)")
                    v.message(2) { t in
                        t.message(1) { tt in
                            tt.int(1, 1)
                            tt.message(2) { s in for d in 0..<8 { s.message(1) { x in x.int(1, d) } } }
                        }
                    }
                }
            }
            for i in 0..<20_000 {
                g.message(5) { t in
                    t.string(8, "w\(i)")
                    t.data(9, [1, 2, 3, 4])
                }
            }
        }
        let model = m.bytes
        let a = measured("model.onnx, \(model.count >> 10) KiB, 100,000 nodes of distinct ops, 20,000 inputs") {
            inspect("model.onnx", model)
        }
        let meta = try #require(recognized(a.result))
        #expect(meta["node_count"] == 100_000)
        #expect(meta["op_types"]?.object?.count == 20)
        #expect(meta["inputs"]?.array?.count == 1000)
        #expect(meta["input_count"] == 20_000)
        #expect(meta["initializer_count"] == 20_000)
    }

    @Test func budgetsStopInspection() throws {
        var m = PB()
        m.int(1, 8)
        m.message(7) { g in for i in 0..<100_000 { g.message(1) { n in n.string(4, "Op\(i % 10)") } } }
        var few = InspectionLimits()
        few.maxBytesPerBlob = 64 << 10
        #expect(isBudgetExceeded(inspect("model.onnx", m.bytes, limits: few)))
        var instant = InspectionLimits()
        instant.maxSecondsPerBlob = 0
        #expect(isBudgetExceeded(inspect("model.onnx", m.bytes, limits: instant)))
        // Within the default budget the same file is read in full.
        #expect(recognized(inspect("model.onnx", m.bytes, limits: InspectionLimits()))?["node_count"] == 100_000)
    }

    /// Counts reads and how many run at once; each read takes `delay`.
    final class CountingSource: ByteSource, Sendable {
        let bytes: [UInt8]
        let delay: Duration
        let reads = Atomic<Int>(0)
        let running = Atomic<Int>(0)
        let maxRunning = Atomic<Int>(0)
        init(_ bytes: [UInt8], delay: Duration = .zero) {
            self.bytes = bytes
            self.delay = delay
        }
        var size: Int64 { Int64(bytes.count) }
        func read(at offset: Int64, count: Int) throws -> [UInt8] {
            reads.add(1, ordering: .relaxed)
            let now = running.add(1, ordering: .relaxed).newValue
            maxRunning.max(now, ordering: .relaxed)
            defer { running.subtract(1, ordering: .relaxed) }
            if delay > .zero { Thread.sleep(forTimeInterval: Double(delay.components.attoseconds) / 1e18) }
            return try BytesSource(bytes).read(at: offset, count: count)
        }
    }

    @Test func resultsAreCachedByDigestAndReader() throws {
        let service = InspectionService()
        var m = PB()
        m.int(1, 8)
        let source = CountingSource(m.bytes)
        _ = service.inspect(path: "a/model.onnx", digest: "sha256:aa", source: source, platform: nil)
        let first = source.reads.load(ordering: .relaxed)
        #expect(first > 0)
        // Same digest, another path that selects the same reader: no read at all.
        #expect(
            recognized(service.inspect(path: "b/other.onnx", digest: "sha256:aa", source: source, platform: nil))?["ir_version"]
                == 8)
        #expect(source.reads.load(ordering: .relaxed) == first)
        // A name that selects another reader inspects again.
        _ = service.inspect(path: "weights.bin", digest: "sha256:aa", source: source, platform: nil)
        #expect(source.reads.load(ordering: .relaxed) > first)
        #expect(service.cachedCount == 2)
    }

    @Test func atMostConcurrencyInspectionsRunAtOnce() throws {
        var limits = InspectionLimits()
        limits.concurrency = 2
        let service = InspectionService(limits: limits)
        var m = PB()
        m.int(1, 8)
        let source = CountingSource(m.bytes, delay: .milliseconds(30))
        let done = DispatchGroup()
        for i in 0..<6 {
            DispatchQueue.global().async(group: done) {
                _ = service.inspect(path: "m.onnx", digest: "sha256:\(i)", source: source, platform: nil)
            }
        }
        done.wait()
        #expect(source.maxRunning.load(ordering: .relaxed) <= 2)
        #expect(service.cachedCount == 6)
    }

    @Test func documentIsCapped() throws {
        let big = String(repeating: "x", count: 50_000)
        let files: [[String: JSONValue]] = (0..<100).map {
            ["path": .string("f\($0).onnx"), "digest": .string("sha256:\($0)"), "size": 1, "format": "onnx", "doc_string": .string(big)]
        }
        let json = try #require(MetadataDocument.encode(files: files, triton: ["name": "m"], maxBytes: 1 << 20))
        #expect(json.utf8.count <= 1 << 20)
        let doc = try #require(try WireJSON.decode(JSONValue.self, from: Array(json.utf8), what: "metadata").object)
        #expect(doc["truncated"] == true)
        let kept = try #require(doc["files"]?.array)
        #expect(kept.count == 100)
        #expect(kept[0]["doc_string"]?.string == big)
        #expect(kept[99]["doc_string"] == nil && kept[99]["truncated"] == true && kept[99]["path"] == "f99.onnx")
        #expect(doc["files_truncated"]?.int == 100 - Int64(kept.filter { $0["doc_string"] != nil }.count))
        // A small document is left as it is.
        let small = try #require(MetadataDocument.encode(files: [files[0]], triton: nil, maxBytes: 1 << 20))
        #expect(!small.contains("truncated"))
    }
}
