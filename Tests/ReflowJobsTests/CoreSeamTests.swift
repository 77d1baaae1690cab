import Foundation
import Testing
import Synchronization
import ReflowEngine
import ReflowFlow
import ReflowStore
@testable import ReflowJobs

@Suite("Core seams: any dimension, estimates, job directories, typed errors")
struct CoreSeamTests {
    @Test("a 3-D point file trains a 3-D flow, which samples, inverts and evaluates through the registry")
    func threeDimensionalPoints() throws {
        let dir = try JobsDir()
        defer { dir.remove() }
        // A 3-D anisotropic Gaussian as a CSV point set.
        var rng = Random(seed: 3)
        var csv = "a,b,c\n"
        for _ in 0..<2000 {
            let x = rng.normal([3])
            csv += "\(2 + 0.5 * x.data[0]),\(-1 + 0.3 * x.data[1]),\(0.2 * x.data[2])\n"
        }
        try AtomicFile.write(Array(csv.utf8), to: dir.path + "/cloud.csv")
        let t = try dir.run("t3", #"{"type": "train", "input": {"model": {"dimension": 3, "width": 32, "depth": 2}, "data": {"kind": "points", "path": "cloud.csv"}, "batchSize": 128, "steps": 400, "learningRate": 3e-3, "emaDecay": 0.9, "previewPoints": 100}}"#)
        #expect(t.training?.steps == 400)
        #expect(!t.artifacts.map(\.name).contains("samples.png"), "no 2-D scatter for a 3-D model")
        let m = try ModelArtifact.read(path: dir.path + "/t3/model.safetensors")
        #expect(m.model.pointSize == 3 && m.training.source == .standardNormal)
        let s = try dir.run("s3", #"{"type": "sample", "input": {"model": {"job": "t3"}, "n": 3000, "solver": {"kind": "euler", "steps": 50}}}"#)
        let mean = try #require(s.sample?.mean)
        #expect(mean.count == 3)
        #expect(abs(mean[0] - 2) < 0.3 && abs(mean[1] + 1) < 0.3 && abs(mean[2]) < 0.3, "\(mean)")
        let samples = try PointFiles.load(path: dir.path + "/s3/samples.npy")
        #expect(samples.shape == [3000, 3])
        let inv = try dir.run("i3", #"{"type": "invert", "input": {"model": {"job": "t3"}, "solver": {"kind": "rk4", "steps": 20}}}"#)
        #expect(inv.invert?.n == 1000 && (inv.invert?.reconstructionMaxError ?? 1) < 1e-2)
        let e = try dir.run("e3", #"{"type": "evaluate", "input": {"model": {"job": "t3"}, "n": 500, "solvers": [{"kind": "euler", "steps": 4}]}}"#)
        let row = try #require(e.evaluation?.rows.first)
        #expect(row.swd.isFinite && row.modeCount == nil && e.evaluation?.target == "points")
        // A 2-D spec against the 3-D teacher's data is refused at prepare with a pointer.
        // So are an invert distribution and an evaluate target of the wrong dimension.
        try AtomicFile.write(Array("x,y\n1,2\n3,4\n".utf8), to: dir.path + "/flat.csv")
        #expect(throws: SpecError(pointer: "/input/target", message: "flat.csv holds 2-D points, the model is 3-D")) {
            try JobRunner.prepare(try SpecParser.parse(Array(#"{"type": "evaluate", "input": {"model": {"job": "t3"}, "target": {"kind": "points", "path": "flat.csv"}}}"#.utf8)), resolver: dir.resolver)
        }
        #expect(throws: SpecError(pointer: "/input/points/distribution", message: "flat.csv holds 2-D points, the model is 3-D")) {
            try JobRunner.prepare(try SpecParser.parse(Array(#"{"type": "invert", "input": {"model": {"job": "t3"}, "points": {"distribution": {"kind": "points", "path": "flat.csv"}}}}"#.utf8)), resolver: dir.resolver)
        }
        let mismatch = #"{"type": "train", "input": {"data": {"kind": "points", "path": "cloud.csv"}}}"#
        #expect(throws: SpecError(pointer: "/input/data", message: "cloud.csv holds 3-D points, the model is 2-D")) {
            try JobRunner.prepare(try SpecParser.parse(Array(mismatch.utf8)), resolver: dir.resolver)
        }
    }

    @Test("memory estimates: the audit's oversized spec is far above any machine; estimates grow with batch, width and pairs")
    func estimates() throws {
        let dir = try JobsDir()
        defer { dir.remove() }
        func estimate(_ json: String, threads: Int = 2) throws -> Int {
            try JobRunner.estimate(try JobRunner.prepare(try SpecParser.parse(Array(json.utf8)), resolver: dir.resolver),
                                   resolver: dir.resolver, threads: threads).peakBytes
        }
        let huge = try estimate(#"{"type":"train","input":{"steps":10,"model":{"width":16384,"depth":64},"batchSize":1048576}}"#)
        #expect(huge > 1 << 40, "\(huge)")   // > 1 TiB: refused under any budget
        let small = try estimate(#"{"type":"train","input":{"steps":10,"model":{"width":64,"depth":2},"batchSize":256}}"#)
        #expect(small < 128 << 20, "\(small)")   // mostly the 64 MiB process baseline
        #expect(try estimate(#"{"type":"train","input":{"model":{"width":64,"depth":2},"batchSize":512}}"#) > small)
        #expect(try estimate(#"{"type":"train","input":{"model":{"width":128,"depth":2},"batchSize":256}}"#) > small)
        // The activations term matches the model's declared floats per row.
        let cfg = VelocityMLPConfig(dimension: 2, width: 64, depth: 2)
        #expect(cfg.activationFloatsPerRow == 3 + 3 * 64 * 2 + 8)
        try dir.run("t", #"{"type": "train", "input": {\#(tinyModel), "steps": 2}}"#)
        let few = try estimate(#"{"type":"reflow","input":{"teacher":{"job":"t"},"pairs":1000}}"#)
        let many = try estimate(#"{"type":"reflow","input":{"teacher":{"job":"t"},"pairs":5000000}}"#)
        #expect(many - few >= 4_999_000 * 2 * 4 * 6, "pairs dominate: \(few) → \(many)")
        // A scratch student far smaller than its teacher: the teacher's side is sized by the
        // teacher's own model (it generates the pairs), not the student's.
        try dir.run("big", #"{"type": "train", "input": {"model": {"width": 512, "depth": 3}, "batchSize": 8, "steps": 1, "previewPoints": 0}}"#)
        let scratch = try estimate(#"{"type":"reflow","input":{"teacher":{"job":"big"},"initialization":"scratch","model":{"width":8,"depth":1},"pairs":1000,"blockRows":65536}}"#)
        let bigA = VelocityMLPConfig(dimension: 2, width: 512, depth: 3).activationFloatsPerRow
        #expect(scratch >= 2 * 65536 * (bigA + 16) * 4, "teacher solver blocks: \(scratch)")
        let samples = try estimate(#"{"type":"sample","input":{"model":{"job":"t"},"n":1000000}}"#)
        #expect(samples >= 1_000_000 * 2 * 4 * 4)
        // Saturating arithmetic: absurd products estimate to Int.max instead of trapping.
        var e = ResourceEstimate()
        e.add("absurd", floats: Int.max / 2, 1 << 20, 3)
        #expect(e.peakBytes == Int.max)
    }

    @Test("a long solve stops between blocks when asked, and the job reports interrupted")
    func interruptibleSolve() throws {
        let dir = try JobsDir()
        defer { dir.remove() }
        try dir.run("t", #"{"type": "train", "input": {\#(tinyModel), "steps": 2}}"#)
        #expect(throws: JobError.interrupted) {
            try dir.run("s", #"{"type": "sample", "input": {"model": {"job": "t"}, "n": 200000, "solver": {"kind": "rk4", "steps": 200}, "trajectories": 0}}"#, stopAfter: 0)
        }
        let m = try ModelArtifact.read(path: dir.path + "/t/model.safetensors")
        let calls = Mutex(0)
        #expect(throws: ODEError.interrupted) {
            try ODESolver.solve(model: m.model, stateDict: m.weights(useEMA: false), x: Tensor.zeros([64, 2]), method: .euler(steps: 2),
                                direction: .forward, threads: 1, blockRows: 8, shouldStop: { calls.withLock { $0 += 1; return $0 > 3 } })
        }
        #expect(calls.withLock { $0 } == 4, "polled once per block until it said stop")
    }

    @Test("the job directory owns the names: outputs, bookkeeping and temporaries")
    func jobDirectory() throws {
        let dir = try JobsDir()
        defer { dir.remove() }
        let jd = JobDirectory(jobsRoot: dir.path, id: "j")
        try FileManager.default.createDirectory(atPath: jd.path, withIntermediateDirectories: true)
        for n in ["model.safetensors", ".model.safetensors.tmp-12-ab", "job.json", "log.txt", "samples.npy", "model.safetensors.sha256"] {
            try AtomicFile.write([1], to: jd.file(n))
        }
        #expect(JobDirectory.isOutput("model.safetensors") && JobDirectory.isOutput("samples.npy"))
        #expect(!JobDirectory.isOutput("job.json") && !JobDirectory.isOutput("log.txt") && !JobDirectory.isOutput(".model.safetensors.tmp-12-ab"))
        #expect(jd.removeTemporaries() == [".model.safetensors.tmp-12-ab"])
        #expect(jd.artifactFile("samples") == jd.file("samples.npy") && jd.artifactFile("latents") == nil)
        #expect(JobDirectory.servableNames.contains("trajectories.png") && JobDirectory.servableNames.contains("coupling.png"))
        #expect(!JobDirectory.servableNames.contains("job.json"))
    }

    @Test("store errors become io errors naming the file and errno, never the directory")
    func ioErrors() {
        let e = JobError.wrapping(StoreError(call: "write", errno: 28, message: "No space left on device",
                                             path: "/srv/data/jobs/job_x/.samples.npy.tmp-1-2"), hiding: ["/srv/data"])
        guard case .io(let m) = e else { Issue.record("\(e)"); return }
        #expect(m.contains("disk full") && m.contains("samples.npy") && m.contains("errno 28") && !m.contains("/srv"), "\(m)")
        #expect(JobError.wrapping(JobError.invalidInput("no file /srv/data/x"), hiding: ["/srv/data/"]) == .invalidInput("no file x"))
        #expect(JobError.wrapping(ODEError.interrupted, hiding: []) == .interrupted)
        #expect(e.code == "io_error")
    }
}
