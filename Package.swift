// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "Depot",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "depot", targets: ["depot"]),
        // The modules the fuzz harnesses (fuzz/Package.swift) link; nothing else uses it.
        .library(
            name: "DepotFuzzable",
            targets: [
                "DepotAPI", "DepotAuth", "DepotCore", "DepotFormats", "DepotStore", "DepotRegistry", "DepotPipelines", "DepotServer",
                "DepotTrust",
            ]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.3"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        // ES256 tokens of the OCI token flow and OIDC workload identity (JWKS). Its crypto
        // dependencies (swift-crypto, swift-certificates) are already in the graph via NIOSSL.
        .package(url: "https://github.com/vapor/jwt-kit", from: "5.8.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        // ECDSA P-256 signatures of artifacts (DepotTrust). Already in the graph via jwt-kit and NIOSSL.
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
        // The tracing API the server's code is instrumented with (already in the graph via
        // Hummingbird), and its OpenTelemetry backend: OTLP over HTTP only (the gRPC trait would
        // add grpc-swift to every build). Only the `depot` executable links the backend
        // (DepotTelemetry), so the fuzz harnesses do not build it.
        .package(url: "https://github.com/apple/swift-distributed-tracing", from: "1.7.3"),
        .package(url: "https://github.com/swift-otel/swift-otel", from: "1.6.0", traits: ["OTLPHTTP"]),
    ],
    targets: [
        // System libraries (Debian: libzstd-dev, libsqlite3-dev, libssl-dev, libpq-dev).
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        .systemLibrary(name: "COpenSSL", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),
        // The PostgreSQL catalog (Debian: libpq-dev); see Sources/DepotCatalog/Postgres.swift for why libpq.
        .systemLibrary(name: "CLibPQ", pkgConfig: "libpq", providers: [.apt(["libpq-dev"])]),

        // Layers: see docs/ARCHITECTURE.md.
        .target(name: "DepotCore", dependencies: ["COpenSSL", "CDepotSupport"]),
        // The shared vocabulary: wire types, states, annotation keys, the route table.
        .target(name: "DepotAPI", dependencies: ["DepotCore"]),
        .target(name: "DepotCatalog", dependencies: ["DepotCore", "DepotAPI", "CSQLite", "CLibPQ"]),
        // Its readers describe files as JSONValue (DepotAPI's open document type).
        .target(name: "DepotFormats", dependencies: ["DepotCore", "DepotAPI"]),
        // Identity and authorization: roles, grants, credentials, token signing, OIDC. No HTTP.
        .target(name: "DepotAuth", dependencies: ["DepotCore", "DepotAPI", "COpenSSL", .product(name: "JWTKit", package: "jwt-kit")]),
        .target(name: "CDepotSupport"),
        .target(name: "DepotTrust", dependencies: ["DepotCore", "DepotAPI", .product(name: "Crypto", package: "swift-crypto")]),
        .target(name: "DepotStore", dependencies: ["DepotCore", "DepotCatalog", "CZstd", "CDepotSupport"]),
        // Packs in S3-compatible object storage: SigV4, a small S3 client (AsyncHTTPClient), the
        // store's PackObjectStore over it. docs/OBJECT-STORAGE.md.
        .target(
            name: "DepotObjectStore",
            dependencies: [
                "DepotCore", "DepotStore",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        .target(name: "DepotRegistry", dependencies: ["DepotAPI", "DepotCore", "DepotCatalog", "DepotStore", "DepotFormats"]),
        .target(
            name: "DepotPipelines",
            dependencies: [
                "DepotCore", "DepotAPI", "DepotCatalog", "DepotStore", "DepotRegistry", "DepotFormats",
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        .target(name: "DepotDeploy", dependencies: ["DepotCore", "DepotAPI", "DepotCatalog", "DepotRegistry"]),
        .target(
            name: "DepotRunner",
            dependencies: [
                "DepotCore", "DepotAPI", "DepotClient", "DepotFormats", "DepotTrust", "CDepotSupport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"), .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ]
        ),
        .target(
            name: "DepotServer",
            dependencies: [
                "DepotCore", "DepotAPI", "DepotCatalog", "DepotRegistry", "DepotStore", "DepotFormats", "CDepotSupport", "DepotPipelines",
                "DepotRunner",
                "DepotClient", "DepotDeploy", "DepotAuth", "DepotTrust", "DepotObjectStore",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ]
        ),
        // `tracing:` in the config: the OpenTelemetry (OTLP/HTTP) backend behind the Tracing API.
        .target(
            name: "DepotTelemetry",
            dependencies: [
                "DepotServer",
                .product(name: "OTel", package: "swift-otel"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .target(
            name: "DepotClient",
            dependencies: [
                "DepotAPI", "DepotCore", "DepotStore", "DepotFormats", "DepotTrust", "CDepotSupport",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
        .executableTarget(
            name: "depot",
            dependencies: [
                "DepotAPI", "DepotCore", "DepotCatalog", "DepotStore", "DepotFormats", "DepotRegistry", "DepotServer", "DepotClient",
                "DepotPipelines", "DepotRunner", "DepotDeploy", "DepotAuth", "DepotTrust", "DepotTelemetry",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),

        // Helpers several test targets share (temporary directories, bytes, manifests, a registry on a temporary store).
        .target(
            name: "DepotTestSupport", dependencies: ["DepotCore", "DepotFormats", "DepotStore", "DepotRegistry"],
            path: "Tests/DepotTestSupport"),
        .testTarget(
            name: "DepotStoreTests",
            dependencies: ["DepotStore", "DepotCatalog", "DepotCore", "DepotFormats", "CDepotSupport", "DepotTestSupport"]
        ),
        // The signer against AWS's examples; the store in S3 mode against a real moto_server.
        .testTarget(
            name: "DepotObjectStoreTests",
            dependencies: ["DepotObjectStore", "DepotStore", "DepotCatalog", "DepotCore", "DepotTestSupport"]
        ),
        .testTarget(name: "DepotCatalogTests", dependencies: ["DepotCatalog", "DepotAPI", "DepotCore", "CSQLite"]),
        .testTarget(name: "DepotAPITests", dependencies: ["DepotAPI", "DepotCore"]),
        .testTarget(
            name: "DepotAuthTests", dependencies: ["DepotAuth", "DepotAPI", "DepotCore", .product(name: "JWTKit", package: "jwt-kit")]),
        .testTarget(name: "DepotTrustTests", dependencies: ["DepotTrust", "DepotAPI", "DepotCore"]),
        .testTarget(
            name: "DepotFormatsTests", dependencies: ["DepotFormats", "DepotAPI", "DepotCore", "CDepotSupport", "DepotTestSupport"]),
        .testTarget(
            name: "DepotServerTests",
            dependencies: [
                "DepotServer", "DepotRegistry", "DepotStore", "DepotCore", "DepotCatalog", "DepotFormats", "DepotAPI", "DepotClient",
                "DepotPipelines", "DepotRunner", "DepotDeploy", "DepotTestSupport", "DepotAuth", "DepotTrust",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "InMemoryTracing", package: "swift-distributed-tracing"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        // Unit tests of one module each, without HTTP or child processes (scripts/test-fast.sh runs them).
        .testTarget(
            name: "DepotRegistryTests",
            dependencies: ["DepotRegistry", "DepotAPI", "DepotCore", "DepotCatalog", "DepotStore", "DepotFormats", "DepotTestSupport"]
        ),
        .testTarget(
            name: "DepotDeployTests",
            dependencies: ["DepotDeploy", "DepotRegistry", "DepotStore", "DepotCore", "DepotCatalog", "DepotTestSupport"]),
        .testTarget(
            name: "DepotPipelinesTests",
            dependencies: [
                "DepotPipelines", "DepotAPI", "DepotCore", "DepotCatalog", "DepotRegistry", "DepotTestSupport",
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        // The OTLP/HTTP export against a loopback receiver.
        .testTarget(
            name: "DepotTelemetryTests",
            dependencies: [
                "DepotTelemetry", "DepotServer",
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "OTel", package: "swift-otel"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .testTarget(
            name: "DepotClientTests",
            dependencies: [
                "DepotClient", "DepotAPI", "DepotCore", "DepotStore", "DepotFormats", "DepotTestSupport",
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
