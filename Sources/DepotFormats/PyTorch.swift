import DepotAPI
import DepotCore

/// Inspects PyTorch checkpoints (torch.save ZIP archives and legacy raw pickles): lists the
/// archive and reports every callable its pickles import, flagging those outside an allowlist.
enum PyTorch {
    /// Pickles larger than this are not scanned (reported in problems).
    static let maxPickle: Int64 = 64 << 20

    static let dangerousPrefixes = [
        "os.", "posix.", "nt.", "subprocess.", "runpy.", "socket.", "shutil.", "sys.",
        "pty.", "webbrowser.", "importlib.", "pickle.", "marshal.",
    ]
    static let dangerousNames: Set<String> = [
        "builtins.eval", "builtins.exec", "builtins.compile", "builtins.open",
        "builtins.getattr", "builtins.__import__",
    ]

    /// The modules of `dangerousPrefixes` (each is one module name and a dot).
    static let dangerousModules = Set(dangerousPrefixes.map { String($0.dropLast()) })

    /// One set lookup of the top-level module, not a prefix test each: hostile pickles import
    /// callables by the hundred thousand.
    static func isDangerous(_ name: String) -> Bool {
        if dangerousNames.contains(name) { return true }
        guard let dot = name.utf8.firstIndex(of: UInt8(ascii: ".")) else { return false }
        return dangerousModules.contains(String(name[..<dot]))
    }

    static func isPickle(_ head: [UInt8]) -> Bool {
        head.count >= 2 && head[0] == 0x80 && (2...5).contains(head[1])
    }

    /// A torch ZIP archive: some entry is `data.pkl` or `<dir>/data.pkl`.
    static func zipEntriesIfTorch(_ source: any ByteSource) throws -> [ZipEntry]? {
        guard try Zip.isZip(source) else { return nil }
        let entries = try Zip.entries(source)
        return entries.contains { $0.name == "data.pkl" || $0.name.hasSuffix("/data.pkl") } ? entries : nil
    }

    /// Most pickles of one archive that are scanned; the rest are counted in `unscanned_pickles`.
    static let maxScannedPickles = 1000

    /// `format` is "pytorch", or "pickle" for a scikit-learn/joblib pickle (`.pkl`, `.pickle`, `.joblib`).
    static func inspect(_ source: any ByteSource, zipEntries: [ZipEntry]?, format: String = "pytorch") throws -> [String: JSONValue] {
        var out: [String: JSONValue] = ["format": .string(format)]
        // False as soon as some pickle was not scanned, or not whole: the file then cannot be called safe.
        var complete = true
        var pickles: [JSONValue] = []
        var pickleCount = 0
        var problems: [String] = []
        var all = Pickle.ImportTally()
        var unscanned = 0

        // Autoclosure: a hostile archive can cause a problem per entry; only the kept ones are formatted.
        func note(_ problem: @autoclosure () -> String) {
            if problems.count < FormatInspector.maxListed { problems.append(problem()) }
        }
        func record(_ entry: String, _ imports: Pickle.ImportTally) {
            all.merge(imports)
            pickleCount += 1
            guard pickles.count < 100 else { return }
            var p: [String: JSONValue] = [
                "entry": .string(entry), "imports": JSONValue(imports.all.sorted), "unsafe_imports": JSONValue(imports.unsafe.sorted),
            ]
            if !imports.all.isComplete { p["imports_truncated"] = true }
            pickles.append(.object(p))
        }

        if let entries = zipEntries {
            out["container"] = "zip"
            out["entry_count"] = JSONValue(entries.count)
            out["entries"] = .array(
                entries.prefix(10_000).map { e -> JSONValue in
                    [
                        "name": .string(e.name), "size": JSONValue(Int(e.size)), "compressed_size": JSONValue(Int(e.compressedSize)),
                        "method": JSONValue(Int(e.method)),
                    ]
                })
            if entries.count > 10_000 { out["entries_truncated"] = true }
            // Each byte range is scanned once: entries that share a local header (one pickle named
            // by many directory entries) are scanned once, and a range overlapping one already
            // scanned is not scanned again (real archives never overlap).
            var byHeader: [Int64: String] = [:]
            var candidates: [(entry: ZipEntry, range: Range<Int64>)] = []
            for e in entries where e.name.hasSuffix(".pkl") {
                if e.method != 0 {
                    note("\(e.name): unscanned (compressed)")
                    complete = false
                    continue
                }
                if e.compressedSize > maxPickle {
                    note("\(e.name): unscanned (\(e.compressedSize) bytes, over the \(maxPickle)-byte limit)")
                    complete = false
                    continue
                }
                if let first = byHeader[e.localHeaderOffset] {
                    note("\(e.name): same data as '\(first)'")
                    continue
                }
                byHeader[e.localHeaderOffset] = e.name
                guard candidates.count < maxScannedPickles else {
                    unscanned += 1
                    continue
                }
                candidates.append((e, try Zip.dataRange(e, in: source)))
            }
            candidates.sort { $0.range.lowerBound < $1.range.lowerBound }
            var scannedEnd: Int64 = 0
            for (e, range) in candidates {
                if range.lowerBound < scannedEnd {
                    note("\(e.name): overlaps another entry's data, not scanned again")
                    complete = false
                    continue
                }
                let scan = try Pickle.scan(source, from: range.lowerBound, to: range.upperBound, what: "pickle '\(e.name)'")
                scannedEnd = max(scannedEnd, scan.end)
                record(e.name, scan.imports)
            }
        } else {
            // Legacy torch.save: several pickles back to back (magic, version, sys info, object,
            // storage keys), then raw storage bytes.
            out["container"] = "pickle"
            let end = min(source.size, maxPickle)
            var position: Int64 = 0
            var imports = Pickle.ImportTally()
            var count = 0
            while position < end, count < 5 {
                let head = try source.read(at: position, count: 2)
                guard count == 0 || isPickle(head) else { break }
                let scan = try Pickle.scan(source, from: position, to: end, what: "pickle")
                imports.merge(scan.imports)
                position = scan.end
                count += 1
            }
            if source.size > maxPickle, position >= end {
                note("pickle: scanned only the first \(maxPickle) bytes")
                complete = false
            }
            record("", imports)
        }
        out["pickles"] = .array(pickles)
        if pickleCount > pickles.count { out["pickle_count"] = JSONValue(pickleCount) }
        if unscanned > 0 {
            out["unscanned_pickles"] = JSONValue(unscanned)
            note("\(unscanned) more pickles not scanned (over the \(maxScannedPickles)-pickle limit)")
        }
        out["imports"] = JSONValue(all.all.sorted)
        out["import_count"] = JSONValue(all.count)
        // Counts, not the kept lists, decide: an import past the list limit still makes the file unsafe.
        out["unsafe"] = JSONValue(!all.unsafe.isEmpty)
        out["unsafe_imports"] = JSONValue(all.unsafe.sorted)
        out["dangerous_imports"] = JSONValue(all.dangerous.sorted)
        if !all.all.isComplete || !all.unsafe.isComplete { out["imports_truncated"] = true }
        if unscanned > 0 {
            out["complete"] = false
            complete = false
        }
        // What the pipeline gate reads (with `unsafe`): every pickle of the file was scanned whole.
        out["scan_complete"] = JSONValue(complete)
        out["problems"] = JSONValue(problems)
        return out
    }
}
