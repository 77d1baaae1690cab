import Foundation
import Testing
import ReflowEngine
import ReflowAutograd
import ReflowNN
@testable import ReflowFlow
import ReflowTestSupport

@Suite("LeNet-5 and structured pruning")
struct StructuredPruningTests {
    func lenet() -> ClassifierConfig {
        var c = ClassifierConfig.defaults(.lenet)
        c.imageShape = [1, 28, 28]
        c.classes = 10
        return c
    }

    @Test("LeNet-5 on 28×28: 61,706 parameters (the classic count), PyTorch names, logits of every image, ReLU layers probed")
    func lenetShape() throws {
        let c = lenet()
        #expect(c.validationError() == nil)
        var rng = Random(seed: 1)
        let net = c.makeNetwork(rng: &rng)
        #expect(net.parameterCount == 61_706 && c.parameterCount == 61_706)
        #expect(net.namedParameters().map(\.name) == ["convs.0.weight", "convs.0.bias", "convs.1.weight", "convs.1.bias",
                                                     "layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias",
                                                     "head.weight", "head.bias"])
        #expect(net.namedParameters()[4].parameter.shape == [120, 400])
        let g = Graph(gradEnabled: false)
        let probe = ActivationProbe()
        g.probe = probe
        let out = net(g.constant(randu([3, 784], seed: 2, low: -1, high: 1)))
        #expect(out.logits.shape == [3, 10] && out.features.shape == [3, 84])
        #expect(probe.order == ["convs.0", "convs.1", "layers.0", "layers.1"])
        #expect(probe.layers["convs.0"]!.total == 3 * 6 * 28 * 28 && probe.layers["convs.1"]!.everPositive.count == 16)
        // Sides must survive two poolings around the 5×5 convolution.
        var bad = c
        bad.imageShape = [1, 10, 10]
        #expect(bad.validationError()?.pointer == "/imageShape/1")
        // Wire form: kind-specific defaults.
        let decoded = try JSONDecoder().decode(ClassifierConfig.self, from: Data(#"{"kind": "lenet"}"#.utf8))
        #expect(decoded.channels == [6, 16] && decoded.hidden == [120, 84])
    }

    /// Logits of `config` with `weights` on fixed inputs.
    func logits(_ config: ClassifierConfig, _ weights: [String: Tensor]) throws -> Tensor {
        let net = try config.makeNetwork(stateDict: weights)
        let g = Graph(gradEnabled: false)
        return net(g.constant(randu([4, config.imageShape!.reduce(1, *)], seed: 9, low: -1, high: 1))).logits.value
    }

    @Test("removing units whose incoming weights are zero leaves the output unchanged (their constant act(bias) folded into the consumer)",
          arguments: [ClassifierConfig.Kind.mlp, .lenet])
    func zeroUnitsRemoved(kind: ClassifierConfig.Kind) throws {
        var c = kind == .lenet ? lenet() : ClassifierConfig(kind: .mlp, hidden: [12, 8], imageShape: [1, 6, 6], classes: 3)
        var rng = Random(seed: 4)
        var w = c.makeNetwork(rng: &rng).stateDict()
        // Zero the incoming weights of two units per pruned layer; give them positive biases.
        let layer = kind == .lenet ? "convs.1" : "layers.0"
        var weight = w[layer + ".weight"]!, bias = w[layer + ".bias"]!
        let per = weight.count / weight.shape[0]
        for u in [1, 4] {
            for j in 0..<per { weight.data[u * per + j] = 0 }
            bias.data[u] = 0.3 + Float(u) * 0.1
        }
        w[layer + ".weight"] = weight
        w[layer + ".bias"] = bias
        let units = weight.shape[0]
        let before = try logits(c, w)
        let out = StructuredPruning.prune(weights: w, links: c.unitLinks, layers: [layer], fraction: 2.0 / Double(units), activation: .relu)
        #expect(out.kept[layer]! == (0..<units).filter { $0 != 1 && $0 != 4 })
        c = c.resized([layer: units - 2])
        let after = try logits(c, out.weights)
        expectClose(after, before, atol: 1e-5, rtol: 1e-5)
        #expect(c.parameterCount == out.weights.values.reduce(0) { $0 + $1.count })
    }

    @Test("structured pruning of a velocity MLP gives per-layer widths that build and keep the largest-norm units")
    func velocityMLP() throws {
        let c = VelocityMLPConfig(dimension: 2, width: 16, depth: 3, activation: .relu)
        var rng = Random(seed: 3)
        let w = VelocityMLP(c, rng: &rng).stateDict()
        let out = StructuredPruning.prune(weights: w, links: c.unitLinks, layers: nil, fraction: 0.5, activation: .relu)
        let small = c.resized(out.kept.mapValues(\.count))
        #expect(small.hiddenWidths == [8, 8, 8] && small.validationError() == nil)
        let net = try VelocityMLP(small, stateDict: out.weights)
        #expect(net.parameterCount == small.parameterCount)
        let norms = Pruning.unitNorms(w["layers.0.weight"]!)
        let kept = out.kept["layers.0"]!, removed = Set(0..<16).subtracting(kept)
        #expect(removed.allSatisfy { r in kept.allSatisfy { norms[r] <= norms[$0] } })
        // The canonical JSON of an unpruned config does not mention widths (checkpoint digests stay as they were).
        #expect(!String(decoding: ModelSpec(c).canonicalJSON, as: UTF8.self).contains("widths"))
    }

    @Test("an MLP velocity model over images: imageShape must multiply to the dimension, and the point shape is the image's")
    func mlpImages() {
        var c = VelocityMLPConfig(dimension: 784, width: 32, depth: 2, activation: .relu)
        c.imageShape = [1, 28, 28]
        #expect(c.validationError() == nil && ModelSpec(c).pointShape == [1, 28, 28])
        c.imageShape = [1, 28, 27]
        #expect(c.validationError()?.pointer == "/imageShape")
    }
}
