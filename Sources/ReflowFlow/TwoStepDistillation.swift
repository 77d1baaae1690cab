public import ReflowAutograd
public import ReflowNN
import ReflowEngine

/// SlimFlow's flow-guided distillation term (Zhu, Liu & Liu 2024, code `teacher_loss_new`;
/// ALGORITHMS.md §6) for a one-step student, added to the distillation loss on the stored pairs:
///
///     z ~ N(0, I) fresh,  u ~ U[uMin, uMax]
///     y_s = z + v_s(z, 0)                          (the student's one step)
///     x_u = z + u·sg(v_s(z, 0))                    (a point on the student's own path)
///     x̂ = x_u + (1 − u)·v_T(x_u, u)               (the frozen teacher finishes)
///     L_2step = D(y_s, sg(x̂))                     (D: the training `loss`, e.g. mean squared error)
///
/// The gradient reaches the student only through y_s: x_u and x̂ are constants (stop-gradient),
/// and the teacher's weights are frozen. Wire JSON: `{"weight": 1, "uMin": 0.2, "uMax": 0.8}`.
public struct TwoStepDistillation: Codable, Sendable, Equatable, Validatable {
    public var weight: Float = 1
    public var uMin: Float = 0.2
    public var uMax: Float = 0.8

    public init(weight: Float = 1, uMin: Float = 0.2, uMax: Float = 0.8) {
        self.weight = weight
        self.uMin = uMin
        self.uMax = uMax
    }

    enum CodingKeys: String, CodingKey { case weight, uMin, uMax }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        weight = try c.decodeIfPresent(Float.self, forKey: .weight) ?? 1
        uMin = try c.decodeIfPresent(Float.self, forKey: .uMin) ?? 0.2
        uMax = try c.decodeIfPresent(Float.self, forKey: .uMax) ?? 0.8
    }

    public func validationError() -> FieldError? {
        Validation.first(
            { weight > 0 && weight <= 1e6 ? nil : ("/weight", "must be in (0, 1e6], got \(weight)") },
            { uMin >= 0 && uMin < 1 ? nil : ("/uMin", "must be in [0, 1), got \(uMin)") },
            { uMax > uMin && uMax < 1 ? nil : ("/uMax", "must be in (uMin, 1), got \(uMax)") })
    }

    /// L_2step for `rows` rows on `graph` (scalar). z: [rows, D] fresh noise, u: [rows],
    /// labels: [rows] or nil. The teacher's parameters must be frozen (``Parameter/isFrozen``).
    public static func loss(student: any VelocityNetwork, teacher: any VelocityNetwork, graph g: Graph,
                            z: UnsafePointer<Float>, u: UnsafePointer<Float>, labels: UnsafePointer<Int32>?, rows: Int,
                            distance: Loss = .mse) -> Var {
        let d = student.spec.pointSize
        let zeros = [Float](repeating: 0, count: rows)
        let vS = zeros.withUnsafeBufferPointer { student.velocity(g, x: z, t: $0.baseAddress!, labels: labels, rows: rows) }  // [rows, D]
        let vsValue = vS.value.data
        var xu = [Float](repeating: 0, count: rows * d)
        for r in 0..<rows { for c in 0..<d { xu[r * d + c] = z[r * d + c] + u[r] * vsValue[r * d + c] } }
        let vT = xu.withUnsafeBufferPointer { teacher.velocity(g, x: $0.baseAddress!, t: u, labels: labels, rows: rows) }.value.data
        let target = g.constant(shape: [rows, d]) { p in
            for r in 0..<rows { for c in 0..<d { p[r * d + c] = xu[r * d + c] + (1 - u[r]) * vT[r * d + c] } }
        }
        let zc = g.constant(shape: [rows, d]) { $0.baseAddress!.update(from: z, count: rows * d) }
        return distance(g.binary(.add, zc, vS), target)
    }
}
