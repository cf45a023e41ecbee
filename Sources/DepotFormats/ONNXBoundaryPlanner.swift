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
///
/// An upload resumed in another process does not replay the stored bytes through the walker
/// (up to 2 GiB at every request of a chunked upload): the writer checkpoint carries the
/// walker's state (`savedState`, a few dozen bytes) and the restored walker goes on from there.
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
    /// Restored from a checkpoint: the stored bytes are not replayed into it.
    private var restored = false
    private var cuts = PlannedCuts()

    /// Cut somewhere in the stream (kept across a restore, which keeps only the pending cuts).
    private var hasCut = false

    public init(minTensorSize: Int = 16 << 10) { self.minTensorSize = Int64(max(1, minTensorSize)) }

    public var tag: String? { hasCut ? "onnx" : nil }

    public var wantsBytes: Bool { !stopped && !restored }

    public mutating func observe(_ bytes: UnsafeRawBufferPointer, at offset: Int64) {
        guard !stopped, !bytes.isEmpty else { return }
        // Bytes it has seen (a resumed writer re-feeds its tail) are skipped; a gap stops it
        // rather than guess.
        let (end, overflow) = offset.addingReportingOverflow(Int64(bytes.count))
        guard !overflow, offset >= 0 else { return stop() }
        if end <= position { return }
        guard offset <= position else { return stop() }
        var i = Int(position - offset)
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
        position = end
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
                    hasCut = true
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

    /// Stops the walk for good; the cuts found so far stay.
    private mutating func stop() { stopped = true }

    /// Element width of TensorProto.DataType `t` for the byte-plane codecs, as safetensors
    /// gives it for the same element type (so a tensor in both files gets the same hint):
    /// FLOAT, INT32, UINT32 4; DOUBLE, INT64, UINT64 8; FLOAT16, BFLOAT16, INT16, UINT16 2;
    /// anything else 1.
    static func width(ofDataType t: UInt64) -> Int {
        switch t {
        case 1, 6, 12: return 4
        case 7, 11, 13: return 8
        case 4, 5, 10, 16: return 2
        default: return 1
        }
    }

    // MARK: Checkpointed state

    /// Byte layout of `savedState` (version 1, integers little-endian):
    ///
    ///     size
    ///        1  version (1)
    ///        1  flags: bit 0 stopped, bit 1 saw the first key, bit 2 has cut
    ///       24  position, skipTo, dataType (Int64, Int64, UInt64)
    ///        1  step: 0 key, 1 varint, 2 length; then its field number (UInt64, 8)
    ///        9  the varint being read (UInt64) and its shift (UInt8)
    ///        1  n: open messages (1...3), then n × (level UInt8, end Int64)
    ///        1  c: cuts at or after `committed` (at most `maxSavedCuts`), c × Int64
    ///        1  w: width regions from the one holding `committed` on (at most
    ///           `maxSavedCuts`), w × (start Int64, width UInt8)
    static let stateVersion: UInt8 = 1
    static let maxSavedCuts = 8

    public func savedState(committed: Int64) -> [UInt8]? {
        // A stream that was never ONNX (stopped at its first byte) needs no state: replaying
        // it costs one read. Its checkpoint stays in the version older builds read.
        if stopped && !sawFirstKey { return nil }
        // The tail after `committed` holds no cut (each one ends a chunk), so what is pending is
        // the cuts past the position, found with the raw_data they end: two at most. A longer
        // list is not this walker's; the writer then replays instead.
        let pending = cuts.boundaries(atOrAfter: committed)
        let regions = cuts.regions(from: committed)
        guard pending.count <= Self.maxSavedCuts, regions.count <= Self.maxSavedCuts else { return nil }
        var out: [UInt8] = [Self.stateVersion, (stopped ? 1 : 0) | (sawFirstKey ? 2 : 0) | (hasCut ? 4 : 0)]
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
        u64(UInt64(bitPattern: position))
        u64(UInt64(bitPattern: skipTo))
        u64(dataType)
        switch step {
        case .key:
            out.append(0)
            u64(0)
        case .varint(let field):
            out.append(1)
            u64(field)
        case .length(let field):
            out.append(2)
            u64(field)
        }
        u64(varint)
        out.append(UInt8(varintShift))
        out.append(UInt8(open.count))
        for (level, end) in open {
            out.append(level == .model ? 0 : level == .graph ? 1 : 2)
            u64(UInt64(bitPattern: end))
        }
        out.append(UInt8(pending.count))
        for c in pending { u64(UInt64(bitPattern: c)) }
        out.append(UInt8(regions.count))
        for r in regions {
            u64(UInt64(bitPattern: r.start))
            out.append(UInt8(r.width))
        }
        return out
    }

    public mutating func restore(_ state: [UInt8]) throws {
        func bad(_ why: String) -> DepotError {
            DepotError.invalidArgument("this upload's saved ONNX chunking state is invalid (\(why)); start the upload over")
        }
        var at = 0
        func byte() throws -> UInt8 {
            guard at < state.count else { throw bad("truncated") }
            defer { at += 1 }
            return state[at]
        }
        func u64() throws -> UInt64 {
            var v: UInt64 = 0
            for i in 0..<8 { v |= UInt64(try byte()) << (8 * UInt64(i)) }
            return v
        }
        func offset() throws -> Int64 {
            let v = Int64(bitPattern: try u64())
            guard v >= 0, v <= Self.streamLimit else { throw bad("offset \(v) out of range") }
            return v
        }
        guard try byte() == Self.stateVersion else { throw bad("unknown version") }
        let flags = try byte()
        guard flags & ~7 == 0 else { throw bad("unknown flags") }
        let position = try offset()
        let skipTo = try offset()
        let dataType = try u64()
        let kind = try byte()
        let field = try u64()
        guard field <= 536_870_911 else { throw bad("field number") }
        let step: Step
        switch kind {
        case 0: step = .key
        case 1: step = .varint(field: field)
        case 2: step = .length(field: field)
        default: throw bad("step")
        }
        let varint = try u64()
        let shift = UInt64(try byte())
        guard shift <= 63, shift % 7 == 0, varint >> shift == 0 else { throw bad("varint") }
        let count = Int(try byte())
        guard (1...3).contains(count) else { throw bad("open messages") }
        var open: [(level: Level, end: Int64)] = []
        for i in 0..<count {
            let level: Level
            switch try byte() {
            case 0: level = .model
            case 1: level = .graph
            case 2: level = .tensor
            default: throw bad("level")
            }
            let end = try offset()
            // model → graph → tensor, each inside the one around it.
            let expected: Level = i == 0 ? .model : i == 1 ? .graph : .tensor
            guard level == expected, end <= (open.last?.end ?? Self.streamLimit), i > 0 || end == Self.streamLimit else {
                throw bad("nesting")
            }
            open.append((level, end))
        }
        var cuts = PlannedCuts()
        for _ in 0..<Int(try byte()) {
            let c = try offset()
            guard c > (cuts.last ?? -1) else { throw bad("cuts out of order") }
            cuts.cut(at: c)
        }
        var lastStart: Int64 = -1
        for _ in 0..<Int(try byte()) {
            let start = try offset()
            let width = Int(try byte())
            guard start > lastStart, [1, 2, 4, 8].contains(width) else { throw bad("width regions") }
            lastStart = start
            cuts.width(width, from: start)
        }
        guard at == state.count, skipTo >= 0, open[open.count - 1].end >= position || flags & 1 != 0 else { throw bad("layout") }
        self.stopped = flags & 1 != 0
        self.sawFirstKey = flags & 2 != 0
        self.hasCut = flags & 4 != 0 || !cuts.isEmpty
        self.position = position
        self.skipTo = skipTo
        self.dataType = dataType
        self.step = step
        self.varint = varint
        self.varintShift = shift
        self.open = open
        self.cuts = cuts
        restored = true
    }

    public func nextBoundary(atOrAfter offset: Int64) -> Int64? { cuts.next(atOrAfter: offset) }

    public func elementWidth(at offset: Int64) -> Int { cuts.width(at: offset) }
}

/// The planner the registry and the client cut model files with: safetensors tensors and ONNX
/// initializers both get their own chunks, so a checkpoint and its ONNX export share them.
/// Both planners see the stream, and each stops at once on the other's format (a safetensors
/// file starts with its header's length, an ONNX file with the varint key 0x08), so on any
/// real file one of them cuts. A file crafted to be both gets the cuts of both: each list
/// depends only on the bytes before its cuts, so their union does too.
public struct ModelFileBoundaryPlanner: BoundaryPlanner {
    private var safetensors: SafetensorsBoundaryPlanner
    private var onnx: ONNXBoundaryPlanner

    /// `minTensorSize`: the smallest tensor that gets chunks of its own (16 KiB; smaller in tests).
    public init(minTensorSize: Int = 16 << 10) {
        safetensors = SafetensorsBoundaryPlanner(minTensorSize: minTensorSize)
        onnx = ONNXBoundaryPlanner(minTensorSize: minTensorSize)
    }

    public var tag: String? {
        switch (safetensors.tag, onnx.tag) {
        case (let s?, let o?): return s + "+" + o
        case (let s?, nil): return s
        case (nil, let o?): return o
        case (nil, nil): return nil
        }
    }

    /// The safetensors header is replayed into a resumed writer's planner; the ONNX walker's
    /// state travels in the checkpoint instead.
    public var wantsBytes: Bool { safetensors.wantsBytes || onnx.wantsBytes }

    public mutating func observe(_ bytes: UnsafeRawBufferPointer, at offset: Int64) {
        if safetensors.wantsBytes { safetensors.observe(bytes, at: offset) }
        onnx.observe(bytes, at: offset)
    }

    public func nextBoundary(atOrAfter offset: Int64) -> Int64? {
        switch (safetensors.nextBoundary(atOrAfter: offset), onnx.nextBoundary(atOrAfter: offset)) {
        case (let s?, let o?): return min(s, o)
        case (let s, let o): return s ?? o
        }
    }

    /// Safetensors' answer inside its data (known once its header is read, and only asked
    /// about later offsets), the walker's before: neither depends on how the stream was split.
    public func elementWidth(at offset: Int64) -> Int {
        if let dataStart = safetensors.dataStart, offset >= dataStart { return safetensors.elementWidth(at: offset) }
        return onnx.elementWidth(at: offset)
    }

    public func savedState(committed: Int64) -> [UInt8]? { onnx.savedState(committed: committed) }

    public mutating func restore(_ state: [UInt8]) throws { try onnx.restore(state) }
}
