import Foundation
import Testing
import Synchronization
import ReflowEngine
import ReflowFlow
import ReflowStore
@testable import ReflowJobs

/// A fresh directory under /tmp for one test's jobs.
struct JobsDir {
    let path: String
    init() throws {
        path = NSTemporaryDirectory() + "reflowjobs-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    func remove() { try? FileManager.default.removeItem(atPath: path) }
    var resolver: DirectoryResolver { DirectoryResolver(jobsDirectory: path, allowPaths: true, baseDirectory: path) }

    /// Parses, prepares and runs `json` in `<path>/<id>`.
    @discardableResult
    func run(_ id: String, _ json: String, threads: Int = 2, stopAfter: Int? = nil) throws -> JobResult {
        let spec = try JobRunner.prepare(try SpecParser.parse(Array(json.utf8)), resolver: resolver)
        let calls = Mutex(0)
        let context = JobContext(directory: path + "/" + id, threads: threads, resolver: resolver, progress: { _ in
            calls.withLock { $0 += 1 }
        }, shouldStop: {
            guard let stopAfter else { return false }
            return calls.withLock { $0 } > stopAfter
        })
        return try JobRunner.run(spec, context: context)
    }
}

let tinyModel = #""model": {"width": 16, "depth": 2}, "batchSize": 64, "previewPoints": 200"#

@Suite("Job runner")
struct JobRunnerTests {
    @Test("train → reflow (RK45 pairs) → distill → sample → invert → evaluate, with their files and metrics")
    func chain() throws {
        let dir = try JobsDir()
        defer { dir.remove() }
        let t = try dir.run("rf1", #"{"type": "train", "input": {\#(tinyModel), "steps": 300, "learningRate": 3e-3}}"#)
        #expect(t.training?.steps == 300)
        #expect(t.artifacts.map(\.name).contains("model.safetensors") && t.artifacts.map(\.name).contains("samples.png"))
        let model = try ModelArtifact.read(path: dir.path + "/rf1/model.safetensors")
        #expect(model.model.mlp?.width == 16 && model.snapshot.step == 300 && !model.snapshot.ema.isEmpty)

        // Reflow: the student inherits the teacher's architecture and data; pairs are z1 = ODE(z0).
        let r = try dir.run("rf2", #"{"type": "reflow", "input": {"teacher": {"job": "rf1"}, "pairs": 600, "steps": 200, "batchSize": 64, "previewPoints": 0}}"#)
        #expect(r.pairs?.count == 600 && r.pairs?.reused == false && (r.pairs?.nfeMean ?? 0) > 6)
        let pairs = try PairStore.read(path: dir.path + "/rf2/pairs.safetensors")
        let again = try ODESolver.solve(model: model.model, stateDict: model.weights(useEMA: true),
                                        x: Tensor(shape: [8, 2], data: Array(pairs.z0.data.prefix(16))),
                                        method: .rk45(rtol: 1e-5, atol: 1e-5, maxNFE: 10_000), direction: .forward, threads: 1)
        for i in 0..<16 { #expect(abs(again.x.data[i] - pairs.z1.data[i]) < 1e-3) }
        var rng = Random(seed: 1)
        #expect(pairs.z0.data == rng.normal([600, 2]).data, "z0 is the noiseSeed draw")
        let student = try ModelArtifact.read(path: dir.path + "/rf2/model.safetensors")
        #expect(student.model == model.model && student.training.data == model.training.data)

        let d = try dir.run("one", #"{"type": "distill", "input": {"teacher": {"job": "rf2"}, "pairsFrom": {"job": "rf2"}, "steps": 100, "batchSize": 64, "previewPoints": 0}}"#)
        #expect(d.pairs?.reused == true && d.pairs?.count == 600)
        let distilled = try ModelArtifact.read(path: dir.path + "/one/model.safetensors")
        #expect(distilled.training.timeSampler == .grid(k: 1, epsilon: 0))

        let s = try dir.run("s", #"{"type": "sample", "input": {"model": {"job": "rf2"}, "n": 500, "solver": {"kind": "heun", "steps": 5}, "trajectories": 50, "format": "csv"}}"#)
        #expect(s.sample?.nfe == 10 && s.sample?.n == 500)
        let csv = try String(contentsOfFile: dir.path + "/s/samples.csv", encoding: .utf8)
        #expect(csv.split(separator: "\n").count == 501)
        #expect(FileManager.default.fileExists(atPath: dir.path + "/s/trajectories.png"))

        let inv = try dir.run("inv", #"{"type": "invert", "input": {"model": {"job": "rf2"}, "points": {"inline": [[4, 0], [0, 4], [-2.8, -2.8]]}, "solver": {"kind": "rk4", "steps": 20}}}"#)
        #expect(inv.invert?.n == 3 && inv.invert?.nfe == 80)
        #expect((inv.invert?.reconstructionMaxError ?? 1) < 1e-3, "round trip error \(String(describing: inv.invert?.reconstructionMaxError))")

        let e = try dir.run("ev", #"{"type": "evaluate", "input": {"model": {"job": "rf2"}, "n": 600, "solvers": [{"kind": "euler", "steps": 1}, {"kind": "rk45", "rtol": 1e-4, "atol": 1e-4}]}}"#)
        let ev = try #require(e.evaluation)
        #expect(ev.rows.count == 2 && ev.rows[0].nfe == 1 && ev.rows[1].nfe > 2)
        #expect(ev.straightness.isFinite && ev.straightness >= 0 && ev.transportExcess >= -1e-9)
        #expect(ev.rows.allSatisfy { $0.swd.isFinite && $0.modeCount == 8 })
        #expect(ev.dataFloorSWD < ev.rows[0].swd)
    }

    @Test("a stopped training resumes from its checkpoint and ends bit for bit where an uninterrupted run ends")
    func resume() throws {
        let dir = try JobsDir()
        defer { dir.remove() }
        let spec = #"{"type": "train", "input": {\#(tinyModel), "steps": 120, "checkpointEvery": 20, "logEvery": 10}}"#
        try dir.run("straight", spec)
        #expect(throws: JobError.interrupted) { try dir.run("stopped", spec, stopAfter: 5) }
        let ckpt = try Checkpoint.read(path: dir.path + "/stopped/checkpoint.safetensors")
        #expect(ckpt.step > 0 && ckpt.step < 120)
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/stopped/model.safetensors"))
        let resumed = try dir.run("stopped", spec)
        #expect(resumed.training?.resumedFromStep == ckpt.step)
        let a = try Checkpoint.read(path: dir.path + "/straight/model.safetensors")
        let b = try Checkpoint.read(path: dir.path + "/stopped/model.safetensors")
        #expect(a.model == b.model && a.ema == b.ema && a.optimizer == b.optimizer && a.rng == b.rng)
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/stopped/checkpoint.safetensors"))
        let log = try String(contentsOfFile: dir.path + "/stopped/loss.csv", encoding: .utf8)
        #expect(log.split(separator: "\n").count == 13, "header + 12 records")
        // Running again finds the finished model and does no work.
        #expect(try dir.run("stopped", spec).training?.seconds == 0)
        // Another spec in the same directory is refused.
        #expect(throws: JobError.self) { try dir.run("stopped", #"{"type": "train", "input": {\#(tinyModel), "steps": 121}}"#) }
    }

    @Test("references are resolved with pointers; a reflow from a teacher must keep its architecture")
    func prepareErrors() throws {
        let dir = try JobsDir()
        defer { dir.remove() }
        func prepareError(_ json: String) -> SpecError? {
            do { _ = try JobRunner.prepare(try SpecParser.parse(Array(json.utf8)), resolver: dir.resolver); return nil } catch {
                return error
            }
        }
        #expect(prepareError(#"{"type": "sample", "input": {"model": {"job": "none"}}}"#)?.pointer == "/input/model/job")
        #expect(prepareError(#"{"type": "sample", "input": {"model": {"path": "nope.safetensors"}}}"#)?.pointer == "/input/model/path")
        try dir.run("t", #"{"type": "train", "input": {\#(tinyModel), "steps": 5}}"#)
        #expect(prepareError(#"{"type": "reflow", "input": {"teacher": {"job": "t"}, "model": {"width": 32}}}"#)?.pointer == "/input/model")
        #expect(prepareError(#"{"type": "reflow", "input": {"teacher": {"job": "t"}, "model": {"width": 32}, "initialization": "scratch"}}"#) == nil)
        #expect(prepareError(#"{"type": "reflow", "input": {"teacher": {"job": "t"}, "pairsFrom": {"job": "t"}}}"#)?.pointer == "/input/pairsFrom/job")
        // Not a model checkpoint: a pairs-less path to a non-checkpoint file.
        try Array("hello".utf8).withUnsafeBytes { try AtomicFile.write($0, to: dir.path + "/junk.safetensors") }
        let junk = prepareError(#"{"type": "sample", "input": {"model": {"path": "junk.safetensors"}}}"#)
        #expect(junk?.pointer == "/input/model" && junk?.message.contains("cannot use this model") == true)
        // Offline paths can be refused (the server's setting).
        let strict = DirectoryResolver(jobsDirectory: dir.path, allowPaths: false)
        #expect(throws: SpecError.self) { try strict.path(for: .path(dir.path + "/t/model.safetensors"), kind: .model) }
    }

    @Test("a diverging run fails with a message instead of writing NaN weights")
    func divergence() throws {
        let dir = try JobsDir()
        defer { dir.remove() }
        #expect {
            try dir.run("d", #"{"type": "train", "input": {\#(tinyModel), "steps": 200, "learningRate": 1e6, "optimizer": {"kind": "sgd"}}}"#)
        } throws: { e in
            guard let j = e as? JobError, j != .interrupted else { return false }; let m = j.description
            return m.contains("diverged")
        }
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/d/model.safetensors"))
    }
}
