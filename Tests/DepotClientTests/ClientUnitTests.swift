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
    /// Writes `chunks` as one file and adds it to the cache; returns its digest and recipe.
    static func put(_ cache: ChunkCache, _ dir: String, _ chunks: [[UInt8]]) throws -> (Digest, [ChunkRef]) {
        let bytes = chunks.flatMap { $0 }
        let path = dir + "/file-\(UUID().uuidString.prefix(8))"
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let digest = Digest(bytes: bytes.withUnsafeBytes { SHA256.hash($0) })
        let recipe = chunks.map { c in ChunkRef(hash: c.withUnsafeBytes { SHA256.hash($0) }, length: c.count) }
        cache.add(file: try PosixFile(path: path, mode: .read), digest: digest, recipe: recipe)
        return (digest, recipe)
    }

    static func inode(_ path: String) -> UInt64? {
        var st = stat()
        return stat(path, &st) == 0 ? UInt64(st.st_ino) : nil
    }

    @Test func anAddedFileIsLinkedAndItsChunksAreLocatedAtTheirOffsets() throws {
        let dir = TempDir("depot-cache")
        let cache = try ChunkCache(root: dir.path + "/cache", maxBytes: 1 << 20)
        let chunks = [randomBytes(1000, seed: 1), randomBytes(3000, seed: 2), randomBytes(500, seed: 3)]
        let (digest, recipe) = try Self.put(cache, dir.path, chunks)
        let located = cache.locate(Set(recipe.map(\.hash) + [SHA256.hash(UnsafeRawBufferPointer(start: nil, count: 0))]))
        #expect(located.count == 3, "the three chunks, not a hash the cache never saw")
        #expect(located[recipe[1].hash] == ChunkCache.Location(entry: digest.hex, offset: 1000, length: 3000))
        #expect(located[recipe[2].hash]?.offset == 4000)
        // The same file system: a hard link, no copy.
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasPrefix("file-") }
        #expect(Self.inode(dir.path + "/" + files[0]) == Self.inode(cache.dataPath(digest.hex)))
        // A located range copies out byte for byte.
        let target = try PosixFile(path: dir.path + "/copy", mode: .createExclusive)
        let source = try #require(cache.open(digest.hex))
        #expect(PosixFile.copyRange(from: source, offset: 1000, to: target, at: 0, length: 3000))
        #expect(try [UInt8](Data(contentsOf: URL(fileURLWithPath: dir.path + "/copy"))) == chunks[1])
        #expect(!PosixFile.copyRange(from: source, offset: 4000, to: target, at: 0, length: 501), "past the entry's end")
    }

    @Test(.enabled(if: FileManager.default.fileExists(atPath: "/dev/shm")))
    func aFileOnAnotherFileSystemIsCopied() throws {
        let shm = "/dev/shm/depot-cache-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: shm, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: shm) }
        let dir = TempDir("depot-cache")
        let cache = try ChunkCache(root: dir.path, maxBytes: 1 << 20)
        let chunks = [randomBytes(7000, seed: 4)]
        let (digest, _) = try Self.put(cache, shm, chunks)
        let original = try FileManager.default.contentsOfDirectory(atPath: shm)[0]
        #expect(Self.inode(shm + "/" + original) != Self.inode(cache.dataPath(digest.hex)), "a copy, not a link")
        #expect(try [UInt8](Data(contentsOf: URL(fileURLWithPath: cache.dataPath(digest.hex)))) == chunks[0])
        #expect(cache.locate([chunks[0].withUnsafeBytes { SHA256.hash($0) }]).count == 1)
    }

    @Test func aCacheThatDoesNotLinkCopiesAndTheCopyIsIndependent() throws {
        let dir = TempDir("depot-cache")
        let cache = try ChunkCache(root: dir.path + "/cache", maxBytes: 1 << 20, linking: false)
        let chunks = [randomBytes(5000, seed: 9)]
        let (digest, _) = try Self.put(cache, dir.path, chunks)
        let original =
            dir.path + "/" + (try FileManager.default.contentsOfDirectory(atPath: dir.path).first { $0.hasPrefix("file-") } ?? "")
        #expect(Self.inode(original) != Self.inode(cache.dataPath(digest.hex)))
        // Overwrite the original in place (same inode): the cached copy keeps its bytes.
        let zeros = [UInt8](repeating: 0, count: 5000)
        try zeros.withUnsafeBytes { try PosixFile(path: original, mode: .readWrite).write($0, at: 0) }
        #expect(try [UInt8](Data(contentsOf: URL(fileURLWithPath: cache.dataPath(digest.hex)))) == chunks[0])
    }

    @Test func aRecipeWhoseFileIsGoneIsDropped() throws {
        let dir = TempDir("depot-cache")
        let cache = try ChunkCache(root: dir.path, maxBytes: 1 << 20)
        let (a, _) = try Self.put(cache, dir.path, [randomBytes(100, seed: 11)])
        let (b, _) = try Self.put(cache, dir.path, [randomBytes(100, seed: 12)])
        unlink(cache.dataPath(a.hex))
        unlink(cache.dataPath(b.hex))
        #expect(cache.open(a.hex) == nil)
        #expect(!FileManager.default.fileExists(atPath: cache.recipePath(a.hex)), "open drops it")
        cache.trim()
        #expect(!FileManager.default.fileExists(atPath: cache.recipePath(b.hex)), "trim drops it")
        // Not a regular file: a FIFO or a link at an entry's path is not opened (and never waited on).
        let (c, _) = try Self.put(cache, dir.path, [randomBytes(100, seed: 13)])
        unlink(cache.dataPath(c.hex))
        #expect(mkfifo(cache.dataPath(c.hex), 0o644) == 0)
        #expect(cache.open(c.hex) == nil)
    }

    @Test func aDamagedRecipeIsDroppedWithItsEntry() throws {
        let dir = TempDir("depot-cache")
        let cache = try ChunkCache(root: dir.path, maxBytes: 1 << 20)
        let (digest, recipe) = try Self.put(cache, dir.path, [randomBytes(100, seed: 5), randomBytes(200, seed: 6)])
        let recipePath = cache.recipePath(digest.hex)
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: recipePath)))
        #expect(bytes.count == 24 + 2 * 36)
        // A length that no longer adds up to the declared size.
        bytes[24 + 32] ^= 1
        try Data(bytes).write(to: URL(fileURLWithPath: recipePath))
        #expect(cache.locate(Set(recipe.map(\.hash))).isEmpty)
        #expect(!FileManager.default.fileExists(atPath: recipePath) && !FileManager.default.fileExists(atPath: cache.dataPath(digest.hex)))
        // Truncated: dropped.
        let (d, r) = try Self.put(cache, dir.path, [randomBytes(100, seed: 7)])
        try Data(bytes.prefix(40)).write(to: URL(fileURLWithPath: cache.recipePath(d.hex)))
        #expect(cache.locate(Set(r.map(\.hash))).isEmpty)
        #expect(!FileManager.default.fileExists(atPath: cache.dataPath(d.hex)))
        // Another version's recipe (another magic): not read, and left alone.
        let (e, q) = try Self.put(cache, dir.path, [randomBytes(100, seed: 8)])
        try Data("DPCACHE9".utf8 + [UInt8](repeating: 7, count: 52)).write(to: URL(fileURLWithPath: cache.recipePath(e.hex)))
        #expect(cache.locate(Set(q.map(\.hash))).isEmpty)
        #expect(
            FileManager.default.fileExists(atPath: cache.dataPath(e.hex)) && FileManager.default.fileExists(atPath: cache.recipePath(e.hex))
        )
    }

    @Test func trimRemovesTheLeastRecentlyUsedFirstAndTheOlderLayout() throws {
        let dir = TempDir("depot-cache")
        let cache = try ChunkCache(root: dir.path, maxBytes: 250)
        let entries = try (0..<3).map { try Self.put(cache, dir.path, [randomBytes(100, seed: UInt64(10 + $0))]).0 }
        // Entry 0 used an hour ago, 1 two hours ago, 2 just now.
        for (i, age) in [(0, 3600.0), (1, 7200.0), (2, 0.0)] {
            try FileManager.default.setAttributes(
                [.modificationDate: Date().addingTimeInterval(-age)], ofItemAtPath: cache.recipePath(entries[i].hex))
        }
        // The per-chunk layout of older versions, what else a user keeps under `chunks/` (never
        // touched, nor followed through a link), and what an interrupted add left.
        try FileManager.default.createDirectory(atPath: dir.path + "/chunks/ab", withIntermediateDirectories: true)
        try Data(count: 40).write(to: URL(fileURLWithPath: dir.path + "/chunks/ab/" + String(repeating: "ab", count: 32)))
        try Data(count: 10).write(to: URL(fileURLWithPath: dir.path + "/chunks/ab/notes.txt"))
        let elsewhere = dir.path + "/elsewhere"
        try FileManager.default.createDirectory(atPath: elsewhere, withIntermediateDirectories: true)
        try Data(count: 10).write(to: URL(fileURLWithPath: elsewhere + "/" + String(repeating: "cd", count: 32)))
        #expect(symlink(elsewhere, dir.path + "/chunks/cd") == 0)
        let leftover = cache.filesDirectory + "/.\(entries[0].hex).1.2.tmp"
        try Data(count: 30).write(to: URL(fileURLWithPath: leftover))
        // A hard link keeps the pulled file's modification time, which may be old: age is the
        // change time (link and rename set it; nobody can set it back).
        try FileManager.default.setAttributes([.modificationDate: Date().addingTimeInterval(-7200)], ofItemAtPath: leftover)
        #expect(cache.size() == 300)
        #expect(cache.trim() == 100 + 40, "the leftover changed just now: kept")
        #expect(FileManager.default.fileExists(atPath: leftover))
        #expect(cache.trim(now: Date().addingTimeInterval(7200)) == 30, "two hours on, it goes")
        #expect(cache.size() == 200)
        #expect(!FileManager.default.fileExists(atPath: leftover))
        #expect(FileManager.default.fileExists(atPath: dir.path + "/chunks/ab/notes.txt"))
        #expect(FileManager.default.fileExists(atPath: elsewhere + "/" + String(repeating: "cd", count: 32)))
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/chunks/ab/" + String(repeating: "ab", count: 32)))
        #expect(!FileManager.default.fileExists(atPath: cache.dataPath(entries[1].hex)))
        #expect(FileManager.default.fileExists(atPath: cache.dataPath(entries[0].hex)))
        #expect(cache.trim() == 0, "it fits")
        // Use refreshes: entry 0 used now, so 2 is the oldest.
        cache.touch([entries[0].hex])
        try FileManager.default.setAttributes(
            [.modificationDate: Date().addingTimeInterval(-60)], ofItemAtPath: cache.recipePath(entries[2].hex))
        let small = try ChunkCache(root: dir.path, maxBytes: 150)
        #expect(small.trim() == 100)
        #expect(FileManager.default.fileExists(atPath: cache.dataPath(entries[0].hex)))
        #expect(!FileManager.default.fileExists(atPath: cache.dataPath(entries[2].hex)))
    }

    @Test func aFileOverTheWholeBoundIsNotAddedAndEmptiesNothing() throws {
        let dir = TempDir("depot-cache")
        let cache = try ChunkCache(root: dir.path, maxBytes: 150)
        let (small, _) = try Self.put(cache, dir.path, [randomBytes(100, seed: 14)])
        let (big, _) = try Self.put(cache, dir.path, [randomBytes(200, seed: 15)])
        #expect(!FileManager.default.fileExists(atPath: cache.recipePath(big.hex)))
        #expect(cache.trim() == 0)
        #expect(FileManager.default.fileExists(atPath: cache.recipePath(small.hex)))
    }

    @Test func aZeroBoundCacheAddsNothing() throws {
        let dir = TempDir("depot-cache")
        let cache = try ChunkCache(root: dir.path, maxBytes: 0)
        let (digest, _) = try Self.put(cache, dir.path, [randomBytes(100, seed: 8)])
        #expect(!FileManager.default.fileExists(atPath: cache.recipePath(digest.hex)))
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
