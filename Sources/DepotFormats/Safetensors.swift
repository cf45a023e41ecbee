import DepotAPI
import DepotCore
import Foundation

/// One tensor of a safetensors file: name, dtype, shape and its byte range in the file.
public struct SafetensorsTensor: Sendable, Equatable {
    public var name: String
    public var dtype: String
    public var shape: [Int]
    /// Absolute byte range in the file (header included in the offset).
    public var range: Range<Int64>

    /// Bytes per element of the dtype, or nil when unknown.
    public var elementSize: Int? { Safetensors.elementSize(dtype) }
}

/// Reads the safetensors header: 8-byte little-endian length N, then N bytes of JSON mapping
/// tensor names to `{dtype, shape, data_offsets: [begin, end]}` relative to the data start.
public enum Safetensors {
    /// Headers larger than this are refused (the format itself caps them at 100 MB).
    public static let maxHeaderSize = 100_000_000
    /// The boundary planner buffers at most this much header while a blob streams in; a
    /// larger header leaves the planner inactive (content-defined cuts only).
    public static let plannerHeaderLimit = 16 << 20

    public static func elementSize(_ dtype: String) -> Int? {
        switch dtype {
        case "F64", "I64", "U64": return 8
        case "F32", "I32", "U32": return 4
        case "F16", "BF16", "I16", "U16": return 2
        case "I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2": return 1
        default: return nil
        }
    }

    /// The header length N from the first 8 bytes, or nil if it can't be a safetensors file.
    public static func headerLength(_ first8: UnsafeRawBufferPointer) -> Int? {
        guard first8.count >= 8 else { return nil }
        let n = UInt64(littleEndian: first8.loadUnaligned(as: UInt64.self))
        guard n >= 2, n <= UInt64(maxHeaderSize) else { return nil }
        return Int(n)
    }

    /// Parses the JSON header (`json` is the N bytes after the length) of a file of `fileSize`
    /// bytes (nil if unknown). Validates offsets: in order of data, non-overlapping, consistent
    /// with dtype × shape, and inside the file. Returns tensors sorted by offset and metadata.
    public static func parseHeader(_ json: [UInt8], fileSize: Int64?) throws -> (tensors: [SafetensorsTensor], metadata: [String: String]) {
        guard json.first == UInt8(ascii: "{"),
            let header = try? JSONDecoder().decode(HeaderJSON.self, from: Data(json))
        else {
            throw DepotError.invalidArgument("safetensors header is not a JSON object")
        }
        let dataStart = Int64(8 + json.count)
        var tensors: [SafetensorsTensor] = []
        var metadata: [String: String] = [:]
        for (name, entry) in header.entries {
            if name == "__metadata__" {
                guard case .metadata(let m) = entry else { throw DepotError.invalidArgument("safetensors __metadata__ is not an object") }
                metadata = m
                continue
            }
            guard case .tensor(let t) = entry, t.dataOffsets.count == 2 else {
                throw DepotError.invalidArgument("safetensors tensor '\(name)' lacks dtype, shape or data_offsets")
            }
            let (dtype, shape, offsets) = (t.dtype, t.shape, t.dataOffsets)
            // Offsets and sizes come from untrusted input: bound them before any arithmetic.
            let limit: Int64 = 1 << 50
            let begin = Int64(offsets[0])
            let end = Int64(offsets[1])
            guard begin >= 0, end >= begin, end <= limit else {
                throw DepotError.invalidArgument("safetensors tensor '\(name)' has invalid data_offsets [\(begin), \(end)]")
            }
            guard shape.allSatisfy({ $0 >= 0 }) else {
                throw DepotError.invalidArgument("safetensors tensor '\(name)' has a negative dimension")
            }
            if let size = elementSize(dtype) {
                var bytes = Int64(size)
                for d in shape {
                    let (product, overflow) = bytes.multipliedReportingOverflow(by: Int64(d))
                    guard !overflow, product <= limit else {
                        throw DepotError.invalidArgument("safetensors tensor '\(name)': shape \(shape) is too large")
                    }
                    bytes = product
                }
                guard bytes == end - begin else {
                    throw DepotError.invalidArgument(
                        "safetensors tensor '\(name)': \(dtype)\(shape) needs \(bytes) bytes but data_offsets span \(end - begin)")
                }
            }
            tensors.append(SafetensorsTensor(name: name, dtype: dtype, shape: shape, range: (dataStart + begin)..<(dataStart + end)))
        }
        tensors.sort { ($0.range.lowerBound, $0.range.upperBound) < ($1.range.lowerBound, $1.range.upperBound) }
        var expected = dataStart
        for t in tensors {
            guard t.range.lowerBound == expected else {
                throw DepotError.invalidArgument(
                    "safetensors tensor '\(t.name)' starts at \(t.range.lowerBound - dataStart) but the previous tensor ends at \(expected - dataStart) (gap or overlap)"
                )
            }
            expected = t.range.upperBound
        }
        if let fileSize, expected != fileSize {
            throw DepotError.invalidArgument("safetensors data ends at \(expected) but the file has \(fileSize) bytes")
        }
        return (tensors, metadata)
    }
}

/// The header's JSON, decoded into typed entries (no `Any`, no probing of each value's type):
/// `__metadata__` as a string map, every other key as a tensor, or `.invalid` when it does not
/// decode as one (the caller names it in the error).
private struct HeaderJSON: Decodable {
    struct Tensor: Decodable {
        var dtype: String
        var shape: [Int]
        var dataOffsets: [Int]

        enum CodingKeys: String, CodingKey {
            case dtype, shape
            case dataOffsets = "data_offsets"
        }
    }

    /// A metadata value: a string as it is, anything else as compact JSON.
    struct MetadataValue: Decodable {
        var text: String
        init(from decoder: any Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let s = try? c.decode(String.self) { text = s } else { text = try c.decode(JSONValue.self).text }
        }
    }

    enum Entry {
        case tensor(Tensor)
        case metadata([String: String])
        case invalid
    }

    struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    var entries: [(name: String, entry: Entry)] = []

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: Key.self)
        entries.reserveCapacity(c.allKeys.count)
        for key in c.allKeys {
            let entry: Entry
            if key.stringValue == "__metadata__" {
                entry = (try? c.decode([String: MetadataValue].self, forKey: key)).map { .metadata($0.mapValues(\.text)) } ?? .invalid
            } else {
                entry = (try? c.decode(Tensor.self, forKey: key)).map(Entry.tensor) ?? .invalid
            }
            entries.append((key.stringValue, entry))
        }
    }
}

/// Forces chunk boundaries at the end of a safetensors header and at the start and the end of
/// every tensor of at least `minTensorSize` bytes, and reports each region's element width.
/// Inactive (no boundaries) when the stream is not a safetensors file.
public struct SafetensorsBoundaryPlanner: BoundaryPlanner {
    private var prefix: [UInt8] = []
    /// Where the tensor data starts (the header's end), once the header is read.
    private(set) var dataStart: Int64?
    private var failed = false
    private var cuts = PlannedCuts()
    private let minTensorSize: Int64

    public init(minTensorSize: Int = 16 << 10) { self.minTensorSize = Int64(minTensorSize) }

    public var tag: String? { cuts.isEmpty ? nil : "safetensors" }

    public var wantsBytes: Bool { !failed && dataStart == nil }

    public mutating func observe(_ bytes: UnsafeRawBufferPointer, at offset: Int64) {
        guard !failed, dataStart == nil, offset == Int64(prefix.count) else { return }
        // Accumulate the header only: at most 8 + N bytes.
        var need = 8
        if prefix.count >= 8 {
            guard let n = prefix.withUnsafeBytes({ Safetensors.headerLength($0) }), n <= Safetensors.plannerHeaderLimit else {
                failed = true
                return
            }
            need = 8 + n
        }
        var consumed = 0
        while consumed < bytes.count && prefix.count < need {
            let take = min(need - prefix.count, bytes.count - consumed)
            prefix.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[consumed..<(consumed + take)]))
            consumed += take
            if prefix.count == 8 {
                guard let n = prefix.withUnsafeBytes({ Safetensors.headerLength($0) }), n <= Safetensors.plannerHeaderLimit else {
                    failed = true
                    prefix = []
                    return
                }
                need = 8 + n
            }
        }
        guard prefix.count == need, need > 8 else { return }
        guard let parsed = try? Safetensors.parseHeader(Array(prefix[8...]), fileSize: nil) else {
            failed = true
            return
        }
        let end = Int64(need)
        dataStart = end
        prefix = []
        cuts.cut(at: end)
        for t in parsed.tensors {
            // The end too, so a small tensor after a large one (a bias after its weight) does
            // not share the large one's last chunk: that chunk then lies wholly inside the tensor,
            // matches the same tensor's last chunk in an ONNX export, and can be a cast.
            if t.range.count >= minTensorSize {
                cuts.cut(at: t.range.lowerBound)
                cuts.cut(at: t.range.upperBound)
            }
            cuts.width(t.elementSize ?? 1, from: t.range.lowerBound)
        }
    }

    public func nextBoundary(atOrAfter offset: Int64) -> Int64? { cuts.next(atOrAfter: offset) }

    public func elementWidth(at offset: Int64) -> Int { cuts.width(at: offset) }
}

/// The tensors of a stored safetensors file, for cast-aware deduplication (`ChunkStore.deriveCasts`).
/// Reads the 8-byte length and the header only (at most `Safetensors.plannerHeaderLimit` bytes,
/// as the boundary planner), validated by `Safetensors.parseHeader`; anything else is "not
/// safetensors" (nil).
public struct SafetensorsLayout: TensorLayoutReader {
    public init() {}

    public func tensors(size: Int64, read: (Range<Int64>) throws -> [UInt8]) throws -> [TensorExtent]? {
        guard size >= 8 else { return nil }
        let first = try read(0..<8)
        guard let n = first.withUnsafeBytes({ Safetensors.headerLength($0) }), n <= Safetensors.plannerHeaderLimit, Int64(8 + n) <= size
        else { return nil }
        guard let parsed = try? Safetensors.parseHeader(try read(8..<Int64(8 + n)), fileSize: size) else { return nil }
        return parsed.tensors.map { t in
            let element: TensorElement
            switch t.dtype {
            case "F32": element = .float32
            case "F16": element = .float16
            case "BF16": element = .bfloat16
            default: element = .other
            }
            return TensorExtent(element: element, shape: t.shape.map { Int64($0) }, range: t.range)
        }
    }
}
