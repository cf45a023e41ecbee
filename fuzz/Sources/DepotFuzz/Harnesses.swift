import Foundation

// One libFuzzer binary for every harness; FUZZ_TARGET names the one to run (scripts/fuzz.sh).
// Each harness feeds the bytes to a parser of untrusted input and ignores the errors it throws:
// only a crash, a sanitizer report, a leak or a timeout is a finding.
@testable import DepotAPI
@testable import DepotAuth
@testable import DepotCore
@testable import DepotFormats
@testable import DepotPipelines
@testable import DepotRegistry
@testable import DepotServer
@testable import DepotStore
@testable import DepotTrust

typealias Harness = (UnsafeRawBufferPointer) -> Void

let harnesses: [String: Harness] = [
    "safetensors": safetensors, "onnx": onnx, "pickle": pickle, "zip": zip, "tensorflow": tensorflow,
    "tensorrt": tensorrt, "textproto": textproto, "manifest": manifest, "chunkrecord": chunkRecord,
    "recipe": recipe, "range": range, "pipeline": pipeline, "config": config, "routes": routes,
    "auth": auth, "signature": signature, "hashstates": hashStates,
]

var selected: Harness?

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    if selected == nil {
        let name = ProcessInfo.processInfo.environment["FUZZ_TARGET"] ?? ""
        guard let h = harnesses[name] else {
            FileHandle.standardError.write(Data("set FUZZ_TARGET to one of: \(harnesses.keys.sorted().joined(separator: " "))\n".utf8))
            exit(2)
        }
        selected = h
    }
    selected!(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

/// libFuzzer's driver. SwiftPM links an executable's entry point as `<module>_main` (defining
/// `main` as an alias of it), so libFuzzer's own `main` is not linked in: start the driver here.
@_silgen_name("LLVMFuzzerRunDriver")
func runDriver(
    _ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt

@_cdecl("DepotFuzz_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var count = argc
    var vector = argv
    return runDriver(&count, &vector, fuzzOne)
}

func bytes(_ p: UnsafeRawBufferPointer) -> [UInt8] { Array(p) }
func text(_ p: UnsafeRawBufferPointer) -> String { String(decoding: p, as: UTF8.self) }

/// Inspection under the registry's limits (budgets included), as a manifest PUT runs it.
let service = InspectionService()

func inspect(_ path: String, _ p: UnsafeRawBufferPointer, platform: String? = nil) {
    _ = try? FormatInspector.inspect(path: path, source: BytesSource(bytes(p)), platform: platform)
    _ = service.inspect(path: path, digest: "sha256:fuzz", source: BytesSource(bytes(p)), platform: platform)
}

func safetensors(_ p: UnsafeRawBufferPointer) {
    inspect("model.safetensors", p)
    if p.count > 8 { _ = try? Safetensors.parseHeader(Array(p[8...]), fileSize: nil) }
    var planner = SafetensorsBoundaryPlanner()
    planner.observe(p, at: 0)
    _ = planner.nextBoundary(atOrAfter: 0)
    _ = planner.elementWidth(at: 100)
    planners(p)
}

func onnx(_ p: UnsafeRawBufferPointer) {
    inspect("model.onnx", p)
    planners(p)
}

/// The boundary planners as an upload feeds them, on any bytes: the ONNX walker (every
/// `raw_data`, however small) and the registry's planner. Fails if the cuts or the width hints
/// depend on how the stream is split, if a piece reveals a cut before its own start (the
/// chunker has passed it), or if a planner restored from its saved state halfway answers
/// differently from one that saw the whole stream.
func planners(_ p: UnsafeRawBufferPointer) {
    func all<P: BoundaryPlanner>(_ planner: P) -> [Int64] {
        var out: [Int64] = []
        var from: Int64 = 0
        while let b = planner.nextBoundary(atOrAfter: from), out.count <= p.count {
            out.append(b)
            from = b + 1
        }
        return out
    }
    func feed<P: BoundaryPlanner>(_ planner: inout P, from start: Int, _ piece: (Int) -> Int) {
        var at = start
        while at < p.count {
            let n = max(1, min(piece(at), p.count - at))
            let before = all(planner)
            planner.observe(UnsafeRawBufferPointer(rebasing: p[at..<(at + n)]), at: Int64(at))
            if all(planner).filter({ $0 < Int64(at) }) != before.filter({ $0 < Int64(at) }) {
                fatalError("a piece at \(at) revealed a cut before it")
            }
            at += n
        }
    }
    func check<P: BoundaryPlanner>(_ make: () -> P) {
        var whole = make()
        feed(&whole, from: 0) { _ in p.count }
        var split = make()
        feed(&split, from: 0) { Int(p[$0] & 31) + 1 }
        let cuts = all(whole)
        if cuts != all(split) { fatalError("boundaries depend on the split: \(cuts) vs \(all(split))") }
        let probes = Array(stride(from: Int64(0), to: Int64(p.count), by: 61)) + cuts
        for o in probes where whole.elementWidth(at: o) != split.elementWidth(at: o) {
            fatalError("width hint at \(o) depends on the split")
        }
        // Saved halfway, restored into a fresh planner that is shown the bytes from an earlier
        // point on (a resumed writer re-feeds its tail): the same answers from there.
        // Saved at three points picked by the input's hash, restored into a fresh planner that
        // is shown the stored bytes while it wants them and then the bytes from `committed` on
        // (as `BlobWriter` resumes: it re-feeds its tail): the same answers from there. A planner
        // with no state (nil) resumes by replaying, which must give the same answers too.
        guard p.count >= 2 else { return }
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in p { hash = (hash ^ UInt64(b)) &* 0x100_0000_01b3 }
        for k in 0..<3 {
            let h = hash >> (UInt64(k) * 17)
            let half = Int(h % UInt64(p.count))
            let committed = Int64(half - Int((h >> 32) % UInt64(min(half, 300) + 1)))
            var partial = make()
            if half > 0 { partial.observe(UnsafeRawBufferPointer(rebasing: p[0..<half]), at: 0) }
            let state = partial.savedState(committed: committed)
            var resumed = make()
            if let state {
                do { try resumed.restore(state) } catch { fatalError("its own saved state was refused: \(error)") }
            }
            var replayed = 0
            while resumed.wantsBytes && replayed < Int(committed) {
                let n = min(7, Int(committed) - replayed)
                resumed.observe(UnsafeRawBufferPointer(rebasing: p[replayed..<(replayed + n)]), at: Int64(replayed))
                replayed += n
            }
            feed(&resumed, from: Int(committed)) { _ in 7 }
            if all(resumed).filter({ $0 >= committed }) != cuts.filter({ $0 >= committed }) {
                fatalError("a planner resumed at \(committed) (state: \(state != nil)) cuts differently: \(all(resumed)) vs \(cuts)")
            }
            for o in probes where o >= committed && resumed.elementWidth(at: o) != whole.elementWidth(at: o) {
                fatalError("a planner resumed at \(committed)'s width hint at \(o) differs")
            }
            if resumed.tag != whole.tag { fatalError("a resumed planner's tag differs: \(resumed.tag ?? "nil") vs \(whole.tag ?? "nil")") }
            // The state with bytes changed by the input: refused or harmless, never a trap.
            guard var hostile = state, !hostile.isEmpty else { continue }
            for i in 0..<min(4, p.count - 1) { hostile[Int(p[i]) % hostile.count] ^= p[i + 1] | 1 }
            var damaged = make()
            if (try? damaged.restore(hostile)) != nil { feed(&damaged, from: Int(committed)) { _ in 64 } }
        }
    }
    check { ONNXBoundaryPlanner(minTensorSize: 1) }
    check { ModelFileBoundaryPlanner(minTensorSize: 1) }
}

func pickle(_ p: UnsafeRawBufferPointer) {
    _ = try? Pickle.scan(BytesSource(bytes(p)), from: 0, to: Int64(p.count), what: "pickle")
    inspect("model.pt", p)
}

func zip(_ p: UnsafeRawBufferPointer) {
    let source = BytesSource(bytes(p))
    if let entries = try? Zip.entries(source) {
        for e in entries.prefix(100) { _ = try? Zip.dataRange(e, in: source) }
    }
    inspect("model.pt", p)
}

func tensorflow(_ p: UnsafeRawBufferPointer) {
    inspect("saved_model.pb", p)
    inspect("frozen.pb", p)
}

func tensorrt(_ p: UnsafeRawBufferPointer) {
    // The first line is the push's platform string, the rest the engine.
    let newline = p.firstIndex(of: 0x0a) ?? p.count
    let platform = String(decoding: p[..<newline], as: UTF8.self)
    _ = TensorRT.parsePlatform(platform)
    inspect("model.plan", UnsafeRawBufferPointer(rebasing: p[min(p.count, newline + 1)...]), platform: platform)
}

func textproto(_ p: UnsafeRawBufferPointer) {
    let t = text(p)
    _ = try? TextProto.parse(t)
    _ = try? FormatInspector.triton(config: t, files: ["config.pbtxt", "1/model.onnx", "2/model.plan", "3/model.savedmodel/x"])
    inspect("config.pbtxt", p)
}

func manifest(_ p: UnsafeRawBufferPointer) {
    let b = bytes(p)
    for type in [nil, MediaType.ociManifest, MediaType.ociIndex, MediaType.dockerManifest, MediaType.dockerManifestList] {
        _ = try? ManifestParser.parse(b, contentType: type)
    }
}

let zeroHash = [UInt8](repeating: 0, count: 32).withUnsafeBytes { SHA256.Value(bytes: $0) }

/// One codec for the whole run (it holds zstd contexts).
let codec = ChunkRecordCodec()

func chunkRecord(_ p: UnsafeRawBufferPointer) {
    // As received: a header that must pass its own checks, then the payload.
    if let h = try? ChunkRecords.header(p, maxChunk: codec.maxChunk) {
        let payload = UnsafeRawBufferPointer(rebasing: p[min(p.count, ChunkRecords.headerSize)...].prefix(h.storedLength))
        var out = [UInt8](repeating: 0, count: h.rawLength)
        out.withUnsafeMutableBytes { o in _ = try? codec.decode(h, payload: payload, into: o) }
    }
    // With the header checks made to pass, so the fuzzer reaches the codecs: byte 0 picks the
    // codec, bytes 1-3 the raw length, the rest is the payload.
    guard p.count >= 4, let kind = ChunkCodec(rawValue: p[0]) else { return }
    let raw = 1 + (Int(p[1]) | Int(p[2]) << 8 | Int(p[3]) << 16) % codec.maxChunk
    let payload = UnsafeRawBufferPointer(rebasing: p[4...])
    let header = ChunkRecords.Header(
        codec: kind, rawLength: raw, storedLength: payload.count, hash: zeroHash,
        checksum: PackFormat.checksum(payload))
    var out = [UInt8](repeating: 0, count: raw)
    out.withUnsafeMutableBytes { o in _ = try? codec.decode(header, payload: payload, into: o) }
    // Whatever the encoder makes of the input, read as fp32, fp16 or untyped data, decodes back
    // to it: byte planes (their SIMD transforms, their zstd parameters) and odd sizes included.
    guard !p.isEmpty, p.count <= codec.maxChunk else { return }
    let hash = SHA256.hash(p)
    for width in [4, 2, 1] {
        var record: [UInt8] = []
        do {
            try codec.append(p, hash: hash, elementWidth: width, to: &record)
            try record.withUnsafeBytes { r in
                let h = try ChunkRecords.header(r, maxChunk: codec.maxChunk)
                var back = [UInt8](repeating: 0, count: h.rawLength)
                try back.withUnsafeMutableBytes {
                    try codec.decode(h, payload: UnsafeRawBufferPointer(rebasing: r[ChunkRecords.headerSize...]), into: $0)
                }
                guard back.elementsEqual(p) else { fatalError("a chunk's record decodes to other bytes (width \(width))") }
            }
        } catch {
            fatalError("a chunk's record does not decode (width \(width)): \(error)")
        }
    }
}

/// A store in a temporary folder, shared by every recipe input (commits are aborted).
let recipeStore: ChunkStore = {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("depot-fuzz-recipe-\(getpid())").path
    return try! ChunkStore(root: dir, create: true)
}()

func recipe(_ p: UnsafeRawBufferPointer) {
    guard let committer = try? recipeStore.makeRecipeCommitter(chunker: "v1") else { return }
    do {
        let used = try RecipeBody.decode(p) { try committer.append($0, length: $1) }
        precondition(used <= p.count && used % RecipeBody.entrySize == 0)
        _ = try committer.finish(expecting: Digest.of(bytes(p)))
    } catch {
        committer.abort()
    }
}

/// A recipe commit's Depot-Hash-States header: bytes 0-7 are the recipe's size, the rest the
/// value. What parses must fit the size, and print back to itself.
func hashStates(_ p: UnsafeRawBufferPointer) {
    var size: Int64 = 0
    for i in 0..<min(8, p.count) { size |= Int64(p[i]) << (8 * Int64(i)) }
    let value = text(UnsafeRawBufferPointer(rebasing: p[min(8, p.count)...]))
    guard let s = try? BlobHashStates(headerValue: value, size: size) else { return }
    precondition(s.stride >= BlobHashStates.minStride && s.stride % (1 << 20) == 0)
    precondition(!s.states.isEmpty && s.states.count <= BlobHashStates.maxStates && Int64(s.states.count) == (size - 1) / s.stride)
    precondition((try? BlobHashStates(headerValue: s.headerValue, size: size)) == s)
    for (i, state) in s.states.enumerated() {
        precondition(ResumableSHA256(midstate: state, count: Int64(i + 1) * s.stride)?.midstate == state)
    }
}

func range(_ p: UnsafeRawBufferPointer) {
    // Bytes 0-7 are the blob size, the rest the header value.
    var size: Int64 = 0
    for i in 0..<min(8, p.count) { size |= Int64(p[i]) << (8 * Int64(i)) }
    let header = text(UnsafeRawBufferPointer(rebasing: p[min(8, p.count)...]))
    if let r = try? HTTPRanges.contentRange(header) { precondition(r.lowerBound >= 0 && r.upperBound >= r.lowerBound) }
    for s in [max(0, size), 0, 1, 1 << 40] {
        if let r = try? HTTPRanges.byteRange(header, size: s) { precondition(r.lowerBound >= 0 && r.upperBound <= s && !r.isEmpty) }
    }
}

/// The route table: the first line is the method, the rest the path. A match must name a route of
/// that method and give every parameter its pattern has, each a non-empty segment.
func routes(_ p: UnsafeRawBufferPointer) {
    let t = text(p)
    let (method, path) = t.firstIndex(of: "\n").map { (String(t[..<$0]), String(t[t.index(after: $0)...])) } ?? ("GET", t)
    guard case .matched(let m) = Routes.route(method: method, path: path) else { return }
    precondition(m.route.method.rawValue == method)
    precondition(m.route.isRepositoryScoped == (m.name != nil))
    for part in m.route.pattern.split(separator: "/") where part.hasPrefix("{") && part != "{name}" {
        let value = m[String(part.dropFirst().dropLast())]
        precondition(!value.isEmpty && !value.contains("/"))
    }
}

/// Credentials and grants as an attacker sends them: the first line is an `Authorization` header,
/// the second a repository pattern, the third a repository name. Parsing never crashes, a pattern
/// that parses matches in bounded time, and a principal with no grants is never allowed anything
/// that is not open.
func auth(_ p: UnsafeRawBufferPointer) {
    let lines = text(p).split(separator: "\n", maxSplits: 2, omittingEmptySubsequences: false).map(String.init)
    _ = try? Credential.parse(lines[0])
    guard lines.count >= 3 else { return }
    if let glob = try? RepositoryGlob(lines[1]) {
        _ = glob.matches(lines[2])
        let p = Principal(kind: .user, name: "f", grants: [Grant(role: .reader, repositories: [glob])])
        precondition(Authorizer.decide(p, AccessRequest(.push, repository: lines[2]), policy: AuthPolicy()) != .allow)
    }
    for action in Action.allCases where !action.isOpen && action != .authenticated {
        precondition(Authorizer.decide(.anonymous, AccessRequest(action, repository: lines[2]), policy: AuthPolicy()) == .authenticate)
    }
}

/// A signature envelope as a registry or a node reads it from a referrer: parsing never crashes,
/// and nothing verifies unless a trusted key signed it over the subject being verified.
let fuzzKey = SigningKey.generate()
let fuzzVerifier = SignatureVerifier(keys: [TrustedKey(name: "pipeline", signingKey: fuzzKey)])
let fuzzSubject = Digest.of(Array("fuzz subject".utf8))
func signature(_ p: UnsafeRawBufferPointer) {
    guard let verified = try? fuzzVerifier.verify(envelope: Array(p), subject: fuzzSubject) else { return }
    precondition(verified.allSatisfy { $0.statement.subject.digest == fuzzSubject && $0.key == "pipeline" })
}

func pipeline(_ p: UnsafeRawBufferPointer) { _ = try? PipelineLoader.parse(text(p), file: "fuzz.yaml") }

func config(_ p: UnsafeRawBufferPointer) { _ = try? ServerConfig.parse(text(p), path: "fuzz.yaml") }
