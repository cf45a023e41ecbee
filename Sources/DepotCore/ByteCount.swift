import Foundation

/// Byte counts for people: binary units (`1.5 GiB`), bytes below 1 KiB exactly. One rendering for
/// the CLI's summaries, the client's progress line and the web UI.
public enum ByteCount {
    public static func text(_ n: Int64, decimals: Int = 1) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
        var value = Double(n)
        var unit = 0
        while abs(value) >= 1024, unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return unit == 0 ? "\(n) B" : String(format: "%.\(max(0, min(decimals, 6)))f %@", value, units[unit])
    }
}
