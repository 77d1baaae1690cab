import Foundation

/// The memory a job may plan to use at its peak, checked against ``ResourceEstimate`` before a
/// job is queued (the server answers 422 `memory_budget`; `reflowd run` and `validate` refuse
/// with the same numbers). Without it, one in-limit spec (a 16k×64 MLP at batch 2^20) was
/// accepted, then killed the process at its first allocation, on every restart.
public enum MemoryBudget {
    /// Share of the machine's memory (the smaller of the cgroup limit and physical memory) that
    /// running jobs may plan to use together; the rest is the server, the page cache and slack
    /// for what estimates leave out.
    public static let defaultFraction = 0.75

    /// The default budget of one job when `workers` jobs run at once.
    public static func defaultBytes(workers: Int) -> Int {
        Int(Double(availableBytes()) * defaultFraction) / max(1, workers)
    }

    /// The smaller of the cgroup memory limit (v2 `memory.max`, v1 `memory.limit_in_bytes`) and
    /// the physical memory.
    public static func availableBytes() -> Int {
        let physical = Int(sysconf(Int32(_SC_PHYS_PAGES))) * Int(sysconf(Int32(_SC_PAGESIZE)))
        var limit = physical > 0 ? physical : Int.max
        for file in ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"] {
            if let v = cgroupLimit(file) { limit = min(limit, v) }
        }
        return limit
    }

    /// A cgroup limit file's value; nil for `max`, unreadable files or absurd values.
    static func cgroupLimit(_ path: String) -> Int? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        return parseLimit(text)
    }

    /// `"max"` (no limit) → nil; a byte count → that count (values ≥ 2^62, cgroup v1's "no
    /// limit", → nil).
    static func parseLimit(_ text: String) -> Int? {
        let t = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard let v = Int(t), v > 0, v < 1 << 62 else { return nil }
        return v
    }

    /// Human-readable bytes (`1.5 GiB`).
    public static func format(_ bytes: Int) -> String {
        if bytes == Int.max { return "more than 8 EiB" }
        let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
        var v = Double(bytes), i = 0
        while v >= 1024 && i < units.count - 1 { v /= 1024; i += 1 }
        return i == 0 ? "\(bytes) B" : String(format: "%.1f %@", v, units[i])
    }

    /// The refusal message for an estimate above `budget`, naming its largest terms.
    public static func refusal(_ e: ResourceEstimate, budget: Int) -> String {
        let top = e.terms.sorted { $0.bytes > $1.bytes }.prefix(3).map { "\($0.name) \(format($0.bytes))" }
        return "the job needs about \(format(e.peakBytes)) of memory at its peak (\(top.joined(separator: ", "))), "
            + "above the budget of \(format(budget)) per job; lower batchSize, the model size, n or pairs"
    }
}
