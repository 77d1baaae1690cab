import Foundation
import ReflowEngine


/// median / p10 / p90 / min / max of durations (seconds) in milliseconds, as `rf_torch.py` reports them.
public func statsMs(_ samples: [Double]) -> [String: Double] {
    let xs = samples.sorted()
    let n = xs.count
    guard n > 0 else { return [:] }
    func q(_ p: Double) -> Double { xs[min(n - 1, max(0, Int((p * Double(n - 1)).rounded())))] }
    let median = n % 2 == 1 ? xs[n / 2] : 0.5 * (xs[n / 2 - 1] + xs[n / 2])
    return ["median_ms": median * 1e3, "p10_ms": q(0.1) * 1e3, "p90_ms": q(0.9) * 1e3,
            "min_ms": xs[0] * 1e3, "max_ms": xs[n - 1] * 1e3, "n": Double(n)]
}

/// A benchmark's JSON line: `object` plus `blas_kernel`, the OpenBLAS kernel the numbers were
/// measured with (``BLASKernel/Report``). Prescott and Cooperlake kernels differ by up to 9× in
/// sgemm speed on the same machine, so a figure without its kernel cannot be compared.
public func benchLine(_ object: [String: Any]) -> String {
    var o = object
    o["blas_kernel"] = BLASKernel.current.jsonObject
    return jsonLine(o)
}

/// One JSON line with sorted keys. Non-finite numbers (a diverged run) become `null`, since
/// JSON has no NaN or infinity.
public func jsonLine(_ object: [String: Any]) -> String {
    func clean(_ v: Any) -> Any {
        switch v {
        case let d as Double: return d.isFinite ? d : NSNull()
        case let f as Float: return f.isFinite ? Double(f) : NSNull()
        case let a as [Any]: return a.map(clean)
        case let o as [String: Any]: return o.mapValues(clean)
        default: return v
        }
    }
    do {
        let data = try JSONSerialization.data(withJSONObject: clean(object), options: [.sortedKeys])
        return String(decoding: data, as: UTF8.self)
    } catch {
        return #"{"error":"could not encode the result as JSON"}"#
    }
}

/// CPU seconds used by other processes during a measurement, per wall second (0 = idle machine),
/// computed like shared/peers/foreign_load.sh: machine busy time minus this process's own.
public struct ForeignLoad {
    let machine0: Double, own0: Double, wall0: Double

    public init() {
        machine0 = ForeignLoad.machineBusy()
        own0 = ForeignLoad.ownCPU()
        wall0 = monotonicSeconds()
    }

    public func cores() -> Double {
        let wall = monotonicSeconds() - wall0
        guard wall > 0 else { return 0 }
        return max(0, ((ForeignLoad.machineBusy() - machine0) - (ForeignLoad.ownCPU() - own0)) / wall)
    }

    static func machineBusy() -> Double {
        guard let s = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
              let line = s.split(separator: "\n").first(where: { $0.hasPrefix("cpu ") }) else { return 0 }
        let f = line.split(separator: " ").dropFirst().compactMap { Double($0) }
        guard f.count >= 8 else { return 0 }
        let hz = Double(sysconf(Int32(_SC_CLK_TCK)))
        return (f[0] + f[1] + f[2] + f[5] + f[6] + f[7]) / hz
    }

    static func ownCPU() -> Double {
        var u = rusage()
        getrusage(RUSAGE_SELF.rawValue, &u)
        return Double(u.ru_utime.tv_sec) + Double(u.ru_utime.tv_usec) * 1e-6
            + Double(u.ru_stime.tv_sec) + Double(u.ru_stime.tv_usec) * 1e-6
    }
}
