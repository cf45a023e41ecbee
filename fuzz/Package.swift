// swift-tools-version: 6.0
// libFuzzer harnesses for every parser of untrusted bytes (docs/FUZZING.md). Built only by
// scripts/fuzz.sh, into .build-fuzz with -sanitize=fuzzer,address; the root package's own
// build never sees this manifest.
import Foundation
import PackageDescription

// A path dependency's identity is its folder's name, which differs between checkouts.
let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()

let package = Package(
    name: "DepotFuzz",
    platforms: [.macOS(.v15)],
    dependencies: [.package(path: root.path)],
    targets: [
        .executableTarget(
            name: "DepotFuzz",
            dependencies: [.product(name: "DepotFuzzable", package: root.lastPathComponent)]
        )
    ],
    // Swift 5 mode: the harnesses keep process-wide state in plain globals (libFuzzer calls them on one thread).
    swiftLanguageModes: [.v5]
)
