import Testing
import ReflowEngine
import ReflowAutograd
import ReflowNN
@testable import ReflowFlow
import ReflowTestSupport

@Suite("U-Net velocity model")
struct UNetTests {
    static let configs: [UNetConfig] = [
        UNetConfig(),
        UNetConfig(channels: [8, 16], blocksPerLevel: 1, groups: 4),
        UNetConfig(imageShape: [3, 16, 16], channels: [8, 16, 16], blocksPerLevel: 2, groups: 2, classes: 10),
        UNetConfig(imageShape: [1, 8, 8], channels: [4], blocksPerLevel: 1, groups: 2, activation: .relu),
        UNetConfig(channels: [8, 16], blocksPerLevel: 1, groups: 4, attentionResolutions: [14], attentionHeads: 2),
    ]

    @Test("parameter count formula equals the built network's", arguments: configs)
    func parameterCount(_ c: UNetConfig) {
        var rng = Random(seed: 1)
        let net = UNet(c, rng: &rng)
        #expect(net.namedParameters().reduce(0) { $0 + $1.parameter.value.count } == c.parameterCount)
        #expect(c.validationError() == nil)
    }

    @Test("the default is rf_torch.py's UNet: 120 tensors, 678,657 parameters, PyTorch names")
    func defaultMatchesThePeer() {
        var rng = Random(seed: 1)
        let net = UNet(UNetConfig(), rng: &rng)
        let params = net.namedParameters()
        #expect(params.count == 120)
        #expect(UNetConfig().parameterCount == 678_657)
        let shapes = Dictionary(uniqueKeysWithValues: params.map { ($0.name, $0.parameter.value.shape) })
        #expect(shapes["temb.0.weight"] == [128, 64])
        #expect(shapes["temb.2.weight"] == [128, 128])
        #expect(shapes["stem.weight"] == [32, 1, 3, 3])
        #expect(shapes["down1.1.c2.weight"] == [32, 32, 3, 3])
        #expect(shapes["pool.weight"] == [32, 32, 3, 3])
        #expect(shapes["down2.0.skip.weight"] == [64, 32, 1, 1])
        #expect(shapes["mid.1.t.weight"] == [64, 128])
        #expect(shapes["up2.0.c1.weight"] == [64, 128, 3, 3])
        #expect(shapes["up2.0.skip.weight"] == [64, 128, 1, 1])
        #expect(shapes["upconv.weight"] == [32, 64, 3, 3])
        #expect(shapes["up1.0.skip.weight"] == [32, 64, 1, 1])
        #expect(shapes["up1.1.skip.weight"] == nil)
        #expect(shapes["onorm.weight"] == [32])
        #expect(shapes["out.weight"] == [1, 32, 3, 3])
        // FLOPs as rf_torch.py's forward_gflop counts them (2 × MACs of convs and linears).
        #expect(abs(Double(2 * UNetConfig().forwardFlopsPerRow) / 1e6 - 350) < 50)
    }

    @Test("gradients through the whole U-Net by finite differences (input, time embedding, weights)")
    func gradients() {
        let c = UNetConfig(imageShape: [1, 8, 8], channels: [4, 8], blocksPerLevel: 1, groups: 2)
        var rng = Random(seed: 3)
        let net = UNet(c, rng: &rng)
        let x = randn([2, 1, 8, 8], seed: 4), e = randn([2, c.embedding], seed: 5)
        let watched = [net.blocks[0].block.c1.weight, net.onorm.weight, net.pools[0].weight, net.upconvs[0].bias!]
        let r = gradCheck(inputs: [x, e], parameters: watched, options: GradCheckOptions(eps: 5e-3, atol: 2e-2, rtol: 2e-2)) { _, v in
            net.forward(v[0], v[1])
        }
        #expect(r.passed, "\(r)")
    }

    @Test("attention blocks follow each ResBlock of an attention level, with DDPM names, and pass a gradient check")
    func attentionBlocks() {
        let c = UNetConfig(imageShape: [1, 8, 8], channels: [4, 8], blocksPerLevel: 1, groups: 2, attentionResolutions: [4], attentionHeads: 2)
        var rng = Random(seed: 6)
        let net = UNet(c, rng: &rng)
        let names = Set(net.namedParameters().map(\.name))
        // Level 2 (4×4) holds down2.0, mid.0, mid.1 and up2.0: each gets norm, qkv and proj.
        for block in ["down2_attn.0", "mid_attn.0", "mid_attn.1", "up2_attn.0"] {
            for p in ["norm.weight", "norm.bias", "qkv.weight", "qkv.bias", "proj.weight", "proj.bias"] {
                #expect(names.contains(block + "." + p), "missing \(block).\(p)")
            }
        }
        #expect(!names.contains { $0.hasPrefix("down1_attn") })
        #expect(net.namedParameters().reduce(0) { $0 + $1.parameter.value.count } == c.parameterCount)
        let x = randn([2, 1, 8, 8], seed: 7), e = randn([2, c.embedding], seed: 8)
        let watched = [net.attentions[1]!.qkv.weight, net.attentions[1]!.proj.weight, net.attentions[1]!.norm.weight]
        let r = gradCheck(inputs: [x, e], parameters: watched, options: GradCheckOptions(eps: 5e-3, atol: 2e-2, rtol: 2e-2)) { _, v in
            net.forward(v[0], v[1])
        }
        #expect(r.passed, "\(r)")
    }

    @Test("dropout: reproducible masks from the flow times during training, none when sampling")
    func dropoutMasks() {
        var c = UNetConfig(imageShape: [1, 8, 8], channels: [4, 8], blocksPerLevel: 1, groups: 2)
        c.dropout = 0.5
        var rng = Random(seed: 9)
        let net = UNet(c, rng: &rng)
        let x = randn([2, 64], seed: 10).data
        func v(_ t: [Float], grad: Bool) -> [Float] {
            let g = Graph(threads: 1, gradEnabled: grad)
            return x.withUnsafeBufferPointer { xs in t.withUnsafeBufferPointer { ts in
                net.velocity(g, x: xs.baseAddress!, t: ts.baseAddress!, labels: nil, rows: 2).value.data
            } }
        }
        #expect(v([0.3, 0.7], grad: true) == v([0.3, 0.7], grad: true))
        // Same times through a different mask: compare the no-grad output with two grad outputs.
        let plain = v([0.3, 0.7], grad: false)
        #expect(v([0.3, 0.7], grad: true) != plain)
        var c0 = c
        c0.dropout = 0
        var rng0 = Random(seed: 9)
        let same = UNet(c0, rng: &rng0)
        let g0 = Graph(threads: 1, gradEnabled: false)
        let t: [Float] = [0.3, 0.7]
        let noDropout = x.withUnsafeBufferPointer { xs in t.withUnsafeBufferPointer { ts in
            same.velocity(g0, x: xs.baseAddress!, t: ts.baseAddress!, labels: nil, rows: 2).value.data
        } }
        #expect(plain == noDropout, "no dropout outside training")
    }

    @Test("forward values do not depend on the thread count; labels change the output")
    func threadsAndLabels() {
        let c = UNetConfig(imageShape: [1, 8, 8], channels: [4, 8], blocksPerLevel: 1, groups: 2, classes: 3)
        var rng = Random(seed: 6)
        let net = UNet(c, rng: &rng)
        let x = randn([3, 64], seed: 7)
        let t: [Float] = [0, 0.5, 1]
        func run(_ threads: Int, _ labels: [Int32]?) -> [Float] {
            let g = Graph(threads: threads, gradEnabled: false)
            return x.data.withUnsafeBufferPointer { px in t.withUnsafeBufferPointer { pt in
                if let labels {
                    return labels.withUnsafeBufferPointer { pl in
                        net.velocity(g, x: px.baseAddress!, t: pt.baseAddress!, labels: pl.baseAddress!, rows: 3).value.data
                    }
                }
                return net.velocity(g, x: px.baseAddress!, t: pt.baseAddress!, labels: nil, rows: 3).value.data
            } }
        }
        #expect(run(1, [0, 1, 2]) == run(2, [0, 1, 2]))
        #expect(run(1, [0, 1, 2]) != run(1, [1, 1, 1]))
        #expect(run(1, nil) == run(1, [3, 3, 3]), "nil labels are the null label")
    }

    @Test("validation names the field")
    func validation() {
        var c = UNetConfig()
        c.channels = [30, 64]
        #expect(c.validationError()?.pointer == "/channels/0")
        c = UNetConfig(); c.imageShape = [1, 28, 28]; c.channels = [8, 8, 8, 8]
        #expect(c.validationError()?.pointer == "/channels")
        c = UNetConfig(); c.attentionResolutions = [9]
        #expect(c.validationError()?.pointer == "/attentionResolutions/0")
        c = UNetConfig(); c.imageShape = [1, 28]
        #expect(c.validationError()?.pointer == "/imageShape")
    }
}
