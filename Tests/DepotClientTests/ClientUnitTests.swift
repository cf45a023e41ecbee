import DepotAPI
import DepotCore
import DepotFormats
import DepotStore
import DepotTestSupport
import Foundation
import NIOHTTP1
import Testing

@testable import DepotClient

/// What `depot push` collects from the paths it is given, and what `depot pull` agrees to write.
@Suite struct ArtifactFilesTests {
    static func write(_ dir: String, _ files: [String]) throws {
        for f in files {
            let path = dir + "/" + f
            try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try Data(f.utf8).write(to: URL(fileURLWithPath: path))
        }
    }

    @Test func aDirectoryKeepsItsLayoutAndAFileItsName() throws {
        let dir = TempDir("depot-files")
        try Self.write(dir.path, ["bundle/adder/config.pbtxt", "bundle/adder/1/model.py", "bundle/.depot-partial/x", "w.safetensors"])
        let files = try ArtifactFiles.collect([dir.path + "/bundle", dir.path + "/w.safetensors"])
        #expect(files.map(\.relativePath) == ["adder/1/model.py", "adder/config.pbtxt", "w.safetensors"], "sorted, without .depot files")
        #expect(files.last?.localPath == dir.path + "/w.safetensors")
    }

    @Test func collectRefusesWhatCannotBePushed() throws {
        let dir = TempDir("depot-files")
        try Self.write(dir.path, ["a/model.bin", "b/model.bin"])
        try FileManager.default.createDirectory(atPath: dir.path + "/empty", withIntermediateDirectories: true)
        func message(_ paths: [String]) -> String {
            do {
                _ = try ArtifactFiles.collect(paths)
                return "accepted"
            } catch {
                return "\(error)"
            }
        }
        #expect(message([dir.path + "/missing"]).contains("no such file or directory"))
        #expect(message([dir.path + "/empty"]).contains("nothing to push"))
        #expect(message([dir.path + "/a/model.bin", dir.path + "/b/model.bin"]).contains("two files would be stored as 'model.bin'"))
    }

    @Test func unsafePathsAreRefused() throws {
        for ok in ["model.bin", "adder/1/model.py", "a b/c.txt", "..hidden/x", "x..y"] {
            #expect(try ArtifactFiles.safeRelativePath(ok) == ok)
        }
        for bad in [
            "", "/etc/passwd", "../x", "a/../../x", "a/..", "./a", "a//b", "a/", "tab\there", "new\nline", "nul\u{0}x",
            String(repeating: "a", count: 5000),
        ] {
            #expect(throws: ClientError.self, "\(bad.debugDescription)") { try ArtifactFiles.safeRelativePath(bad) }
        }
    }

    @Test func theArtifactTypeFollowsTheFiles() {
        func files(_ names: [String]) -> [ArtifactFile] { names.map { ArtifactFile(localPath: "/x/" + $0, relativePath: $0) } }
        #expect(
            ArtifactFiles.artifactType(files(["adder/config.pbtxt", "adder/1/model.onnx"]), formats: [nil, "onnx"])
                == ModelMediaType.tritonBundle)
        #expect(ArtifactFiles.artifactType(files(["config.pbtxt"]), formats: [nil]) == ModelMediaType.tritonBundle)
        #expect(
            ArtifactFiles.artifactType(files(["a/b/config.pbtxt"]), formats: [nil]) == ModelMediaType.manifest,
            "too deep for a model repository")
        #expect(ArtifactFiles.artifactType(files(["m.onnx", "README.md"]), formats: ["onnx", nil]) == ModelMediaType.onnx)
        #expect(ArtifactFiles.artifactType(files(["m.plan"]), formats: ["tensorrt-plan"]) == ModelMediaType.tensorrtPlan)
        #expect(ArtifactFiles.artifactType(files(["m.onnx", "w.bin"]), formats: ["onnx", "pytorch"]) == ModelMediaType.manifest)
        #expect(ArtifactFiles.artifactType(files(["notes.txt"]), formats: [nil]) == ModelMediaType.manifest)
        #expect(ModelMediaType.layer(for: "dir/README.md") == ModelMediaType.doc)
        #expect(ModelMediaType.layer(for: "train.py") == ModelMediaType.code)
        #expect(ModelMediaType.layer(for: "config.json") == ModelMediaType.weightConfig)
        #expect(ModelMediaType.layer(for: "model.safetensors") == ModelMediaType.weight)
    }
}

/// The local chunk cache and the client's own chunking of a file.
@Suite struct ChunkCacheTests {
    static func put(_ cache: ChunkCache, _ bytes: [UInt8]) -> SHA256.Value {
        let hash = bytes.withUnsafeBytes { SHA256.hash($0) }
        bytes.withUnsafeBytes { cache.write(hash, $0) }
        return hash
    }

    static func get(_ cache: ChunkCache, _ hash: SHA256.Value, count: Int) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: count)
        let found = out.withUnsafeMutableBytes { cache.read(hash, into: $0) }
        return found ? out : nil
    }

    @Test func anEntryIsReadBackVerifiedAndADamagedOneIsDropped() throws {
        let dir = TempDir("depot-cache")
        let cache = try ChunkCache(root: dir.path, maxBytes: 1 << 20)
        let bytes = randomBytes(1000, seed: 5)
        let hash = Self.put(cache, bytes)
        #expect(cache.contains(hash))
        #expect(Self.get(cache, hash, count: 1000) == bytes)
        #expect(Self.get(cache, hash, count: 999) == nil, "the wrong length is a miss")
        #expect(!cache.contains(hash), "and the entry is dropped")
        let again = Self.put(cache, bytes)
        var damaged = bytes
        damaged[10] ^= 1
        try Data(damaged).write(to: URL(fileURLWithPath: cache.path(again)))
        #expect(Self.get(cache, again, count: 1000) == nil, "a damaged entry is a miss")
        #expect(!cache.contains(again))
    }

    @Test func trimRemovesTheLeastRecentlyUsedFirst() throws {
        let dir = TempDir("depot-cache")
        let cache = try ChunkCache(root: dir.path, maxBytes: 250)
        let hashes = (0..<3).map { Self.put(cache, randomBytes(100, seed: UInt64(10 + $0))) }
        // Entry 0 used an hour ago, 1 two hours ago, 2 just now.
        for (i, age) in [(0, 3600.0), (1, 7200.0), (2, 0.0)] {
            try FileManager.default.setAttributes(
                [.modificationDate: Date().addingTimeInterval(-age)], ofItemAtPath: cache.path(hashes[i]))
        }
        #expect(cache.size() == 300)
        #expect(cache.trim() == 100)
        #expect(cache.size() == 200)
        #expect(!cache.contains(hashes[1]) && cache.contains(hashes[0]) && cache.contains(hashes[2]))
        #expect(cache.trim() == 0, "it fits")
    }

    @Test func aLocalRecipeCutsAFileAsTheStoreDoes() throws {
        let dir = TempDir("depot-recipe")
        let bytes = randomBytes(3 << 20, seed: 21)
        let path = dir.path + "/w.bin"
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        var read = 0
        let recipe = try LocalRecipe.compute(path: path, parameters: .v1, progress: { read += $0 })
        #expect(read == bytes.count)
        #expect(recipe.digest == Digest.of(bytes) && recipe.size == Int64(bytes.count))
        #expect(recipe.chunks.reduce(0) { $0 + $1.length } == bytes.count)
        #expect(recipe.chunks.allSatisfy { $0.length <= ChunkerParameters.v1.maxSize })
        var offset = 0
        for chunk in recipe.chunks {
            #expect(bytes[offset..<offset + chunk.length].withUnsafeBytes { SHA256.hash($0) } == chunk.hash)
            offset += chunk.length
        }
        let store = try ChunkStore(root: dir.path + "/store", create: true)
        let w = try store.makeWriter(planner: SafetensorsBoundaryPlanner())
        try w.write(bytes)
        let stored = try w.finish()
        #expect(stored.digest == recipe.digest && stored.chunks == recipe.chunks.count, "the same boundaries, so chunks dedupe")
    }

    /// A push negotiates chunks while the file is read: the groups handed over while computing
    /// are the recipe's chunks, in order, each at its offset in the file, none twice or left out.
    @Test func aRecipeHandsOverItsChunksInGroupsAsTheFileIsRead() throws {
        let dir = TempDir("depot-recipe")
        let bytes = randomBytes(40 << 20, seed: 22)
        let path = dir.path + "/w.bin"
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        var groups: [RecipeGroup] = []
        let recipe = try LocalRecipe.compute(path: path, parameters: .v1, groupBytes: 8 << 20, onGroup: { groups.append($0) })
        #expect(groups.count >= 4, "a group about every 8 MiB of a 40 MiB file")
        #expect(groups.flatMap(\.chunks) == recipe.chunks)
        var next = 0
        var offset: Int64 = 0
        for g in groups {
            #expect(g.first == next && g.start == offset && !g.chunks.isEmpty)
            next += g.chunks.count
            offset += g.chunks.reduce(Int64(0)) { $0 + Int64($1.length) }
        }
        #expect(offset == Int64(bytes.count))
    }
}

/// What a registry's error answer becomes on the client side.
@Suite struct ErrorBodyTests {
    @Test func theCodeAndMessageOfAnOCIErrorBodyAreKept() {
        let body = Array(#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"tag v9 is not in models/bert"}]}"#.utf8)
        let e = RegistryConnection.error(status: 404, body: body, method: .GET, path: "/v2/models/bert/manifests/v9")
        #expect(e.code == "MANIFEST_UNKNOWN")
        #expect(e.message == "GET /v2/models/bert/manifests/v9: 404 MANIFEST_UNKNOWN: tag v9 is not in models/bert")
    }

    @Test func otherBodiesStillGiveAUsefulMessage() {
        let plain = RegistryConnection.error(status: 502, body: Array("  bad gateway \n".utf8), method: .PUT, path: "/v2/x")
        #expect(plain.code == nil && plain.message == "PUT /v2/x: 502: bad gateway")
        let auth = RegistryConnection.error(
            status: 401, body: Array(#"{"errors":[{"code":"UNAUTHORIZED","message":"no"}]}"#.utf8), method: .GET, path: "/v2/")
        #expect(auth.code == "UNAUTHORIZED" && auth.message.contains("DEPOT_TOKEN"))
        let denied = RegistryConnection.error(status: 403, body: [], method: .DELETE, path: "/v2/x")
        #expect(denied.message.hasSuffix("access denied"))
        let long = RegistryConnection.error(status: 500, body: Array(repeating: UInt8(ascii: "x"), count: 10_000), method: .GET, path: "/")
        #expect(long.message.count < 300, "a huge body is cut")
        let empty = RegistryConnection.error(status: 400, body: Array(#"{"errors":[]}"#.utf8), method: .GET, path: "/")
        #expect(empty.code == nil)
    }
}
