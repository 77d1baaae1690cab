import Foundation
import Testing
import ReflowEngine
import ReflowFlow
import ReflowStore
import ReflowTestSupport
@testable import ReflowJobs

/// SlimFlow's options as job specs (issue #12): annealing, flips, the two-step term.
@Suite("SlimFlow options in jobs")
struct SlimFlowJobTests {
    init() { BLAS.setLibraryThreads(1) }

    @Test("annealing reflow and a distillation with the two-step term run; misplaced options are 422 with the pointer")
    func options() throws {
        let dir = try JobsDir()
        defer { dir.remove() }
        try dir.run("rf1", #"{"type": "train", "input": {\#(tinyModel), "steps": 50}}"#)
        let small = #""model": {"width": 8, "depth": 1}, "initialization": "scratch", "batchSize": 32, "previewPoints": 0"#
        let r = try dir.run("a", #"{"type": "reflow", "input": {"teacher": {"job": "rf1"}, "pairs": 200, "solver": {"kind": "euler", "steps": 4}, \#(small), "annealing": {"schedule": "cosine", "steps": 20}, "steps": 30}}"#)
        #expect(r.training?.steps == 30 && r.training?.parameters == VelocityMLPConfig(dimension: 2, width: 8, depth: 1).parameterCount)
        let d = try dir.run("d", #"{"type": "distill", "input": {"teacher": {"job": "rf1"}, "pairs": 200, "solver": {"kind": "euler", "steps": 4}, \#(small), "twoStep": {"weight": 0.5}, "steps": 20}}"#)
        #expect(d.training?.finalLoss.isFinite == true)
        func prepareError(_ json: String) -> SpecError? {
            do { _ = try JobRunner.prepare(try SpecParser.parse(Array(json.utf8)), resolver: dir.resolver); return nil } catch { return error }
        }
        #expect(prepareError(#"{"type": "train", "input": {"annealing": {"steps": 10}}}"#)?.pointer == "/input/annealing")
        #expect(prepareError(#"{"type": "train", "input": {"twoStep": {}}}"#)?.pointer == "/input/twoStep")
        #expect(prepareError(#"{"type": "reflow", "input": {"teacher": {"job": "rf1"}, "twoStep": {}}}"#)?.pointer == "/input/twoStep")
        #expect(prepareError(#"{"type": "distill", "input": {"teacher": {"job": "rf1"}, "k": 2, "twoStep": {}}}"#)?.pointer == "/input/twoStep")
        #expect(prepareError(#"{"type": "reflow", "input": {"teacher": {"job": "rf1"}, "flipPairs": true}}"#)?.pointer == "/input/flipPairs")
        #expect(prepareError(#"{"type": "reflow", "input": {"teacher": {"job": "rf1"}, "annealing": {"steps": 0}}}"#)?.pointer == "/input/annealing/steps")
    }

    @Test("a smaller image student names only its model: data and source follow the teacher; a mismatch found after inheriting is a 422")
    func smallerImageStudent() throws {
        let dir = try JobsDir()
        defer { dir.remove() }
        let mlp = #"{"kind": "mlp", "dimension": 784, "imageShape": [1, 28, 28], "width": 32, "depth": 1}"#
        try dir.run("t", #"{"type": "train", "input": {"model": \#(mlp), "data": {"kind": "images", "dataset": "builtin:shapes", "limit": 64}, "batchSize": 16, "steps": 5}}"#)
        let json = #"{"type": "reflow", "input": {"teacher": {"job": "t"}, "pairs": 32, "solver": {"kind": "euler", "steps": 2}, "model": {"kind": "mlp", "dimension": 784, "imageShape": [1, 28, 28], "width": 8, "depth": 1}, "initialization": "scratch", "flipPairs": true, "batchSize": 16}}"#
        let prepared = try JobRunner.prepare(try SpecParser.parse(Array(json.utf8)), resolver: dir.resolver)
        let input = try #require(prepared.input as? ReflowSpec)
        #expect(input.training.model.parameterCount == VelocityMLPConfig(dimension: 784, width: 8, depth: 1).parameterCount)
        guard case .images(let ref) = input.training.data else { Issue.record("data \(input.training.data) is not the teacher's images"); return }
        #expect(ref.dataset == "builtin:shapes" && ref.limit == 64)
        let twoD = #"{"type": "reflow", "input": {"teacher": {"job": "t"}, "data": {"kind": "gaussianRing"}}}"#
        do {
            _ = try JobRunner.prepare(try SpecParser.parse(Array(twoD.utf8)), resolver: dir.resolver)
            Issue.record("2-D data for the image teacher's model was accepted")
        } catch {
            #expect(error.pointer == "/input/data")
        }
    }

    @Test("an analytic job builds the exact flow of its items: its network is AnalyticFlow, fine Euler lands on the items, it teaches a small student, and nothing trains it")
    func analyticTeacher() throws {
        let dir = try JobsDir()
        defer { dir.remove() }
        try dir.run("a", #"{"type": "analytic", "input": {"points": 40, "seed": 3, "previewPoints": 0}}"#)
        let art = try ModelArtifact.read(path: dir.path + "/a/model.safetensors")
        let items = try #require(art.snapshot.model["data"])
        #expect(items.shape == [40, 2] && art.model.kind == "analytic")
        // The network is the closed form, row by row at its own t.
        let net = try art.model.makeNetwork(stateDict: art.weights(useEMA: true))
        let x = randn([5, 2], seed: 4)
        let t: [Float] = [0, 0.3, 0.3, 0.7, 0.95]
        let v = net.velocity(x: x, t: t)
        let field = try AnalyticFlow(data: items)
        for r in 0..<5 {
            var out = [Float](repeating: 0, count: 2)
            Array(x.data[(2 * r)..<(2 * r + 2)]).withUnsafeBufferPointer { xb in out.withUnsafeMutableBufferPointer { field.velocity(xb.baseAddress!, count: 1, t: t[r], into: $0.baseAddress!) } }
            #expect(Array(v.data[(2 * r)..<(2 * r + 2)]) == out)
        }
        // Fine Euler samples land on the stored items (the exact flow of an empirical set memorises it).
        let sol = try ODESolver.solve(model: art.model, stateDict: art.weights(useEMA: true), x: randn([20, 2], seed: 5), method: .euler(steps: 400),
                                      direction: .forward, threads: 1)
        for r in 0..<20 {
            let px = sol.x.data[2 * r], py = sol.x.data[2 * r + 1]
            var nearest = Float.infinity
            for i in 0..<40 {
                let dx = px - items.data[2 * i], dy = py - items.data[2 * i + 1]
                nearest = min(nearest, (dx * dx + dy * dy).squareRoot())
            }
            #expect(nearest < 0.05)
        }
        // A small student learns from it (SlimFlow's exact teacher); the analytic model itself trains nothing.
        let r = try dir.run("s", #"{"type": "reflow", "input": {"teacher": {"job": "a"}, "pairs": 200, "solver": {"kind": "euler", "steps": 20}, "model": {"width": 16, "depth": 1}, "initialization": "scratch", "annealing": {"steps": 10}, "steps": 20, "batchSize": 32, "previewPoints": 0}}"#)
        #expect(r.training?.steps == 20)
        func prepareError(_ json: String) -> SpecError? {
            do { _ = try JobRunner.prepare(try SpecParser.parse(Array(json.utf8)), resolver: dir.resolver); return nil } catch { return error }
        }
        #expect(prepareError(#"{"type": "reflow", "input": {"teacher": {"job": "a"}}}"#)?.pointer == "/input/model")
        #expect(prepareError(#"{"type": "train", "input": {"model": {"kind": "analytic"}}}"#)?.pointer == "/input/model/kind")
        #expect(prepareError(#"{"type": "analytic", "input": {"points": 0}}"#)?.pointer == "/input/points")
        #expect(prepareError(#"{"type": "analytic", "input": {"data": {"kind": "normal"}}}"#)?.pointer == "/input/data")
        #expect(prepareError(#"{"type": "analytic", "input": {"pointShape": [3]}}"#)?.pointer == "/input/pointShape")
        #expect(prepareError(#"{"type": "prune", "input": {"model": {"job": "a"}}}"#) != nil)
    }

    @Test("a restarted reflow reuses its own pairs whatever the key order of their recorded solver JSON")
    func pairsReuseSolverKeyOrder() throws {
        let dir = try JobsDir()
        defer { dir.remove() }
        try dir.run("rf1", #"{"type": "train", "input": {\#(tinyModel), "steps": 20}}"#)
        let json = #"{"type": "reflow", "input": {"teacher": {"job": "rf1"}, "pairs": 64, "solver": {"kind": "euler", "steps": 4}, "steps": 10, "batchSize": 16, "previewPoints": 0}}"#
        try dir.run("r", json)
        // Rewrite the pairs file's solver JSON with the keys in the other order, as an earlier
        // release could have (JSONEncoder's key order is not stable across processes).
        let path = dir.path + "/r/pairs.safetensors"
        let file = try SafeTensors.read(path: path)
        var meta = file.metadata
        let swapped = #"{"steps":4,"kind":"euler"}"#, sorted = #"{"kind":"euler","steps":4}"#
        #expect(meta["reflowd.solver"] == sorted || meta["reflowd.solver"] == swapped)
        meta["reflowd.solver"] = meta["reflowd.solver"] == sorted ? swapped : sorted
        try SafeTensors.write(file.order.map { (name: $0, tensor: file.tensors[$0]!) }, metadata: meta, to: path)
        try FileManager.default.removeItem(atPath: dir.path + "/r/model.safetensors")
        let again = try dir.run("r", json)
        #expect(again.pairs?.reused == true && again.training?.steps == 10)
    }
}
