import DepotCore

/// Walks the opcodes of a pickle (protocols 0-5) without executing it and collects every
/// imported callable ("module.name") named by GLOBAL, INST and STACK_GLOBAL.
enum Pickle {
    /// Result of scanning one pickle: its imports and the offset after STOP.
    struct Scan {
        var imports: ImportTally
        var end: Int64
    }

    /// Imported callables of one or more pickles, bounded: every import is counted and classified
    /// (so a dangerous one is never lost behind thousands of harmless ones), but each list keeps
    /// only the first `FormatInspector.maxListed` unique names.
    struct ImportTally {
        private(set) var all = BoundedSet()
        private(set) var unsafe = BoundedSet()
        private(set) var dangerous = BoundedSet()
        /// Import opcodes seen (not unique).
        private(set) var count = 0

        /// One import: `module` and qualified `name` as the pickle names them (after the Python 2
        /// module renames); allowed only when that exact pair is on `PickleAllowList`.
        mutating func add(module: String, name: String) {
            var full = module + "." + name
            if full.utf8.count > FormatInspector.maxNameLength { full = String(full.prefix(FormatInspector.maxNameLength)) + "…" }
            count += 1
            all.insert(full)
            guard !PickleAllowList.allows(module: module, name: name) else { return }
            unsafe.insert(full)
            if PyTorch.isDangerous(full) { dangerous.insert(full) }
        }

        /// Something that is not an import but makes the pickle unsafe all the same (an
        /// unresolved STACK_GLOBAL, a joblib array that is itself a pickle).
        mutating func addUnsafe(_ what: String) {
            count += 1
            all.insert(what)
            unsafe.insert(what)
        }

        mutating func merge(_ other: ImportTally) {
            count += other.count
            all.merge(other.all)
            unsafe.merge(other.unsafe)
            dangerous.merge(other.dangerous)
        }
    }

    /// The first `FormatInspector.maxListed` unique strings, plus how many insertions were not kept.
    struct BoundedSet {
        private(set) var members = Set<String>()
        /// Insertions of names outside a full set (they may repeat one another).
        private(set) var dropped = 0
        /// A merged-in set had dropped names of its own.
        private var mergedDropped = false

        var sorted: [String] { members.sorted() }
        var isEmpty: Bool { members.isEmpty }
        var isComplete: Bool { dropped == 0 && !mergedDropped }

        mutating func insert(_ name: String) {
            if members.contains(name) { return }
            if members.count < FormatInspector.maxListed { members.insert(name) } else { dropped += 1 }
        }

        mutating func merge(_ other: BoundedSet) {
            for m in other.members { insert(m) }
            dropped += other.dropped
            if !other.isComplete { mergedDropped = true }
        }
    }

    /// Strings longer than this are skipped rather than tracked for STACK_GLOBAL.
    private static let maxTracked = 1024

    /// A value the scanner follows on the pickle's stack and memo.
    enum Item: Equatable {
        case string(String)
        /// An imported global (module after the Python 2 renames, qualified name).
        case global(String, String)
    }

    /// What a joblib dump with arrays reports besides its wrapper import: the rest is not scanned.
    static let joblibArrays = "<joblib arrays: raw bytes inside the pickle, not scanned>"

    /// Scans one pickle starting at `start` (up to `end`) until its STOP opcode.
    static func scan(_ source: any ByteSource, from start: Int64, to end: Int64, what: String) throws -> Scan {
        let c = ByteCursor(source, what: what, start: start, end: end)
        var imports = ImportTally()
        // A short window of the most recent stack pushes: strings and imported globals, nil for anything else.
        var recent: [Item?] = []
        var memo: [Int: Item] = [:]
        var memoCount = 0
        // joblib's array placeholder: raw array bytes follow inside the pickle stream.
        var arrayWrapper = false
        func push(_ item: Item?) {
            recent.append(item)
            if recent.count > 64 { recent.removeFirst(32) }
        }
        func remember(_ index: Int) {
            memoCount = max(memoCount, index &+ 1)
            if let top = recent.last, let item = top {
                if memo.count < 1 << 18 || memo[index] != nil { memo[index] = item }
            } else {
                memo[index] = nil
            }
        }
        func string(_ n: UInt64) throws -> Item? {
            guard n <= UInt64(max(0, c.remaining)) else { throw c.truncated(Int64(clamping: n)) }
            if n > UInt64(maxTracked) {
                try c.skip(Int64(n))
                return nil
            }
            let bytes = try c.readBytes(Int(n))
            return .string(String(decoding: bytes, as: UTF8.self))
        }
        func line() throws -> String { String(decoding: try c.readLine(), as: UTF8.self) }
        // Pushes the imported global, so that a dtype's type code and memoized globals can be followed.
        func addImport(_ rawModule: String, _ rawName: String) {
            let module = normalizeModule(rawModule.trimmingSpaces)
            let name = rawName.trimmingSpaces
            imports.add(module: module, name: name)
            if module == "joblib.numpy_pickle", name == "NumpyArrayWrapper" || name == "NDArrayWrapper" || name == "ZNDArrayWrapper" {
                arrayWrapper = true
            }
            push(module.utf8.count <= maxTracked && name.utf8.count <= maxTracked ? Item.global(module, name) : nil)
        }
        func signed32() throws -> UInt64 {
            let v = Int32(bitPattern: UInt32(try c.readUInt(4)))
            guard v >= 0 else { throw c.fail("negative length \(v) at offset \(c.position - 4)") }
            return UInt64(v)
        }

        while true {
            // joblib writes each array's raw bytes into the pickle stream right after its wrapper:
            // what follows is not opcodes, and the wrapper is not allowed anyway. Stop here.
            if arrayWrapper {
                imports.addUnsafe(Self.joblibArrays)
                return Scan(imports: imports, end: c.limit)
            }
            let at = c.position
            guard !c.atEnd else { throw c.fail("pickle ends at offset \(at) without a STOP opcode") }
            let op = try c.readByte()
            switch op {
            case 0x2e: // STOP '.'
                return Scan(imports: imports, end: c.position)
            // Zero-argument opcodes that push a non-string value.
            // NONE EMPTY_TUPLE EMPTY_LIST EMPTY_DICT NEWTRUE NEWFALSE EMPTY_SET
            // REDUCE BUILD DICT APPENDS APPEND LIST OBJ SETITEM TUPLE SETITEMS
            // NEWOBJ TUPLE1-3 ADDITEMS FROZENSET NEWOBJ_EX BINPERSID NEXT_BUFFER READONLY_BUFFER
            case 0x4e, 0x29, 0x5d, 0x7d, 0x88, 0x89, 0x8f,
                0x52, 0x62, 0x64, 0x65, 0x61, 0x6c, 0x6f, 0x73, 0x74, 0x75,
                0x81, 0x85, 0x86, 0x87, 0x90, 0x91, 0x92, 0x51, 0x97, 0x98:
                push(nil)
            case 0x28: // MARK '('
                break
            case 0x30: // POP '0'
                if !recent.isEmpty { recent.removeLast() }
            case 0x31: // POP_MARK '1'
                push(nil)
            case 0x32: // DUP '2'
                push(recent.last ?? nil)
            case 0x49, 0x4c, 0x46, 0x50: // INT LONG FLOAT PERSID: newline-terminated argument
                _ = try c.readLine()
                push(nil)
            case 0x53, 0x56: // STRING UNICODE: newline-terminated literal
                var s = try line()
                if op == 0x53, s.count >= 2, let f = s.first, f == "'" || f == "\"" { s = String(s.dropFirst().dropLast()) }
                push(s.utf8.count <= maxTracked ? .string(s) : nil)
            case 0x63: // GLOBAL 'c': module and name lines
                let module = try line()
                let name = try line()
                addImport(module, name)
            case 0x69: // INST 'i': module and name lines; calls it with the arguments above the mark
                let module = try line()
                let name = try line()
                addImport(module, name)
                recent.removeLast()
                push(nil)
            case 0x93: // STACK_GLOBAL
                let name = recent.popLast() ?? nil
                let module = recent.popLast() ?? nil
                if case .string(let m) = module, case .string(let n) = name {
                    addImport(m, n)
                } else {
                    imports.addUnsafe("<unresolved STACK_GLOBAL>")
                    push(nil)
                }
            case 0x70: // PUT 'p' line
                if let i = Int(try line()) { remember(i) }
            case 0x67: // GET 'g' line
                let i = Int(try line()) ?? -1
                push(memo[i])
            case 0x71: remember(Int(try c.readByte())) // BINPUT
            case 0x72: remember(Int(try c.readUInt(4))) // LONG_BINPUT
            case 0x94: remember(memoCount) // MEMOIZE: index = current memo length
            case 0x68: push(memo[Int(try c.readByte())]) // BINGET
            case 0x6a: push(memo[Int(try c.readUInt(4))]) // LONG_BINGET
            case 0x80: // PROTO
                let v = try c.readByte()
                guard v <= 5 else { throw c.fail("unsupported pickle protocol \(v) at offset \(at)") }
            case 0x95: try c.skip(8) // FRAME: length only, contents follow inline
            case 0x4a:
                try c.skip(4)
                push(nil) // BININT
            case 0x4b:
                try c.skip(1)
                push(nil) // BININT1
            case 0x4d:
                try c.skip(2)
                push(nil) // BININT2
            case 0x47:
                try c.skip(8)
                push(nil) // BINFLOAT
            case 0x82:
                try c.skip(1)
                push(nil) // EXT1
            case 0x83:
                try c.skip(2)
                push(nil) // EXT2
            case 0x84:
                try c.skip(4)
                push(nil) // EXT4
            case 0x8a:
                try c.skip(Int64(try c.readByte()))
                push(nil) // LONG1
            case 0x8b:
                try c.skip(Int64(try signed32()))
                push(nil) // LONG4
            case 0x58: push(try string(try c.readUInt(4))) // BINUNICODE
            case 0x8c: push(try string(UInt64(try c.readByte()))) // SHORT_BINUNICODE
            case 0x8d: push(try string(try c.readUInt(8))) // BINUNICODE8
            case 0x54: push(try string(try signed32())) // BINSTRING
            case 0x55: push(try string(UInt64(try c.readByte()))) // SHORT_BINSTRING
            case 0x42, 0x43, 0x8e, 0x96: // BINBYTES SHORT_BINBYTES BINBYTES8 BYTEARRAY8: skipped
                let n: UInt64 = op == 0x42 ? try c.readUInt(4) : op == 0x43 ? UInt64(try c.readByte()) : try c.readUInt(8)
                guard n <= UInt64(max(0, c.remaining)) else { throw c.truncated(Int64(clamping: n)) }
                try c.skip(Int64(n))
                push(nil)
            default:
                throw c.fail("unknown pickle opcode 0x\(String(op, radix: 16)) at offset \(at)")
            }
        }
    }
}

extension String {
    var trimmingSpaces: String {
        let blank: (UInt8) -> Bool = { $0 == 0x20 || $0 == 0x0d || $0 == 0x09 }
        if let f = utf8.first, let l = utf8.last, !blank(f), !blank(l) { return self }
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\r" || f == "\t" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\r" || l == "\t" { s = s.dropLast() }
        return String(s)
    }
}
