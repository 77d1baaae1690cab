public import ReflowEngine
public import ReflowAutograd
public import ReflowNN
import Foundation
import Synchronization

/// The architecture of a Recurrent Inference Machine (Lønning et al. 2019; the efficient RIM of
/// Karkalousos et al., arXiv 2012.07819; mridc's `RIMBlock`/`CIRIM`; ../shared/design/ALGORITHMS.md §8).
///
/// Wire JSON (a `train` job's `model`): `{"kind": "rim", "cell": "indrnn", "features": 32,
/// "steps": 8, "cascades": 1}`. The network is fully convolutional, so one model reconstructs
/// images of any size.
///
/// Per time step τ = 1…T of each cascade, with images as real [N, 2, H, W] (Re, Im):
///
///     ∇ = Aᴴ(A·x − y)                                  data-consistency gradient [N, 2, H, W]
///     a = ReLU(Conv5×5(concat(x, ∇)))                  [N, 4, H, W] → [N, F, H, W]
///     h₁ = cell₁(a, h₁)                                 1×1 recurrent cell, F channels
///     b = ReLU(Conv3×3, dilation 2 (h₁))                [N, F, H, W]
///     h₂ = cell₂(b, h₂)
///     x = x + Conv3×3(h₂) (no bias)                     [N, 2, H, W]
///
/// Weights are shared over the T steps; hidden states start at zero. Cascades (CIRIM) repeat
/// the block with their own weights, each starting from the previous cascade's estimate, the
/// hidden states carried over as mridc's CIRIM passes them on.
///
/// State-dict names: `cascades.<c>.conv_in`, `cascades.<c>.cell1`, `cascades.<c>.conv_mid`,
/// `cascades.<c>.cell2`, `cascades.<c>.conv_out` with the cells' own names (``RecurrentCell``).
public struct RIMConfig: Codable, Sendable, Equatable, Validatable {
    /// The `kind` tag of the wire JSON.
    public static let kind = "rim"
    /// Safetensors metadata key of a RIM's config.
    public static let metadataKey = "reflowd.rim_config"

    public var cell: RecurrentCellKind
    /// Channels of the convolutions and of the hidden states (mridc: 64).
    public var features: Int
    /// Time steps T per cascade (mridc: 8).
    public var steps: Int
    /// Cascades (1: a plain RIM).
    public var cascades: Int

    public init(cell: RecurrentCellKind = .gru, features: Int = 32, steps: Int = 8, cascades: Int = 1) {
        self.cell = cell
        self.features = features
        self.steps = steps
        self.cascades = cascades
    }

    enum CodingKeys: String, CodingKey { case kind, cell, features, steps, cascades }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = RIMConfig()
        if let k = try c.decodeIfPresent(String.self, forKey: .kind), k != Self.kind {
            throw DecodingError.dataCorruptedError(forKey: .kind, in: c, debugDescription: "a RIM's kind is \"rim\", got \"\(k.prefix(40))\"")
        }
        cell = try c.decodeIfPresent(RecurrentCellKind.self, forKey: .cell) ?? d.cell
        features = try c.decodeIfPresent(Int.self, forKey: .features) ?? d.features
        steps = try c.decodeIfPresent(Int.self, forKey: .steps) ?? d.steps
        cascades = try c.decodeIfPresent(Int.self, forKey: .cascades) ?? d.cascades
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(Self.kind, forKey: .kind)
        try c.encode(cell, forKey: .cell)
        try c.encode(features, forKey: .features)
        try c.encode(steps, forKey: .steps)
        try c.encode(cascades, forKey: .cascades)
    }

    public func validationError() -> FieldError? {
        if !(1...256).contains(features) { return ("/features", "must be in [1, 256], got \(features)") }
        if !(1...64).contains(steps) { return ("/steps", "must be in [1, 64], got \(steps)") }
        if !(1...16).contains(cascades) { return ("/cascades", "must be in [1, 16], got \(cascades)") }
        return nil
    }

    /// Canonical JSON (sorted keys): what checkpoints record under ``metadataKey``.
    public var canonicalJSON: [UInt8] {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return Array((try? e.encode(self)) ?? Data())
    }

    /// Parameters of one cascade: conv 5×5 4→F (+F), two cells, dilated 3×3 F→F (+F), 3×3 F→2.
    public var parameterCount: Int {
        let f = features
        let cellParams: Int
        switch cell {
        case .gru: cellParams = 3 * (f * f + f) + 3 * f * f
        case .mgu: cellParams = 2 * (f * f + f) + 2 * f * f
        case .indrnn: cellParams = f * f + f + f
        }
        return cascades * (4 * f * 25 + f + 2 * cellParams + f * f * 9 + f + f * 2 * 9)
    }

    /// Multiply-adds of one time step per pixel (convolutions and cells; the FFTs not counted).
    public var macsPerPixelStep: Int {
        let f = features
        let perCell = (cell == .indrnn ? 1 : 2 * cell.gates) * f * f
        return 4 * f * 25 + 2 * perCell + f * f * 9 + f * 2 * 9
    }

    /// Floats kept for backward per pixel of one image over all steps (activations of every
    /// layer and gate at every step; the autograd graph of a training step).
    public var activationFloatsPerPixel: Int {
        // Per step: data consistency (AᴴA·x, Aᴴy, their difference) and the concatenated
        // input: 10; two conv+ReLU pairs and their im2col scratch: 6F; each cell about 4F per
        // gate plus 4F to combine (checked against the peak RSS of a 28×28 GRU-32 run: 522 MB);
        // the output convolution and the update: 4.
        return cascades * steps * floatsPerPixelStep
    }

    /// Floats of one time step's activations per pixel (see ``activationFloatsPerPixel``).
    var floatsPerPixelStep: Int { 14 + features * (6 + 2 * (4 * cell.gates + 4)) }

    /// Floats per pixel alive during inference, which records one time step at a time
    /// (``RIMNetwork/reconstruct(_:threads:)``): that step's activations and the carried x, h₁, h₂.
    public var inferenceFloatsPerPixel: Int { floatsPerPixelStep + 2 * (2 + 2 * features) }
}

/// A RIM network (``RIMConfig``): a ``Module`` whose forward pass records every intermediate
/// estimate on a ``Graph``.
public final class RIMNetwork: Module {
    public let config: RIMConfig
    let blocks: [Block]

    final class Block: Module {
        let convIn: Conv2d, cell1: RecurrentCell, convMid: Conv2d, cell2: RecurrentCell, convOut: Conv2d

        init(_ c: RIMConfig, rng: inout Random) {
            let f = c.features
            convIn = Conv2d(4, f, kernel: 5, padding: 2, rng: &rng)
            cell1 = c.cell.make(input: f, hidden: f, kernel: 1, rng: &rng)
            convMid = Conv2d(f, f, kernel: 3, padding: 2, dilation: 2, rng: &rng)
            cell2 = c.cell.make(input: f, hidden: f, kernel: 1, rng: &rng)
            convOut = Conv2d(f, 2, kernel: 3, padding: 1, bias: false, rng: &rng)
            // mridc's ConvNonlinear: Kaiming-normal (fan-in, ReLU gain √2) weights, zero biases;
            // the linear output convolution with gain 1.
            for (conv, gain) in [(convIn, 2.0), (convMid, 2.0), (convOut, 1.0)] {
                let s = conv.weight.value.shape
                conv.weight.value = rng.normal(s, std: Float((gain / Double(s[1] * s[2] * s[3])).squareRoot()))
                conv.bias?.value = Tensor(shape: [s[0]], data: [Float](repeating: 0, count: s[0]))
            }
        }

        /// One time step: (x, h₁, h₂) → (x + Δx, h₁', h₂').
        func step(_ x: Var, _ h1: Var, _ h2: Var, models: [ForwardModel], measurements: [ComplexTensor]) -> (Var, Var, Var) {
            let g = x.graph
            let grad = g.dataConsistencyGradient(x, models: models, measurements: measurements)
            let a = g.relu(convIn(g.concat([x, grad], axis: 1)))
            let h1 = cell1(a, h1)
            let h2 = cell2(g.relu(convMid(h1)), h2)
            return (g.binary(.add, x, convOut(h2)), h1, h2)
        }

        func namedParameters() -> [(name: String, parameter: Parameter)] {
            prefixed("conv_in", convIn.namedParameters()) + prefixed("cell1", cell1.namedParameters())
                + prefixed("conv_mid", convMid.namedParameters()) + prefixed("cell2", cell2.namedParameters())
                + prefixed("conv_out", convOut.namedParameters())
        }
    }

    /// A randomly initialised network (mridc's initialisations).
    public init(_ config: RIMConfig, rng: inout Random) {
        self.config = config
        blocks = (0..<config.cascades).map { _ in Block(config, rng: &rng) }
    }

    /// A network holding `stateDict`; throws `StateDictError` when a tensor is missing,
    /// unexpected or mis-shaped.
    public convenience init(_ config: RIMConfig, stateDict: [String: Tensor]) throws {
        var rng = Random(seed: 0)
        self.init(config, rng: &rng)
        try load(stateDict: stateDict)
    }

    public func namedParameters() -> [(name: String, parameter: Parameter)] {
        blocks.enumerated().flatMap { prefixed("cascades.\($0.offset)", $0.element.namedParameters()) }
    }

    /// Runs every cascade and time step from the initial estimate `x0` [N, 2, H, W] (usually the
    /// zero-filled Aᴴy) and returns the estimates x₁ … x_{cascades·T}, the last one the
    /// reconstruction. `models[n]` and `measurements[n]` are image n's forward model and
    /// k-space.
    public func estimates(_ x0: Var, models: [ForwardModel], measurements: [ComplexTensor]) -> [Var] {
        let g = x0.graph
        let s = x0.shape
        let hiddenShape = [s[0], config.features, s[2], s[3]]
        var h1 = g.constant(shape: hiddenShape) { $0.update(repeating: 0) }
        var h2 = h1
        var x = x0
        var out = [Var]()
        out.reserveCapacity(config.cascades * config.steps)
        for b in blocks {
            for _ in 0..<config.steps {
                (x, h1, h2) = b.step(x, h1, h2, models: models, measurements: measurements)
                out.append(x)
            }
        }
        return out
    }

    /// Per-estimate loss weights: `torch.logspace(-1, 0, steps=n)` over the n estimates,
    /// normalised to sum 1 (later estimates weigh more; the last weighs 10× the first). For one
    /// cascade this is mridc's weighting of its T steps; with cascades, reflowd spreads one
    /// logspace over all cascades·T estimates.
    public static func lossWeights(_ n: Int) -> [Float] {
        guard n > 1 else { return [1] }
        let w = (0..<n).map { pow(10.0, -1 + Double($0) / Double(n - 1)) }
        let s = w.reduce(0, +)
        return w.map { Float($0 / s) }
    }
}

extension RIMNetwork {
    /// Images reconstructed per worker graph at a time (bounds the graph's memory).
    public static let inferenceChunk = 16

    /// Reconstructs each problem: the RIM's last estimate from the zero-filled start, each image
    /// scaled by its zero-filled image's largest magnitude on the way in and back on the way out
    /// (so the network sees the intensity range it was trained on whatever the upload's scale).
    /// Images are split over `threads` workers, each running single-threaded kernels.
    /// `shouldStop` is asked before every time step; once it is true the remaining steps are
    /// skipped and the result is incomplete (the caller discards it).
    public func reconstruct(_ problems: [MRIProblem], threads: Int, shouldStop: @escaping @Sendable () -> Bool = { false }) -> [ComplexTensor] {
        let chunks = stride(from: 0, to: problems.count, by: Self.inferenceChunk).map { $0..<min(problems.count, $0 + Self.inferenceChunk) }
        let results = Mutex([[ComplexTensor]](repeating: [], count: chunks.count))
        let shared = WorkerShared((net: self, problems: problems, chunks: chunks))
        parallelChunks(count: chunks.count, threads: max(1, threads)) { range in
            for c in range {
                let slice = Array(shared.value.problems[shared.value.chunks[c]])
                let out = shared.value.net.reconstructChunk(slice, shouldStop: shouldStop)
                results.withLock { $0[c] = out }
            }
        }
        return results.withLock { $0.flatMap { $0 } }
    }

    /// One chunk on its own graph (no gradients), one time step at a time: the graph is reset
    /// between steps (its buffers return to its pool), so memory holds one step's activations
    /// and no page is touched twice for the first time.
    func reconstructChunk(_ problems: [MRIProblem], shouldStop: () -> Bool = { false }) -> [ComplexTensor] {
        let g = Graph(threads: 1, gradEnabled: false)
        let scaled = problems.map { RIMNetwork.scaled($0) }
        let models = problems.map(\.model), ys = scaled.map(\.y)
        let (n, h, w) = (problems.count, problems[0].height, problems[0].width)
        var x = Tensor(shape: [n, 2, h, w], data: [Float](repeating: 0, count: n * 2 * h * w))
        x.data.withUnsafeMutableBufferPointer { p in
            for (i, s) in scaled.enumerated() { ForwardModel.planes(s.x0, p.baseAddress! + i * 2 * h * w, h * w) }
        }
        let zeros = Tensor(shape: [n, config.features, h, w], data: [Float](repeating: 0, count: n * config.features * h * w))
        var h1 = zeros, h2 = zeros
        for b in blocks {
            for _ in 0..<config.steps where !shouldStop() {
                g.reset()
                let next = b.step(g.constant(x), g.constant(h1), g.constant(h2), models: models, measurements: ys)
                (x, h1, h2) = (next.0.value, next.1.value, next.2.value)
            }
        }
        return x.data.withUnsafeBufferPointer { p in
            scaled.enumerated().map { i, s in
                var z = ForwardModel.complex(p.baseAddress! + i * 2 * h * w, h * w).reshaped([h, w])
                for k in 0..<z.data.count { z.data[k] *= s.scale }
                return z
            }
        }
    }

    /// A problem's measurements and zero-filled image divided by the zero-filled image's
    /// largest magnitude (1 when it is zero).
    static func scaled(_ p: MRIProblem) -> (x0: ComplexTensor, y: ComplexTensor, scale: Float) {
        let zf = p.zeroFilled
        let m = zf.magnitude.data.max() ?? 0
        let scale: Float = m > 0 && m.isFinite ? m : 1
        var x0 = zf, y = p.measurements
        for k in 0..<x0.data.count { x0.data[k] /= scale }
        for k in 0..<y.data.count { y.data[k] /= scale }
        return (x0, y, scale)
    }
}
