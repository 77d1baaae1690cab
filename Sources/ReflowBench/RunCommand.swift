import Foundation
import ReflowEngine
import ReflowJobs
import ReflowStore

/// `reflowd run SPEC.json --out DIR`: executes one job spec offline, exactly as the server
/// would (same parser, validation, runner and files). `{"job": "NAME"}` references resolve to
/// `<jobs-dir>/NAME/` (default: the parent of `--out`), so a chain of runs in sibling
/// directories is a reflow pipeline; `{"path": ...}` references are files. Rerunning in the same
/// directory resumes an interrupted job. `reflowd validate SPEC.json` only parses, resolves and
/// prints the filled-in spec.
public enum RunCommand {
    public static func run(_ args: [String], log: @escaping @Sendable (String) -> Void) throws -> String {
        guard let specPath = args.first, !specPath.hasPrefix("--") else { throw CLIError("run needs a spec file: reflowd run SPEC.json --out DIR") }
        let f = try Flags(Array(args.dropFirst()), allowed: ["out", "threads", "jobs-dir"])
        guard let out = f.values["out"] else { throw CLIError("run needs --out DIR (the job's directory)") }
        let threads = try f.int("threads", default: 2, min: 1, max: 64)
        let spec = try load(specPath, jobsDir: f.values["jobs-dir"] ?? parent(of: out), threads: threads)
        BLAS.setLibraryThreads(1)
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        try AtomicFile.write(SpecParser.canonicalJSON(spec.prepared), to: out + "/" + JobDirectory.Name.spec)
        let context = JobContext(directory: out, threads: threads, resolver: spec.resolver, progress: { p in
            log("\(p.phase) \(p.done)/\(p.total)" + (p.loss.map { String(format: " loss %.5f", $0) } ?? "")
                + (p.metrics.map { m in m.keys.sorted().map { " \($0) " + String(format: "%.4g", m[$0]!) }.joined() } ?? ""))
        })
        do {
            let result = try JobRunner.run(spec.prepared, context: context)
            let e = JSONEncoder()
            e.outputFormatting = [.sortedKeys]
            return String(decoding: try e.encode(result), as: UTF8.self)
        } catch let e as JobError {
            throw CLIError("job failed: \(e)")
        }
    }

    /// Prints the filled-in spec, or with `--estimate` its memory estimate (the numbers the
    /// server's budget check uses) as JSON.
    public static func validate(_ args: [String]) throws -> String {
        guard let specPath = args.first, !specPath.hasPrefix("--") else {
            throw CLIError("usage: reflowd validate SPEC.json [--jobs-dir DIR] [--threads N] [--estimate]")
        }
        let f = try Flags(Array(args.dropFirst()), allowed: ["jobs-dir", "threads"], booleans: ["estimate"])
        let threads = try f.int("threads", default: 2, min: 1, max: 64)
        let spec = try load(specPath, jobsDir: f.values["jobs-dir"] ?? ".", threads: threads)
        if f.bool("estimate") {
            let e = try JobRunner.estimate(spec.prepared, resolver: spec.resolver, threads: threads)
            let enc = JSONEncoder()
            enc.outputFormatting = [.sortedKeys]
            return #"{"peakBytes":\#(e.peakBytes),"terms":\#(String(decoding: try enc.encode(e.terms), as: UTF8.self))}"#
        }
        return String(decoding: SpecParser.canonicalJSON(spec.prepared), as: UTF8.self)
    }

    static func parent(of path: String) -> String {
        let url = URL(fileURLWithPath: path).standardizedFileURL
        return url.deletingLastPathComponent().path
    }

    static func load(_ path: String, jobsDir: String, threads: Int = 2) throws -> (prepared: JobSpec, resolver: DirectoryResolver) {
        let bytes: [UInt8]
        do { bytes = try AtomicFile.read(path: path, maxBytes: SpecParser.maxBytes) } catch {
            throw CLIError("cannot read spec '\(path)': \(error)")
        }
        let resolver = DirectoryResolver(jobsDirectory: jobsDir, allowPaths: true)
        let prepared: JobSpec, estimate: ResourceEstimate
        do {
            prepared = try JobRunner.prepare(try SpecParser.parse(bytes), resolver: resolver)
            estimate = try JobRunner.estimate(prepared, resolver: resolver, threads: threads)
        } catch {
            throw CLIError("spec '\(path)': \(error)")
        }
        // The server's memory budget applies offline too: a spec that cannot fit is refused
        // before it allocates (REFLOWD_MEMORY_BUDGET_BYTES overrides the default).
        var budget = MemoryBudget.defaultBytes(workers: 1)
        if let v = ProcessInfo.processInfo.environment["REFLOWD_MEMORY_BUDGET_BYTES"] {
            guard let b = Int(v), b >= 1 << 20, b <= 1 << 50 else {
                throw CLIError("REFLOWD_MEMORY_BUDGET_BYTES=\(v.prefix(40)): must be an integer in [2^20, 2^50]")
            }
            budget = b
        }
        if estimate.peakBytes > budget {
            throw CLIError("spec '\(path)': /input: \(MemoryBudget.refusal(estimate, budget: budget))")
        }
        return (prepared, resolver)
    }
}
