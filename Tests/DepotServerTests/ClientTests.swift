import DepotAPI
import DepotCore
import DepotRegistry
import DepotStore
import DepotTestSupport
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing

@testable import DepotClient

/// Fast deterministic bytes (splitmix64, eight bytes per step).
func fastRandom(_ count: Int, seed: UInt64) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: count)
    var s = seed
    out.withUnsafeMutableBytes { p in
        var i = 0
        while i < count {
            s &+= 0x9E37_79B9_7F4A_7C15
            var z = s
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            z ^= z >> 31
            withUnsafeBytes(of: z) { w in
                let n = min(8, count - i)
                p.baseAddress!.advanced(by: i).copyMemory(from: w.baseAddress!, byteCount: n)
            }
            i += 8
        }
    }
    return out
}

/// A safetensors file of `tensors` F32 tensors of `tensorBytes` each; tensors in `changed`
/// get different contents (a fine-tune of the last layers).
func makeCheckpoint(_ path: String, tensors: Int, tensorBytes: Int, changed: Set<Int> = [], seed: UInt64 = 1) throws {
    var entries: [String] = []
    for i in 0..<tensors {
        entries.append(
            "\"layer.\(i).weight\":{\"dtype\":\"F32\",\"shape\":[\(tensorBytes / 4)],\"data_offsets\":[\(i * tensorBytes),\((i + 1) * tensorBytes)]}"
        )
    }
    var header = Array(("{" + entries.joined(separator: ",") + "}").utf8)
    while header.count % 8 != 0 { header.append(0x20) }
    var bytes = [UInt8]()
    withUnsafeBytes(of: UInt64(header.count).littleEndian) { bytes += $0 }
    bytes += header
    for i in 0..<tensors {
        bytes += fastRandom(tensorBytes, seed: seed &* 1000 &+ UInt64(i) &+ (changed.contains(i) ? 7_777_777 : 0))
    }
    try Data(bytes).write(to: URL(fileURLWithPath: path))
}

func sameFile(_ a: String, _ b: String) -> Bool {
    FileManager.default.contentsEqual(atPath: a, andPath: b)
}

func quietProgress(_ c: RegistryConnection, _ verb: String) -> TransferProgress {
    TransferProgress(style: .quiet, verb: verb, wire: c.counters)
}

func push(_ port: Int, _ repo: String, _ tag: String, _ paths: [String], plain: Bool = false) async throws -> TransferSummary {
    let c = try RegistryConnection(url: "http://127.0.0.1:\(port)", token: nil)
    defer { Task { await c.shutdown() } }
    var r = PushRequest(repository: repo, tag: tag, paths: paths)
    r.plainOCI = plain
    return try await Pusher(connection: c, progress: quietProgress(c, "push")).push(r)
}

func pull(
    _ port: Int, _ repo: String, _ ref: String, into dir: String, cache: String, files: [String] = [],
    plain: Bool = false
) async throws -> TransferSummary {
    let c = try RegistryConnection(url: "http://127.0.0.1:\(port)", token: nil)
    defer { Task { await c.shutdown() } }
    var r = PullRequest(repository: repo, reference: ref, outputDirectory: dir)
    r.files = files
    r.plainOCI = plain
    return try await Puller(connection: c, progress: quietProgress(c, "pull"), cache: try ChunkCache(root: cache, maxBytes: 1 << 30)).pull(
        r)
}

func inode(_ path: String) -> UInt64? {
    var st = stat()
    return stat(path, &st) == 0 ? UInt64(st.st_ino) : nil
}

@Suite("Client push and pull")
struct ClientTests {
    @Test func aFineTunePushesAndPullsOnlyItsChangedLayers() async throws {
        let dir = TempDir("depot-client")
        let tensorBytes = 2 << 20
        try makeCheckpoint(dir.path + "/v1.safetensors", tensors: 8, tensorBytes: tensorBytes)
        try makeCheckpoint(dir.path + "/v2.safetensors", tensors: 8, tensorBytes: tensorBytes, changed: [6, 7])
        let changed = Double(2 * tensorBytes)
        try await withRegistry { _, registry, port in
            let s1 = try await push(port, "team/llm", "v1", [dir.path + "/v1.safetensors"])
            #expect(s1.mode == "chunked")
            #expect(s1.bytesSent >= Int64(8 * tensorBytes)) // random weights: everything moves once
            let s2 = try await push(port, "team/llm", "v2", [dir.path + "/v2.safetensors"])
            #expect(Double(s2.bytesSent) <= 1.1 * changed, "v2 sent \(s2.bytesSent) bytes for \(Int(changed)) changed")
            #expect(s2.deduplicatedBytes >= Int64(6 * tensorBytes))

            let p1 = try await pull(port, "team/llm", "v1", into: dir.path + "/out1", cache: dir.path + "/cache")
            #expect(sameFile(dir.path + "/out1/v1.safetensors", dir.path + "/v1.safetensors"))
            #expect(p1.bytesReceived >= Int64(8 * tensorBytes))
            let p2 = try await pull(port, "team/llm", "v2", into: dir.path + "/out2", cache: dir.path + "/cache")
            #expect(sameFile(dir.path + "/out2/v2.safetensors", dir.path + "/v2.safetensors"))
            #expect(Double(p2.bytesReceived) <= 1.1 * changed, "v2 pull received \(p2.bytesReceived) bytes")

            // Pushing the same thing again moves nothing but the manifest and the question which
            // chunks are missing (asked while the file is read, before its digest is known: 32
            // bytes a chunk), never a chunk's bytes.
            let again = try await push(port, "team/llm", "v2", [dir.path + "/v2.safetensors"])
            #expect(again.bytesSent < 8 << 10 + 32 * again.chunksTotal, "sent \(again.bytesSent) for \(again.chunksTotal) chunks")
            #expect(again.chunksTransferred == 0)
            #expect(try registry.tags(try RepositoryName("team/llm"), after: nil, limit: 10) == ["v1", "v2"])
        }
    }

    /// Cast-aware deduplication end to end: an fp32 checkpoint pushed chunked, its fp16 cast
    /// pushed as plain OCI blobs; the registry's GC stores the fp16 chunks as casts; both pull
    /// paths (chunk records, plain blob GET) return the file byte for byte, and a re-push of the
    /// fp16 file sends no chunk.
    @Test func anFp16CastOfAPushedCheckpointIsStoredAsCastsAndPullsIntact() async throws {
        let dir = TempDir("depot-client")
        let values = 64 << 10
        var names: [String] = []
        var fp32: [(String, String, [Int], [UInt8])] = []
        var fp16: [(String, String, [Int], [UInt8])] = []
        for i in 0..<4 {
            let raw = fastRandom(4 * values, seed: UInt64(40 + i))
            // Weight-like floats: random mantissas, exponents of values around 0.02.
            let floats = raw.withUnsafeBytes { p in
                (0..<values).map { j -> Float in
                    let w = UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 4 * j, as: UInt32.self))
                    return Float(bitPattern: (w & 0x807F_FFFF) | ((119 + w % 6) << 23))
                }
            }
            names.append("layer.\(i).weight")
            fp32.append((names[i], "F32", [values], floats.withUnsafeBytes { Array($0) }))
            fp16.append((names[i], "F16", [values], floats.map { Float16($0).bitPattern }.withUnsafeBytes { Array($0) }))
        }
        try Data(makeSafetensors(fp32)).write(to: URL(fileURLWithPath: dir.path + "/model.safetensors"))
        try FileManager.default.createDirectory(atPath: dir.path + "/half", withIntermediateDirectories: true)
        try Data(makeSafetensors(fp16)).write(to: URL(fileURLWithPath: dir.path + "/half/model.safetensors"))
        try await withRegistry { _, registry, port in
            _ = try await push(port, "team/llm", "fp32", [dir.path + "/model.safetensors"])
            _ = try await push(port, "team/llm", "fp16", [dir.path + "/half/model.safetensors"], plain: true)
            let before = try registry.store.stats()
            let report = try registry.collectGarbage()
            let casts = try #require(report.store.casts)
            #expect(casts.tensorsMatched == 4)
            #expect(casts.bytesDerived >= Int64(4 * 2 * values) * 9 / 10)
            #expect(try registry.store.stats().chunkBytes == before.chunkBytes - casts.bytesDerived)
            let chunked = try await pull(port, "team/llm", "fp16", into: dir.path + "/out1", cache: dir.path + "/cache1")
            #expect(chunked.mode == "chunked")
            #expect(sameFile(dir.path + "/out1/model.safetensors", dir.path + "/half/model.safetensors"))
            _ = try await pull(port, "team/llm", "fp16", into: dir.path + "/out2", cache: dir.path + "/cache2", plain: true)
            #expect(sameFile(dir.path + "/out2/model.safetensors", dir.path + "/half/model.safetensors"))
            let again = try await push(port, "team/llm", "fp16-again", [dir.path + "/half/model.safetensors"])
            #expect(again.chunksTransferred == 0)
            #expect(try registry.store.fsck().isClean)
        }
    }

    /// A checkpoint's ONNX export carries the same tensor bytes inside protobuf framing. Both
    /// the client (a chunked push) and the registry (a plain OCI upload) cut it at each
    /// initializer's data, so neither moves nor stores the weights again.
    @Test func anONNXExportOfAPushedCheckpointMovesOnlyItsFraming() async throws {
        let dir = TempDir("depot-client")
        var tensors: [(String, String, [Int], [UInt8])] = []
        for i in 0..<4 {
            tensors.append(("layer.\(i).weight", "F32", [512, 256], fastRandom(512 << 10, seed: UInt64(60 + i))))
            tensors.append(("layer.\(i).bias", "F32", [256], fastRandom(1 << 10, seed: UInt64(70 + i))))
        }
        let weightBytes = Int64(4 * (512 << 10))
        let export = makeONNX(initializers: tensors.map { ($0.0, 1, $0.2, $0.3) })
        try Data(makeSafetensors(tensors)).write(to: URL(fileURLWithPath: dir.path + "/model.safetensors"))
        try FileManager.default.createDirectory(atPath: dir.path + "/onnx", withIntermediateDirectories: true)
        try Data(export).write(to: URL(fileURLWithPath: dir.path + "/onnx/model.onnx"))
        try await withRegistry { _, registry, port in
            _ = try await push(port, "team/llm", "v1", [dir.path + "/model.safetensors"])
            let s = try await push(port, "team/llm", "v1-onnx", [dir.path + "/onnx/model.onnx"])
            #expect(s.mode == "chunked")
            #expect(s.deduplicatedBytes >= weightBytes)
            // The framing and the small biases inside it, the manifest, and 32 bytes a chunk asked about.
            let rest = Int64(export.count) - weightBytes
            #expect(s.bytesSent < rest + (8 << 10) + 32 * Int64(s.chunksTotal), "sent \(s.bytesSent), not weights")

            // The same file as a plain OCI blob upload: the registry's cuts find the same chunks.
            let before = try registry.store.stats()
            _ = try await push(port, "team/llm", "v1-onnx-oci", [dir.path + "/onnx/model.onnx"], plain: true)
            #expect(try registry.store.stats().chunkBytes - before.chunkBytes < rest + (8 << 10))
            _ = try await pull(port, "team/llm", "v1-onnx-oci", into: dir.path + "/out", cache: dir.path + "/cache", plain: true)
            #expect(sameFile(dir.path + "/out/model.onnx", dir.path + "/onnx/model.onnx"))
            #expect(try registry.store.fsck().isClean)
        }
    }

    @Test func aDirectoryKeepsItsLayoutAndOneFileCanBePulled() async throws {
        let dir = TempDir("depot-client")
        let model = dir.path + "/resnet"
        try FileManager.default.createDirectory(atPath: model + "/1", withIntermediateDirectories: true)
        try "name: \"resnet\"\nplatform: \"onnxruntime_onnx\"\nmax_batch_size: 8\n".write(
            toFile: model + "/config.pbtxt", atomically: true, encoding: .utf8)
        try Data(fastRandom(3 << 20, seed: 5)).write(to: URL(fileURLWithPath: model + "/1/model.onnx"))
        try await withRegistry { _, registry, port in
            let s = try await push(port, "vision/resnet", "v1", [model])
            #expect(s.files == 2)
            let m = try registry.manifest(try RepositoryName("vision/resnet"), .tag("v1"))
            let json = try #require(try JSONSerialization.jsonObject(with: Data(m.content)) as? [String: Any])
            #expect(json["artifactType"] as? String == ModelMediaType.tritonBundle)
            let paths = (json["layers"] as? [[String: Any]] ?? []).compactMap {
                ($0["annotations"] as? [String: String])?[ModelMediaType.filepath]
            }
            #expect(Set(paths) == ["config.pbtxt", "1/model.onnx"])

            _ = try await pull(port, "vision/resnet", "v1", into: dir.path + "/all", cache: dir.path + "/cache")
            #expect(sameFile(dir.path + "/all/1/model.onnx", model + "/1/model.onnx"))
            #expect(sameFile(dir.path + "/all/config.pbtxt", model + "/config.pbtxt"))
            #expect(!FileManager.default.fileExists(atPath: dir.path + "/all/.depot-partial"))

            _ = try await pull(port, "vision/resnet", "v1", into: dir.path + "/one", cache: dir.path + "/cache2", files: ["config.pbtxt"])
            #expect(FileManager.default.fileExists(atPath: dir.path + "/one/config.pbtxt"))
            #expect(!FileManager.default.fileExists(atPath: dir.path + "/one/1/model.onnx"))

            await #expect(throws: ClientError.self) {
                _ = try await pull(port, "vision/resnet", "v1", into: dir.path + "/none", cache: dir.path + "/cache2", files: ["nope.bin"])
            }
        }
    }

    /// The cache keeps a pulled file by a hard link, so editing the pulled file in place edits
    /// the cache entry: the next pull's digest check fails, its chunks are hashed one by one,
    /// and only the edited chunk is fetched again. A pulled file the user deleted still serves.
    @Test func aCacheEntryEditedInPlaceIsRepairedAndADeletedPullStillServes() async throws {
        let dir = TempDir("depot-client")
        try Data(fastRandom(2 << 20, seed: 9)).write(to: URL(fileURLWithPath: dir.path + "/w.bin"))
        try await withRegistry { _, _, port in
            _ = try await push(port, "r/x", "v1", [dir.path + "/w.bin"])
            let first = try await pull(port, "r/x", "v1", into: dir.path + "/a", cache: dir.path + "/cache")
            #expect(first.bytesReceived >= 2 << 20)
            let entry = try #require(
                try FileManager.default.contentsOfDirectory(atPath: dir.path + "/cache/files").first { $0.count == 64 })
            #expect(inode(dir.path + "/a/w.bin") == inode(dir.path + "/cache/files/" + entry), "the cache links the pulled file")
            // Flip one byte in the middle of the pulled file, in place.
            let edited = try PosixFile(path: dir.path + "/a/w.bin", mode: .readWrite)
            var byte: [UInt8] = [0]
            try byte.withUnsafeMutableBytes { try edited.read(into: $0, at: 1 << 20) }
            byte[0] ^= 0xFF
            try byte.withUnsafeBytes { try edited.write($0, at: 1 << 20) }
            let s = try await pull(port, "r/x", "v1", into: dir.path + "/b", cache: dir.path + "/cache")
            #expect(sameFile(dir.path + "/b/w.bin", dir.path + "/w.bin"))
            #expect(
                s.bytesReceived >= Int64(ChunkerParameters.v1.minSize) && s.bytesReceived <= 2 * Int64(ChunkerParameters.v1.maxSize),
                "the edited chunk, and only it, came again: \(s.bytesReceived)")
            #expect(s.chunksTransferred == 1)
            #expect(!sameFile(dir.path + "/a/w.bin", dir.path + "/w.bin"), "the user's edit is theirs")
            // The repaired pull replaced the entry; deleting every pulled copy leaves the cache's.
            try FileManager.default.removeItem(atPath: dir.path + "/a")
            try FileManager.default.removeItem(atPath: dir.path + "/b")
            let c = try await pull(port, "r/x", "v1", into: dir.path + "/c", cache: dir.path + "/cache")
            #expect(sameFile(dir.path + "/c/w.bin", dir.path + "/w.bin"))
            #expect(c.bytesReceived < 64 << 10, "nothing but the manifest and the recipe: \(c.bytesReceived)")
        }
    }

    /// A registry that answers a pull with a chunk record longer than the recipe says (the
    /// right bytes, then more): the pull fails saying so, and writes nothing. Served by a
    /// hostile stand-in holding the real registry's answers, with one record changed.
    @Test func aChunkRecordLongerThanItsRecipeEntryFailsThePull() async throws {
        let dir = TempDir("depot-client")
        let bytes = fastRandom(700_000, seed: 41)
        try Data(bytes).write(to: URL(fileURLWithPath: dir.path + "/model.py"))
        try await withRegistry { client, _, port in
            _ = try await push(port, "r/x", "v1", [dir.path + "/model.py"])
            let manifest = try await client.req(
                .get, "/v2/r/x/manifests/v1", headers: [.accept: "application/vnd.oci.image.manifest.v1+json"])
            let info = try await client.req(.get, "/depot/v1/info")
            let digest = Digest(bytes: bytes.withUnsafeBytes { SHA256.hash($0) })
            let recipePath = "/depot/v1/repositories/r/x/blobs/\(digest)/recipe"
            let recipe = [UInt8](buffer: try await client.req(.get, recipePath).body)
            #expect(recipe.count > 36)
            // Each chunk's bytes, from the file and the recipe; the last one gets a tail.
            var chunks: [SHA256.Value: [UInt8]] = [:]
            var offset = 0
            for at in stride(from: 0, to: recipe.count, by: 36) {
                let hash = recipe.withUnsafeBytes { SHA256.Value(bytes: UnsafeRawBufferPointer(rebasing: $0[at..<(at + 32)])) }
                let length = Int(recipe[at + 32]) | Int(recipe[at + 33]) << 8 | Int(recipe[at + 34]) << 16
                chunks[hash] = Array(bytes[offset..<(offset + length)]) + (offset + length == bytes.count ? Array("\nimport os".utf8) : [])
                offset += length
            }
            let served = chunks
            let router = Router()
            let answers: [String: (ByteBuffer, String)] = [
                "/depot/v1/info": (info.body, "application/json"),
                "/v2/r/x/manifests/v1": (manifest.body, manifest.headers[.contentType] ?? "application/vnd.oci.image.manifest.v1+json"),
                recipePath: (ByteBuffer(bytes: recipe), "application/octet-stream"),
            ]
            for (path, answer) in answers {
                router.get(RouterPath(path)) { _, _ in
                    Response(status: .ok, headers: [.contentType: answer.1], body: ResponseBody(byteBuffer: answer.0))
                }
            }
            router.post(RouterPath("/depot/v1/repositories/r/x/blobs/\(digest)/chunks")) { request, _ -> Response in
                let asked = [UInt8](buffer: try await request.body.collect(upTo: 1 << 20))
                var out: [UInt8] = []
                for at in stride(from: 0, to: asked.count, by: 32) {
                    let hash = asked.withUnsafeBytes { SHA256.Value(bytes: UnsafeRawBufferPointer(rebasing: $0[at..<(at + 32)])) }
                    try (served[hash] ?? []).withUnsafeBytes { try ChunkRecordCodec().append($0, hash: hash, compress: false, to: &out) }
                }
                return Response(
                    status: .ok, headers: [.contentType: "application/octet-stream"], body: ResponseBody(byteBuffer: ByteBuffer(bytes: out))
                )
            }
            let hostile = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)))
            try await hostile.test(.live) { fake in
                do {
                    _ = try await pull(fake.port!, "r/x", "v1", into: dir.path + "/out", cache: dir.path + "/cache")
                    Issue.record("the pull accepted a longer record")
                } catch {
                    #expect("\(error)".contains("bytes; its recipe says"), "\(error)")
                }
            }
            #expect(!FileManager.default.fileExists(atPath: dir.path + "/out/model.py"))
            #expect(((try? FileManager.default.contentsOfDirectory(atPath: dir.path + "/cache/files")) ?? []).isEmpty, "nothing cached")
            // The real registry's answer is whole.
            _ = try await pull(port, "r/x", "v1", into: dir.path + "/out", cache: dir.path + "/cache")
            #expect(sameFile(dir.path + "/out/model.py", dir.path + "/model.py"))
        }
    }

    /// A link planted where the partial file goes is not followed: the file it points at is
    /// left as it was, and the pulled file is a regular file.
    @Test func aLinkAtThePartialFilesPathIsNotFollowed() async throws {
        let dir = TempDir("depot-client")
        let bytes = fastRandom(300_000, seed: 42)
        try Data(bytes).write(to: URL(fileURLWithPath: dir.path + "/w.bin"))
        let victim = dir.path + "/victim"
        try Data(count: bytes.count).write(to: URL(fileURLWithPath: victim))
        try await withRegistry { _, _, port in
            _ = try await push(port, "r/x", "v1", [dir.path + "/w.bin"])
            let digest = Digest(bytes: bytes.withUnsafeBytes { SHA256.hash($0) })
            try FileManager.default.createDirectory(atPath: dir.path + "/out/.depot-partial", withIntermediateDirectories: true)
            let partial = digest.hex + "-" + Digest.of(Array("w.bin".utf8)).hex.prefix(16)
            #expect(symlink(victim, dir.path + "/out/.depot-partial/" + partial) == 0)
            _ = try await pull(port, "r/x", "v1", into: dir.path + "/out", cache: dir.path + "/cache")
            #expect(sameFile(dir.path + "/out/w.bin", dir.path + "/w.bin"))
            var st = stat()
            #expect(lstat(dir.path + "/out/w.bin", &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG)
            #expect(try Data(contentsOf: URL(fileURLWithPath: victim)) == Data(count: bytes.count), "the link's target is untouched")
        }
    }

    /// A pull into a directory another pull is writing waits for it (`.depot-partial` is
    /// locked for a whole pull), then finds the files there; a `.depot-partial` left open to
    /// others is made this user's alone.
    @Test func aSecondPullIntoTheSameDirectoryWaitsForTheFirst() async throws {
        let dir = TempDir("depot-client")
        try Data(fastRandom(300_000, seed: 43)).write(to: URL(fileURLWithPath: dir.path + "/w.bin"))
        try await withRegistry { _, _, port in
            _ = try await push(port, "r/x", "v1", [dir.path + "/w.bin"])
            let partials = dir.path + "/out/.depot-partial"
            try FileManager.default.createDirectory(atPath: partials, withIntermediateDirectories: true)
            #expect(chmod(partials, 0o777) == 0)
            try Data(count: 10).write(to: URL(fileURLWithPath: partials + "/left-by-a-killed-pull"))
            // Hold the lock as another pull would.
            let held = open(partials, O_RDONLY | O_DIRECTORY)
            #expect(held >= 0 && flock(held, LOCK_EX) == 0)
            let second = Task { try await pull(port, "r/x", "v1", into: dir.path + "/out", cache: dir.path + "/cache") }
            try await Task.sleep(nanoseconds: 500_000_000)
            #expect(!FileManager.default.fileExists(atPath: dir.path + "/out/w.bin"), "it waits")
            close(held)
            _ = try await second.value
            #expect(sameFile(dir.path + "/out/w.bin", dir.path + "/w.bin"))
            var st = stat()
            #expect(stat(partials, &st) == 0 && st.st_mode & 0o777 == 0o700)
            #expect(FileManager.default.fileExists(atPath: partials + "/left-by-a-killed-pull"), "another file's partial is kept")
        }
    }

    /// Two files of one artifact with the same chunks: the second is copied from the cache
    /// entry the first just became, not fetched again.
    @Test func aChunkSharedByTwoFilesOfAPullIsFetchedOnce() async throws {
        let dir = TempDir("depot-client")
        let bytes = fastRandom(1 << 20, seed: 44)
        try FileManager.default.createDirectory(atPath: dir.path + "/m", withIntermediateDirectories: true)
        try Data(bytes).write(to: URL(fileURLWithPath: dir.path + "/m/a.bin"))
        try Data(bytes + [1]).write(to: URL(fileURLWithPath: dir.path + "/m/b.bin"))
        try await withRegistry { _, _, port in
            _ = try await push(port, "r/x", "v1", [dir.path + "/m"])
            let c = try RegistryConnection(url: "http://127.0.0.1:\(port)", token: nil)
            defer { Task { await c.shutdown() } }
            var r = PullRequest(repository: "r/x", reference: "v1", outputDirectory: dir.path + "/out")
            r.fileJobs = 1
            let s = try await Puller(
                connection: c, progress: quietProgress(c, "pull"), cache: try ChunkCache(root: dir.path + "/cache", maxBytes: 1 << 30)
            ).pull(r)
            #expect(sameFile(dir.path + "/out/a.bin", dir.path + "/m/a.bin") && sameFile(dir.path + "/out/b.bin", dir.path + "/m/b.bin"))
            #expect(s.bytesReceived < Int64(bytes.count) + (300 << 10), "received \(s.bytesReceived) for two copies of \(bytes.count)")
        }
    }

    /// A cache entry truncated since (the user truncated the pulled file it is linked to) is
    /// dropped when a later pull finds it short, instead of failing every pull after.
    @Test func aTruncatedCacheEntryIsDropped() async throws {
        let dir = TempDir("depot-client")
        let tensorBytes = 1 << 20
        try makeCheckpoint(dir.path + "/v1.safetensors", tensors: 4, tensorBytes: tensorBytes)
        try makeCheckpoint(dir.path + "/v2.safetensors", tensors: 4, tensorBytes: tensorBytes, changed: [3])
        try await withRegistry { _, _, port in
            _ = try await push(port, "team/llm", "v1", [dir.path + "/v1.safetensors"])
            _ = try await push(port, "team/llm", "v2", [dir.path + "/v2.safetensors"])
            _ = try await pull(port, "team/llm", "v1", into: dir.path + "/a", cache: dir.path + "/cache")
            let v1 = try #require(try FileManager.default.contentsOfDirectory(atPath: dir.path + "/cache/files").first { $0.count == 64 })
            #expect(truncate(dir.path + "/a/v1.safetensors", 1000) == 0)
            let s = try await pull(port, "team/llm", "v2", into: dir.path + "/b", cache: dir.path + "/cache")
            #expect(sameFile(dir.path + "/b/v2.safetensors", dir.path + "/v2.safetensors"))
            #expect(s.bytesReceived >= Int64(3 * tensorBytes), "what the short entry could not give came again")
            #expect(!FileManager.default.fileExists(atPath: dir.path + "/cache/files/" + v1 + ".recipe"), "the short entry is gone")
        }
    }

    /// A recipe commit with the client's SHA-256 states at every stride is checked in segments
    /// (in parallel on the server), and every claimed state must be the true one: a forged state,
    /// a digest of other bytes or a wrong count is refused, and nothing is stored.
    @Test func aLargeRecipeIsCheckedInSegmentsAndEveryClaimedStateMustHold() async throws {
        try await withRegistry { client, registry, port in
            let dir = TempDir("depot-states")
            // 3 segments at the 16 MiB minimum stride (an odd count), the last ending exactly at a stride.
            let bytes = fastRandom(48 << 20, seed: 41)
            let path = dir.path + "/big.bin"
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            let recipe = try LocalRecipe.compute(path: path, parameters: .v1)
            let states = try #require(recipe.hashStates)
            #expect(states.stride == BlobHashStates.minStride && states.states.count == 2)
            // The client's states are the true ones, computed independently.
            var alone = ResumableSHA256()
            bytes.withUnsafeBytes { alone.update(UnsafeRawBufferPointer(rebasing: $0[..<Int(states.stride)])) }
            #expect(alone.midstate == states.states[0])

            let c = try RegistryConnection(url: "http://127.0.0.1:\(port)", token: nil, attempts: 1)
            defer { Task { await c.shutdown() } }
            let codec = ChunkRecordCodec()
            var records = [UInt8]()
            var at = 0
            try bytes.withUnsafeBytes { p in
                for chunk in recipe.chunks {
                    try codec.append(UnsafeRawBufferPointer(rebasing: p[at..<(at + chunk.length)]), hash: chunk.hash, to: &records)
                    at += chunk.length
                }
            }
            try await c.uploadChunkRecords("r/states", records)
            func code(_ body: () async throws -> Void) async -> String? {
                do {
                    try await body()
                    return nil
                } catch let e as ClientError { return e.code } catch { return "\(error)" }
            }
            for k in 0..<2 {
                var forged = states
                forged.states[k] = SHA256.Value(
                    a: states.states[k].a ^ 1, b: states.states[k].b, c: states.states[k].c, d: states.states[k].d)
                #expect(
                    await code {
                        try await c.commitRecipe("r/states", recipe.digest, chunks: recipe.chunks, chunker: recipe.chunker, states: forged)
                    } == "DIGEST_INVALID", "a forged state \(k)")
            }
            // Other bytes in the first stride only (the first two chunks swapped), under these
            // bytes' digest and true states: only the first segment's check can catch it.
            var swapped = recipe.chunks
            swapped.swapAt(0, 1)
            #expect(
                await code {
                    try await c.commitRecipe("r/states", recipe.digest, chunks: swapped, chunker: recipe.chunker, states: states)
                } == "DIGEST_INVALID", "a first segment of other bytes")
            // True states of these bytes, claimed for the digest of other bytes: the last segment fails.
            let other = Digest.of([1, 2, 3])
            #expect(
                await code { try await c.commitRecipe("r/states", other, chunks: recipe.chunks, chunker: recipe.chunker, states: states) }
                    == "DIGEST_INVALID")
            var short = states
            short.states.removeLast()
            #expect(
                await code {
                    try await c.commitRecipe("r/states", recipe.digest, chunks: recipe.chunks, chunker: recipe.chunker, states: short)
                } == "BLOB_UPLOAD_INVALID", "a state count that does not fit the size")
            var body = [UInt8]()
            for chunk in recipe.chunks {
                body += chunk.hash.byteArray
                withUnsafeBytes(of: UInt32(chunk.length).littleEndian) { body += $0 }
            }
            for value in [
                "16777216", "1000 \(states.states.map(\.hex).joined(separator: ","))", "16777216 zz,yy",
                String(repeating: "1", count: 5000),
            ] {
                let r = try await client.req(
                    .put, Routes[.recipePut].path(name: "r/states", ["digest": "\(recipe.digest)"]),
                    headers: [HTTPField.Name(BlobHashStates.header)!: value], body: body)
                #expect(r.status.code == 400 && r.errorCode == "BLOB_UPLOAD_INVALID", "\(value.prefix(40)): \(r.text)")
            }
            #expect(try await client.req(.head, "/v2/r/states/blobs/\(recipe.digest)").status.code == 404, "nothing was stored")

            try await c.commitRecipe("r/states", recipe.digest, chunks: recipe.chunks, chunker: recipe.chunker, states: states)
            // Read back from the store, not through the test client: its 20 s limit per request is
            // too short for 48 MiB in a debug build while the whole suite runs on two cores.
            #expect(try await client.req(.head, "/v2/r/states/blobs/\(recipe.digest)").status.code == 200)
            var back: [UInt8] = []
            try registry.store.reader(recipe.digest).forEach { back += $0 }
            #expect(back == bytes)
            // The client's own push sends them, and the server accepts them.
            _ = try await push(port, "r/pushed", "v1", [path])
            #expect(try await client.req(.head, "/v2/r/pushed/blobs/\(recipe.digest)").status.code == 200)
        }
    }

    @Test func theServerVerifiesChunksAndRecipes() async throws {
        try await withRegistry { client, _, port in
            let c = try RegistryConnection(url: "http://127.0.0.1:\(port)", token: nil, attempts: 1)
            defer { Task { await c.shutdown() } }
            let chunk = fastRandom(100_000, seed: 3)
            let hash = chunk.withUnsafeBytes { SHA256.hash($0) }
            var record = [UInt8]()
            try chunk.withUnsafeBytes { try ChunkRecordCodec().append($0, hash: hash, to: &record) }

            // A record whose payload was altered in transit is refused.
            var tampered = record
            tampered[tampered.count - 10] ^= 1
            let bad = try await client.req(.post, "/depot/v1/repositories/r/x/chunks", body: tampered)
            #expect(bad.status.code == 400)
            #expect(try await c.missingChunks("r/x", [hash][...]) == [hash])

            // A record whose bytes are intact but are not the chunk its header names (a client
            // claiming a hash it does not have the bytes of), amid good ones: refused, and that
            // hash stays missing.
            var many = [UInt8]()
            var hashes: [SHA256.Value] = []
            for i in 0..<20 {
                let bytes = fastRandom(20_000 + 997 * i, seed: 100 + UInt64(i))
                let h = bytes.withUnsafeBytes { SHA256.hash($0) }
                let claimed = i == 11 ? SHA256.Value(a: 9, b: 9, c: 9, d: 9) : h
                try bytes.withUnsafeBytes { _ = try ChunkRecordCodec().append($0, hash: claimed, to: &many) }
                hashes.append(claimed)
            }
            let lying = try await client.req(.post, "/depot/v1/repositories/r/x/chunks", body: many)
            #expect(lying.status.code == 400 && lying.errorCode == "DIGEST_INVALID", "\(lying.text)")
            #expect(try await c.missingChunks("r/x", [hashes[11]][...]) == [hashes[11]])

            try await c.uploadChunkRecords("r/x", record)
            #expect(try await c.missingChunks("r/x", [hash][...]).isEmpty)

            // A recipe must produce the digest it claims, and name only stored chunks.
            let wrong = Digest.of([1, 2, 3])
            await #expect(throws: ClientError.self) {
                try await c.commitRecipe("r/x", wrong, chunks: [ChunkRef(hash: hash, length: chunk.count)], chunker: "test")
            }
            let unknown = SHA256.Value(a: 1, b: 2, c: 3, d: 4)
            do {
                try await c.commitRecipe("r/x", Digest.of(chunk), chunks: [ChunkRef(hash: unknown, length: 10)], chunker: "test")
                Issue.record("a recipe naming an unknown chunk was accepted")
            } catch let e as ClientError {
                #expect(e.code == "CHUNK_UNKNOWN")
            }
            try await c.commitRecipe("r/x", Digest.of(chunk), chunks: [ChunkRef(hash: hash, length: chunk.count)], chunker: "test")
            let blob = try await client.req(.get, "/v2/r/x/blobs/\(Digest.of(chunk))")
            #expect(blob.bytes == chunk)
            #expect(try await c.recipe("r/x", Digest.of(chunk)) == [ChunkRef(hash: hash, length: chunk.count)])

            // Chunks are served only as part of a blob the repository can see.
            let notThere = try await client.req(
                .post, "/depot/v1/repositories/other/repo/blobs/\(Digest.of(chunk))/chunks", body: hash.byteArray)
            #expect(notThere.status.code == 404)
            let foreign = try await client.req(
                .post, "/depot/v1/repositories/r/x/blobs/\(Digest.of(chunk))/chunks", body: unknown.byteArray)
            #expect(foreign.errorCode == "CHUNK_UNKNOWN")
        }
    }

    @Test func transitDamageIsCaughtByTheRecordCheck() throws {
        let chunk = fastRandom(70_000, seed: 4)
        let hash = chunk.withUnsafeBytes { SHA256.hash($0) }
        let codec = ChunkRecordCodec()
        var record = [UInt8]()
        try chunk.withUnsafeBytes { try codec.append($0, hash: hash, to: &record) }
        let header = try record.withUnsafeBytes { try ChunkRecords.header($0, maxChunk: 256 << 10) }
        for position in [ChunkRecords.headerSize, record.count - 1] {
            var damaged = record
            damaged[position] ^= 0x40
            #expect(throws: DepotError.self) {
                try damaged.withUnsafeBytes { p in
                    try codec.verify(header, payload: UnsafeRawBufferPointer(rebasing: p[ChunkRecords.headerSize...])) { _ in () }
                }
            }
        }
        var damagedHeader = record
        damagedHeader[20] ^= 1
        #expect(throws: DepotError.self) { try damagedHeader.withUnsafeBytes { _ = try ChunkRecords.header($0, maxChunk: 256 << 10) } }
    }

    @Test func aFileChangingDuringThePushIsCaught() async throws {
        let dir = TempDir("depot-client")
        let path = dir.path + "/w.bin"
        try Data(fastRandom(1 << 20, seed: 31)).write(to: URL(fileURLWithPath: path))
        let recipe = try LocalRecipe.compute(path: path, parameters: .v1)
        // The training job rewrites the checkpoint after it was read, before its chunks went out.
        var changed = fastRandom(1 << 20, seed: 31)
        changed[700_000] ^= 1
        try Data(changed).write(to: URL(fileURLWithPath: path))
        try await withRegistry { _, _, port in
            let c = try RegistryConnection(url: "http://127.0.0.1:\(port)", token: nil, attempts: 1)
            defer { Task { await c.shutdown() } }
            let pusher = Pusher(connection: c, progress: quietProgress(c, "push"))
            do {
                _ = try await pusher.upload(
                    Array(recipe.chunks.indices), of: recipe, repo: "r/x",
                    PushRequest(repository: "r/x", tag: "v1", paths: [path]))
                Issue.record("a changed file was pushed")
            } catch let e as ClientError {
                #expect(e.message.contains("changed while it was being pushed"), "\(e)")
            }
        }
    }

    @Test func badInputGivesOneClearError() async throws {
        let dir = TempDir("depot-client")
        // Nothing listens on this port.
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: dir.path + "/f.bin"))
        let nobody = try RegistryConnection(url: "http://127.0.0.1:9", token: nil, attempts: 2)
        do {
            _ = try await Pusher(connection: nobody, progress: quietProgress(nobody, "push")).push(
                PushRequest(repository: "a/b", tag: "v1", paths: [dir.path + "/f.bin"]))
            Issue.record("push to nowhere succeeded")
        } catch let e as ClientError {
            #expect(e.message.contains("cannot reach the registry"))
        }
        await nobody.shutdown()
        #expect(throws: ClientError.self) { _ = try RegistryConnection(url: "ftp://x", token: nil) }
        #expect(throws: ClientError.self) { _ = try ArtifactFiles.collect([dir.path + "/missing.bin"]) }
        #expect(throws: ClientError.self) { _ = try ArtifactFiles.safeRelativePath("../../etc/passwd") }
        #expect(throws: ClientError.self) { _ = try ArtifactFiles.safeRelativePath("/etc/passwd") }
        try await withRegistry { _, _, port in
            do {
                _ = try await pull(port, "a/b", "nope", into: dir.path + "/o", cache: dir.path + "/c")
                Issue.record("pull of a missing tag succeeded")
            } catch let e as ClientError {
                #expect(e.code == "MANIFEST_UNKNOWN" || e.code == "NAME_UNKNOWN")
            }
        }
    }
}
