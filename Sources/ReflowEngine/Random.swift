/// A seeded, savable random source: xoshiro256** seeded through SplitMix64.
///
/// Same seed → same numbers on every machine: uniforms come from integer bits, and normals use
/// the Marsaglia polar method with a logarithm (``Random/deterministicLog(_:)``) built only from
/// IEEE-754 +, ×, ÷ and exact exponent manipulation, so no libm version can change a sample.
/// The complete state (including a cached second normal) is ``Random/State``, which checkpoints
/// store so that a resumed run draws exactly the numbers an uninterrupted one would.
public struct Random: Sendable {
    /// Everything needed to continue the stream exactly.
    public struct State: Codable, Sendable, Equatable {
        /// The four xoshiro256** words, as 16-digit hex strings (JSON numbers lose 64-bit precision).
        public var words: [String]
        /// The cached second normal of the last polar pair, if any.
        public var spareNormal: Double?
    }

    private var s0: UInt64, s1: UInt64, s2: UInt64, s3: UInt64
    private var spare: Double?

    /// Seeds the generator; every seed (0 included) gives a well-mixed state.
    public init(seed: UInt64) {
        var sm = seed
        func splitmix() -> UInt64 {
            sm &+= 0x9E37_79B9_7F4A_7C15
            var z = sm
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        s0 = splitmix(); s1 = splitmix(); s2 = splitmix(); s3 = splitmix()
        spare = nil
    }

    /// Restores a saved state; throws on malformed words (e.g. from a corrupt checkpoint).
    public init(state: State) throws {
        guard state.words.count == 4 else { throw RandomStateError.malformed("expected 4 words, got \(state.words.count)") }
        var w = [UInt64]()
        for s in state.words {
            guard s.count <= 16, let v = UInt64(s, radix: 16) else { throw RandomStateError.malformed("bad word '\(s)'") }
            w.append(v)
        }
        guard w.contains(where: { $0 != 0 }) else { throw RandomStateError.malformed("all-zero state") }
        (s0, s1, s2, s3) = (w[0], w[1], w[2], w[3])
        spare = state.spareNormal
    }

    /// The current state.
    public var state: State {
        State(words: [s0, s1, s2, s3].map { w in
            let h = String(w, radix: 16)
            return String(repeating: "0", count: 16 - h.count) + h
        }, spareNormal: spare)
    }

    /// Next 64 random bits.
    @inline(__always)
    public mutating func next() -> UInt64 {
        let result = ((s1 &* 5) << 7 | (s1 &* 5) >> 57) &* 9
        let t = s1 << 17
        s2 ^= s0; s3 ^= s1; s1 ^= s2; s0 ^= s3
        s2 ^= t
        s3 = (s3 << 45) | (s3 >> 19)
        return result
    }

    /// Uniform in [0, 1) with 24 random bits.
    @inline(__always)
    public mutating func uniformFloat() -> Float { Float(next() >> 40) * 0x1p-24 }

    /// Uniform in [0, 1) with 53 random bits.
    @inline(__always)
    public mutating func uniformDouble() -> Double { Double(next() >> 11) * 0x1p-53 }

    /// Uniform integer in 0..<bound (unbiased, Lemire's multiply-and-reject).
    public mutating func int(below bound: Int) -> Int {
        precondition(bound > 0, "Random.int(below:): bound must be positive, got \(bound)")
        let b = UInt64(bound)
        var m = next().multipliedFullWidth(by: b)
        if m.low < b {
            let threshold = (0 &- b) % b
            while m.low < threshold { m = next().multipliedFullWidth(by: b) }
        }
        return Int(m.high)
    }

    /// A standard normal (Marsaglia polar method, pairs cached).
    public mutating func normal() -> Double {
        if let s = spare { spare = nil; return s }
        while true {
            let u = 2 * uniformDouble() - 1, v = 2 * uniformDouble() - 1
            let s = u * u + v * v
            if s >= 1 || s == 0 { continue }
            let f = (-2 * Random.deterministicLog(s) / s).squareRoot()
            spare = v * f
            return u * f
        }
    }

    /// Fills `buffer` with N(mean, std²) samples.
    public mutating func fillNormal(_ buffer: UnsafeMutableBufferPointer<Float>, mean: Float = 0, std: Float = 1) {
        for i in buffer.indices { buffer[i] = mean + std * Float(normal()) }
    }

    /// Fills `buffer` with U[low, high) samples.
    public mutating func fillUniform(_ buffer: UnsafeMutableBufferPointer<Float>, low: Float = 0, high: Float = 1) {
        let w = high - low
        for i in buffer.indices { buffer[i] = low + w * uniformFloat() }
    }

    /// A tensor of N(mean, std²) samples.
    public mutating func normal(_ shape: [Int], mean: Float = 0, std: Float = 1) -> Tensor {
        Tensor(shape: shape) { fillNormal($0, mean: mean, std: std) }
    }

    /// A tensor of U[low, high) samples.
    public mutating func uniform(_ shape: [Int], low: Float = 0, high: Float = 1) -> Tensor {
        Tensor(shape: shape) { fillUniform($0, low: low, high: high) }
    }

    /// Natural logarithm from IEEE-exact operations only (bit-reproducible on every machine).
    ///
    /// fdlibm's reduction: x = 2^e·(1 + f) with 1 + f ∈ [√½, √2), so f = m − 1 is exact; then
    /// log(1 + f) = f − (f²/2 − s·(f²/2 + R)) with s = f/(2 + f) and R = Σ 2s^{2k}/(2k+1) (k ≥ 1,
    /// to s²²), and e·ln 2 is added in a high part exact in e and a low correction. The exact
    /// leading term f keeps the error near 1 ulp.
    public static func deterministicLog(_ x: Double) -> Double {
        precondition(x > 0 && x.isFinite, "deterministicLog: x must be finite and positive, got \(x)")
        var e = Int(x.exponent)
        var m = x.significand  // [1, 2)
        if x.isSubnormal { let n = x * 0x1p60; e = Int(n.exponent) - 60; m = n.significand }
        if m > 1.414_213_562_373_095_1 { m *= 0.5; e += 1 }
        let f = m - 1  // exact (Sterbenz)
        let s = f / (2 + f), z = s * s
        var r = 2.0 / 23
        for k in stride(from: 21.0, through: 3.0, by: -2) { r = r * z + 2 / k }
        r *= z
        let hfsq = 0.5 * f * f
        let ln2hi = 6.931_471_803_691_238_164_90e-01, ln2lo = 1.908_214_929_270_587_700_02e-10
        let de = Double(e)
        return de * ln2hi - ((hfsq - (s * (hfsq + r) + de * ln2lo)) - f)
    }
}

/// A saved random state could not be restored.
public enum RandomStateError: Error, CustomStringConvertible {
    case malformed(String)
    public var description: String {
        switch self { case .malformed(let m): return "invalid RNG state: \(m)" }
    }
}
