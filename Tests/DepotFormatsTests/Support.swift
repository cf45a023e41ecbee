import DepotAPI
import DepotCore
import DepotFormats
import DepotTestSupport

func le(_ v: UInt64, _ width: Int) -> [UInt8] { (0..<width).map { UInt8(truncatingIfNeeded: v >> (8 * UInt64($0))) } }

/// Builds a ZIP archive of entries (stored unless `method` says otherwise), optionally in ZIP64 form.
func makeZip(_ entries: [(name: String, data: [UInt8], method: Int)], zip64: Bool = false) -> [UInt8] {
    var out: [UInt8] = []
    var central: [UInt8] = []
    for e in entries {
        let offset = out.count
        let name = Array(e.name.utf8)
        out += le(0x0403_4b50, 4) + le(20, 2) + le(0, 2) + le(UInt64(e.method), 2) + le(0, 4) + le(0, 4)
        out += le(UInt64(e.data.count), 4) + le(UInt64(e.data.count), 4) + le(UInt64(name.count), 2) + le(0, 2) + name + e.data
        let extra: [UInt8] =
            zip64 ? le(1, 2) + le(24, 2) + le(UInt64(e.data.count), 8) + le(UInt64(e.data.count), 8) + le(UInt64(offset), 8) : []
        let size32: UInt64 = zip64 ? 0xFFFF_FFFF : UInt64(e.data.count)
        let offset32: UInt64 = zip64 ? 0xFFFF_FFFF : UInt64(offset)
        central += le(0x0201_4b50, 4) + le(45, 2) + le(45, 2) + le(0, 2) + le(UInt64(e.method), 2) + le(0, 4) + le(0, 4)
        central += le(size32, 4) + le(size32, 4) + le(UInt64(name.count), 2) + le(UInt64(extra.count), 2) + le(0, 2)
        central += le(0, 2) + le(0, 2) + le(0, 4) + le(offset32, 4) + name + extra
    }
    let cdOffset = out.count
    out += central
    if zip64 {
        let recordOffset = out.count
        out += le(0x0606_4b50, 4) + le(44, 8) + le(45, 2) + le(45, 2) + le(0, 4) + le(0, 4)
        out += le(UInt64(entries.count), 8) + le(UInt64(entries.count), 8) + le(UInt64(central.count), 8) + le(UInt64(cdOffset), 8)
        out += le(0x0706_4b50, 4) + le(0, 4) + le(UInt64(recordOffset), 8) + le(1, 4)
        out += le(0x0605_4b50, 4) + le(0, 2) + le(0, 2) + le(0xFFFF, 2) + le(0xFFFF, 2) + le(0xFFFF_FFFF, 4) + le(0xFFFF_FFFF, 4) + le(0, 2)
    } else {
        out += le(0x0605_4b50, 4) + le(0, 2) + le(0, 2) + le(UInt64(entries.count), 2) + le(UInt64(entries.count), 2)
        out += le(UInt64(central.count), 4) + le(UInt64(cdOffset), 4) + le(0, 2)
    }
    return out
}

/// Pickle byte helpers.
enum P {
    static func global(_ module: String, _ name: String) -> [UInt8] { [0x63] + Array("\(module)\n\(name)\n".utf8) }
    static func shortUnicode(_ s: String) -> [UInt8] { [0x8c, UInt8(s.utf8.count)] + Array(s.utf8) }
    static func binUnicode(_ s: String) -> [UInt8] { [0x58] + le(UInt64(s.utf8.count), 4) + Array(s.utf8) }
}

/// The message of a thrown DepotError.invalidArgument, "no error" if nothing was thrown.
func errorMessage(_ body: () throws -> Any?) -> String {
    do {
        _ = try body()
        return "no error"
    } catch let DepotError.invalidArgument(m) {
        return m
    } catch {
        return "other error: \(error)"
    }
}

func inspect(_ path: String, _ bytes: [UInt8], platform: String? = nil) throws -> [String: JSONValue]? {
    try FormatInspector.inspect(path: path, source: BytesSource(bytes), platform: platform)
}
