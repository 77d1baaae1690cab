import Testing
import Foundation
import ReflowEngine
import ReflowFlow

@Suite("TimeSampler")
struct TimeSamplerTests {
    static func draw(_ s: TimeSampler, _ n: Int = 100_000, seed: UInt64 = 1) -> [Float] {
        var rng = Random(seed: seed)
        return (0..<n).map { _ in s.sample(&rng) }
    }

    @Test func uniformCoversEpsilonToOne() {
        let xs = Self.draw(.uniform(epsilon: 0.1))
        #expect(xs.allSatisfy { $0 >= 0.1 && $0 < 1 })
        let mean = xs.reduce(0, +) / Float(xs.count)
        #expect(abs(mean - 0.55) < 0.005)
    }

    @Test("uShaped matches p(t) ∝ e^{at} + e^{a(1−t)} bin by bin (a = 4)")
    func uShapedDensity() {
        let a = 4.0, n = 200_000
        let xs = Self.draw(.uShaped(a: 4), n)
        #expect(xs.allSatisfy { $0 > 0 && $0 < 1 })
        // CDF of the mixture: F(t) = ½[(e^{at} − 1) + (e^a − e^{a(1−t)})] / (e^a − 1)
        func cdf(_ t: Double) -> Double { 0.5 * ((exp(a * t) - 1) + (exp(a) - exp(a * (1 - t)))) / (exp(a) - 1) }
        for b in 0..<10 {
            let lo = Double(b) / 10, hi = Double(b + 1) / 10
            let expected = cdf(hi) - cdf(lo)
            let observed = Double(xs.filter { Double($0) >= lo && Double($0) < hi }.count) / Double(n)
            #expect(abs(observed - expected) < 0.006, "bin \(b): \(observed) vs \(expected)")
        }
        // The ends are denser than the middle, and the density is symmetric.
        let ends = xs.filter { $0 < 0.1 }.count, middle = xs.filter { $0 >= 0.45 && $0 < 0.55 }.count
        #expect(ends > 3 * middle)
    }

    @Test("uShaped passes a Kolmogorov–Smirnov test against its inverse-CDF definition (10⁵ draws); a = 2's CDF is rejected")
    func uShapedKolmogorovSmirnov() {
        let n = 100_000
        let xs = Self.draw(.uShaped(a: 4), n, seed: 9).map(Double.init).sorted()
        // s = ln(1 + u(e^a − 1))/a has CDF (e^{as} − 1)/(e^a − 1); t = s or 1 − s with
        // probability ½; then t ← t(1 − 2·10⁻⁵) + 10⁻⁵.
        func cdf(_ x: Double, a: Double) -> Double {
            let t = min(1, max(0, (x - 1e-5) / (1 - 2e-5)))
            let fs = { (y: Double) in (exp(a * y) - 1) / (exp(a) - 1) }
            return 0.5 * fs(t) + 0.5 * (1 - fs(1 - t))
        }
        func ks(_ a: Double) -> Double {
            var d = 0.0
            for (i, x) in xs.enumerated() {
                let f = cdf(x, a: a)
                d = max(d, abs(Double(i + 1) / Double(n) - f), abs(f - Double(i) / Double(n)))
            }
            return d
        }
        let critical = 1.95 / Double(n).squareRoot()   // the 0.1 % level
        #expect(ks(4) < critical, "D = \(ks(4))")
        #expect(ks(2) > critical, "the test has power: a = 2 gives D = \(ks(2))")
    }

    @Test func logitNormalIsCentredForMeanZero() {
        let xs = Self.draw(.logitNormal(mean: 0, std: 1)).sorted()
        #expect(abs(xs[xs.count / 2] - 0.5) < 0.01)
        let shifted = Self.draw(.logitNormal(mean: 1, std: 0.5)).sorted()
        #expect(abs(shifted[shifted.count / 2] - Float(1 / (1 + exp(-1.0)))) < 0.01)
    }

    @Test func gridDrawsOnlyGridPoints() {
        let xs = Self.draw(.grid(k: 4, epsilon: 0), 10_000)
        #expect(Set(xs) == [0, 0.25, 0.5, 0.75])
        let one = Self.draw(.grid(k: 1, epsilon: 0.001), 100)
        #expect(Set(one) == [0.001])
    }

    @Test func jsonRoundTripAndDefaults() throws {
        for s in [TimeSampler.uniform(epsilon: 0.001), .uShaped(a: 3), .logitNormal(mean: -0.5, std: 2), .grid(k: 2, epsilon: 0)] {
            let back = try JSONDecoder().decode(TimeSampler.self, from: JSONEncoder().encode(s))
            #expect(back == s)
        }
        #expect(try JSONDecoder().decode(TimeSampler.self, from: Data(#"{"kind":"uShaped"}"#.utf8)) == .uShaped(a: 4))
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(TimeSampler.self, from: Data(#"{"kind":"beta"}"#.utf8)) }
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(TimeSampler.self, from: Data(#"{"kind":"grid"}"#.utf8)) }
    }

    @Test func invalidParametersAreReported() {
        #expect(TimeSampler.uniform(epsilon: 1).validationError()?.pointer == "/epsilon")
        #expect(TimeSampler.uShaped(a: 0).validationError()?.pointer == "/a")
        #expect(TimeSampler.logitNormal(mean: 0, std: -1).validationError()?.pointer == "/std")
        #expect(TimeSampler.logitNormal(mean: .nan, std: 1).validationError()?.pointer == "/mean")
        #expect(TimeSampler.grid(k: 0).validationError()?.pointer == "/k")
        #expect(TimeSampler.uShaped(a: 4).validationError() == nil)
    }
}
