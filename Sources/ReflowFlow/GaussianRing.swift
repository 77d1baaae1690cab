public import ReflowEngine
import Foundation

/// A mixture of `count` isotropic Gaussians with centres evenly spaced on a circle
/// (the "8 Gaussians" of the rectified-flow paper: count 8, radius 4, std 0.1).
public struct GaussianRing: Sendable, Equatable, Codable {
    public var count: Int
    public var radius: Float
    public var std: Float

    public init(count: Int = 8, radius: Float = 4, std: Float = 0.1) {
        self.count = count
        self.radius = radius
        self.std = std
    }

    enum CodingKeys: String, CodingKey { case count, radius, std }

    /// Decodes a partial JSON object; absent keys keep their defaults.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        count = try c.decodeIfPresent(Int.self, forKey: .count) ?? 8
        radius = try c.decodeIfPresent(Float.self, forKey: .radius) ?? 4
        std = try c.decodeIfPresent(Float.self, forKey: .std) ?? 0.1
    }

    /// The first invalid field as (JSON pointer relative to this object, message).
    public func validationError() -> (pointer: String, message: String)? {
        if count < 1 || count > 10_000 { return ("/count", "must be in [1, 10000], got \(count)") }
        if !(radius >= 0 && radius.isFinite) { return ("/radius", "must be a non-negative number") }
        if !(std >= 0 && std.isFinite) { return ("/std", "must be a non-negative number") }
        return nil
    }

    /// Centre k: radius · (cos 2πk/count, sin 2πk/count).
    public func center(_ k: Int) -> (Float, Float) {
        let a = 2 * Double.pi * Double(k) / Double(count)
        return (radius * Float(Foundation.cos(a)), radius * Float(Foundation.sin(a)))
    }

    /// Fills `out` ([n, 2] row-major) with samples and, when given, `labels` ([n]) with each
    /// sample's mode index (the same draws either way).
    public func sample(into out: UnsafeMutableBufferPointer<Float>, labels: UnsafeMutablePointer<Int32>? = nil, rng: inout Random) {
        precondition(out.count % 2 == 0, "GaussianRing.sample: buffer must hold [n, 2]")
        let centers = (0..<count).map(center)
        for i in 0..<(out.count / 2) {
            let k = rng.int(below: count)
            labels?[i] = Int32(k)
            let c = centers[k]
            out[2 * i] = c.0 + std * Float(rng.normal())
            out[2 * i + 1] = c.1 + std * Float(rng.normal())
        }
    }

    /// n samples, [n, 2].
    public func sample(_ n: Int, rng: inout Random) -> Tensor {
        Tensor(shape: [n, 2]) { sample(into: $0, rng: &rng) }
    }
}
