import Foundation
import Testing
import ReflowAutograd
import ReflowEngine
import ReflowTestSupport

/// Softmax cross-entropy (classify jobs): values against a naive Double oracle, gradients
/// against finite differences and the closed form softmax − one-hot.
@Suite("Softmax cross-entropy")
struct SoftmaxCrossEntropyTests {
    /// loss[b] = log Σ exp(z) − z[y], in Double, without the max shift.
    static func oracle(_ z: Tensor, _ labels: [Int32]) -> [Double] {
        let k = z.shape[1]
        return labels.enumerated().map { b, y in
            let row = (0..<k).map { Double(z.data[b * k + $0]) }
            return Foundation.log(row.map { Foundation.exp($0) }.reduce(0, +)) - row[Int(y)]
        }
    }

    @Test("value matches the naive Double oracle, with and without gradients recorded", arguments: [true, false])
    func value(_ grad: Bool) {
        let z = randn([6, 5], seed: 3, std: 2)
        let labels: [Int32] = [0, 4, 2, 2, 1, 3]
        let g = Graph(gradEnabled: grad)
        let out = g.softmaxCrossEntropy(grad ? g.input(z) : g.constant(z), labels: labels).value
        #expect(out.shape == [6])
        for (a, b) in zip(out.data, Self.oracle(z, labels)) { #expect(abs(Double(a) - b) < 1e-5 * max(1, abs(b))) }
    }

    @Test("large logits neither overflow nor lose the loss (the row maximum is subtracted)")
    func stable() {
        let z = Tensor(shape: [2, 3], data: [1000, 0, -1000, 50, 80, 80])
        let g = Graph()
        let out = g.softmaxCrossEntropy(g.input(z), labels: [1, 0]).value.data
        #expect(abs(out[0] - 1000) < 1e-3)
        #expect(abs(Double(out[1]) - (30 + Foundation.log(2.0))) < 1e-3)
        #expect(!out.contains { !$0.isFinite })
    }

    @Test("finite-difference gradient check, reduced by sum and by mean")
    func gradients() {
        let z = randn([5, 4], seed: 9, std: 1.5)
        let labels: [Int32] = [3, 0, 1, 1, 2]
        expectPasses(gradCheck(inputs: [z]) { g, v in g.softmaxCrossEntropy(v[0], labels: labels) })
        expectPasses(gradCheck(inputs: [z]) { g, v in g.mean(g.softmaxCrossEntropy(g.affine(v[0], scale: 2), labels: labels)) })
    }

    @Test("backward is softmax − one-hot, scaled by the incoming gradient, and accumulates")
    func closedForm() {
        let z = randn([3, 4], seed: 11)
        let labels: [Int32] = [2, 0, 3]
        let g = Graph()
        let x = g.input(z)
        // Used twice: the two paths' gradients add.
        let loss = g.sum(g.softmaxCrossEntropy(x, labels: labels)) + g.sum(g.softmaxCrossEntropy(x, labels: labels)) * 0.5
        g.backward(loss)
        let p = z.softmax()
        let dz = g.grad(x)
        for b in 0..<3 {
            for j in 0..<4 {
                let expected = 1.5 * (p.data[b * 4 + j] - (j == Int(labels[b]) ? 1 : 0))
                #expect(abs(dz.data[b * 4 + j] - expected) < 1e-5)
            }
        }
    }
}
