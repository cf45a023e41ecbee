import Yams

/// Checks a composed YAML tree before it is used. Yams's `load` force-unwraps every mapping key
/// as a string, so a key that is a list or a mapping (`{[a]: 1}`) crashed the process (found by
/// the config fuzzer); and a tree can be made huge with aliases. Callers refuse what this reports.
public enum YAMLSafety {
    /// Nodes walked at most (a config or pipeline file has hundreds).
    public static let maxNodes = 100_000

    /// A description of the first problem, or nil when the tree is safe to load.
    public static func problem(_ root: Node) -> String? {
        var stack: [Node] = [root]
        var seen = 0
        while let node = stack.popLast() {
            seen += 1
            guard seen <= maxNodes else { return "more than \(maxNodes) YAML nodes" }
            switch node {
            case .mapping(let mapping):
                for (key, value) in mapping {
                    guard case .scalar = key else { return "a mapping key that is a list or a mapping (line \(key.mark?.line ?? 0))" }
                    stack.append(value)
                }
            case .sequence(let sequence):
                stack.append(contentsOf: sequence)
            default:
                break
            }
        }
        return nil
    }
}
