public import ReflowEngine
public import ReflowAutograd
public import ReflowNN
import Foundation

/// Architecture of an image classifier that reflowd trains per dataset (`classify` jobs) and
/// whose penultimate features the image `evaluate` job compares (Fréchet distance, KID, …).
///
/// Wire JSON: `{"kind": "mlp", "hidden": [256, 128]}`,
/// `{"kind": "cnn", "channels": [32, 64], "features": 128}` or
/// `{"kind": "lenet", "channels": [6, 16], "hidden": [120, 84]}`; absent keys take the defaults
/// of their kind.
/// `imageShape` and `classes` come from the training data (a classify job fills them in).
///
///     mlp:  flatten → Linear(C·H·W → h₀) act → … → Linear(h_{L−2} → h_{L−1}) act   = features
///           → Linear(h_{L−1} → classes)                                           = logits
///     cnn:  per level l: Conv3×3(c_{l−1} → c_l, pad 1) act, Conv3×3(c_l → c_l, stride 2, pad 1) act
///           → flatten → Linear(c_{L−1}·h·w → features) act                         = features
///           → Linear(features → classes)                                          = logits
///     lenet: Conv5×5(C → c₀, pad 2) act, AvgPool2, Conv5×5(c₀ → c₁) act, AvgPool2
///           → flatten → Linear(c₁·(H/4 − 3)·(W/4 − 3) → h₀) act → … act           = features
///           → Linear(h_last → classes)                                            = logits
///     (LeNet-5, LeCun et al. 1998, with average-pooling subsampling: 28×28 → 28 → 14 → 10 → 5.)
///
/// PyTorch `state_dict` names: `layers.<i>.weight|bias` (mlp and lenet hidden layers),
/// `convs.<j>.weight|bias` (cnn: two per level; lenet: two), `fc.weight|bias` (cnn feature
/// layer), `head.weight|bias` (all). Activations are named after the layer they follow, which
/// is how the dead-neuron rate reports them.
/// ReLU is the default activation (the pruning studies need ReLU classifiers).
public struct ClassifierConfig: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable, CaseIterable { case mlp, cnn, lenet }

    public var kind: Kind
    /// Hidden widths of an MLP or of LeNet's fully connected part (the last one is the feature width).
    public var hidden: [Int]
    /// Channels per level of a CNN (each level halves the resolution); LeNet's two convolutions.
    public var channels: [Int]
    /// Width of a CNN's feature layer.
    public var features: Int
    public var activation: Activation
    /// [C, H, W] of the images (from the data; nil until known).
    public var imageShape: [Int]?
    /// Number of classes (from the data's labels; nil until known).
    public var classes: Int?

    public init(kind: Kind = .cnn, hidden: [Int] = [256, 128], channels: [Int] = [32, 64], features: Int = 128,
                activation: Activation = .relu, imageShape: [Int]? = nil, classes: Int? = nil) {
        self.kind = kind
        self.hidden = hidden
        self.channels = channels
        self.features = features
        self.activation = activation
        self.imageShape = imageShape
        self.classes = classes
    }

    enum CodingKeys: String, CodingKey { case kind, hidden, channels, features, activation, imageShape, classes }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        kind = try c.decodeIfPresent(Kind.self, forKey: .kind) ?? ClassifierConfig().kind
        let d = ClassifierConfig.defaults(kind)
        hidden = try c.decodeIfPresent([Int].self, forKey: .hidden) ?? d.hidden
        channels = try c.decodeIfPresent([Int].self, forKey: .channels) ?? d.channels
        features = try c.decodeIfPresent(Int.self, forKey: .features) ?? d.features
        activation = try c.decodeIfPresent(Activation.self, forKey: .activation) ?? d.activation
        imageShape = try c.decodeIfPresent([Int].self, forKey: .imageShape)
        classes = try c.decodeIfPresent(Int.self, forKey: .classes)
    }

    /// Writes only the keys of its kind (an MLP has no `channels`).
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(kind, forKey: .kind)
        switch kind {
        case .mlp: try c.encode(hidden, forKey: .hidden)
        case .cnn: try c.encode(channels, forKey: .channels); try c.encode(features, forKey: .features)
        case .lenet: try c.encode(channels, forKey: .channels); try c.encode(hidden, forKey: .hidden)
        }
        try c.encode(activation, forKey: .activation)
        try c.encodeIfPresent(imageShape, forKey: .imageShape)
        try c.encodeIfPresent(classes, forKey: .classes)
    }

    /// The defaults of a kind (LeNet-5's widths for `lenet`).
    public static func defaults(_ kind: Kind) -> ClassifierConfig {
        kind == .lenet ? ClassifierConfig(kind: .lenet, hidden: [120, 84], channels: [6, 16]) : ClassifierConfig(kind: kind)
    }

    /// Canonical JSON (sorted keys): what artifacts record under ``metadataKey``.
    public var canonicalJSON: [UInt8] {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return Array((try? e.encode(self)) ?? Data())
    }

    /// Safetensors metadata key of a classifier's config.
    public static let metadataKey = "reflowd.classifier_config"

    /// The width of the penultimate (feature) layer.
    public var featureDimension: Int { kind == .cnn ? features : (hidden.last ?? 0) }

    /// LeNet's spatial size after both convolutions and poolings: (side/2 − 4)/2.
    static func lenetSide(_ side: Int) -> Int { (side / 2 - 4) / 2 }

    /// The spatial size after `levels` stride-2 convolutions (kernel 3, padding 1).
    static func downsampled(_ side: Int, levels: Int) -> Int {
        var s = side
        for _ in 0..<levels { s = (s - 1) / 2 + 1 }
        return s
    }

    /// The first invalid field as (JSON pointer relative to this object, message), or nil.
    /// `imageShape` and `classes` are checked only when present.
    public func validationError() -> FieldError? {
        switch kind {
        case .mlp:
            if !(1...8).contains(hidden.count) { return ("/hidden", "must list 1 to 8 hidden widths, got \(hidden.count)") }
            for (i, h) in hidden.enumerated() where !(1...8192).contains(h) { return ("/hidden/\(i)", "must be in [1, 8192], got \(h)") }
        case .cnn:
            if !(1...5).contains(channels.count) { return ("/channels", "must list 1 to 5 levels, got \(channels.count)") }
            for (i, c) in channels.enumerated() where !(1...1024).contains(c) { return ("/channels/\(i)", "must be in [1, 1024], got \(c)") }
            if !(1...4096).contains(features) { return ("/features", "must be in [1, 4096], got \(features)") }
        case .lenet:
            if channels.count != 2 { return ("/channels", "must list LeNet's 2 convolution widths, got \(channels.count)") }
            for (i, c) in channels.enumerated() where !(1...1024).contains(c) { return ("/channels/\(i)", "must be in [1, 1024], got \(c)") }
            if !(1...4).contains(hidden.count) { return ("/hidden", "must list 1 to 4 hidden widths, got \(hidden.count)") }
            for (i, h) in hidden.enumerated() where !(1...8192).contains(h) { return ("/hidden/\(i)", "must be in [1, 8192], got \(h)") }
        }
        if let s = imageShape {
            guard s.count == 3 else { return ("/imageShape", "must be [channels, height, width]") }
            if !(1...4).contains(s[0]) { return ("/imageShape/0", "channels must be 1 to 4, got \(s[0])") }
            for i in 1...2 where !(2...256).contains(s[i]) { return ("/imageShape/\(i)", "must be in [2, 256], got \(s[i])") }
            if kind == .lenet {
                for i in 1...2 where s[i] % 4 != 0 || s[i] < 12 {
                    return ("/imageShape/\(i)", "LeNet needs sides that are multiples of 4 and at least 12 (two 2×2 poolings around a 5×5 convolution), got \(s[i])")
                }
            }
        }
        if let k = classes, !(2...1000).contains(k) { return ("/classes", "must be in [2, 1000], got \(k)") }
        return nil
    }

    /// The number of scalar parameters (needs `imageShape` and `classes`; 0 until known).
    public var parameterCount: Int {
        guard let s = imageShape, let k = classes else { return 0 }
        let inputs = s.reduce(1, *)
        switch kind {
        case .mlp:
            var p = 0, prev = inputs
            for h in hidden { p += prev * h + h; prev = h }
            return p + prev * k + k
        case .cnn:
            var p = 0, prev = s[0]
            for c in channels { p += prev * c * 9 + c + c * c * 9 + c; prev = c }
            let side = Self.downsampled(s[1], levels: channels.count) * Self.downsampled(s[2], levels: channels.count)
            return p + prev * side * features + features + features * k + k
        case .lenet:
            var p = s[0] * channels[0] * 25 + channels[0] + channels[0] * channels[1] * 25 + channels[1]
            var prev = channels[1] * Self.lenetSide(s[1]) * Self.lenetSide(s[2])
            for h in hidden { p += prev * h + h; prev = h }
            return p + prev * k + k
        }
    }

    /// Floats of activations recorded per image in a training step (conv and activation outputs,
    /// the convolutions' unfolded inputs, the logits and the kept softmax); double it for their
    /// gradients. 0 until `imageShape` and `classes` are known.
    public var activationFloatsPerRow: Int {
        guard let s = imageShape, let k = classes else { return 0 }
        var f = s.reduce(1, *) + 3 * k
        switch kind {
        case .mlp:
            for h in hidden { f += 2 * h }
        case .cnn:
            var prev = s[0], h = s[1], w = s[2]
            for c in channels {
                f += 2 * c * h * w + prev * 9 * h * w          // conv, act, unfolded input
                let h2 = (h - 1) / 2 + 1, w2 = (w - 1) / 2 + 1
                f += 2 * c * h2 * w2 + c * 9 * h2 * w2
                prev = c; h = h2; w = w2
            }
            f += 2 * features
        case .lenet:
            let h = s[1], w = s[2], c0 = channels[0], c1 = channels[1]
            f += 2 * c0 * h * w + s[0] * 25 * h * w + c0 * h * w / 4          // conv, act, unfolded input, pool
            let h2 = h / 2 - 4, w2 = w / 2 - 4
            f += 2 * c1 * h2 * w2 + c0 * 25 * h2 * w2 + c1 * h2 * w2 / 4
            for x in hidden { f += 2 * x }
        }
        return f
    }

    /// Builds the network with PyTorch default initialisation from `rng`.
    /// - Precondition: valid, with `imageShape` and `classes` set.
    public func makeNetwork(rng: inout Random) -> ClassifierNetwork {
        ClassifierNetwork(self, rng: &rng)
    }

    /// Builds the network holding `stateDict` (names and shapes checked).
    public func makeNetwork(stateDict: [String: Tensor]) throws -> ClassifierNetwork {
        var rng = Random(seed: 0)
        let net = ClassifierNetwork(self, rng: &rng)
        try net.load(stateDict: stateDict)
        return net
    }
}

/// A classifier built from a ``ClassifierConfig``: image rows → (features, logits).
public final class ClassifierNetwork: Module {
    public let config: ClassifierConfig
    let layers: [Linear]
    let convs: [Conv2d]
    let fc: Linear?
    let head: Linear

    init(_ config: ClassifierConfig, rng: inout Random) {
        precondition(config.validationError() == nil && config.imageShape != nil && config.classes != nil,
                     "ClassifierNetwork: invalid or incomplete config")
        self.config = config
        let s = config.imageShape!, k = config.classes!
        switch config.kind {
        case .mlp:
            var ls = [Linear](), prev = s.reduce(1, *)
            for h in config.hidden { ls.append(Linear(prev, h, rng: &rng)); prev = h }
            layers = ls
            convs = []
            fc = nil
            head = Linear(prev, k, rng: &rng)
        case .cnn:
            var cs = [Conv2d](), prev = s[0]
            for c in config.channels {
                cs.append(Conv2d(prev, c, kernel: 3, stride: 1, padding: 1, rng: &rng))
                cs.append(Conv2d(c, c, kernel: 3, stride: 2, padding: 1, rng: &rng))
                prev = c
            }
            let l = config.channels.count
            let flat = prev * ClassifierConfig.downsampled(s[1], levels: l) * ClassifierConfig.downsampled(s[2], levels: l)
            layers = []
            convs = cs
            fc = Linear(flat, config.features, rng: &rng)
            head = Linear(config.features, k, rng: &rng)
        case .lenet:
            let c = config.channels
            convs = [Conv2d(s[0], c[0], kernel: 5, stride: 1, padding: 2, rng: &rng),
                     Conv2d(c[0], c[1], kernel: 5, stride: 1, padding: 0, rng: &rng)]
            var ls = [Linear](), prev = c[1] * ClassifierConfig.lenetSide(s[1]) * ClassifierConfig.lenetSide(s[2])
            for h in config.hidden { ls.append(Linear(prev, h, rng: &rng)); prev = h }
            layers = ls
            fc = nil
            head = Linear(prev, k, rng: &rng)
        }
    }

    public func namedParameters() -> [(name: String, parameter: Parameter)] {
        var p = [(name: String, parameter: Parameter)]()
        // Forward order: convolutions, then the fully connected layers.
        for (i, c) in convs.enumerated() { p += prefixed("convs.\(i)", c.namedParameters()) }
        for (i, l) in layers.enumerated() { p += prefixed("layers.\(i)", l.namedParameters()) }
        if let fc { p += prefixed("fc", fc.namedParameters()) }
        p += prefixed("head", head.namedParameters())
        return p
    }

    /// x: [B, C·H·W] (or [B, C, H, W]) pixels in [−1, 1] → features [B, F] and logits [B, classes].
    public func callAsFunction(_ x: Var) -> (features: Var, logits: Var) {
        let h = forward(x).features
        return (h, head(h))
    }

    /// The activation of every hidden layer (convolutions: [B, C, H, W] before pooling; fully
    /// connected: [B, F]) in forward order, and the penultimate features. The taps of the
    /// perceptual premetric (``PerceptualLoss``).
    public func activations(_ x: Var) -> [Var] { forward(x).taps }

    private func forward(_ x: Var) -> (features: Var, taps: [Var]) {
        let g = x.graph, act = config.activation.op
        let b = x.shape[0], s = config.imageShape!
        var h: Var, taps = [Var]()
        switch config.kind {
        case .mlp:
            h = x.shape.count == 2 ? x : g.reshape(x, [b, s.reduce(1, *)])
            for (i, l) in layers.enumerated() { h = g.activation(act, l(h), name: "layers.\(i)"); taps.append(h) }
        case .cnn:
            h = g.reshape(x, [b] + s)
            for (j, c) in convs.enumerated() { h = g.activation(act, c(h), name: "convs.\(j)"); taps.append(h) }
            h = g.reshape(h, [b, h.value.count / max(1, b)])
            h = g.activation(act, fc!(h), name: "fc")
            taps.append(h)
        case .lenet:
            h = g.reshape(x, [b] + s)
            for (j, c) in convs.enumerated() {
                let a = g.activation(act, c(h), name: "convs.\(j)")
                taps.append(a)
                h = g.avgPool2x2(a)
            }
            h = g.reshape(h, [b, h.value.count / max(1, b)])
            for (i, l) in layers.enumerated() { h = g.activation(act, l(h), name: "layers.\(i)"); taps.append(h) }
        }
        return (h, taps)
    }

    /// Features, logits and predicted labels of `rows` images (no gradients), split into blocks
    /// of at most `blockRows` rows over `threads` workers (each with its own graph and a copy of
    /// the weights). Results do not depend on `threads`.
    ///
    /// - Parameter x: `rows` · C·H·W floats in [−1, 1], row-major.
    public func evaluate(_ x: [Float], rows: Int, threads: Int = 1, blockRows: Int = 256) -> ClassifierOutput {
        let per = config.imageShape!.reduce(1, *), f = config.featureDimension, k = config.classes!
        precondition(x.count == rows * per, "ClassifierNetwork.evaluate: \(x.count) values for \(rows) rows of \(per)")
        var features = [Float](repeating: 0, count: rows * f), logits = [Float](repeating: 0, count: rows * k)
        let blocks = (rows + blockRows - 1) / max(1, blockRows)
        let workers = max(1, min(threads, blocks))
        let weights = stateDict(), cfg = config
        features.withUnsafeMutableBufferPointer { fb in
            logits.withUnsafeMutableBufferPointer { lb in
                x.withUnsafeBufferPointer { xb in
                    let pf = SendableMutablePointer(fb.baseAddress), pl = SendableMutablePointer(lb.baseAddress)
                    let px = SendablePointer(xb.baseAddress)
                    parallelChunks(count: workers, threads: workers) { range in
                        for w in range {
                            // One network per worker: the graph reads parameters, nothing is shared.
                            guard let net = try? cfg.makeNetwork(stateDict: weights) else { continue }
                            let g = Graph(threads: 1, gradEnabled: false)
                            var blk = w
                            while blk < blocks {
                                let lo = blk * blockRows, hi = min(rows, lo + blockRows), n = hi - lo
                                g.reset()
                                let input = g.constant(shape: [n, per]) { $0.baseAddress!.update(from: px.base! + lo * per, count: n * per) }
                                let out = net(input)
                                g.read(out.features.id) { (pf.base! + lo * f).update(from: $0, count: n * f) }
                                g.read(out.logits.id) { (pl.base! + lo * k).update(from: $0, count: n * k) }
                                blk += workers
                            }
                        }
                    }
                }
            }
        }
        var labels = [Int32](repeating: 0, count: rows)
        for r in 0..<rows {
            var best = 0
            for j in 1..<max(1, k) where logits[r * k + j] > logits[r * k + best] { best = j }
            labels[r] = Int32(best)
        }
        return ClassifierOutput(features: features, logits: logits, labels: labels, featureDimension: f, classes: k)
    }
}

/// What a classifier computes for a set of images.
public struct ClassifierOutput: Sendable {
    /// Penultimate-layer features, [n, featureDimension] row-major.
    public var features: [Float]
    /// Logits, [n, classes] row-major.
    public var logits: [Float]
    /// Predicted class (arg-max logit, lowest index on ties) per image.
    public var labels: [Int32]
    public var featureDimension: Int
    public var classes: Int

    /// Fraction of `truth` predicted correctly, and per class (nil for a class absent from `truth`).
    public func accuracy(_ truth: [Int32]) -> (overall: Double, perClass: [Double?]) {
        var hit = [Int](repeating: 0, count: classes), count = [Int](repeating: 0, count: classes)
        var total = 0
        for (p, t) in zip(labels, truth) where t >= 0 && Int(t) < classes {
            count[Int(t)] += 1
            if p == t { hit[Int(t)] += 1; total += 1 }
        }
        let n = count.reduce(0, +)
        return (n > 0 ? Double(total) / Double(n) : 0,
                (0..<classes).map { count[$0] > 0 ? Double(hit[$0]) / Double(count[$0]) : nil })
    }

    /// Images predicted as each class.
    public var histogram: [Int] {
        var h = [Int](repeating: 0, count: classes)
        for l in labels { h[Int(l)] += 1 }
        return h
    }
}
