import Foundation
import Testing
import ReflowEngine
import ReflowNN
import ReflowFlow
import ReflowStore
@testable import ReflowJobs

/// A small ReLU MLP classifier on builtin:shapes (fast).
func tinyMLPClassify(steps: Int = 40) -> String {
    #"{"type": "classify", "input": {"data": {"kind": "images", "dataset": "builtin:shapes", "limit": 800}, "test": {"dataset": "builtin:shapes", "split": "test", "limit": 300}, "model": {"kind": "mlp", "hidden": [32, 16]}, "batchSize": 50, "steps": \#(steps), "seed": 5, "logEvery": 10}}"#
}

func pruneSpec(_ fields: String) -> String { #"{"type": "prune", "input": {"model": {"job": "c"}, \#(fields)}}"# }

@Suite("Prune job")
struct PruneJobTests {
    func prepareError(_ dir: JobsDir, _ json: String) -> SpecError? {
        do { _ = try JobRunner.prepare(try SpecParser.parse(Array(json.utf8)), resolver: dir.resolver); return nil } catch { return error }
    }

    @Test("IMP rewinds to the stored initial weights: with no retraining the output is init ⊙ mask, at the scheduled sparsity")
    func rewindsToInit() throws {
        let dir = try JobsDir()
        defer { dir.remove() }
        try dir.run("c", tinyMLPClassify())
        let r = try dir.run("p", pruneSpec(#""sparsity": 0.36, "rate": 0.2, "retrain": {"steps": 0}, "dnr": {"samples": 100}, "evaluation": {"n": 200}"#))
        let p = try #require(r.pruning)
        #expect(p.cycles.count == 3 && p.complete && p.rewind == .initialization)
        #expect(p.prunable == ["layers.0.weight", "layers.1.weight", "head.weight"], "weights only: no biases by default")
        #expect(abs(p.cycles[2].sparsity - 0.36) < 1e-3 && abs(p.cycles[1].sparsity - 0.2) < 1e-3)
        let out = try Checkpoint.read(path: dir.path + "/p/classifier.safetensors")
        let art = try ClassifierArtifact.read(path: dir.path + "/c/classifier.safetensors")
        var rng = Random(seed: 5)
        let initial = art.config.makeNetwork(rng: &rng).stateDict()
        #expect(out.masks.keys.sorted() == p.prunable.sorted())
        for (name, w) in out.model {
            let want = out.masks[name].map { m in zip(initial[name]!.data, m.data).map { $1 == 0 ? 0 : $0 } } ?? initial[name]!.data
            #expect(w.data == want, "\(name) is the initial weights under the mask")
        }
        // The DNR was measured for both ReLU layers at every cycle; files are there.
        #expect(p.cycles.allSatisfy { $0.dnr?.layers.keys.sorted() == ["layers.0", "layers.1"] })
        #expect(Set(r.artifacts.map(\.name)).isSuperset(of: ["pruning.csv", "pruning.json", "dnr.png", "classifier.safetensors"]))
        #expect(!r.artifacts.map(\.name).contains("cycle.safetensors"))
    }

    @Test("layer-wise IMP with AP and retraining: masked weights stay zero, AP removes its share, quality and DNR per cycle")
    func layerwiseWithAP() throws {
        let dir = try JobsDir()
        defer { dir.remove() }
        try dir.run("c", tinyMLPClassify())
        let r = try dir.run("p", pruneSpec(#""scope": "layerwise", "sparsity": 0.5, "rate": 0.3, "ap": {"enabled": true, "rate": 0.03}, "retrain": {"steps": 20, "logEvery": 5}, "dnr": {"samples": 100, "every": 10}, "evaluation": {"n": 200}"#))
        let p = try #require(r.pruning)
        #expect(p.cycles.count == 3)
        let c1 = p.cycles[1]
        // 3 % of each tensor's survivors by AP, 27 % by magnitude (rounded per tensor).
        #expect(c1.removedAP > 0 && abs(Double(c1.removedAP) / Double(c1.removedBase + c1.removedAP) - 0.1) < 0.02)
        for (name, s) in c1.layerSparsity { #expect(abs(s - 0.3) < 0.01, "\(name) pruned layer-wise: \(s)") }
        #expect(c1.dnrCurve.count == 1 && c1.quality["testAccuracy"] != nil && c1.trainSteps == 20)
        let out = try Checkpoint.read(path: dir.path + "/p/classifier.safetensors")
        for (name, m) in out.masks {
            for (w, k) in zip(out.model[name]!.data, m.data) where k == 0 { #expect(w == 0, "\(name): a pruned weight moved") }
        }
        let csv = try String(contentsOfFile: dir.path + "/p/pruning.csv", encoding: .utf8)
        #expect(csv.split(separator: "\n").count == 4 && csv.hasPrefix("cycle,fraction,sparsity"))
    }

    @Test("a stopped IMP job resumes at its cycle: finished cycles are not redone and the result equals an uninterrupted run")
    func resume() throws {
        let dir = try JobsDir()
        defer { dir.remove() }
        try dir.run("c", tinyMLPClassify())
        let spec = pruneSpec(#""sparsity": 0.6, "rate": 0.3, "ap": {"enabled": true}, "retrain": {"steps": 30, "checkpointEvery": 10, "logEvery": 5}, "dnr": {"samples": 100}, "evaluation": {"n": 200}"#)
        let straight = try #require(try dir.run("a", spec).pruning)
        // Stop in the middle of cycle 2 (progress: measure ×2, then 7 reports per cycle).
        #expect(throws: JobError.interrupted) { try dir.run("b", spec, stopAfter: 12) }
        let saved = try JSONDecoder().decode(PruneRun<ClassifierSubject>.Stored.self,
                                             from: Data(contentsOf: URL(fileURLWithPath: dir.path + "/b/pruning.json"))).summary
        #expect(saved.cycles.count == 2 && !saved.complete)
        let ckpt = try Checkpoint.read(path: dir.path + "/b/checkpoint.safetensors")
        #expect(ckpt.metadata["reflowd.prune_cycle"] == "2" && !ckpt.masks.isEmpty && ckpt.step > 0 && ckpt.step < 30)
        let resumed = try #require(try dir.run("b", spec).pruning)
        #expect(resumed.cycles[1].seconds == saved.cycles[1].seconds, "cycle 1 was not run again")
        #expect(resumed.cycles.count == straight.cycles.count)
        for (x, y) in zip(resumed.cycles, straight.cycles) {
            #expect(x.sparsity == y.sparsity && x.removedAP == y.removedAP && x.quality == y.quality && x.dnr == y.dnr, "cycle \(x.cycle)")
        }
        let a = try Checkpoint.read(path: dir.path + "/a/classifier.safetensors"), b = try Checkpoint.read(path: dir.path + "/b/classifier.safetensors")
        #expect(a.model == b.model && a.masks == b.masks)
    }

    @Test("structured pruning of a ReLU velocity MLP: a smaller model that sample jobs load, timed against the dense one")
    func structuredFlow() throws {
        let dir = try JobsDir()
        defer { dir.remove() }
        try dir.run("c", #"{"type": "train", "input": {"model": {"width": 32, "depth": 2, "activation": "relu"}, "batchSize": 64, "steps": 60, "previewPoints": 0}}"#)
        let r = try dir.run("p", pruneSpec(#""method": "structured", "schedule": "oneShot", "sparsity": 0.5, "retrain": {"steps": 20}, "dnr": {"samples": 200}, "evaluation": {"n": 300, "steps": [1, 4], "timingRows": 64, "timingRepeats": 3}"#))
        let p = try #require(r.pruning)
        let s = try #require(p.structured)
        #expect(s.unitsBefore == ["layers.0": 32, "layers.1": 32] && s.unitsAfter == ["layers.0": 16, "layers.1": 16])
        #expect(s.parametersAfter < s.parametersBefore / 2 && s.denseSeconds > 0 && s.prunedSeconds > 0)
        #expect(p.cycles[1].quality["euler1.swd"] != nil && p.cycles[1].quality["euler4.energy"] != nil)
        let m = try ModelArtifact.read(path: dir.path + "/p/model.safetensors")
        #expect(m.model.mlp?.hiddenWidths == [16, 16])
        let sample = try dir.run("s", #"{"type": "sample", "input": {"model": {"job": "p"}, "n": 50, "solver": {"kind": "euler", "steps": 2}}}"#)
        #expect(sample.artifacts.map(\.name).contains("samples.npy"))
    }

    @Test("one-shot magnitude pruning of a ReLU U-Net with fine-tuning: conv and linear weights only, DNR of every ReLU, grid-ready model")
    func unet() throws {
        let dir = try JobsDir()
        defer { dir.remove() }
        try dir.run("c", #"{"type": "train", "input": {"model": {"kind": "unet", "channels": [8, 8], "blocksPerLevel": 1, "groups": 4, "activation": "relu"}, "data": {"kind": "images", "dataset": "builtin:shapes", "limit": 64}, "batchSize": 4, "steps": 2, "previewPoints": 0}}"#)
        let r = try dir.run("p", pruneSpec(#""schedule": "oneShot", "sparsity": 0.5, "retrain": {"steps": 2}, "dnr": {"samples": 8}, "evaluation": {"n": 16, "steps": [1]}"#))
        let p = try #require(r.pruning)
        #expect(p.rewind == RewindPoint.none && p.cycles.count == 2 && abs(p.cycles[1].sparsity - 0.5) < 1e-3)
        #expect(p.prunable.allSatisfy { !$0.contains(".n1.") && !$0.hasSuffix(".bias") } && p.prunable.contains("stem.weight"))
        let layers = try #require(p.cycles[1].dnr?.layers.keys.sorted())
        #expect(layers.contains("onorm") && layers.contains("down1.0.n1") && layers.contains("mid.1.n2"), "\(layers)")
        let m = try ModelArtifact.read(path: dir.path + "/p/model.safetensors")
        #expect(m.model.kind == "unet" && !m.snapshot.masks.isEmpty)
    }

    @Test("retraining a velocity model caps its EMA decay at 1 − 10/steps unless retrain.emaDecay is given")
    func emaCap() throws {
        let dir = try JobsDir()
        defer { dir.remove() }
        try dir.run("t", #"{"type": "train", "input": {\#(tinyModel), "steps": 5}}"#)
        let m = try ModelArtifact.read(path: dir.path + "/t/model.safetensors")
        #expect(m.training.emaDecay == 0.999)
        let job = JobExecution(context: JobContext(directory: dir.path + "/x", threads: 1, resolver: dir.resolver),
                               directory: JobDirectory(path: dir.path + "/x"), digest: "d", legacyDigests: [], kindName: "prune")
        var spec = PruneSpec()
        spec.retrain.steps = 20
        #expect(try FlowSubject.makeTrainer(m.training, model: m.model, pairs: nil, spec: spec, cycle: 1, job: job).ema?.decay == 0.5)
        spec.retrain.steps = 100_000
        #expect(try FlowSubject.makeTrainer(m.training, model: m.model, pairs: nil, spec: spec, cycle: 1, job: job).ema?.decay == 0.999)
        spec.retrain.emaDecay = 0.9
        #expect(try FlowSubject.makeTrainer(m.training, model: m.model, pairs: nil, spec: spec, cycle: 1, job: job).ema?.decay == 0.9)
        #expect(prepareError(dir, #"{"type": "prune", "input": {"model": {"job": "t"}, "retrain": {"emaDecay": 1}}}"#)?.pointer == "/input/retrain/emaDecay")
    }

    @Test("refused at submit with the pointer: sparsity outside [0, 1), unknown layers, structured on a model without unit layers, AP without cycles")
    func refusals() throws {
        let dir = try JobsDir()
        defer { dir.remove() }
        try dir.run("c", tinyMLPClassify(steps: 5))
        #expect(prepareError(dir, pruneSpec(#""sparsity": 1.0"#))?.pointer == "/input/sparsity")
        #expect(prepareError(dir, pruneSpec(#""sparsity": -0.1"#))?.pointer == "/input/sparsity")
        let unknown = prepareError(dir, pruneSpec(#""prunable": {"layers": ["layers.0", "convs.7"]}"#))
        #expect(unknown?.pointer == "/input/prunable/layers/1" && unknown?.message.contains("layers.0") == true)
        #expect(prepareError(dir, pruneSpec(#""schedule": "oneShot", "ap": {"enabled": true}"#))?.pointer == "/input/ap/enabled")
        #expect(prepareError(dir, pruneSpec(#""method": "structured", "schedule": "iterative""#))?.pointer == "/input/schedule")
        #expect(prepareError(dir, pruneSpec(#""rate": 0"#))?.pointer == "/input/rate")
        #expect(prepareError(dir, pruneSpec(#""rate": 0.001, "sparsity": 0.9999"#))?.pointer == "/input/rate")
        #expect(prepareError(dir, pruneSpec(#""pairs": {"job": "c"}"#))?.pointer == "/input/pairs")
        #expect(prepareError(dir, #"{"type": "prune", "input": {"model": {"job": "nope"}}}"#)?.pointer == "/input/model/job")
        // A CNN classifier and a U-Net have no unit layers for structured pruning.
        try dir.run("cnn", #"{"type": "classify", "input": {"data": {"kind": "images", "dataset": "builtin:shapes", "limit": 100}, "test": {"dataset": "builtin:shapes", "split": "test", "limit": 50}, "model": {"kind": "cnn", "channels": [4], "features": 8}, "steps": 2}}"#)
        let cnn = prepareError(dir, #"{"type": "prune", "input": {"model": {"job": "cnn"}, "method": "structured", "schedule": "oneShot"}}"#)
        #expect(cnn?.pointer == "/input/method" && cnn?.message.contains("cnn") == true)
        try dir.run("u", #"{"type": "train", "input": {"model": {"kind": "unet", "channels": [8, 8], "blocksPerLevel": 1, "groups": 4}, "data": {"kind": "images", "dataset": "builtin:shapes", "limit": 64}, "batchSize": 4, "steps": 1, "previewPoints": 0}}"#)
        #expect(prepareError(dir, #"{"type": "prune", "input": {"model": {"job": "u"}, "method": "structured", "schedule": "oneShot"}}"#)?.pointer == "/input/method")
        // Rewinding a teacher-initialised student to "init" is refused (its init is the teacher).
        try dir.run("t", #"{"type": "train", "input": {\#(tinyModel), "steps": 5}}"#)
        try dir.run("d", #"{"type": "distill", "input": {"teacher": {"job": "t"}, "pairs": 64, "solver": {"kind": "euler", "steps": 2}, "steps": 2, "previewPoints": 0}}"#)
        let student = prepareError(dir, #"{"type": "prune", "input": {"model": {"job": "d"}, "rewind": {"kind": "init"}}}"#)
        #expect(student?.pointer == "/input/rewind")
        #expect(prepareError(dir, #"{"type": "prune", "input": {"model": {"job": "d"}, "rewind": {"kind": "model", "model": {"job": "t"}}}}"#) == nil)
        // The default pairs of a distilled student are its own job's.
        let prepared = try JobRunner.prepare(try SpecParser.parse(Array(#"{"type": "prune", "input": {"model": {"job": "d"}, "rewind": {"kind": "none"}}}"#.utf8)), resolver: dir.resolver)
        #expect(prepared.input(as: PruneSpec.self)?.pairs == .job(id: "d", artifact: "pairs"))
        // A student that reused another job's pairs has none of its own: pairs must be given.
        try dir.run("d2", #"{"type": "distill", "input": {"teacher": {"job": "t"}, "pairsFrom": {"job": "d"}, "steps": 2, "previewPoints": 0}}"#)
        #expect(prepareError(dir, #"{"type": "prune", "input": {"model": {"job": "d2"}, "rewind": {"kind": "none"}}}"#)?.pointer == "/input/pairs")
        #expect(prepareError(dir, #"{"type": "prune", "input": {"model": {"job": "d2"}, "pairs": {"job": "d"}, "rewind": {"kind": "none"}}}"#) == nil)
    }
}
