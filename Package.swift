// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "Depot",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "depot", targets: ["depot"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        // System libraries (Debian: libzstd-dev, libsqlite3-dev, libssl-dev).
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        .systemLibrary(name: "COpenSSL", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),

        // Layers: see docs/ARCHITECTURE.md.
        .target(name: "DepotCore", dependencies: ["COpenSSL"]),
        .target(name: "DepotCatalog", dependencies: ["DepotCore", "CSQLite"]),
        .target(name: "DepotFormats", dependencies: ["DepotCore"]),
        .target(name: "DepotStore", dependencies: ["DepotCore", "DepotCatalog", "CZstd"]),
        .executableTarget(
            name: "depot",
            dependencies: [
                "DepotCore", "DepotCatalog", "DepotStore", "DepotFormats",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),

        .testTarget(name: "DepotStoreTests", dependencies: ["DepotStore", "DepotCatalog", "DepotCore", "DepotFormats"]),
    ],
    swiftLanguageModes: [.v6]
)
