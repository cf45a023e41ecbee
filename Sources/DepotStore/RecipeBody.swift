import DepotCore

/// The body of a recipe commit (`PUT .../recipes/<digest>`): 36-byte entries, each a chunk's
/// SHA-256 followed by its length as a little-endian UInt32.
public enum RecipeBody {
    public static let entrySize = 36

    /// Calls `entry` for every whole entry at the start of `bytes`; returns the bytes consumed
    /// (a partial entry at the end waits for more of the body).
    public static func decode(_ bytes: UnsafeRawBufferPointer, _ entry: (SHA256.Value, Int) throws -> Void) rethrows -> Int {
        var at = 0
        while bytes.count - at >= entrySize {
            let hash = SHA256.Value(bytes: UnsafeRawBufferPointer(rebasing: bytes[at..<(at + 32)]))
            let length = Int(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: at + 32, as: UInt32.self)))
            try entry(hash, length)
            at += entrySize
        }
        return at
    }
}
