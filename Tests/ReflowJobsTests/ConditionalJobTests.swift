import Foundation
import Testing
import ReflowEngine
import ReflowFlow
import ReflowStore
@testable import ReflowJobs

/// Class-conditional jobs end to end (issue #11): labelled 2-D mixtures, guided labelled pairs,
/// sampling under labels, the loss curve, and the 422s of bad labels.
@Suite("Conditional jobs")
struct ConditionalJobTests {
    init() { BLAS.setLibraryThreads(1) }

    static let model = #""model": {"width": 64, "depth": 2, "classes": 8}, "data": {"kind": "gaussianRing", "count": 8}"#

    /// The mode whose empirical centre is nearest to each sample.
    static func nearestMode(_ x: [Float], centres: [(Float, Float)]) -> [Int] {
        (0..<(x.count / 2)).map { r in
            centres.indices.min { a, b in
                let da = pow(x[2 * r] - centres[a].0, 2) + pow(x[2 * r + 1] - centres[a].1, 2)
                let db = pow(x[2 * r] - centres[b].0, 2) + pow(x[2 * r + 1] - centres[b].1, 2)
                return da < db
            }!
        }
    }

    @Test("a conditional 2-D flow samples the requested mode; perClass sets n and writes labels.npy; guidance sharpens")
    func conditionalTwoD() throws {
        let dir = try JobsDir()
        defer { dir.remove() }
        let trained = try dir.run("rf1", #"{"type": "train", "input": {\#(Self.model), "steps": 1500, "batchSize": 256, "learningRate": 3e-3, "labelDropout": 0.2, "previewPoints": 0}}"#)
        // The result reports the model's size: the layers (input x, y, t) and the label embedding (9 rows).
        let cfg = VelocityMLPConfig(dimension: 2, width: 64, depth: 2, classes: 8)
        let counted = (3 * 64 + 64) + (64 * 64 + 64) + (64 * 2 + 2) + 9 * 64
        #expect(cfg.parameterCount == counted && trained.training?.parameters == counted && trained.training?.macsPerSample == counted)
        // Mode centres from labelled data draws.
        var rng = Random(seed: 9)
        var pts = [Float](repeating: 0, count: 2 * 8000), labels = [Int32](repeating: 0, count: 8000)
        pts.withUnsafeMutableBufferPointer { p in labels.withUnsafeMutableBufferPointer { l in
            Distribution2D.gaussianRing(count: 8).sample(into: p, labels: l.baseAddress, rng: &rng)
        } }
        let centres: [(Float, Float)] = (0..<8).map { k in
            let idx = labels.indices.filter { labels[$0] == k }
            return (idx.map { pts[2 * $0] }.reduce(0, +) / Float(idx.count), idx.map { pts[2 * $0 + 1] }.reduce(0, +) / Float(idx.count))
        }
        func accuracy(_ job: String) throws -> Double {
            let x = try PointFiles.load(path: dir.path + "/\(job)/samples.npy")
            let l = try PointFiles.load(path: dir.path + "/\(job)/labels.npy")
            #expect(x.shape == [400, 2] && l.shape == [400, 1])
            #expect(l.data == (0..<400).map { Float($0 / 50) }, "perClass: 50 of each class, in class order")
            let modes = Self.nearestMode(x.data, centres: centres)
            return Double(zip(modes, l.data).filter { Float($0.0) == $0.1 }.count) / 400
        }
        let s = try dir.run("s", #"{"type": "sample", "input": {"model": {"job": "rf1"}, "perClass": 50, "trajectories": 0}}"#)
        #expect(s.sample?.n == 400)
        let plain = try accuracy("s")
        #expect(plain > 0.8, "conditional samples land in their mode: \(plain)")
        try dir.run("g", #"{"type": "sample", "input": {"model": {"job": "rf1"}, "perClass": 50, "guidance": 3, "trajectories": 0}}"#)
        let guided = try accuracy("g")
        #expect(guided >= plain - 0.02, "guidance 3 does not lose the class: \(guided) vs \(plain)")
        // The null label (unconditional) spreads over all modes.
        try dir.run("u", #"{"type": "sample", "input": {"model": {"job": "rf1"}, "perClass": 50, "guidance": 0, "trajectories": 0}}"#)
        #expect(try accuracy("u") < 0.4)
    }

    @Test("guided reflow pairs are labelled and reproducible from their seed; the student trains on their labels; the loss curve reads them")
    func guidedPairs() throws {
        let dir = try JobsDir()
        defer { dir.remove() }
        try dir.run("rf1", #"{"type": "train", "input": {\#(Self.model), "steps": 200, "batchSize": 128, "previewPoints": 0}}"#)
        let spec = #"{"type": "reflow", "input": {"teacher": {"job": "rf1"}, "pairs": 300, "solver": {"kind": "euler", "steps": 8}, "guidance": 2, "noiseSeed": 5, "steps": 20, "batchSize": 64, "previewPoints": 0}}"#
        try dir.run("a", spec)
        try dir.run("b", spec, threads: 1)
        try dir.run("c", spec.replacingOccurrences(of: #""noiseSeed": 5"#, with: #""noiseSeed": 6"#))
        let a = try PairStore.read(path: dir.path + "/a/pairs.safetensors"), b = try PairStore.read(path: dir.path + "/b/pairs.safetensors")
        let c = try PairStore.read(path: dir.path + "/c/pairs.safetensors")
        let la = try #require(a.labels)
        #expect(la.count == 300 && la.allSatisfy { (0..<8).contains($0) } && Set(la).count == 8)
        #expect(a.labels == b.labels && a.z1.data == b.z1.data, "same seed, same pairs (also on another thread count)")
        #expect(a.labels != c.labels && a.z1.data != c.z1.data)
        #expect(a.metadata["reflowd.guidance"] == "2.0" && a.metadata["reflowd.labels"] == "uniform")
        // The pairs are the guided ODE of the teacher under their labels.
        let t = try ModelArtifact.read(path: dir.path + "/rf1/model.safetensors")
        let again = try ODESolver.solve(model: t.model, stateDict: t.weights(useEMA: true), x: a.z0, labels: la, guidance: 2,
                                        method: .euler(steps: 8), direction: .forward, threads: 1)
        for i in 0..<600 { #expect(abs(again.x.data[i] - a.z1.data[i]) < 1e-4) }
        // A student of another guidance in the same directory is refused (other settings).
        #expect(throws: JobError.self) { try dir.run("a", spec.replacingOccurrences(of: #""guidance": 2"#, with: #""guidance": 4"#)) }
        // Distill defaults to guidance 1.5 for a conditional teacher.
        let d = try dir.run("d", #"{"type": "distill", "input": {"teacher": {"job": "a"}, "pairs": 100, "solver": {"kind": "euler", "steps": 4}, "steps": 5, "batchSize": 32, "previewPoints": 0}}"#)
        #expect(d.pairs?.count == 100)
        #expect(try PairStore.read(path: dir.path + "/d/pairs.safetensors").metadata["reflowd.guidance"] == "1.5")
        // A second stage starts from the first stage's student (initFrom).
        let d2 = try dir.run("d2", #"{"type": "distill", "input": {"teacher": {"job": "a"}, "pairsFrom": {"job": "d"}, "initFrom": {"job": "d"}, "steps": 5, "batchSize": 32, "previewPoints": 0}}"#)
        #expect(d2.pairs?.reused == true)
        // The loss curve on fresh teacher pairs and on the independent coupling.
        let e = try dir.run("e", #"{"type": "evaluate", "input": {"model": {"job": "a"}, "n": 200, "solvers": [{"kind": "euler", "steps": 1}], "lossCurve": {"teacher": {"job": "rf1"}, "guidance": 2, "n": 100, "bins": 10}}}"#)
        let curve = try #require(e.lossCurve)
        #expect(curve.coupling == "teacher" && curve.bins.count == 10 && curve.bins.allSatisfy { $0.mean.isFinite && $0.mean >= 0 })
        let centres: [Double] = (0..<10).map { i in Double((Float(i) + 0.5) / 10) }
        #expect(curve.bins.map(\.t) == centres)
        #expect(curve.intersection?.crossing.count == 5)
        #expect(FileManager.default.fileExists(atPath: dir.path + "/e/loss_curve.png"))
        let f = try dir.run("f", #"{"type": "evaluate", "input": {"model": {"job": "rf1"}, "n": 200, "solvers": [{"kind": "euler", "steps": 1}], "guidance": 2, "lossCurve": {"n": 100, "bins": 4}}}"#)
        #expect(f.lossCurve?.coupling == "independent" && f.lossCurve?.bins.count == 4)
    }

    @Test("inversion pairs (rfpp Config G): real labelled items and the teacher's backward ODE of them")
    func inversionPairs() throws {
        let dir = try JobsDir()
        defer { dir.remove() }
        try dir.run("rf1", #"{"type": "train", "input": {\#(Self.model), "steps": 100, "batchSize": 128, "previewPoints": 0}}"#)
        try dir.run("g", #"{"type": "reflow", "input": {"teacher": {"job": "rf1"}, "inversionData": {"kind": "gaussianRing", "count": 8}, "pairs": 200, "solver": {"kind": "euler", "steps": 10}, "noiseSeed": 3, "steps": 5, "batchSize": 32, "previewPoints": 0}}"#)
        let p = try PairStore.read(path: dir.path + "/g/pairs.safetensors")
        // z1 and the labels are the data's own draw from noiseSeed.
        var rng = Random(seed: 3)
        var x = [Float](repeating: 0, count: 400), l = [Int32](repeating: 0, count: 200)
        x.withUnsafeMutableBufferPointer { xb in l.withUnsafeMutableBufferPointer { lb in
            Distribution2D.gaussianRing(count: 8).sample(into: xb, labels: lb.baseAddress, rng: &rng)
        } }
        #expect(p.z1.data == x && p.labels == l)
        #expect(p.metadata["reflowd.labels"] == "data" && p.metadata["reflowd.guidance"] == "none")
        let t = try ModelArtifact.read(path: dir.path + "/rf1/model.safetensors")
        let back = try ODESolver.solve(model: t.model, stateDict: t.weights(useEMA: true), x: p.z1, labels: l, method: .euler(steps: 10),
                                       direction: .backward, threads: 1)
        for i in 0..<400 { #expect(abs(back.x.data[i] - p.z0.data[i]) < 1e-4) }
        func prepareError(_ json: String) -> SpecError? {
            do { _ = try JobRunner.prepare(try SpecParser.parse(Array(json.utf8)), resolver: dir.resolver); return nil } catch { return error }
        }
        #expect(prepareError(#"{"type": "reflow", "input": {"teacher": {"job": "rf1"}, "inversionData": {"kind": "normal"}}}"#)?.pointer == "/input/inversionData")
        #expect(prepareError(#"{"type": "reflow", "input": {"teacher": {"job": "rf1"}, "inversionData": {"kind": "twoMoons"}, "guidance": 2}}"#)?.pointer == "/input/guidance")
        #expect(prepareError(#"{"type": "reflow", "input": {"teacher": {"job": "rf1"}, "inversionData": {"kind": "twoMoons"}, "pairsFrom": {"job": "g"}}}"#)?.pointer == "/input/inversionData")
        #expect(prepareError(#"{"type": "reflow", "input": {"teacher": {"job": "rf1"}, "inversionData": {"kind": "twoMoons"}, "solver": {"kind": "remix", "steps": 2}}}"#)?.pointer == "/input/solver/kind")
        #expect(prepareError(#"{"type": "reflow", "input": {"teacher": {"job": "rf1"}, "inversionData": {"kind": "twoMoons"}}}"#) == nil)
    }

    @Test("the loss curve is the mean squared velocity error per bin centre (an oracle on the same pairs, more rows than one block)")
    func lossCurveOracle() throws {
        var rng = Random(seed: 3)
        let spec = ModelSpec(VelocityMLPConfig(dimension: 2, width: 8, depth: 1, classes: 3))
        let weights = spec.makeNetwork(rng: &rng).stateDict()
        let x0 = rng.normal([1100, 2]), x1 = rng.normal([1100, 2], mean: 2)
        let labels = (0..<1100).map { Int32($0 % 3) }
        let bins = LossCurve.measure(model: spec, weights: weights, x0: x0, x1: x1, labels: labels, bins: 4, threads: 2)
        let net = try spec.makeNetwork(stateDict: weights)
        for (b, bin) in bins.enumerated() {
            let t = (Float(b) + 0.5) / 4
            let xt = Tensor(shape: [1100, 2], data: (0..<2200).map { t * x1.data[$0] + (1 - t) * x0.data[$0] })
            let v = net.velocity(x: xt, t: [Float](repeating: t, count: 1100), labels: labels)
            var per = [Double]()
            for r in 0..<1100 {
                var l = 0.0
                for c in 0..<2 {
                    let e = Double(v.data[2 * r + c]) - Double(x1.data[2 * r + c] - x0.data[2 * r + c])
                    l += e * e
                }
                per.append(l / 2)
            }
            let mean = per.reduce(0, +) / 1100
            let meanError = abs(bin.mean - mean)
            #expect(meanError < 1e-5 * max(1, mean))
            #expect(Float(bin.t) == t)
            var ss = 0.0
            for p in per { ss += (p - mean) * (p - mean) }
            let se = (ss / 1099).squareRoot() / (1100.0).squareRoot()
            let seError = abs(bin.standardError - se)
            #expect(seError < 1e-5 * max(1, se))
        }
    }

    @Test("invalid labels and guidance get 422 with the pointer")
    func pointers() throws {
        let dir = try JobsDir()
        defer { dir.remove() }
        func prepareError(_ json: String) -> SpecError? {
            do { _ = try JobRunner.prepare(try SpecParser.parse(Array(json.utf8)), resolver: dir.resolver); return nil } catch { return error }
        }
        try dir.run("c", #"{"type": "train", "input": {\#(Self.model), "steps": 5, "previewPoints": 0}}"#)
        try dir.run("u", #"{"type": "train", "input": {"model": {"width": 8, "depth": 1}, "steps": 5, "previewPoints": 0}}"#)
        #expect(prepareError(#"{"type": "sample", "input": {"model": {"job": "c"}, "labels": [0, 8, 1]}}"#)?.pointer == "/input/labels/1")
        #expect(prepareError(#"{"type": "sample", "input": {"model": {"job": "c"}, "labels": [0, -1]}}"#)?.pointer == "/input/labels/1")
        #expect(prepareError(#"{"type": "sample", "input": {"model": {"job": "c"}, "labels": [0], "perClass": 2}}"#)?.pointer == "/input/perClass")
        #expect(prepareError(#"{"type": "sample", "input": {"model": {"job": "c"}, "guidance": 1e9}}"#)?.pointer == "/input/guidance")
        #expect(prepareError(#"{"type": "sample", "input": {"model": {"job": "u"}, "labels": [0]}}"#)?.pointer == "/input/labels")
        #expect(prepareError(#"{"type": "sample", "input": {"model": {"job": "u"}, "perClass": 3}}"#)?.pointer == "/input/perClass")
        #expect(prepareError(#"{"type": "sample", "input": {"model": {"job": "u"}, "guidance": 2}}"#)?.pointer == "/input/guidance")
        #expect(prepareError(#"{"type": "evaluate", "input": {"model": {"job": "u"}, "guidance": 2}}"#)?.pointer == "/input/guidance")
        #expect(prepareError(#"{"type": "reflow", "input": {"teacher": {"job": "u"}, "guidance": 2}}"#)?.pointer == "/input/guidance")
        #expect(prepareError(#"{"type": "evaluate", "input": {"model": {"job": "c"}, "lossCurve": {"teacher": {"job": "u"}, "guidance": 2}}}"#)?.pointer == "/input/lossCurve/guidance")
        #expect(prepareError(#"{"type": "train", "input": {"model": {"classes": 3}, "data": {"kind": "normal"}}}"#)?.pointer == "/input/model/classes")
        #expect(prepareError(#"{"type": "train", "input": {"model": {"classes": 4}, "data": {"kind": "gaussianRing", "count": 8}}}"#)?.pointer == "/input/model/classes")
        #expect(prepareError(#"{"type": "train", "input": {"labelDropout": 1.5}}"#)?.pointer == "/input/labelDropout")
        // A conditional student needs a conditional teacher with no more classes than it has.
        #expect(prepareError(#"{"type": "reflow", "input": {"teacher": {"job": "u"}, "model": {"width": 8, "depth": 1, "classes": 8}, "initialization": "scratch"}}"#)?.pointer == "/input/model/classes")
        #expect(prepareError(#"{"type": "reflow", "input": {"teacher": {"job": "c"}, "model": {"width": 8, "depth": 1, "classes": 4}, "initialization": "scratch"}}"#)?.pointer == "/input/model/classes")
        #expect(prepareError(#"{"type": "reflow", "input": {"teacher": {"job": "c"}, "model": {"width": 8, "depth": 1, "classes": 8}, "initialization": "scratch"}}"#) == nil)
        #expect(prepareError(#"{"type": "sample", "input": {"model": {"job": "c"}, "solver": {"kind": "remix", "steps": 0}}}"#)?.pointer == "/input/solver/steps")
        // The perceptual premetric needs a classifier of the model's images.
        #expect(prepareError(#"{"type": "train", "input": {"perceptual": {"classifier": {"job": "nope"}}}}"#)?.pointer == "/input/perceptual/classifier/job")
        #expect(prepareError(#"{"type": "train", "input": {"perceptual": {"classifier": {"job": "c"}, "weight": 0}}}"#)?.pointer == "/input/perceptual/weight")
    }

    @Test("an image flow trained on a classifier's features (perceptual) is not evaluated with that classifier")
    func perceptualNetworkIsNotTheScorer() throws {
        let dir = try JobsDir()
        defer { dir.remove() }
        try dir.run("clf", tinyClassify(steps: 5))
        try dir.run("clf2", tinyClassify(steps: 5, extra: #", "seed": 9"#))
        let image = #""model": {"kind": "mlp", "dimension": 784, "imageShape": [1, 28, 28], "width": 32, "depth": 1, "classes": 10}, "data": {"kind": "images", "dataset": "builtin:shapes", "limit": 200}"#
        let t = try dir.run("f", #"{"type": "train", "input": {\#(image), "perceptual": {"classifier": {"job": "clf"}, "form": "lpipsHuberInverseT"}, "loss": {"kind": "pseudoHuber", "scaling": "d"}, "timeSampler": {"kind": "uShaped"}, "steps": 5, "batchSize": 16, "previewPoints": 0}}"#)
        #expect(t.training?.finalLoss.isFinite == true)
        func prepareError(_ json: String) -> SpecError? {
            do { _ = try JobRunner.prepare(try SpecParser.parse(Array(json.utf8)), resolver: dir.resolver); return nil } catch { return error }
        }
        let e = prepareError(#"{"type": "evaluate", "input": {"model": {"job": "f"}, "classifier": {"job": "clf"}, "n": 20}}"#)
        #expect(e?.pointer == "/input/classifier" && e?.message.contains("trained against") == true)
        #expect(prepareError(#"{"type": "evaluate", "input": {"model": {"job": "f"}, "classifier": {"job": "clf2"}, "n": 20}}"#) == nil)
        // A perceptual loss on a 2-D model is refused at submit (the classifier takes images).
        #expect(prepareError(#"{"type": "train", "input": {"perceptual": {"classifier": {"job": "clf"}}}}"#)?.pointer == "/input/perceptual/classifier")
    }
}
