import DepotCore

/// Forces chunk boundaries at the start and the end of every initializer's `raw_data` of at
/// least `minTensorSize` bytes in an ONNX model, and reports each one's element width.
///
/// Why: an ONNX export holds the same tensor bytes as the checkpoint it came from, but each
/// one sits inside protobuf framing (name, dims, data type, lengths). Content-defined cuts
/// alone leave a chunk at each seam that mixes framing with tensor bytes, so about two chunks
/// per tensor never match the checkpoint's. Cut exactly where the tensor bytes start and end
/// (as `SafetensorsBoundaryPlanner` does in a safetensors file) and every chunk of the tensor
/// is the checkpoint's chunk.
///
/// The file streams through once, never held: the walker keeps only its position, a varint
/// being read and at most three open messages (ModelProto → `graph` (7) → `initializer` (5),
/// a TensorProto whose `data_type` (2) gives the width and whose `raw_data` (9) is the data).
/// Every other field, and every `raw_data`, is skipped by its length without being looked at.
/// It is a planner, not a validator: the first thing that is not well-formed protobuf (a bad
/// wire type, a varint over ten bytes, a length past its message's end) stops it, keeping the
/// boundaries already found, which stay true of the bytes seen. A stream that does not start
/// with field 1 as a varint (`ir_version`, which every ONNX serializer writes first) is not
/// walked at all. Past protobuf's 2 GiB message limit it stops too (larger models keep their
/// weights in external data files, which are plain tensor bytes), which also bounds the
/// boundaries it keeps to 2 × 2 GiB / `minTensorSize`.
public struct ONNXBoundaryPlanner: BoundaryPlanner {
    /// The largest ModelProto protobuf can serialize; nothing past it is walked.
    public static let streamLimit: Int64 = 2 << 30

    /// Field numbers of onnx.proto that the walker follows.
    private enum Field {
        static let modelGraph: UInt64 = 7
        static let graphInitializer: UInt64 = 5
        static let tensorDataType: UInt64 = 2
        static let tensorRawData: UInt64 = 9
    }

    private enum Level { case model, graph, tensor }
    private enum Step: Equatable {
        case key
        case varint(field: UInt64)
        case length(field: UInt64)
    }

    private let minTensorSize: Int64
    /// Offset of the next byte the walker expects to see.
    private var position: Int64 = 0
    /// Bytes before this offset are a field being skipped.
    private var skipTo: Int64 = 0
    /// Open messages, innermost last, with the offset where each ends.
    private var open: [(level: Level, end: Int64)] = [(.model, streamLimit)]
    private var step = Step.key
    private var varint: UInt64 = 0
    private var varintShift: UInt64 = 0
    private var sawFirstKey = false
    /// The open TensorProto's `data_type` (0 until seen).
    private var dataType: UInt64 = 0
    private var stopped = false
    private var cuts = PlannedCuts()

    public init(minTensorSize: Int = 16 << 10) { self.minTensorSize = Int64(minTensorSize) }

    public var tag: String? { cuts.isEmpty ? nil : "onnx" }

    public var wantsBytes: Bool { !stopped }

    public mutating func observe(_ bytes: UnsafeRawBufferPointer, at offset: Int64) {
        // Only the next bytes in order; a planner shown anything else stops rather than guess.
        guard !stopped, !bytes.isEmpty else { return }
        guard offset == position else { return stop() }
        var i = 0
        while i < bytes.count {
            let at = offset + Int64(i)
            if at < skipTo {
                i += Int(min(skipTo - at, Int64(bytes.count - i)))
                continue
            }
            guard at < open[open.count - 1].end else { return stop() } // a field runs past its message
            let byte = bytes[i]
            i += 1
            // Ten bytes at most, and the tenth may only hold the 64th bit.
            guard varintShift < 63 || (varintShift == 63 && byte <= 1) else { return stop() }
            varint |= UInt64(byte & 0x7F) << varintShift
            if byte & 0x80 != 0 {
                varintShift += 7
                continue
            }
            let value = varint
            varint = 0
            varintShift = 0
            if !took(value, endingAt: at + 1) { return stop() }
        }
        position = offset + Int64(bytes.count)
    }

    /// Handles one complete varint, whose last byte is just before `end`; false if the stream
    /// is not what the walker follows.
    private mutating func took(_ value: UInt64, endingAt end: Int64) -> Bool {
        let level = open[open.count - 1].level
        switch step {
        case .key:
            let field = value >> 3
            let wire = value & 7
            guard field >= 1, field <= 536_870_911 else { return false }
            if !sawFirstKey {
                guard field == 1, wire == 0 else { return false }
                sawFirstKey = true
            }
            switch wire {
            case 0: step = .varint(field: field)
            case 1: return skipField(to: end + 8)
            case 2: step = .length(field: field)
            case 5: return skipField(to: end + 4)
            default: return false // groups (3, 4) are not in onnx.proto; 6 and 7 are not wire types
            }
            return true
        case .varint(let field):
            if level == .tensor && field == Field.tensorDataType { dataType = value }
            return fieldEnded(at: end)
        case .length(let field):
            let messageEnd = open[open.count - 1].end
            guard value <= UInt64(messageEnd - end) else { return false }
            let payloadEnd = end + Int64(value)
            switch (level, field) {
            case (.model, Field.modelGraph):
                return enter(.graph, endingAt: payloadEnd, from: end)
            case (.graph, Field.graphInitializer):
                dataType = 0
                return enter(.tensor, endingAt: payloadEnd, from: end)
            case (.tensor, Field.tensorRawData):
                if payloadEnd - end >= minTensorSize && end > (cuts.last ?? -1) {
                    cuts.cut(at: end)
                    cuts.cut(at: payloadEnd)
                    cuts.width(Self.width(ofDataType: dataType), from: end)
                    cuts.width(1, from: payloadEnd)
                }
                return skipField(to: payloadEnd)
            default:
                return skipField(to: payloadEnd)
            }
        }
    }

    private mutating func enter(_ level: Level, endingAt end: Int64, from start: Int64) -> Bool {
        open.append((level, end))
        step = .key
        return closeMessages(at: start) // an empty message closes at once
    }

    private mutating func skipField(to end: Int64) -> Bool {
        guard end <= open[open.count - 1].end else { return false }
        skipTo = end
        return fieldEnded(at: end)
    }

    private mutating func fieldEnded(at end: Int64) -> Bool {
        step = .key
        return closeMessages(at: end)
    }

    /// Closes every open message that ends at `offset`; the model never closes (its end is the
    /// stream's), so reaching the limit stops the walk.
    private mutating func closeMessages(at offset: Int64) -> Bool {
        while open.count > 1 && open[open.count - 1].end == offset { open.removeLast() }
        return offset < Self.streamLimit
    }

    private mutating func stop() {
        stopped = true
        open = []
    }

    /// Element width of TensorProto.DataType `t` for the byte-plane codecs: FLOAT (1) is 4,
    /// FLOAT16 (10) and BFLOAT16 (16) are 2, anything else 1.
    static func width(ofDataType t: UInt64) -> Int {
        switch t {
        case 1: return 4
        case 10, 16: return 2
        default: return 1
        }
    }

    public func nextBoundary(atOrAfter offset: Int64) -> Int64? { cuts.next(atOrAfter: offset) }

    public func elementWidth(at offset: Int64) -> Int { cuts.width(at: offset) }
}

/// The planner the registry and the client cut model files with: safetensors tensors and ONNX
/// initializers both get their own chunks, so a checkpoint and its ONNX export share them.
/// Both planners see the stream; each stops at once on the other's format (a safetensors
/// file starts with its header's length, an ONNX file with the varint key 0x08), so on any
/// file at most one of them cuts.
public struct ModelFileBoundaryPlanner: BoundaryPlanner {
    private var safetensors = SafetensorsBoundaryPlanner()
    private var onnx = ONNXBoundaryPlanner()

    public init() {}

    public var tag: String? {
        switch (safetensors.tag, onnx.tag) {
        case (let s?, let o?): return s + "+" + o
        case (let s?, nil): return s
        case (nil, let o?): return o
        case (nil, nil): return nil
        }
    }

    public var wantsBytes: Bool { safetensors.wantsBytes || onnx.wantsBytes }

    public mutating func observe(_ bytes: UnsafeRawBufferPointer, at offset: Int64) {
        if safetensors.wantsBytes { safetensors.observe(bytes, at: offset) }
        if onnx.wantsBytes { onnx.observe(bytes, at: offset) }
    }

    public func nextBoundary(atOrAfter offset: Int64) -> Int64? {
        switch (safetensors.nextBoundary(atOrAfter: offset), onnx.nextBoundary(atOrAfter: offset)) {
        case (let s?, let o?): return min(s, o)
        case (let s, let o): return s ?? o
        }
    }

    public func elementWidth(at offset: Int64) -> Int {
        safetensors.tag != nil ? safetensors.elementWidth(at: offset) : onnx.elementWidth(at: offset)
    }
}
