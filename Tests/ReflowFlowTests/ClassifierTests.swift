import Foundation
import Testing
import ReflowTestSupport
import ReflowEngine
import ReflowNN
@testable import ReflowFlow

/// The classify job's model (ClassifierConfig, ClassifierNetwork, ClassifierTrainer).
@Suite("Classifier")
struct ClassifierTests {
    static let shapes = try! BuiltinImageSets.load("shapes", split: .train).subset(Array(0..<1200))
    static let held = try! BuiltinImageSets.load("shapes", split: .test).subset(Array(0..<400))

    @Test("wire JSON: partial objects over the defaults, kind-specific keys, validation pointers")
    func config() throws {
        let d = try JSONDecoder().decode(ClassifierConfig.self, from: Data(#"{"kind": "mlp"}"#.utf8))
        #expect(d.kind == .mlp && d.hidden == [256, 128] && d.activation == .relu && d.featureDimension == 128)
        let text = String(decoding: d.canonicalJSON, as: UTF8.self)
        #expect(!text.contains("channels") && text.contains("hidden"))
        let c = try JSONDecoder().decode(ClassifierConfig.self, from: Data(#"{"kind": "cnn", "channels": [8], "features": 16}"#.utf8))
        #expect(try JSONDecoder().decode(ClassifierConfig.self, from: Data(c.canonicalJSON)) == c)
        #expect(ClassifierConfig(kind: .mlp, hidden: []).validationError()?.pointer == "/hidden")
        #expect(ClassifierConfig(kind: .mlp, hidden: [0]).validationError()?.pointer == "/hidden/0")
        #expect(ClassifierConfig(channels: [8, 2000]).validationError()?.pointer == "/channels/1")
        #expect(ClassifierConfig(features: 0).validationError()?.pointer == "/features")
        #expect(ClassifierConfig(imageShape: [1, 28]).validationError()?.pointer == "/imageShape")
        #expect(ClassifierConfig(classes: 1).validationError()?.pointer == "/classes")
        #expect(ClassifierConfig().validationError() == nil)
    }

    @Test("parameter count and PyTorch-style names match the built network", arguments: ClassifierConfig.Kind.allCases)
    func parameters(_ kind: ClassifierConfig.Kind) {
        let c = ClassifierConfig(kind: kind, hidden: [32, 16], channels: [4, 8], features: 12, imageShape: [1, 28, 28], classes: 10)
        var rng = Random(seed: 1)
        let net = c.makeNetwork(rng: &rng)
        #expect(net.parameterCount == c.parameterCount)
        let names = net.namedParameters().map(\.name)
        switch kind {
        case .mlp: #expect(names == ["layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias", "head.weight", "head.bias"])
        case .cnn:
            #expect(names.prefix(2) == ["convs.0.weight", "convs.0.bias"] && names.contains("convs.3.weight") && names.suffix(4) == ["fc.weight", "fc.bias", "head.weight", "head.bias"])
            // 28 → 14 → 7 after two stride-2 levels.
            #expect(net.stateDict()["fc.weight"]?.shape == [12, 8 * 7 * 7])
        case .lenet:
            #expect(names == ["convs.0.weight", "convs.0.bias", "convs.1.weight", "convs.1.bias", "layers.0.weight", "layers.0.bias",
                              "layers.1.weight", "layers.1.bias", "head.weight", "head.bias"])
            // 28 → 28 (5×5, padding 2) → 14 (pool) → 10 (5×5) → 5 (pool): 8 channels · 5 · 5 inputs.
            #expect(net.stateDict()["layers.0.weight"]?.shape == [32, 8 * 5 * 5])
        }
        #expect(c.activationFloatsPerRow > 0)
        let out = net.evaluate(Self.held.tensor(Array(0..<5)).data, rows: 5)
        #expect(out.features.count == 5 * c.featureDimension && out.logits.count == 50 && out.labels.count == 5)
        #expect(out.features.allSatisfy { $0 >= 0 }, "ReLU features")
    }

    @Test("features and labels do not depend on the thread count (bit for bit) nor, beyond rounding, on the block size")
    func evaluateThreads() {
        let c = ClassifierConfig(kind: .cnn, channels: [4, 8], features: 16, imageShape: [1, 28, 28], classes: 10)
        var rng = Random(seed: 2)
        let net = c.makeNetwork(rng: &rng)
        let x = Self.held.tensor(Array(0..<37)).data
        let a = net.evaluate(x, rows: 37, threads: 1, blockRows: 8)
        let b = net.evaluate(x, rows: 37, threads: 2, blockRows: 8)
        #expect(a.features == b.features && a.logits == b.logits && a.labels == b.labels)
        // Other block sizes are other GEMM shapes: OpenBLAS may round them differently (some
        // kernels do, e.g. its Haswell kernels on AVX-512 CPUs).
        let big = net.evaluate(x, rows: 37, threads: 1, blockRows: 64)
        expectClose(Tensor(shape: [a.features.count], data: big.features), Tensor(shape: [a.features.count], data: a.features), atol: 1e-5, rtol: 1e-5)
        expectClose(Tensor(shape: [a.logits.count], data: big.logits), Tensor(shape: [a.logits.count], data: a.logits), atol: 1e-5, rtol: 1e-5)
    }

    @Test("a tiny CNN and MLP learn builtin:shapes well above chance; a snapshot resumes bit for bit",
          arguments: [ClassifierConfig.Kind.mlp, .cnn])
    func learns(_ kind: ClassifierConfig.Kind) throws {
        let c = ClassifierConfig(kind: kind, hidden: [64], channels: [8, 16], features: 32, imageShape: [1, 28, 28], classes: 10)
        let t = try ClassifierTrainer(c, images: Self.shapes, batchSize: 64, learningRate: 3e-3, seed: 5, threads: 2)
        var first: Float = 0
        for i in 0..<120 {
            let l = t.trainStep()
            if i == 0 { first = l }
        }
        let out = t.network.evaluate(Self.held.tensor(Array(0..<Self.held.count)).data, rows: Self.held.count, threads: 2)
        let acc = out.accuracy(Self.held.labels!)
        #expect(acc.overall > 0.6, "\(kind): held-out accuracy \(acc.overall) (chance 0.1), first loss \(first)")
        #expect(acc.perClass.count == 10 && out.histogram.reduce(0, +) == Self.held.count)

        // Resume: 10 more steps from a snapshot equal 10 more steps of the original.
        let snap = t.snapshot()
        let u = try ClassifierTrainer(c, images: Self.shapes, batchSize: 64, learningRate: 3e-3, seed: 5, threads: 2)
        try u.restore(snap)
        for _ in 0..<10 { t.trainStep(); u.trainStep() }
        #expect(t.network.stateDict() == u.network.stateDict())
    }

    @Test("refuses unlabelled images and a config of another shape")
    func refusals() throws {
        let strokes = try BuiltinImageSets.load("strokes", split: .test)
        let c = ClassifierConfig(kind: .mlp, hidden: [8], imageShape: [1, 28, 28], classes: 10)
        #expect(throws: TrainerError.self) { try ClassifierTrainer(c, images: strokes, batchSize: 8, learningRate: 1e-3, seed: 0, threads: 1) }
        var other = c
        other.imageShape = [1, 14, 14]
        #expect(throws: TrainerError.self) { try ClassifierTrainer(other, images: Self.held, batchSize: 8, learningRate: 1e-3, seed: 0, threads: 1) }
    }
}
