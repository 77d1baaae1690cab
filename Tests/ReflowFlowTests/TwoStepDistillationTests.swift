import Foundation
import Testing
import ReflowAutograd
import ReflowEngine
import ReflowNN
@testable import ReflowFlow
import ReflowTestSupport

/// SlimFlow's flow-guided two-step term (issue #12).
@Suite("Two-step distillation term")
struct TwoStepDistillationTests {
    @Test("its gradient reaches the student only through y_s: not the teacher, not the stop-gradient branch")
    func gradientPaths() throws {
        var rng = Random(seed: 1)
        let cfg = VelocityMLPConfig(dimension: 3, width: 8, depth: 1, timeInput: .sinusoidal(features: 4, scale: 10))
        let student = ModelSpec(cfg).makeNetwork(rng: &rng), teacher = ModelSpec(cfg).makeNetwork(rng: &rng)
        for p in teacher.namedParameters() { p.parameter.isFrozen = true }
        let rows = 5
        let z = randn([rows, 3], seed: 2).data, u: [Float] = [0.2, 0.35, 0.5, 0.65, 0.8]
        let g = Graph(threads: 1, accumulatesIntoParameters: false)
        let loss = z.withUnsafeBufferPointer { zp in u.withUnsafeBufferPointer { up in
            TwoStepDistillation.loss(student: student, teacher: teacher, graph: g, z: zp.baseAddress!, u: up.baseAddress!, labels: nil, rows: rows)
        } }
        g.backward(loss)
        for p in teacher.namedParameters() { #expect(g.withParameterGradient(p.parameter) { $0 == nil }, "\(p.name): no teacher gradient") }
        // The oracle: the same target computed outside any graph, then d/dθ mean((z + v_s − target)²).
        let vS = student.velocity(x: Tensor(shape: [rows, 3], data: z), t: [Float](repeating: 0, count: rows)).data
        let xu = (0..<(rows * 3)).map { z[$0] + u[$0 / 3] * vS[$0] }
        let vT = teacher.velocity(x: Tensor(shape: [rows, 3], data: xu), t: u).data
        let target = Tensor(shape: [rows, 3], data: (0..<(rows * 3)).map { xu[$0] + (1 - u[$0 / 3]) * vT[$0] })
        let g2 = Graph(threads: 1, accumulatesIntoParameters: false)
        let v2 = z.withUnsafeBufferPointer { zp in [Float](repeating: 0, count: rows).withUnsafeBufferPointer { tp in
            student.velocity(g2, x: zp.baseAddress!, t: tp.baseAddress!, labels: nil, rows: rows)
        } }
        let l2 = Loss.mse(g2.binary(.add, g2.constant(Tensor(shape: [rows, 3], data: z)), v2), g2.constant(target))
        g2.backward(l2)
        #expect(abs(loss.scalar - l2.scalar) < 1e-6 * max(1, abs(l2.scalar)))
        for p in student.namedParameters() {
            let a = g.withParameterGradient(p.parameter) { ptr in ptr.map { Array(UnsafeBufferPointer(start: $0, count: p.parameter.value.count)) } }
            let b = g2.withParameterGradient(p.parameter) { ptr in ptr.map { Array(UnsafeBufferPointer(start: $0, count: p.parameter.value.count)) } }
            let ga = try #require(a), gb = try #require(b)
            expectClose(Tensor(shape: [ga.count], data: ga), Tensor(shape: [gb.count], data: gb), atol: 1e-6, rtol: 1e-5)
        }
        #expect(TwoStepDistillation(uMin: 0.5, uMax: 0.4).validationError()?.pointer == "/uMax")
    }
}
