/// Media types Depot understands.
public enum MediaType {
    public static let ociManifest = "application/vnd.oci.image.manifest.v1+json"
    public static let ociIndex = "application/vnd.oci.image.index.v1+json"
    public static let dockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
    public static let dockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
    public static let ociEmpty = "application/vnd.oci.empty.v1+json"
    public static let ociImageConfig = "application/vnd.oci.image.config.v1+json"
    public static let dockerForeignLayer = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

    /// Manifest media types whose references are blobs (config + layers).
    public static let imageManifests: Set<String> = [ociManifest, dockerManifest]
    /// Manifest media types whose references are other manifests.
    public static let indexes: Set<String> = [ociIndex, dockerManifestList]
    public static let manifests: Set<String> = imageManifests.union(indexes)
}
