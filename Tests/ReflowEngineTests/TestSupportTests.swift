import Testing
import ReflowEngine
import ReflowTestSupport

/// The comparison helpers themselves must be able to fail.
@Suite("Test support helpers")
struct TestSupportTests {
    @Test func expectCloseFlagsDifferences() {
        let a = Tensor(shape: [3], data: [1, 2, 3])
        expectClose(a, Tensor(shape: [3], data: [1, 2, 3.000001]), atol: 1e-5, rtol: 0)
        withKnownIssue("values differ") { expectClose(a, Tensor(shape: [3], data: [1, 2, 3.1]), atol: 1e-3, rtol: 1e-3) }
        withKnownIssue("shapes differ") { expectClose(a, Tensor(shape: [1, 3], data: [1, 2, 3])) }
        withKnownIssue("NaN never passes") { expectClose(Tensor(shape: [1], data: [.nan]), Tensor(shape: [1], data: [1]), atol: 1e9) }
        withKnownIssue("bits differ") { expectBitwiseEqual(Tensor(shape: [1], data: [0]), Tensor(shape: [1], data: [-0.0])) }
        #expect(closeViolations(a, Tensor(shape: [3], data: [1, 2.5, 3]), atol: 0.1, rtol: 0).map(\.index) == [1])
    }

    @Test func nmseValues() {
        let ref = Tensor(shape: [2], data: [3, 4])
        #expect(nmse(ref, ref) == 0)
        #expect(Swift.abs(nmse(Tensor(shape: [2], data: [3, 5]), ref) - 1.0 / 25) < 1e-12)
        #expect(nmse(Tensor.zeros([2]), Tensor.zeros([2])) == 0)
        #expect(nmse(Tensor.ones([2]), Tensor.zeros([2])) == .infinity)
    }

    @Test func seededData() {
        #expect(randn([4], seed: 1) == randn([4], seed: 1))
        #expect(randn([4], seed: 1) != randn([4], seed: 2))
        #expect(randu([100], seed: 3, low: 2, high: 3).data.allSatisfy { $0 >= 2 && $0 < 3 })
    }
}
