import DepotAPI
import Foundation
import Logging

/// A swift-log handler that writes one JSON object per line to stderr:
/// `{"ts":..., "level":..., "label":..., "msg":..., <metadata>...}` — for log pipelines
/// (`server.log_format: json`).
public struct JSONLogHandler: LogHandler {
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    let label: String

    public init(label: String) { self.label = label }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(
        level: Logger.Level, message: Logger.Message, metadata explicit: Logger.Metadata?,
        source: String, file: String, function: String, line: UInt
    ) {
        var object: [String: JSONValue] = [:]
        for (k, v) in metadata.merging(explicit ?? [:], uniquingKeysWith: { $1 }) { object[k] = .string("\(v)") }
        // The fixed fields last: metadata named `msg` or `level` cannot replace them.
        object["ts"] = .string(ISO8601DateFormatter.shared.string(from: Date()))
        object["level"] = .string(level.rawValue)
        object["label"] = .string(label)
        object["source"] = .string(source)
        object["msg"] = .string(message.description)
        guard var data = try? WireJSON.encode(object) else { return }
        data.append(0x0A)
        FileHandle.standardError.write(Data(data))
    }
}

extension ISO8601DateFormatter {
    nonisolated(unsafe) static let shared: ISO8601DateFormatter = {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f
    }()
}
