import Foundation
import Testing
import ReflowAutograd
import ReflowEngine
import ReflowFlow
import ReflowNN
import ReflowTestSupport

@Suite("EulerSampler")
struct EulerSamplerTests {
    init() { BLAS.setLibraryThreads(1) }

    static let config = VelocityMLPConfig(dimension: 2, width: 16, depth: 2)

    static func model(seed: UInt64, config: VelocityMLPConfig = config) -> [String: Tensor] {
        var rng = Random(seed: seed)
        return VelocityMLP(config, rng: &rng).stateDict()
    }

    /// Euler integration written directly against the graph: one no-grad graph, whole batch.

    @Test("equals a hand-written Euler loop on the graph, bit for bit")
    func matchesHandLoop() throws {
        let sd = Self.model(seed: 1)
        let z0 = randn([23, 2], seed: 2)
        for steps in [1, 6] {
            let s = try EulerSampler.sample(model: ModelSpec(Self.config), stateDict: sd, z0: z0, steps: steps, threads: 1)
            expectBitwiseEqual(s, try ODESolverTests.handEuler(Self.config, sd, z0, steps: steps), "steps \(steps)")
            #expect(!bitwiseEqual(s, z0))
        }
        // The per-row velocity form of the model is the packed form.
        let net = try VelocityMLP(Self.config, stateDict: sd)
        let g = Graph(gradEnabled: false)
        let t = Tensor(shape: [23], data: (0..<23).map { Float($0) / 23 })
        var packed = Tensor.zeros([23, 3])
        for r in 0..<23 { packed[r, 0] = z0[r, 0]; packed[r, 1] = z0[r, 1]; packed[r, 2] = t.data[r] }
        expectBitwiseEqual(net.velocity(x: z0, t: t.data), net(packed: g.constant(packed)).value)
    }

    @Test("threads 1, 2, 3 give identical outputs for a fixed blockRows", arguments: [7, 1024])
    func threadIndependence(_ blockRows: Int) throws {
        let sd = Self.model(seed: 3)
        let z0 = randn([50, 2], seed: 4)
        let one = try EulerSampler.sample(model: ModelSpec(Self.config), stateDict: sd, z0: z0, steps: 5, threads: 1, blockRows: blockRows)
        for th in [2, 3] {
            let many = try EulerSampler.sample(model: ModelSpec(Self.config), stateDict: sd, z0: z0, steps: 5, threads: th, blockRows: blockRows)
            expectBitwiseEqual(one, many, "threads \(th) blockRows \(blockRows)")
        }
    }

    @Test("blockRows 7 vs 1024: identical for a tiny model, within 1e-5 for a wide one")
    func blockRowsIndependence() throws {
        let z0 = randn([50, 2], seed: 6)
        // Width 8: every GEMM has K ≤ 8 or N ≤ 8 and runs in the engine's own loops, whose
        // arithmetic per row does not depend on how many rows a block has.
        let tiny = VelocityMLPConfig(dimension: 2, width: 8, depth: 2)
        let sd = Self.model(seed: 5, config: tiny)
        let small = try EulerSampler.sample(model: ModelSpec(tiny), stateDict: sd, z0: z0, steps: 5, threads: 2, blockRows: 7)
        let big = try EulerSampler.sample(model: ModelSpec(tiny), stateDict: sd, z0: z0, steps: 5, threads: 1, blockRows: 1024)
        expectBitwiseEqual(small, big)
        // Wider hidden layers go to cblas, which sees M = 7 (or the 1-row tail) instead of 50 and
        // may round differently (observed: 1.2e-7 with width 64 on OpenBLAS 0.3.21): only closeness holds.
        let wide = VelocityMLPConfig(dimension: 2, width: 64, depth: 3)
        let sdw = Self.model(seed: 7, config: wide)
        let a = try EulerSampler.sample(model: ModelSpec(wide), stateDict: sdw, z0: z0, steps: 5, threads: 2, blockRows: 7)
        let b = try EulerSampler.sample(model: ModelSpec(wide), stateDict: sdw, z0: z0, steps: 5, threads: 1, blockRows: 1024)
        #expect(a.maxAbsDifference(b) <= 1e-5)
    }

    @Test("a constant velocity field moves every point by v (t runs from 0 to 1)")
    func constantField() throws {
        var sd = Self.model(seed: 8)
        for k in sd.keys { sd[k] = Tensor.zeros(sd[k]!.shape) }
        sd["layers.2.bias"] = Tensor(shape: [2], data: [1, -2])
        let z0 = randn([9, 2], seed: 9)
        let x1 = try EulerSampler.sample(model: ModelSpec(Self.config), stateDict: sd, z0: z0, steps: 10, threads: 2, blockRows: 4)
        expectClose(x1, z0 + Tensor(shape: [2], data: [1, -2]), atol: 1e-5, rtol: 0)
        // v = t (via the time input): ∫₀¹ t dt ≈ Σ i·dt·dt = (1 − dt)/2 with Euler.
        var sdt = sd
        sdt["layers.2.bias"] = Tensor.zeros([2])
        var w0 = Tensor.zeros([16, 3]); w0[0, 2] = 1             // h0 = t
        sdt["layers.0.weight"] = w0
        var w1 = Tensor.zeros([16, 16]); w1[0, 0] = 1            // h1 = silu(t)
        sdt["layers.1.weight"] = w1
        var w2 = Tensor.zeros([2, 16]); w2[0, 0] = 1; w2[1, 0] = 1
        sdt["layers.2.weight"] = w2
        let out = try EulerSampler.sample(model: ModelSpec(Self.config), stateDict: sdt, z0: Tensor.zeros([3, 2]), steps: 4, threads: 1)
        // v(t) = silu(silu(t)); Euler sum over t = 0, 1/4, 2/4, 3/4.
        func silu(_ x: Double) -> Double { x / (1 + Foundation.exp(-x)) }
        let want = [0.0, 0.25, 0.5, 0.75].reduce(0.0) { $0 + 0.25 * silu(silu($1)) }
        for v in out.data { #expect(Swift.abs(Double(v) - want) < 1e-6) }
    }

    @Test func rejectsIncompatibleWeights() {
        var sd = Self.model(seed: 10)
        sd.removeValue(forKey: "layers.1.bias")
        #expect(throws: StateDictError.missing("layers.1.bias")) {
            try EulerSampler.sample(model: ModelSpec(Self.config), stateDict: sd, z0: Tensor.zeros([2, 2]), steps: 1, threads: 1)
        }
    }
}
