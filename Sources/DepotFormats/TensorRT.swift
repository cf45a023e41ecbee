import DepotAPI
import DepotCore

/// Recognises serialized TensorRT engines ("ftrt"/"ptrt" magic) and records the GPU
/// compute capability and TensorRT version the push declared in its platform string.
enum TensorRT {
    static let magics: [[UInt8]] = [Array("ftrt".utf8), Array("ptrt".utf8)]

    static func hasMagic(_ head: [UInt8]) -> Bool {
        head.count >= 4 && magics.contains { Array(head.prefix(4)) == $0 }
    }

    /// Parses "sm_90,trt10.3" → ("9.0", "10.3"); either may be nil.
    static func parsePlatform(_ platform: String?) -> (computeCapability: String?, tensorrtVersion: String?) {
        guard let platform else { return (nil, nil) }
        var cc: String?
        var trt: String?
        for raw in platform.split(whereSeparator: { $0 == "," || $0 == ";" || $0 == " " }) {
            let part = raw.lowercased()
            if part.hasPrefix("sm_") || part.hasPrefix("sm") && part.dropFirst(2).allSatisfy(\.isNumber) {
                let digits = part.drop { !$0.isNumber }.prefix { $0.isNumber }
                if digits.count >= 2 { cc = "\(digits.dropLast()).\(digits.last!)" }
            } else if part.hasPrefix("trt") || part.hasPrefix("tensorrt") {
                let version = part.drop { !$0.isNumber }
                if !version.isEmpty, version.allSatisfy({ $0.isNumber || $0 == "." }) { trt = String(version) }
            }
        }
        return (cc, trt)
    }

    static func inspect(_ source: any ByteSource, head: [UInt8], platform: String?) -> [String: JSONValue] {
        var out: [String: JSONValue] = ["format": "tensorrt-plan", "size": .int(source.size)]
        var problems: [String] = []
        if hasMagic(head) {
            out["magic"] = .string(String(decoding: head.prefix(4), as: UTF8.self))
        } else {
            problems.append("no TensorRT engine magic")
        }
        let (cc, trt) = parsePlatform(platform)
        if let cc { out["compute_capability"] = .string(cc) }
        if let trt { out["tensorrt_version"] = .string(trt) }
        if cc != nil || trt != nil { out["source"] = "push" }
        out["problems"] = JSONValue(problems)
        return out
    }
}
