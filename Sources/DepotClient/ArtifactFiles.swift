import DepotAPI
import DepotCore
import Foundation

/// Media types and annotation keys of model artifacts: CNCF ModelPack where it fits, Depot's
/// own artifactTypes for TensorRT plans and Triton bundles, and Depot's lineage annotations.
extension ModelMediaType {

    /// The layer media type for a file, by name.
    public static func layer(for path: String) -> String {
        let name = (path as NSString).lastPathComponent.lowercased()
        let ext = (name as NSString).pathExtension
        if name.hasPrefix("readme") || name.hasPrefix("license") || ext == "md" { return doc }
        if ["py", "sh", "ipynb"].contains(ext) { return code }
        if ["json", "yaml", "yml", "pbtxt", "txt", "model", "tiktoken", "jinja", "cfg"].contains(ext) { return weightConfig }
        return weight
    }
}

/// A local file to push and the relative path it will have in the artifact.
public struct ArtifactFile: Sendable {
    public var localPath: String
    public var relativePath: String
}

public enum ArtifactFiles {
    /// Expands the push arguments: a file becomes its base name; a directory becomes every
    /// regular file under it, relative to it (a Triton model directory keeps its layout).
    public static func collect(_ paths: [String]) throws -> [ArtifactFile] {
        var out: [ArtifactFile] = []
        let fm = FileManager.default
        for path in paths {
            var isDir: ObjCBool = false
            guard fm.fileExists(atPath: path, isDirectory: &isDir) else { throw ClientError("\(path): no such file or directory") }
            if isDir.boolValue {
                guard let walker = fm.enumerator(atPath: path) else { throw ClientError("cannot list \(path)") }
                var found: [ArtifactFile] = []
                while let rel = walker.nextObject() as? String {
                    let full = path + "/" + rel
                    var sub: ObjCBool = false
                    guard fm.fileExists(atPath: full, isDirectory: &sub), !sub.boolValue else { continue }
                    if rel.split(separator: "/").contains(where: { $0.hasPrefix(".depot") }) { continue }
                    found.append(ArtifactFile(localPath: full, relativePath: rel))
                }
                out += found.sorted { $0.relativePath < $1.relativePath }
            } else {
                out.append(ArtifactFile(localPath: path, relativePath: (path as NSString).lastPathComponent))
            }
        }
        guard !out.isEmpty else { throw ClientError("nothing to push: \(paths.joined(separator: " ")) holds no files") }
        var seen = Set<String>()
        for f in out where !seen.insert(f.relativePath).inserted {
            throw ClientError("two files would be stored as '\(f.relativePath)'; push their directory instead")
        }
        return out
    }

    /// The artifactType for a set of files and their detected formats: a Triton bundle when a
    /// `config.pbtxt` sits at the top or one level down (a model repository `<model>/config.pbtxt`),
    /// a TensorRT plan or an ONNX model when every weight is one, else a ModelPack model.
    public static func artifactType(_ files: [ArtifactFile], formats: [String?]) -> String {
        if files.contains(where: {
            $0.relativePath == "config.pbtxt"
                || ($0.relativePath.hasSuffix("/config.pbtxt")
                    && $0.relativePath.split(separator: "/").count == 2)
        }) {
            return ModelMediaType.tritonBundle
        }
        let weights = zip(files, formats).filter { ModelMediaType.layer(for: $0.0.relativePath) == ModelMediaType.weight && $0.1 != nil }
        if !weights.isEmpty, weights.allSatisfy({ $0.1 == "tensorrt-plan" }) { return ModelMediaType.tensorrtPlan }
        if !weights.isEmpty, weights.allSatisfy({ $0.1 == "onnx" }) { return ModelMediaType.onnx }
        return ModelMediaType.manifest
    }

    /// Checks a relative path from a manifest before writing it under an output directory:
    /// no absolute paths, no `..`, no empty or hidden-control components.
    public static func safeRelativePath(_ path: String) throws -> String {
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        guard !path.isEmpty, !path.hasPrefix("/"), path.count <= 4096,
            parts.allSatisfy({ !$0.isEmpty && $0 != "." && $0 != ".." }),
            !path.unicodeScalars.contains(where: { $0.value < 0x20 })
        else {
            throw ClientError("the artifact names an unsafe file path '\(path.prefix(200))'; refusing to write it")
        }
        return path
    }
}
