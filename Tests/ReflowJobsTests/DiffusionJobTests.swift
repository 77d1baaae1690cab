import Foundation
import Testing
import ReflowEngine
import ReflowFlow
import ReflowStore
@testable import ReflowJobs

/// VP diffusion models in jobs (issue #12): DDIM as their solver, Rectified Diffusion and its
/// phased variant as reflows, first-order-ness in evaluate, and the refusals.
@Suite("Diffusion models in jobs")
struct DiffusionJobTests {
    init() { BLAS.setLibraryThreads(1) }

    static let vpModel = #""model": {"width": 64, "depth": 2, "timeInput": {"kind": "sinusoidal", "features": 8, "scale": 1000}}, "interpolant": {"kind": "vp"}"#

    func prepareError(_ json: String, _ dir: JobsDir) -> SpecError? {
        do { _ = try JobRunner.prepare(try SpecParser.parse(Array(json.utf8)), resolver: dir.resolver); return nil } catch { return error }
    }

    @Test("a VP teacher samples and evaluates with DDIM by default; rectification lowers first-order-ness; the flow teacher reports none")
    func rectification() throws {
        let dir = try JobsDir()
        defer { dir.remove() }
        try dir.run("ddpm", #"{"type": "train", "input": {\#(Self.vpModel), "steps": 1500, "batchSize": 256, "learningRate": 2e-3, "seed": 1, "previewPoints": 0}}"#)
        let sample = try JobRunner.prepare(try SpecParser.parse(Array(#"{"type": "sample", "input": {"model": {"job": "ddpm"}, "n": 10}}"#.utf8)), resolver: dir.resolver)
        #expect((sample.input as? SampleSpec)?.solver == .ddim(steps: 100))
        let s = try dir.run("s", #"{"type": "sample", "input": {"model": {"job": "ddpm"}, "n": 10, "solver": {"kind": "ddim", "steps": 5}}}"#)
        #expect(s.sample?.nfe == 5)
        let evalJSON = #"{"type": "evaluate", "input": {"model": {"job": "MODEL"}, "n": 400, "solvers": [{"kind": "ddim", "steps": 2}], "straightnessSteps": 20}}"#
        let teacher = try #require(try dir.run("et", evalJSON.replacingOccurrences(of: "MODEL", with: "ddpm")).evaluation)
        let rdJSON = #"{"type": "reflow", "input": {"teacher": {"job": "ddpm"}, "pairs": 2000, "solver": {"kind": "ddim", "steps": 20}, "loss": {"kind": "elementwisePseudoHuber"}, "lossSpace": "data", "steps": 1000, "batchSize": 256, "learningRate": 2e-3, "previewPoints": 0}}"#
        try dir.run("rd", rdJSON)
        let student = try #require(try dir.run("er", evalJSON.replacingOccurrences(of: "MODEL", with: "rd")).evaluation)
        let before = try #require(teacher.firstOrderness), after = try #require(student.firstOrderness)
        #expect(after < before / 2, "rectification on paired noise: first-order-ness \(before) → \(after)")
        #expect(student.straightness > 0)
        // The student inherits the VP interpolant (the echoed spec names it).
        let echoed = try JobRunner.prepare(try SpecParser.parse(Array(rdJSON.utf8)), resolver: dir.resolver)
        #expect((echoed.input as? ReflowSpec)?.training.interpolant == .diffusion(VPDiffusion()))
        try dir.run("flow", #"{"type": "train", "input": {"steps": 20, "previewPoints": 0}}"#)
        let flow = try #require(try dir.run("ef", evalJSON.replacingOccurrences(of: "MODEL", with: "flow")
            .replacingOccurrences(of: #"{"kind": "ddim", "steps": 2}"#, with: #"{"kind": "euler", "steps": 2}"#)).evaluation)
        #expect(flow.firstOrderness == nil)
    }

    @Test("phased reflow: pairs per phase, a student that jumps phases; mismatched phases, solvers and options are refused with their pointer")
    func phasedAndRefusals() throws {
        let dir = try JobsDir()
        defer { dir.remove() }
        try dir.run("ddpm", #"{"type": "train", "input": {\#(Self.vpModel), "steps": 50, "batchSize": 64}}"#)
        try dir.run("flow", #"{"type": "train", "input": {"steps": 20, "previewPoints": 0}}"#)
        let r = try dir.run("ph", #"{"type": "reflow", "input": {"teacher": {"job": "ddpm"}, "pairs": 200, "phases": 2, "solver": {"kind": "ddim", "steps": 8}, "steps": 30, "batchSize": 64, "previewPoints": 0}}"#)
        #expect(r.pairs?.count == 200 && r.training?.steps == 30)
        let pairs = try PairStore.read(path: dir.path + "/ph/pairs.safetensors")
        #expect(pairs.metadata["reflowd.phases"] == "2")
        // Phase pairs do not train a student without phases (and the reverse).
        let e = #"{"type": "reflow", "input": {"teacher": {"job": "ddpm"}, "pairsFrom": {"job": "ph"}, "steps": 5, "batchSize": 16, "previewPoints": 0}}"#
        #expect(throws: (any Error).self) { try dir.run("bad", e) }
        // Refusals at submit.
        #expect(prepareError(#"{"type": "sample", "input": {"model": {"job": "ddpm"}, "solver": {"kind": "heun", "steps": 4}}}"#, dir)?.pointer == "/input/solver/kind")
        #expect(prepareError(#"{"type": "sample", "input": {"model": {"job": "ddpm"}, "solver": {"kind": "ddim", "steps": 1001}}}"#, dir)?.pointer == "/input/solver/steps")
        #expect(prepareError(#"{"type": "sample", "input": {"model": {"job": "flow"}, "solver": {"kind": "ddim", "steps": 4}}}"#, dir)?.pointer == "/input/solver/kind")
        #expect(prepareError(#"{"type": "evaluate", "input": {"model": {"job": "ddpm"}, "solvers": [{"kind": "ddim", "steps": 2}, {"kind": "rk45"}]}}"#, dir)?.pointer == "/input/solvers/1/kind")
        #expect(prepareError(#"{"type": "evaluate", "input": {"model": {"job": "ddpm"}, "lossCurve": {}}}"#, dir)?.pointer == "/input/lossCurve")
        #expect(prepareError(#"{"type": "reflow", "input": {"teacher": {"job": "flow"}, "phases": 2}}"#, dir)?.pointer == "/input/phases")
        #expect(prepareError(#"{"type": "reflow", "input": {"teacher": {"job": "ddpm"}, "phases": 2, "interpolant": "rectifiedFlow"}}"#, dir)?.pointer == "/input/phases")
        #expect(prepareError(#"{"type": "train", "input": {"interpolant": {"kind": "vp"}, "phases": 2}}"#, dir)?.pointer == "/input/phases")
        #expect(prepareError(#"{"type": "distill", "input": {"teacher": {"job": "ddpm"}, "phases": 2}}"#, dir)?.pointer == "/input/phases")
        #expect(prepareError(#"{"type": "distill", "input": {"teacher": {"job": "ddpm"}, "twoStep": {}}}"#, dir)?.pointer == "/input/twoStep")
        #expect(prepareError(#"{"type": "reflow", "input": {"teacher": {"job": "ddpm"}, "solver": {"kind": "euler", "steps": 4}}}"#, dir)?.pointer == "/input/solver/kind")
        #expect(prepareError(#"{"type": "train", "input": {"interpolant": {"kind": "vp", "schedule": {"kind": "linear", "betaEnd": 2}}}}"#, dir)?.pointer == "/input/interpolant/schedule/betaEnd")
        #expect(prepareError(#"{"type": "train", "input": {"interpolant": "diffusion"}}"#, dir) != nil)
        // A VP teacher's pairs default to DDIM 50, and a flow-form student may be asked for.
        let flowForm = try JobRunner.prepare(try SpecParser.parse(Array(#"{"type": "reflow", "input": {"teacher": {"job": "ddpm"}, "interpolant": "rectifiedFlow"}}"#.utf8)), resolver: dir.resolver)
        let input = try #require(flowForm.input as? ReflowSpec)
        #expect(input.student.solver == .ddim(steps: 50) && input.training.interpolant == .rectifiedFlow)
        // Prune scores a VP model with DDIM.
        let p = try dir.run("pr", #"{"type": "prune", "input": {"model": {"job": "ddpm"}, "sparsity": 0.5, "schedule": "oneShot", "retrain": {"steps": 5}, "dnr": {"samples": 16}, "evaluation": {"n": 50, "steps": [2]}}}"#)
        let result = try String(contentsOfFile: dir.path + "/pr/result.json", encoding: .utf8)
        #expect(result.contains("ddim2.swd") && !result.contains("euler2"))
        _ = p
    }

    @Test("a U-Net trains as a VP v-prediction model on the cosine schedule, samples with DDIM and inverts with DDIM inversion")
    func unetDiffusion() throws {
        let dir = try JobsDir()
        defer { dir.remove() }
        let r = try dir.run("u", #"{"type": "train", "input": {"data": {"kind": "images", "dataset": "builtin:shapes", "limit": 64}, \#(tinyUNet), "interpolant": {"kind": "vp", "prediction": "v", "schedule": {"kind": "cosine"}}, "batchSize": 8, "steps": 3, "previewPoints": 4}}"#)
        #expect(r.training?.steps == 3 && r.training?.finalLoss.isFinite == true)
        let s = try dir.run("s", #"{"type": "sample", "input": {"model": {"job": "u"}, "n": 3, "solver": {"kind": "ddim", "steps": 3}}}"#)
        #expect(s.sample?.nfe == 3)
        let i = try dir.run("i", #"{"type": "invert", "input": {"model": {"job": "u"}, "points": {"distribution": {"kind": "images", "dataset": "builtin:shapes", "limit": 2}, "n": 2}, "solver": {"kind": "ddim", "steps": 4}}}"#)
        #expect(i.sections["invert"] != nil)
    }
}
