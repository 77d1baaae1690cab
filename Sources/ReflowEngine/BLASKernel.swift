internal import COpenBLAS
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The x86 features that decide which OpenBLAS kernels a CPU can run.
///
/// Read from `/proc/cpuinfo` rather than `cpuid`: Linux clears a flag there when the kernel has
/// not enabled the register state it needs (XSAVE), which is exactly "can run these kernels".
public struct CPUFeatures: Sendable, Equatable, CustomStringConvertible {
    public enum Vendor: String, Sendable { case intel, amd, other }

    public var vendor: Vendor
    public var avx: Bool
    public var avx2: Bool
    public var fma: Bool
    public var avx512f: Bool
    public var avx512bw: Bool
    public var avx512vl: Bool
    public var avx512dq: Bool
    public var avx512bf16: Bool

    public init(vendor: Vendor, flags: Set<String>) {
        self.vendor = vendor
        avx = flags.contains("avx")
        avx2 = flags.contains("avx2")
        fma = flags.contains("fma")
        avx512f = flags.contains("avx512f")
        avx512bw = flags.contains("avx512bw")
        avx512vl = flags.contains("avx512vl")
        avx512dq = flags.contains("avx512dq")
        avx512bf16 = flags.contains("avx512_bf16")
    }

    /// Parses the first processor block of a `/proc/cpuinfo` text (`vendor_id` and `flags`).
    /// Text without a flags line gives a CPU with no features, for which no kernel is changed.
    public init(cpuinfo: String) {
        var vendor = Vendor.other
        var flags = Set<String>()
        for line in cpuinfo.split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let key = line[..<colon].trimmingCharacters(in: .whitespaces)
            let value = line[line.index(after: colon)...]
            if key == "vendor_id" {
                let v = value.trimmingCharacters(in: .whitespaces)
                vendor = v == "GenuineIntel" ? .intel : (v == "AuthenticAMD" || v == "HygonGenuine") ? .amd : .other
            } else if key == "flags" && flags.isEmpty {
                flags = Set(value.split(separator: " ").map(String.init))
                break  // the vendor line comes before the flags line in every block
            }
        }
        self.init(vendor: vendor, flags: flags)
    }

    /// This machine's features (no features when /proc/cpuinfo cannot be read).
    public static func current() -> CPUFeatures {
        CPUFeatures(cpuinfo: (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? "")
    }

    /// All four AVX-512 subsets OpenBLAS's SkylakeX kernels use.
    public var hasAVX512: Bool { avx512f && avx512bw && avx512vl && avx512dq }

    public var description: String {
        if hasAVX512 { return avx512bf16 ? "AVX-512 + BF16" : "AVX-512" }
        if avx2 && fma { return "AVX2 + FMA" }
        return avx ? "AVX" : "no AVX"
    }
}

/// What the startup check does about OpenBLAS's kernel choice.
public enum BLASKernelAction: Sendable, Equatable {
    /// Restart the process with `OPENBLAS_CORETYPE` set to this core name.
    case reexec(coreType: String)
    /// Leave OpenBLAS as it is.
    case keep(KeepReason)

    public enum KeepReason: Sendable, Equatable {
        /// OpenBLAS already runs kernels at the CPU's best level.
        case alreadyBest
        /// `OPENBLAS_CORETYPE` is set by the environment (holds its value); never overridden.
        case environmentSet(String)
        /// This process is the re-executed one (the marker is set): never re-execute twice.
        case alreadyReexecuted
        /// The CPU has no AVX: OpenBLAS's SSE kernels are the best it has.
        case noBetterKernel
        /// OpenBLAS reported a core name this table does not know: leave it alone.
        case unknownCore(String)
    }
}

/// OpenBLAS's kernel choice, checked against what the CPU can run.
///
/// Debian 12's OpenBLAS 0.3.21 (DYNAMIC_ARCH) identifies Intel cores by family and model. It does
/// not know newer ones, such as family 6 model 207 (Emerald Rapids), and falls back to its Prescott
/// (SSE3) kernels: sgemm runs 4–9× slower than with the AVX-512 kernels the CPU can run. OpenBLAS
/// picks its kernels in a library constructor, before `main`, and reads `OPENBLAS_CORETYPE` only
/// there. So the correction is a re-execution of the process with that variable set
/// (``ensureBestKernel(arguments:log:)``). The decision itself is the pure function
/// ``decide(cpu:openblasCore:environment:)``.
public enum BLASKernel {
    /// The environment variable OpenBLAS reads, once, when it is loaded.
    public static let coreTypeVariable = "OPENBLAS_CORETYPE"
    /// Set for the re-executed process, holding the core OpenBLAS picked on its own. Its presence
    /// stops a second re-execution, whatever happens.
    public static let markerVariable = "REFLOWD_BLAS_REEXEC"

    /// ISA level of an OpenBLAS x86-64 core name (case-insensitive, as OpenBLAS compares them):
    /// 0 SSE, 1 AVX, 2 AVX2 + FMA, 3 AVX-512, 4 AVX-512 BF16, 5 AMX. `nil` for names not listed.
    public static func level(ofCore name: String) -> Int? {
        switch name.lowercased() {
        case "katmai", "coppermine", "northwood", "prescott", "banias", "atom", "core2", "penryn", "dunnington",
             "nehalem", "athlon", "opteron", "opteron_sse3", "barcelona", "nano", "bobcat": return 0
        case "sandybridge", "bulldozer", "piledriver", "steamroller": return 1
        case "haswell", "zen", "excavator": return 2
        case "skylakex": return 3
        case "cooperlake": return 4
        case "sapphirerapids": return 5
        default: return nil
        }
    }

    /// The best kernel set of OpenBLAS 0.3.21 for a CPU, or `nil` when it has no AVX (SSE kernels
    /// are all it can run, and OpenBLAS finds those on its own).
    ///
    /// 0.3.21 has no SapphireRapids (AMX) kernels. For AVX-512 the target is SkylakeX, a name its
    /// `force_coretype` lists: "Cooperlake" is not listed (with `OPENBLAS_VERBOSE=2` it prints
    /// "Core not found: Cooperlake") and only reaches the Cooperlake kernels through a fallback
    /// selection, and its sgemm kernels are SkylakeX's anyway (Cooperlake adds bf16 routines,
    /// which reflowd does not call). A CPU on which OpenBLAS picks Cooperlake itself is left
    /// alone (level 4 ≥ 3). AMD CPUs with AVX2 get the Zen kernels, the Haswell kernels with AMD's
    /// cache sizes.
    public static func bestCore(for cpu: CPUFeatures) -> String? {
        if cpu.hasAVX512 { return "SkylakeX" }
        if cpu.avx2 && cpu.fma { return cpu.vendor == .amd ? "Zen" : "Haswell" }
        if cpu.avx { return "Sandybridge" }
        return nil
    }

    /// The startup decision: CPU features, the core OpenBLAS picked, and the environment in, an
    /// action out. Pure, so the table test can cover every case.
    public static func decide(cpu: CPUFeatures, openblasCore: String,
                              environment: [String: String]) -> BLASKernelAction {
        if environment[markerVariable] != nil { return .keep(.alreadyReexecuted) }
        if let set = environment[coreTypeVariable] { return .keep(.environmentSet(set)) }
        guard let best = bestCore(for: cpu), let bestLevel = level(ofCore: best) else { return .keep(.noBetterKernel) }
        guard let current = level(ofCore: openblasCore) else { return .keep(.unknownCore(openblasCore)) }
        return current >= bestLevel ? .keep(.alreadyBest) : .reexec(coreType: best)
    }

    /// The core name OpenBLAS runs (`openblas_get_corename()`), e.g. "Prescott" or "Cooperlake".
    public static var openblasCore: String { String(cString: openblas_get_corename()) }

    /// The kernel in use and how it was chosen: reported in `/metrics` and every `bench` line.
    public struct Report: Sendable, Equatable {
        /// The core name OpenBLAS runs now.
        public var kernel: String
        /// What OpenBLAS picked on its own, when known (not when the environment chose).
        public var openblasDefault: String?
        /// True when reflowd re-executed itself and OpenBLAS now runs the requested kernel.
        public var corrected: Bool
        /// Who chose the kernel: "openblas", "environment" or "reflowd".
        public var source: String
        /// The best kernel for this CPU in OpenBLAS 0.3.21 (`nil` without AVX).
        public var cpuBest: String?

        /// Snake-case keys, as in the other benchmark fields.
        public var jsonObject: [String: Any] {
            ["kernel": kernel, "openblas_default": openblasDefault ?? NSNull(), "corrected": corrected,
             "source": source, "cpu_best": cpuBest ?? NSNull()]
        }

        /// A Prometheus info metric (HELP, TYPE and one sample).
        public var prometheus: String {
            "# HELP reflowd_blas_kernel_info OpenBLAS kernel in use (openblas_default: OpenBLAS's own choice).\n"
                + "# TYPE reflowd_blas_kernel_info gauge\n"
                + "reflowd_blas_kernel_info{kernel=\"\(kernel)\",openblas_default=\"\(openblasDefault ?? "")\","
                + "corrected=\"\(corrected)\",source=\"\(source)\",cpu_best=\"\(cpuBest ?? "")\"} 1\n"
        }
    }

    private static let checked = Mutex<Report?>(nil)

    /// The report of ``ensureBestKernel(arguments:log:)``, or, in a process that never ran it (the
    /// test binaries), OpenBLAS's current choice with its source.
    public static var current: Report {
        if let r = checked.withLock({ $0 }) { return r }
        let env = ProcessInfo.processInfo.environment[coreTypeVariable]
        let core = openblasCore
        return Report(kernel: core, openblasDefault: env == nil ? core : nil, corrected: false,
                      source: env == nil ? "openblas" : "environment", cpuBest: bestCore(for: CPUFeatures.current()))
    }

    /// Runs the startup check. When OpenBLAS picked kernels below what the CPU supports, and
    /// neither `OPENBLAS_CORETYPE` nor the marker is set, this re-executes `/proc/self/exe` with
    /// `arguments` and both variables set, and does not return. In the re-executed process it
    /// records the report, removes both variables again (so that child processes make their own
    /// check) and logs one line. It logs nothing when there was nothing to do.
    ///
    /// Call it first thing in `main`, before any thread is started.
    public static func ensureBestKernel(arguments: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>,
                                        log: (String) -> Void) {
        let env = ProcessInfo.processInfo.environment
        let cpu = CPUFeatures.current()
        let core = openblasCore
        let best = bestCore(for: cpu)
        var report = Report(kernel: core, openblasDefault: core, corrected: false, source: "openblas", cpuBest: best)
        switch decide(cpu: cpu, openblasCore: core, environment: env) {
        case .reexec(let target):
            setenv(coreTypeVariable, target, 1)
            setenv(markerVariable, core, 1)
            fflush(nil)
            execv("/proc/self/exe", arguments)
            // Only reached when exec failed: carry on with the kernels we have.
            let err = String(cString: strerror(errno))
            unsetenv(coreTypeVariable)
            unsetenv(markerVariable)
            log("OpenBLAS runs its \(core) kernels on a CPU with \(cpu); re-executing with \(coreTypeVariable)=\(target) failed (\(err)); continuing with \(core)")
        case .keep(.alreadyReexecuted):
            let requested = env[coreTypeVariable] ?? ""
            let original = env[markerVariable] ?? ""
            unsetenv(coreTypeVariable)
            unsetenv(markerVariable)
            report.openblasDefault = original.isEmpty ? nil : original
            report.corrected = core.lowercased() == requested.lowercased()
            report.source = "reflowd"
            if report.corrected {
                log("OpenBLAS picked its \(original) kernels on a CPU with \(cpu); re-executed with \(coreTypeVariable)=\(requested): now \(core)")
            } else {
                log("OpenBLAS picked its \(original) kernels on a CPU with \(cpu); re-executed with \(coreTypeVariable)=\(requested), but OpenBLAS runs \(core)")
            }
        case .keep(.environmentSet(let value)):
            report.openblasDefault = nil
            report.source = "environment"
            if let best, let have = level(ofCore: core), let want = level(ofCore: best), have < want {
                log("\(coreTypeVariable)=\(value) is set by the environment, so OpenBLAS runs \(core) kernels although this CPU (\(cpu)) can run \(best); left as set")
            }
        case .keep(.alreadyBest), .keep(.noBetterKernel), .keep(.unknownCore):
            break
        }
        checked.withLock { $0 = report }
    }
}
