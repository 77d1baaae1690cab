// swift-tools-version:6.0
// reflowd — a rectified-flow job server for CPUs. See docs/ARCHITECTURE.md for the target DAG.
import PackageDescription

let strict: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "reflowd",
    products: [
        .executable(name: "reflowd", targets: ["reflowd"]),
    ],
    targets: [
        // System libraries (Debian: libopenblas-dev, zlib1g-dev, libssl-dev; found through pkg-config).
        .systemLibrary(name: "COpenBLAS", path: "Sources/COpenBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CZlib", path: "Sources/CZlib", pkgConfig: "zlib",
                       providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "COpenSSL", path: "Sources/COpenSSL", pkgConfig: "openssl",
                       providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CFFTW", path: "Sources/CFFTW", pkgConfig: "fftw3f",
                       providers: [.apt(["libfftw3-dev"])]),

        // Compute: tensors, kernels, BLAS, RNG (root of all numeric work).
        .target(name: "ReflowEngine", dependencies: ["COpenBLAS", "CFFTW"], swiftSettings: strict),
        // Reverse-mode autodiff over a closed set of primitives.
        .target(name: "ReflowAutograd", dependencies: ["ReflowEngine"], swiftSettings: strict),
        // Layers, losses, optimizers, schedules, EMA, state dicts.
        .target(name: "ReflowNN", dependencies: ["ReflowAutograd", "ReflowEngine"], swiftSettings: strict),
        // Rectified-flow math: time convention, toy data, velocity nets, samplers, training loops.
        .target(name: "ReflowFlow", dependencies: ["ReflowNN", "ReflowAutograd", "ReflowEngine", "ReflowCodec"],
                swiftSettings: strict),
        // MRI reconstruction (issue #14): masks, the forward model, compressed sensing, the RIM and its trainer.
        .target(name: "ReflowMRI", dependencies: ["ReflowFlow", "ReflowNN", "ReflowAutograd", "ReflowEngine"], swiftSettings: strict),
        // Byte codecs over system libraries: SHA-256 (OpenSSL EVP), PNG and gzip (zlib).
        .target(name: "ReflowCodec", dependencies: ["CZlib", "COpenSSL"], swiftSettings: strict),
        // Durable files: atomic writes, safetensors, training checkpoints.
        .target(name: "ReflowStore", dependencies: ["ReflowEngine", "ReflowNN", "ReflowCodec"],
                swiftSettings: strict),
        // Job specs (train, reflow, distill, sample, invert, evaluate): parsing, validation, running.
        .target(name: "ReflowJobs", dependencies: ["ReflowFlow", "ReflowMRI", "ReflowStore", "ReflowCodec", "ReflowNN", "ReflowEngine"],
                swiftSettings: strict),
        // HTTP/1.1 over POSIX sockets and Dispatch: parser, server, TLS, sd_notify. Knows nothing about ML.
        .target(name: "ReflowHTTP", dependencies: ["COpenSSL"], swiftSettings: strict),
        // The job server: durable job store, scheduler, the v1 API on ReflowHTTP, metrics, config.
        .target(name: "ReflowServer",
                dependencies: ["ReflowHTTP", "ReflowJobs", "ReflowFlow", "ReflowMRI", "ReflowStore", "ReflowCodec", "ReflowEngine"],
                swiftSettings: strict),
        // Benchmarks, the offline demo and `reflowd run` (used by the executable).
        .target(name: "ReflowBench",
                dependencies: ["ReflowEngine", "ReflowAutograd", "ReflowNN", "ReflowFlow", "ReflowMRI", "ReflowStore",
                               "ReflowCodec", "ReflowJobs"],
                swiftSettings: strict),
        .executableTarget(name: "reflowd", dependencies: ["ReflowBench", "ReflowServer", "ReflowJobs", "ReflowEngine"],
                          swiftSettings: strict),

        // Test helpers shared by the test targets (finite differences, tolerances, temp dirs).
        .target(name: "ReflowTestSupport", dependencies: ["ReflowAutograd", "ReflowEngine"],
                path: "Tests/ReflowTestSupport", swiftSettings: strict),
        .testTarget(name: "ReflowEngineTests", dependencies: ["ReflowEngine", "ReflowTestSupport"],
                    swiftSettings: strict),
        .testTarget(name: "ReflowAutogradTests", dependencies: ["ReflowAutograd", "ReflowEngine", "ReflowTestSupport"],
                    swiftSettings: strict),
        .testTarget(name: "ReflowNNTests",
                    dependencies: ["ReflowNN", "ReflowAutograd", "ReflowEngine", "ReflowTestSupport"],
                    swiftSettings: strict),
        .testTarget(name: "ReflowMRITests",
                    dependencies: ["ReflowMRI", "ReflowFlow", "ReflowNN", "ReflowAutograd", "ReflowEngine", "ReflowTestSupport"],
                    swiftSettings: strict),
        .testTarget(name: "ReflowFlowTests",
                    dependencies: ["ReflowFlow", "ReflowNN", "ReflowAutograd", "ReflowEngine", "ReflowCodec", "ReflowTestSupport"],
                    swiftSettings: strict),
        .testTarget(name: "ReflowJobsTests",
                    dependencies: ["ReflowJobs", "ReflowFlow", "ReflowMRI", "ReflowStore", "ReflowNN", "ReflowEngine", "ReflowCodec", "ReflowTestSupport"],
                    swiftSettings: strict),
        .testTarget(name: "ReflowHTTPTests", dependencies: ["ReflowHTTP"], swiftSettings: strict),
        .testTarget(name: "ReflowServerTests",
                    dependencies: ["ReflowServer", "ReflowHTTP", "ReflowJobs", "ReflowStore", "ReflowFlow", "ReflowEngine", "ReflowCodec"],
                    swiftSettings: strict),
        .testTarget(name: "ReflowStoreTests",
                    dependencies: ["ReflowStore", "ReflowCodec", "ReflowNN", "ReflowAutograd", "ReflowEngine",
                                   "ReflowFlow", "ReflowBench", "ReflowTestSupport"],
                    swiftSettings: strict),
    ]
)
