import DepotAPI
import DepotCore

/// Detects the format of model artifact files and extracts their metadata, reading only
/// headers and protobuf/pickle structure through a ByteSource (never whole weight files).
public enum FormatInspector {
    /// Largest config.pbtxt read into memory.
    static let maxConfigSize: Int64 = 4 << 20

    /// Detects the format of one artifact file from its relative path and its bytes, and extracts
    /// metadata as a JSON object that always has "format" (JSONValue: the document is open by
    /// design, each reader reports its own fields). Returns nil for files it
    /// does not recognise; throws `DepotError.invalidArgument` for a recognised file that is
    /// malformed or lies. `platform` is the push's platform string like "sm_90,trt10.3".
    public static func inspect(path: String, source: any ByteSource, platform: String?) throws -> [String: JSONValue]? {
        try inspect(path: path, source: source, platform: platform, budget: nil)
    }

    /// Most items any list in the metadata names (tensors, entries, imports, inputs…); counts
    /// stay exact, and a cut list is marked.
    static let maxListed = 1000
    /// Longest name (import, tensor, op) kept in the metadata; longer ones are cut.
    static let maxNameLength = 1024

    /// Which reader a file name selects (results for the same bytes differ only by this).
    public static func readerKey(_ path: String) -> String {
        let lower = path.lowercased()
        let name = lower.split(separator: "/").last.map(String.init) ?? lower
        if name == "config.pbtxt" || name == "saved_model.pb" || name == "saved_model.pbtxt" { return name }
        for suffix in [".safetensors", ".onnx", ".plan", ".engine", ".pt", ".pth", ".ckpt", ".pb", ".skops"] + picklePathSuffixes
        where name.hasSuffix(suffix) {
            return suffix
        }
        return "sniff"
    }

    /// Names of plain pickles (scikit-learn, joblib): always scanned as pickles, of any protocol.
    public static let picklePathSuffixes = [".pkl", ".pickle", ".joblib"]
    /// Names of files a stage would unpickle (plain pickles and PyTorch checkpoints): the pipeline
    /// gate wants a whole, clean scan of each.
    public static let pickleBearingSuffixes = picklePathSuffixes + [".pt", ".pth", ".ckpt"]

    /// `budget` (when set) is charged by reads through `source` and checked by in-memory parsers.
    static func inspect(path: String, source: any ByteSource, platform: String?, budget: InspectionBudget?) throws -> [String: JSONValue]? {
        let lower = path.lowercased()
        let name = lower.split(separator: "/").last.map(String.init) ?? lower
        let head = try source.read(at: 0, count: Int(min(source.size, 16)))

        if name == "config.pbtxt" {
            guard source.size <= maxConfigSize else {
                throw DepotError.invalidArgument("\(path): config.pbtxt of \(source.size) bytes exceeds \(maxConfigSize)")
            }
            let text = String(decoding: try source.read(at: 0, count: Int(source.size)), as: UTF8.self)
            var out = try Triton.check(config: text, files: nil, budget: budget)
            out["format"] = "triton-config"
            return out
        }
        if name.hasSuffix(".safetensors") || looksLikeSafetensors(head, source: source) {
            return try safetensors(source)
        }
        if name.hasSuffix(".onnx") { return try ONNX.inspect(source) }
        if name == "saved_model.pb" { return try TensorFlow.savedModel(source) }
        if name == "saved_model.pbtxt" {
            return ["format": "tensorflow-savedmodel", "encoding": "text", "size": .int(source.size)]
        }
        if name.hasSuffix(".plan") || name.hasSuffix(".engine") || TensorRT.hasMagic(head) {
            return TensorRT.inspect(source, head: head, platform: platform)
        }
        if name.hasSuffix(".skops") { return try Skops.inspect(source) }
        let torchName = [".pt", ".pth", ".ckpt"].contains { name.hasSuffix($0) }
        if picklePathSuffixes.contains(where: { name.hasSuffix($0) }) {
            // What pickle.load / joblib.load would read: scanned whatever its first byte (protocols 0
            // and 1 have no PROTO opcode); one that does not parse is invalid, never skipped.
            if try Zip.isZip(source), let entries = try PyTorch.zipEntriesIfTorch(source) {
                return try PyTorch.inspect(source, zipEntries: entries)
            }
            if let kind = compression(head) {
                throw DepotError.invalidArgument(
                    "\(path): a \(kind)-compressed file (a compressed joblib dump?) cannot be scanned for the code it would run; "
                        + "save it uncompressed (joblib.dump(..., compress=0)) or as a .skops file")
            }
            return try PyTorch.inspect(source, zipEntries: nil, format: "pickle")
        }
        if try Zip.isZip(source) {
            if let entries = try PyTorch.zipEntriesIfTorch(source) { return try PyTorch.inspect(source, zipEntries: entries) }
            if torchName { throw DepotError.invalidArgument("\(path): ZIP archive without a data.pkl entry is not a PyTorch checkpoint") }
        } else if PyTorch.isPickle(head) {
            return try PyTorch.inspect(source, zipEntries: nil)
        } else if torchName {
            throw DepotError.invalidArgument("\(path): neither a ZIP archive nor a pickle (not a PyTorch checkpoint)")
        }
        if name.hasSuffix(".pb") { return TensorFlow.graphDef(source) }
        return nil
    }

    /// Checks a Triton model directory: `config` is its top-level config.pbtxt, `files` every
    /// relative path of the artifact. Returns the config summary plus "versions" and "problems";
    /// throws `DepotError.invalidArgument` (with line and column) when the config does not parse.
    public static func triton(config: String, files: [String]) throws -> [String: JSONValue] {
        try Triton.check(config: config, files: files)
    }

    /// The compressor of a joblib dump, from its magic bytes.
    static func compression(_ head: [UInt8]) -> String? {
        func starts(_ magic: [UInt8]) -> Bool { head.count >= magic.count && Array(head.prefix(magic.count)) == magic }
        if starts([0x1f, 0x8b]) { return "gzip" }
        if starts(Array("BZh".utf8)) { return "bz2" }
        if starts([0xfd, 0x37, 0x7a, 0x58, 0x5a]) { return "xz" }
        if starts([0x5d, 0x00, 0x00]) { return "lzma" }
        if starts([0x04, 0x22, 0x4d, 0x18]) { return "lz4" }
        if starts(Array("ZF".utf8)) { return "zlib" } // joblib < 0.10
        if head.count >= 2, head[0] & 0x0f == 8, (UInt16(head[0]) << 8 | UInt16(head[1])) % 31 == 0 { return "zlib" }
        return nil
    }

    /// An 8-byte little-endian header length followed by '{'.
    static func looksLikeSafetensors(_ head: [UInt8], source: any ByteSource) -> Bool {
        guard head.count >= 9, head[8] == UInt8(ascii: "{") else { return false }
        guard let n = head.withUnsafeBytes({ Safetensors.headerLength(UnsafeRawBufferPointer(rebasing: $0[0..<8])) }) else { return false }
        return Int64(n) + 8 <= source.size
    }

    static func safetensors(_ source: any ByteSource) throws -> [String: JSONValue] {
        let head = try source.read(at: 0, count: 8)
        guard head.count == 8, let n = head.withUnsafeBytes({ Safetensors.headerLength($0) }) else {
            throw DepotError.invalidArgument("safetensors: invalid header length")
        }
        guard Int64(n) <= source.size - 8 else {
            throw DepotError.invalidArgument("safetensors: header of \(n) bytes exceeds the \(source.size)-byte file")
        }
        let json = try source.read(at: 8, count: n)
        guard json.count == n else { throw DepotError.invalidArgument("safetensors: header truncated") }
        let (tensors, metadata) = try Safetensors.parseHeader(json, fileSize: source.size)
        var parameters: Int64 = 0
        var dtypes: [String: Int] = [:]
        for t in tensors {
            var count: Int64 = 1
            for d in t.shape {
                let (p, o) = count.multipliedReportingOverflow(by: Int64(d))
                guard !o else { throw DepotError.invalidArgument("safetensors tensor '\(t.name)': shape \(t.shape) overflows") }
                count = p
            }
            let (sum, o) = parameters.addingReportingOverflow(count)
            guard !o else { throw DepotError.invalidArgument("safetensors: parameter count overflows") }
            parameters = sum
            dtypes[t.dtype, default: 0] += 1
        }
        let table: [JSONValue] = tensors.prefix(10_000).map {
            [
                "name": .string($0.name), "dtype": .string($0.dtype), "shape": JSONValue($0.shape),
                "offsets": [.int($0.range.lowerBound), .int($0.range.upperBound)],
            ]
        }
        return [
            "format": "safetensors", "tensors": .array(table), "tensor_count": JSONValue(tensors.count),
            "parameters": .int(parameters), "dtypes": JSONValue(dtypes), "metadata": JSONValue(metadata),
            "header_size": JSONValue(n), "data_start": JSONValue(8 + n),
        ]
    }
}
