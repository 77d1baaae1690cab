import Foundation
import Testing
import ReflowEngine

/// The startup decision of `BLASKernel`: CPU features + the core OpenBLAS picked + environment → action.
@Suite struct BLASKernelTests {
    static let sse3: Set<String> = ["sse", "sse2", "pni", "ssse3", "sse4_1", "sse4_2"]
    static let avx2: Set<String> = sse3.union(["avx", "avx2", "fma", "f16c"])
    static let avx512: Set<String> = avx2.union(["avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"])
    static let avx512bf16: Set<String> = avx512.union(["avx512_bf16"])

    static let sapphire = CPUFeatures(vendor: .intel, flags: avx512bf16)
    static let skylakeX = CPUFeatures(vendor: .intel, flags: avx512)
    static let haswell = CPUFeatures(vendor: .intel, flags: avx2)
    static let zen3 = CPUFeatures(vendor: .amd, flags: avx2)
    static let zen4 = CPUFeatures(vendor: .amd, flags: avx512bf16)
    static let noAVX = CPUFeatures(vendor: .other, flags: sse3)
    static let sandy = CPUFeatures(vendor: .intel, flags: sse3.union(["avx"]))
    /// AVX-512F alone (Knights Landing style): not enough for the SkylakeX kernels.
    static let partial512 = CPUFeatures(vendor: .intel, flags: avx2.union(["avx512f", "avx512cd"]))

    struct Row: Sendable, CustomStringConvertible {
        let name: String
        let cpu: CPUFeatures
        let core: String
        let env: [String: String]
        let expected: BLASKernelAction
        var description: String { name }
    }

    static let table: [Row] = [
        Row(name: "Prescott fallback on AVX-512 BF16 (Xeon family 6 model 207)", cpu: sapphire, core: "Prescott",
            env: [:], expected: .reexec(coreType: "SkylakeX")),
        Row(name: "Prescott fallback on AVX-512 without BF16", cpu: skylakeX, core: "Prescott",
            env: [:], expected: .reexec(coreType: "SkylakeX")),
        Row(name: "Prescott fallback on AVX2-only Intel", cpu: haswell, core: "Prescott",
            env: [:], expected: .reexec(coreType: "Haswell")),
        Row(name: "Prescott fallback on AVX2-only AMD", cpu: zen3, core: "Prescott",
            env: [:], expected: .reexec(coreType: "Zen")),
        Row(name: "Nehalem on an AVX-only CPU", cpu: sandy, core: "Nehalem",
            env: [:], expected: .reexec(coreType: "Sandybridge")),
        Row(name: "Haswell kernels on AVX-512: one level below", cpu: skylakeX, core: "Haswell",
            env: [:], expected: .reexec(coreType: "SkylakeX")),
        Row(name: "already correct: Cooperlake on AVX-512 BF16", cpu: sapphire, core: "Cooperlake",
            env: [:], expected: .keep(.alreadyBest)),
        Row(name: "already correct: Cooperlake on Zen 4", cpu: zen4, core: "Cooperlake",
            env: [:], expected: .keep(.alreadyBest)),
        Row(name: "already correct: Haswell on AVX2", cpu: haswell, core: "Haswell",
            env: [:], expected: .keep(.alreadyBest)),
        Row(name: "already correct: Zen and Haswell are one level", cpu: zen3, core: "Haswell",
            env: [:], expected: .keep(.alreadyBest)),
        Row(name: "above the table's best (SapphireRapids in a newer OpenBLAS)", cpu: sapphire, core: "SapphireRapids",
            env: [:], expected: .keep(.alreadyBest)),
        Row(name: "name compared case-insensitively", cpu: skylakeX, core: "SKYLAKEX",
            env: [:], expected: .keep(.alreadyBest)),
        Row(name: "AVX-512F alone counts as AVX2", cpu: partial512, core: "Prescott",
            env: [:], expected: .reexec(coreType: "Haswell")),
        Row(name: "environment sets the core type: never overridden", cpu: sapphire, core: "Prescott",
            env: ["OPENBLAS_CORETYPE": "Prescott"], expected: .keep(.environmentSet("Prescott"))),
        Row(name: "environment sets an empty core type: still the user's", cpu: sapphire, core: "Cooperlake",
            env: ["OPENBLAS_CORETYPE": ""], expected: .keep(.environmentSet(""))),
        Row(name: "unknown CPU without AVX", cpu: noAVX, core: "Prescott",
            env: [:], expected: .keep(.noBetterKernel)),
        Row(name: "no CPU information at all", cpu: CPUFeatures(cpuinfo: ""), core: "Prescott",
            env: [:], expected: .keep(.noBetterKernel)),
        Row(name: "core name the table does not know", cpu: sapphire, core: "Unknown",
            env: [:], expected: .keep(.unknownCore("Unknown"))),
        Row(name: "marker set: no second re-exec, even if the kernel is still wrong", cpu: sapphire, core: "Prescott",
            env: ["REFLOWD_BLAS_REEXEC": "Prescott", "OPENBLAS_CORETYPE": "Cooperlake"], expected: .keep(.alreadyReexecuted)),
        Row(name: "marker alone (environment variable removed): still no loop", cpu: sapphire, core: "Prescott",
            env: ["REFLOWD_BLAS_REEXEC": "Prescott"], expected: .keep(.alreadyReexecuted)),
        Row(name: "unrelated environment does not matter", cpu: sapphire, core: "Prescott",
            env: ["OPENBLAS_NUM_THREADS": "1", "OPENBLAS_VERBOSE": "2"], expected: .reexec(coreType: "SkylakeX")),
    ]

    @Test("decision table", arguments: table)
    func decision(_ row: Row) {
        #expect(BLASKernel.decide(cpu: row.cpu, openblasCore: row.core, environment: row.env) == row.expected)
    }

    /// Every re-exec target must be a name the decision itself accepts as at least as good as the
    /// target: otherwise the re-executed process would want to move again.
    @Test("a re-exec target is a fixed point of the decision")
    func targetIsFixedPoint() {
        for row in Self.table {
            guard case .reexec(let target) = row.expected else { continue }
            #expect(BLASKernel.decide(cpu: row.cpu, openblasCore: target, environment: [:]) == .keep(.alreadyBest), "\(row)")
        }
    }

    @Test("/proc/cpuinfo parsing: vendor and flags of the first processor")
    func cpuinfoParsing() {
        let text = """
        processor\t: 0
        vendor_id\t: GenuineIntel
        cpu family\t: 6
        model\t\t: 207
        flags\t\t: fpu sse sse2 pni ssse3 fma avx avx2 avx512f avx512dq avx512bw avx512vl avx512_bf16 amx_tile
        bugs\t\t: spectre_v1

        processor\t: 1
        vendor_id\t: GenuineIntel
        flags\t\t: fpu sse
        """
        let cpu = CPUFeatures(cpuinfo: text)
        #expect(cpu == Self.sapphire)
        #expect(BLASKernel.bestCore(for: cpu) == "SkylakeX")
        let amd = CPUFeatures(cpuinfo: "vendor_id\t: AuthenticAMD\nflags\t\t: sse avx avx2 fma\n")
        #expect(amd.vendor == .amd && BLASKernel.bestCore(for: amd) == "Zen")
        // "avx512f" must not be mistaken for "avx" or "avx2" (whole-word flags).
        let only512 = CPUFeatures(cpuinfo: "flags : avx512f avx512bw avx512vl avx512dq\n")
        #expect(!only512.avx && !only512.avx2 && only512.hasAVX512)
    }

    @Test("the level table orders the kernel families")
    func levels() {
        let order = ["Prescott", "Sandybridge", "Haswell", "SkylakeX", "Cooperlake", "SapphireRapids"]
        let levels = order.map { BLASKernel.level(ofCore: $0) }
        #expect(levels == [0, 1, 2, 3, 4, 5])
        #expect(BLASKernel.level(ofCore: "zen") == 2 && BLASKernel.level(ofCore: "Unknown") == nil)
    }

    /// The live process: whatever the kernel, the report names what OpenBLAS runs now, and the
    /// test binaries never ran the startup check (so nothing claims a correction).
    @Test("report of the running test process")
    func liveReport() {
        let r = BLASKernel.current
        #expect(r.kernel == BLASKernel.openblasCore && BLASKernel.level(ofCore: r.kernel) != nil)
        #expect(!r.corrected && r.source != "reflowd")
        #expect(r.prometheus.contains("reflowd_blas_kernel_info{kernel=\"\(r.kernel)\""))
    }
}
