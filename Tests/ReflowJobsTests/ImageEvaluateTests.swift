import Foundation
import Testing
import ReflowEngine
import ReflowFlow
import ReflowStore
import ReflowCodec
@testable import ReflowJobs

/// The image branch of the evaluate job: metric sanity on degraded real images, and a whole
/// train → classify → evaluate chain on builtin:shapes.
@Suite("Image evaluation")
struct ImageEvaluateTests {
    /// A tiny classifier trained here, and its features of a set of images.
    nonisolated(unsafe) static let classifier: ClassifierNetwork = {
        let train = try! BuiltinImageSets.load("shapes", split: .train).subset(Array(2000..<3500))
        let c = ClassifierConfig(kind: .cnn, channels: [8, 16], features: 32, imageShape: [1, 28, 28], classes: 10)
        let t = try! ClassifierTrainer(c, images: train, batchSize: 64, learningRate: 3e-3, seed: 1, threads: 2)
        for _ in 0..<150 { t.trainStep() }
        return t.network
    }()

    static func features(_ x: [Float], _ rows: Int) -> [Float] { classifier.evaluate(x, rows: rows, threads: 2).features }

    /// k passes of a 3×3 box blur (edges clamped) over 28×28 single-channel images.
    static func blur(_ x: [Float], passes: Int) -> [Float] {
        var a = x
        for _ in 0..<passes {
            var b = a
            for img in 0..<(a.count / 784) {
                for i in 0..<28 {
                    for j in 0..<28 {
                        var s: Float = 0
                        for di in -1...1 { for dj in -1...1 {
                            let ii = min(27, max(0, i + di)), jj = min(27, max(0, j + dj))
                            s += a[img * 784 + ii * 28 + jj]
                        } }
                        b[img * 784 + i * 28 + j] = s / 9
                    }
                }
            }
            a = b
        }
        return a
    }

    @Test("FD and KID rise monotonically with blur and with noise; real-vs-real FD is far below real-vs-noise")
    func monotonic() throws {
        let n = 400
        let reference = try BuiltinImageSets.load("shapes", split: .test).tensor(Array(0..<n)).data
        let other = try BuiltinImageSets.load("shapes", split: .train).tensor(Array(0..<n)).data  // disjoint real images
        let d = 32
        let real = Self.features(reference, n)
        let stats = try FeatureStats(features: real, d: d)
        func score(_ x: [Float]) throws -> ImageMetrics {
            try ImageEvaluation.metrics(real: real, realStats: stats, fake: Self.features(x, n), d: d, kidSubsets: 20, seed: 3, threads: 2)
        }
        let floor = try score(other)
        var rng = Random(seed: 9)
        let noise = rng.normal([n, 784]).data
        let blurred = try [1, 2, 4].map { try score(Self.blur(other, passes: $0)) }
        let noised = try [Float(0.2), 0.5, 1.0].map { s in try score(zip(other, noise).map { min(1, max(-1, $0 + s * $1)) }) }
        let pureNoise = try score(rng.uniform([n, 784], low: -1, high: 1).data)
        for series in [[floor] + blurred, [floor] + noised] {
            for (a, b) in zip(series, series.dropFirst()) {
                #expect(b.frechetDistance > a.frechetDistance, "FD \(series.map(\.frechetDistance))")
                #expect(b.kid.mean > a.kid.mean, "KID \(series.map(\.kid.mean))")
            }
        }
        #expect(floor.frechetDistance < 0.05 * pureNoise.frechetDistance, "real-vs-real \(floor.frechetDistance), real-vs-noise \(pureNoise.frechetDistance)")
        #expect(floor.precision > 0.5 && floor.recall > 0.5 && pureNoise.precision < floor.precision)
    }

    @Test("train (tiny U-Net) → classify → evaluate: every section present with finite numbers and the floor next to them")
    func chain() throws {
        let dir = try JobsDir()
        defer { dir.remove() }
        try dir.run("unet", #"{"type": "train", "input": {"data": {"kind": "images", "dataset": "builtin:shapes", "limit": 300}, "model": {"kind": "unet", "channels": [8], "blocksPerLevel": 1, "groups": 4}, "batchSize": 16, "steps": 4, "logEvery": 2, "previewPoints": 0}}"#)
        try dir.run("cls", tinyClassify(steps: 60))
        func prepareError(_ json: String) -> SpecError? {
            do { _ = try JobRunner.prepare(try SpecParser.parse(Array(json.utf8)), resolver: dir.resolver); return nil } catch { return error }
        }
        #expect(prepareError(#"{"type": "evaluate", "input": {"model": {"job": "unet"}}}"#)?.pointer == "/input/classifier")
        #expect(prepareError(#"{"type": "evaluate", "input": {"model": {"job": "unet"}, "classifier": {"job": "nope"}}}"#)?.pointer == "/input/classifier/job")
        try writeNPYDataset(dir.path + "/small", n: 40, side: 8)
        try dir.run("cls8", #"{"type": "classify", "input": {"data": {"kind": "images", "dataset": "small"}, "model": {"kind": "mlp", "hidden": [8]}, "steps": 3, "batchSize": 8}}"#)
        let other = prepareError(#"{"type": "evaluate", "input": {"model": {"job": "unet"}, "classifier": {"job": "cls8"}}}"#)
        #expect(other?.pointer == "/input/classifier" && other?.message.contains("8") == true)
        #expect(prepareError(#"{"type": "evaluate", "input": {"model": {"job": "unet"}, "classifier": {"job": "cls"}, "target": {"kind": "twoMoons"}}}"#)?.pointer == "/input/target")

        let spec = #"{"type": "evaluate", "input": {"model": {"job": "unet"}, "classifier": {"job": "cls"}, "n": 64, "trainImages": 200, "kidSubsets": 10, "solvers": [{"kind": "euler", "steps": 1}, {"kind": "euler", "steps": 2}]}}"#
        let prepared = try JobRunner.prepare(try SpecParser.parse(Array(spec.utf8)), resolver: dir.resolver)
        #expect(prepared.input(as: EvaluateSpec.self)?.target == .images(ImageDataRef(dataset: "builtin:shapes", split: .test)))
        let estimate = try JobRunner.estimate(prepared, resolver: dir.resolver, threads: 2)
        #expect(estimate.peakBytes > JobRunner.processBaseline)
        let r = try dir.run("ev", spec)
        let ev = try #require(r.imageEvaluation)
        #expect(ev.n == 64 && ev.realImages == 64 && ev.trainImages == 200 && ev.featureDimension == 32 && ev.classes == 10)
        #expect(ev.classifierTestAccuracy != nil && ev.realLabelHistogram.reduce(0, +) == 64)
        #expect(ev.rows.count == 2 && ev.rows.map(\.nfe) == [1, 2])
        func finite(_ m: ImageMetrics) -> Bool {
            [m.frechetDistance, m.kid.mean, m.kid.std, m.precision, m.recall, m.density, m.coverage].allSatisfy(\.isFinite)
        }
        #expect(finite(ev.floor))
        for row in ev.rows {
            #expect(finite(row.metrics) && row.floor == ev.floor)
            #expect(row.metrics.frechetDistance > ev.floor.frechetDistance, "a 4-step U-Net is far from the data")
            #expect(row.memorisation.medianRatio.isFinite && row.labelHistogram.reduce(0, +) == 64)
            #expect(row.maxClassFraction >= row.minClassFraction)
            let png = try Data(contentsOf: URL(fileURLWithPath: dir.path + "/ev/" + row.grid))
            #expect(png.starts(with: [0x89, 0x50, 0x4E, 0x47]))
        }
        #expect(ev.rows.map(\.grid) == ["samples_euler-1.png", "samples_euler-2.png"])
        #expect(r.evaluation == nil)
    }
}
