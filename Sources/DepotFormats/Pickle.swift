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

    /// The unpickler's stack as the scanner follows it: the current frame (values pushed since the last
    /// MARK; its newest 64 kept, older ones counted as unknown) and the frames below it. A value it
    /// does not know is nil; it never returns a known value where the unpickler would pop another.
    struct StackModel {
        private var items: [Item?] = []
        private var unknown = 0
        private var frames: [(items: [Item?], unknown: Int)] = []
        private var framesNotKept = 0
        private static let unknownFrame = Int.max / 2

        var top: Item? { items.last ?? nil }

        mutating func push(_ item: Item?) {
            items.append(item)
            if items.count > 64 {
                items.removeFirst(32)
                unknown += 32
            }
        }

        mutating func pop() -> Item? {
            if let item = items.popLast() { return item }
            if unknown > 0 { unknown -= 1 }
            return nil
        }

        mutating func mark() {
            if frames.count < 1 << 16 { frames.append((items, unknown)) } else { framesNotKept += 1 }
            items = []
            unknown = 0
        }

        mutating func popMark() {
            if framesNotKept > 0 {
                framesNotKept -= 1
                (items, unknown) = ([], Self.unknownFrame)
            } else if let f = frames.popLast() {
                (items, unknown) = (f.items, f.unknown)
            } else {
                (items, unknown) = ([], Self.unknownFrame) // the unpickler fails: no MARK
            }
        }

        /// POP: the top value, or the frame's MARK when the frame is empty (pickle.py's load_pop).
        mutating func popOrMark() {
            if items.isEmpty, unknown == 0 { popMark() } else { _ = pop() }
        }
    }

    /// What a joblib dump with arrays reports besides its wrapper import: the rest is not scanned.
    static let joblibArrays = "<joblib arrays: raw bytes inside the pickle, not scanned>"

    /// Python 2 module names that pickles written with protocol < 3 use for Python 3 modules (the
    /// only renames: convert.py applies the same two).
    static func normalizeModule(_ m: String) -> String {
        switch m {
        case "__builtin__": return "builtins"
        case "copy_reg": return "copyreg"
        default: return m
        }
    }

    /// Scans one pickle starting at `start` (up to `end`) until its STOP opcode.
    static func scan(_ source: any ByteSource, from start: Int64, to end: Int64, what: String) throws -> Scan {
        let c = ByteCursor(source, what: what, start: start, end: end)
        var imports = ImportTally()
        // The unpickler's stack, as far as STACK_GLOBAL needs it.
        var stack = StackModel()
        var memo: [Int: Item] = [:]
        var memoCount = 0
        // joblib's array placeholder: raw array bytes follow inside the pickle stream.
        var arrayWrapper = false
        func push(_ item: Item?) { stack.push(item) }
        func pop(_ n: Int) { for _ in 0..<n { _ = stack.pop() } }
        func remember(_ index: Int) {
            memoCount = max(memoCount, index &+ 1)
            if let item = stack.top {
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
            // Each opcode's effect on the stack, as pickle.py applies it: STACK_GLOBAL must see the
            // strings the unpickler will pop, or nothing (never stale ones: a MARK starts a frame).
            case 0x4e, 0x29, 0x5d, 0x7d, 0x88, 0x89, 0x8f, 0x97: // NONE EMPTY_TUPLE/LIST/DICT NEWTRUE NEWFALSE EMPTY_SET NEXT_BUFFER
                push(nil)
            case 0x85, 0x51, 0x98: // TUPLE1 BINPERSID READONLY_BUFFER: one value replaced
                pop(1)
                push(nil)
            case 0x86, 0x52, 0x81: // TUPLE2 REDUCE NEWOBJ: two popped, one pushed
                pop(2)
                push(nil)
            case 0x87, 0x92: // TUPLE3 NEWOBJ_EX
                pop(3)
                push(nil)
            case 0x61: pop(1) // APPEND: the list stays
            case 0x73: pop(2) // SETITEM: the dict stays
            case 0x62: // BUILD: the state popped, the object below rebuilt
                pop(2)
                push(nil)
            case 0x74, 0x6c, 0x64, 0x91, 0x6f: // TUPLE LIST DICT FROZENSET OBJ: the frame becomes one value
                stack.popMark()
                push(nil)
            case 0x65, 0x75, 0x90, 0x31: stack.popMark() // APPENDS SETITEMS ADDITEMS POP_MARK
            case 0x28: stack.mark() // MARK
            case 0x30: stack.popOrMark() // POP (an empty frame: its mark)
            case 0x32: push(stack.top) // DUP
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
                pop(1)
                stack.popMark()
                push(nil)
            case 0x93: // STACK_GLOBAL
                let name = stack.pop()
                let module = stack.pop()
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
