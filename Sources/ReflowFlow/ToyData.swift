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

    /// Centre k: radius · (cos 2πk/count, sin 2πk/count).
    public func center(_ k: Int) -> (Float, Float) {
        let a = 2 * Double.pi * Double(k) / Double(count)
        return (radius * Float(Foundation.cos(a)), radius * Float(Foundation.sin(a)))
    }

    /// Fills `out` ([n, 2] row-major) with samples.
    public func sample(into out: UnsafeMutableBufferPointer<Float>, rng: inout Random) {
        precondition(out.count % 2 == 0, "GaussianRing.sample: buffer must hold [n, 2]")
        let centers = (0..<count).map(center)
        for i in 0..<(out.count / 2) {
            let c = centers[rng.int(below: count)]
            out[2 * i] = c.0 + std * Float(rng.normal())
            out[2 * i + 1] = c.1 + std * Float(rng.normal())
        }
    }

    /// n samples, [n, 2].
    public func sample(_ n: Int, rng: inout Random) -> Tensor {
        Tensor(shape: [n, 2]) { sample(into: $0, rng: &rng) }
    }
}
