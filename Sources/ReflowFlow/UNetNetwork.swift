public import ReflowEngine
public import ReflowAutograd
import ReflowNN
import Foundation

/// ResBlock(cin → cout) of ``UNetConfig``: `n1`, `c1`, `t`, `n2`, `c2`, `skip` (PyTorch names).
final class UNetResBlock: Module {
    let n1: GroupNorm, c1: Conv2d, t: Linear, n2: GroupNorm, c2: Conv2d, skip: Conv2d?
    let activation: Activation

    init(cin: Int, cout: Int, embedding: Int, groups: Int, activation: Activation, rng: inout Random) {
        n1 = GroupNorm(groups: groups, channels: cin)
        c1 = Conv2d(cin, cout, kernel: 3, padding: 1, rng: &rng)
        t = Linear(embedding, cout, rng: &rng)
        n2 = GroupNorm(groups: groups, channels: cout)
        c2 = Conv2d(cout, cout, kernel: 3, padding: 1, rng: &rng)
        skip = cin != cout ? Conv2d(cin, cout, kernel: 1, rng: &rng) : nil
        self.activation = activation
    }

    func namedParameters() -> [(name: String, parameter: Parameter)] {
        var p = prefixed("n1", n1.namedParameters()) + prefixed("c1", c1.namedParameters())
            + prefixed("t", t.namedParameters()) + prefixed("n2", n2.namedParameters()) + prefixed("c2", c2.namedParameters())
        if let skip { p += prefixed("skip", skip.namedParameters()) }
        return p
    }

    /// GroupNorm then the activation (SiLU fused into the GroupNorm kernel); a ReLU is counted
    /// by the graph's probe under `name`.
    func normAct(_ n: GroupNorm, _ x: Var, name: String) -> Var {
        activation == .silu ? n(x, silu: true) : x.graph.activation(activation.op, n(x), name: name)
    }

    /// x: [N, cin, H, W], emb: [N, E] → [N, cout, H, W]; `name` is the block's parameter prefix.
    func callAsFunction(_ x: Var, _ emb: Var, dropout: Float, seed: UInt64, name: String) -> Var {
        let g = x.graph
        var h = c1(normAct(n1, x, name: name + ".n1"))
        let tb = t(emb)                                             // [N, cout]
        h = g.binary(.add, h, g.reshape(tb, [tb.shape[0], tb.shape[1], 1, 1]))
        h = normAct(n2, h, name: name + ".n2")
        if dropout > 0 && g.isGradEnabled { h = g.dropout(h, p: dropout, seed: seed) }
        h = c2(h)
        return g.binary(.add, h, skip.map { $0(x) } ?? x)
    }
}

/// Self-attention over the positions of a feature map (DDPM's AttnBlock): GroupNorm, a 1×1
/// conv to q, k, v (`qkv`, C → 3C), multi-head softmax(qᵀk/√d)·v, a 1×1 output conv (`proj`),
/// plus the input. Names: `norm`, `qkv`, `proj` under ``UNetConfig/attentionName(_:)``.
final class UNetAttentionBlock: Module {
    let norm: GroupNorm, qkv: Conv2d, proj: Conv2d
    let heads: Int

    init(channels c: Int, groups: Int, heads: Int, rng: inout Random) {
        norm = GroupNorm(groups: groups, channels: c)
        qkv = Conv2d(c, 3 * c, kernel: 1, rng: &rng)
        proj = Conv2d(c, c, kernel: 1, rng: &rng)
        self.heads = heads
    }

    func namedParameters() -> [(name: String, parameter: Parameter)] {
        prefixed("norm", norm.namedParameters()) + prefixed("qkv", qkv.namedParameters()) + prefixed("proj", proj.namedParameters())
    }

    /// x: [N, C, H, W] → [N, C, H, W]. With a tap, V (channels 2C..<3C of the qkv projection)
    /// is offered at site `site` and may be replaced (RF-Edit); Q and K stay this pass's.
    func callAsFunction(_ x: Var, tap: (any FeatureTap)? = nil, site: String = "") -> Var {
        let g = x.graph
        let q = qkv(norm(x))                              // [N, 3C, H, W]
        var override: Tensor?
        if let tap {
            let sh = q.value.shape, n = sh[0], c = sh[1] / 3, s = sh[2...].reduce(1, *)
            let shared = tap.share(site: site, rows: n) {
                let qv = q.value.data
                var v = [Float](); v.reserveCapacity(n * c * s)
                for i in 0..<n { v.append(contentsOf: qv[((i * 3 * c + 2 * c) * s)..<((i * 3 * c + 3 * c) * s)]) }
                return v
            }
            if let shared { override = Tensor(shape: [n, c] + Array(sh[2...]), data: shared) }
        }
        let a = g.attention(q, heads: heads, valueOverride: override)   // [N, C, H, W]
        return g.binary(.add, proj(a), x)
    }
}

/// A U-Net velocity field (see ``UNetConfig`` for the architecture and names).
public final class UNet: VelocityNetwork {
    public let config: UNetConfig
    let tembIn: Linear, tembOut: Linear
    let labelEmbedding: Parameter?
    let stem: Conv2d
    let blocks: [(name: String, block: UNetResBlock)]
    /// The attention block after each ResBlock of an attention level (nil elsewhere), by block index.
    let attentions: [UNetAttentionBlock?]
    let pools: [Conv2d]      // level l → l + 1
    let upconvs: [Conv2d]    // level l → l − 1 (index l − 1)
    let onorm: GroupNorm, out: Conv2d
    let frequencies: [Float]
    /// Base seed of the dropout masks (each forward pass mixes in its flow times).
    public var dropoutSeed: UInt64 = 0

    public init(_ config: UNetConfig, rng: inout Random) {
        self.config = config
        let e = config.embedding, c = config.channels, cIn = config.imageShape[0]
        tembIn = Linear(config.features, e, rng: &rng)
        tembOut = Linear(e, e, rng: &rng)
        // nn.Embedding's default initialisation: N(0, 1).
        labelEmbedding = config.classes.map { Parameter(rng.normal([$0 + 1, e])) }
        stem = Conv2d(cIn, c[0], kernel: 3, padding: 1, rng: &rng)
        var bs = [(name: String, block: UNetResBlock)]()
        var ats = [UNetAttentionBlock?]()
        var ps = [Conv2d](), us = [Conv2d]()
        // Creation order follows rf_torch.py's __init__ (down1, pool, down2, mid, up2, upconv, up1)
        // so that a seed gives the same initial weights layer by layer.
        let plan = config.blockPlan
        var next = 0
        func addBlocks(_ prefix: String) {
            while next < plan.count && plan[next].name.hasPrefix(prefix + ".") {
                let b = plan[next]
                bs.append((b.name, UNetResBlock(cin: b.cin, cout: b.cout, embedding: e, groups: config.groups,
                                                activation: config.activation, rng: &rng)))
                ats.append(b.attention ? UNetAttentionBlock(channels: b.cout, groups: config.groups,
                                                            heads: config.attentionHeads, rng: &rng) : nil)
                next += 1
            }
        }
        for l in 0..<config.levels {
            addBlocks("down\(l + 1)")
            if l < config.levels - 1 { ps.append(Conv2d(c[l], c[l], kernel: 3, stride: 2, padding: 1, rng: &rng)) }
        }
        addBlocks("mid")
        var ucs = [Int: Conv2d]()
        for l in stride(from: config.levels - 1, through: 0, by: -1) {
            addBlocks("up\(l + 1)")
            if l > 0 { ucs[l] = Conv2d(c[l], c[l - 1], kernel: 3, padding: 1, rng: &rng) }
        }
        // rf_torch.py creates `upconv` before `up1`: the order above matches for two levels.
        for l in 1..<max(1, config.levels) { us.append(ucs[l]!) }
        blocks = bs
        attentions = ats
        pools = ps
        upconvs = us
        onorm = GroupNorm(groups: config.groups, channels: c[0])
        out = Conv2d(c[0], cIn, kernel: 3, padding: 1, rng: &rng)
        frequencies = UNet.frequencies(config.features)
    }

    /// Builds the network from `stateDict` (every tensor required, none extra, shapes checked).
    public convenience init(_ config: UNetConfig, stateDict: [String: Tensor]) throws {
        var rng = Random(seed: 0)
        self.init(config, rng: &rng)
        try load(stateDict: stateDict, strict: true)
    }

    /// ω_i = 10000^(−i/half) computed in Float as PyTorch does (`rf_torch.py`'s `sinusoidal`).
    static func frequencies(_ features: Int) -> [Float] {
        let half = features / 2
        let c = -Float(Foundation.log(10_000.0))
        return (0..<half).map { Foundation.exp(c * Float($0) / Float(half)) }
    }

    public var spec: ModelSpec { ModelSpec(config) }

    public func namedParameters() -> [(name: String, parameter: Parameter)] {
        var p = prefixed("temb.0", tembIn.namedParameters()) + prefixed("temb.2", tembOut.namedParameters())
        if let labelEmbedding { p.append(("labelEmbedding.weight", labelEmbedding)) }
        p += prefixed("stem", stem.namedParameters())
        for (i, (name, b)) in blocks.enumerated() {
            p += prefixed(name, b.namedParameters())
            if let at = attentions[i] { p += prefixed(UNetConfig.attentionName(name), at.namedParameters()) }
        }
        for (l, pool) in pools.enumerated() { p += prefixed(UNetConfig.poolName(l), pool.namedParameters()) }
        for (i, u) in upconvs.enumerated() { p += prefixed(UNetConfig.upconvName(i + 1), u.namedParameters()) }
        p += prefixed("onorm", onorm.namedParameters()) + prefixed("out", out.namedParameters())
        return p
    }

    /// x: [rows, C·H·W] (NCHW images, flattened), t: [rows], labels: [rows] or nil → v: [rows, C·H·W].
    /// A label equal to `classes` (or nil labels) is the null label of classifier-free guidance.
    public func velocity(_ graph: Graph, x: UnsafePointer<Float>, t: UnsafePointer<Float>,
                         labels: UnsafePointer<Int32>?, rows: Int) -> Var {
        velocity(graph, x: x, t: t, labels: labels, rows: rows, tap: nil)
    }

    /// The pass with RF-Edit's feature sharing: `tap` is offered each ResBlock's output (site
    /// = the block's name, `down1.0`) and each attention block's V (site `down2_attn.0`).
    public func velocity(_ graph: Graph, x: UnsafePointer<Float>, t: UnsafePointer<Float>,
                         labels: UnsafePointer<Int32>?, rows: Int, tap: (any FeatureTap)?) -> Var {
        let g = graph, shape = config.imageShape, d = shape.reduce(1, *)
        let xin = g.constant(shape: [rows] + shape) { $0.baseAddress!.update(from: x, count: rows * d) }
        let freqs = frequencies, half = freqs.count
        let phi = g.constant(shape: [rows, 2 * half]) { p in
            for r in 0..<rows {
                let tt = t[r] * 1000
                for i in 0..<half {
                    let a = Double(tt * freqs[i])
                    p[r * 2 * half + i] = Float(Foundation.cos(a))
                    p[r * 2 * half + half + i] = Float(Foundation.sin(a))
                }
            }
        }
        var emb = tembOut(g.silu(tembIn(phi)))                    // [rows, E]
        if let labelEmbedding, let k = config.classes {
            emb = g.binary(.add, emb, LabelBuffer.embedding(g, labels: labels, rows: rows, classes: k, table: labelEmbedding))
        }
        // Dropout masks differ per step and per shard without shared mutable state: the seed
        // mixes `dropoutSeed` with the bits of this call's flow times (drawn afresh every step),
        // so a run stays reproducible for a given seed and thread count.
        var seed = dropoutSeed ^ 0x5DEE_CE66_D1CE_4E5B
        if config.dropout > 0 && g.isGradEnabled {
            for r in 0..<rows { seed = (seed ^ UInt64(t[r].bitPattern)) &* 0x100_0000_01B3 }
        }
        return g.reshape(forward(xin, emb, dropoutSeed: seed, tap: tap), [rows, d])
    }

    /// x: [N, C, H, W], emb: [N, E] → [N, C, H, W]
    func forward(_ x: Var, _ emb: Var, dropoutSeed: UInt64 = 0, tap: (any FeatureTap)? = nil) -> Var {
        let g = x.graph, L = config.levels, nb = config.blocksPerLevel
        var h = stem(x)
        var skips = [Var]()
        var bi = 0
        func run(_ count: Int) {
            for _ in 0..<count {
                let name = blocks[bi].name
                h = blocks[bi].block(h, emb, dropout: config.dropout, seed: dropoutSeed &+ UInt64(bi) &* 0x9E37_79B9, name: name)
                if let tap {
                    let v = h
                    if let shared = tap.share(site: name, rows: v.shape[0], computed: { v.value.data }) {
                        h = g.constant(Tensor(shape: v.shape, data: shared))
                    }
                }
                if let at = attentions[bi] { h = at(h, tap: tap, site: UNetConfig.attentionName(name)) }
                bi += 1
            }
        }
        for l in 0..<L {
            run(nb)
            skips.append(h)
            if l < L - 1 { h = pools[l](h) }
        }
        run(2)
        for l in stride(from: L - 1, through: 0, by: -1) {
            h = g.concat([h, skips[l]], axis: 1)
            run(nb)
            if l > 0 { h = upconvs[l - 1](g.upsample2x(h)) }
        }
        let a = config.activation == .silu ? onorm(h, silu: true) : g.activation(config.activation.op, onorm(h), name: "onorm")
        return out(a)
    }
}
