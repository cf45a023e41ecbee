import DepotCore
import Foundation
import Testing

@testable import DepotCatalog

@Suite struct StoreQueriesTests {
    func hash(_ i: Int) -> SHA256.Value {
        withUnsafeBytes(of: UInt64(i).littleEndian) { SHA256.hash($0) }
    }

    /// The multi-row inserts a pack commit uses store exactly what one statement per row would:
    /// two full statements and a remainder, a hash given twice keeping its last location, an
    /// existing row updated, a recipe entry given twice keeping the last.
    @Test func batchedChunkAndRecipeInsertsMatchOneStatementPerRow() throws {
        let (db, dir) = try makeCatalog()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let n = 2 * StoreSQL.insertBatch + 37
        let (pack, blob) = try db.write { conn in
            (try conn.createPack(committedSize: 0, now: 1), try conn.beginBlob(chunker: "test", now: 1))
        }
        func loc(_ i: Int, _ version: Int64 = 0) -> ChunkLocation {
            ChunkLocation(pack: pack, offset: Int64(i) * 100 + version, storedLength: 90, rawLength: 100 + i, codec: UInt8(i % 2))
        }
        try db.write { try $0.insertChunk(hash(0), at: loc(0, 7)) } // already there: updated
        var rows = (0..<n).map { (hash($0), loc($0)) }
        rows.insert((hash(5), loc(5, 3)), at: 3) // given twice: the later one (index 6) wins
        try db.write { try $0.insertChunks(rows) }
        var entries = (0..<n).map { (blob: blob, entry: RecipeEntry(offset: Int64($0) * 100, length: 100, hash: hash($0))) }
        entries.insert((blob: blob, entry: RecipeEntry(offset: 500, length: 100, hash: hash(999))), at: 0)
        try db.write { try $0.appendRecipes(entries) }
        try db.read { conn in
            for i in 0..<n { #expect(try conn.chunkLocation(hash(i)) == loc(i), "chunk \(i)") }
            let recipe = try conn.recipe(blob: blob, from: 0, limit: 10_000)
            #expect(recipe.count == n)
            #expect(recipe.map(\.hash) == (0..<n).map(hash))
            #expect(recipe.map(\.offset) == (0..<n).map { Int64($0) * 100 })
        }
        // Fewer rows than one statement: the per-row path.
        try db.write { try $0.insertChunks([(hash(n), loc(n))]) }
        #expect(try db.read { try $0.chunkLocation(hash(n)) } == loc(n))
        // The counters the triggers keep (what /metrics and `depot stats` read) agree with a scan:
        // a multi-row upsert fires them per row, as single statements do.
        let (kept, scanned) = try db.read { (try $0.storeCounters(), try $0.storeCounts()) }
        #expect(kept.chunks == n + 1 && scanned.chunks == n + 1)
        #expect(kept.chunkRawBytes == scanned.chunkRawBytes && kept.chunkStoredBytes == scanned.chunkStoredBytes)
        #expect(kept.chunkRawBytes == (0...n).reduce(Int64(0)) { $0 + Int64(100 + $1) })
        // An upsert that changes a stored length (the same chunk stored again with another codec)
        // moves the byte counters by the difference, and the chunk count not at all.
        try db.write { try $0.insertChunk(hash(1), at: ChunkLocation(pack: pack, offset: 7, storedLength: 40, rawLength: 101, codec: 0)) }
        let (after, rescanned) = try db.read { (try $0.storeCounters(), try $0.storeCounts()) }
        #expect(after.chunks == n + 1 && rescanned.chunks == n + 1)
        #expect(after.chunkStoredBytes == kept.chunkStoredBytes - 50 && after.chunkStoredBytes == rescanned.chunkStoredBytes)
        #expect(after.chunkRawBytes == rescanned.chunkRawBytes)
    }
}
