import Foundation
import Testing
import ReflowEngine
import ReflowNN
import ReflowFlow
import ReflowTestSupport

@Suite("Data sources, labels and the interpolant")
struct DataSourceTests {
    @Test("labels are the modes the points were drawn from, and asking for them does not change the draws")
    func labelledModes() throws {
        for d in [Distribution2D.gaussianRing(count: 5, radius: 4, std: 0.05), .twoGaussians(), .threeGaussians(),
                  .gaussianMixture(centers: [[-3, 0], [3, 0], [0, 5]], std: 0.05), .twoMoons(), .checkerboard(), .spirals(), .rings()] {
            var r1 = Random(seed: 11), r2 = Random(seed: 11)
            let plain = d.sample(400, rng: &r1)
            var labels = [Int32](repeating: -1, count: 400)
            let labelled = Tensor(shape: [400, 2]) { buf in labels.withUnsafeMutableBufferPointer { d.sample(into: buf, labels: $0.baseAddress, rng: &r2) } }
            expectBitwiseEqual(plain, labelled)
            let classes = try #require(d.classCount)
            #expect(labels.allSatisfy { $0 >= 0 && Int($0) < classes }, "\(d.kind)")
            #expect(Set(labels).count == classes, "\(d.kind): every mode appears in 400 draws")
            if let centers = d.modeCenters {
                // Gaussian modes: each point is nearest to its own label's centre (std ≪ spacing).
                for i in 0..<400 {
                    let (x, y) = (labelled[i, 0], labelled[i, 1])
                    let nearest = centers.indices.min { hypot(centers[$0].0 - x, centers[$0].1 - y) < hypot(centers[$1].0 - x, centers[$1].1 - y) }!
                    #expect(nearest == Int(labels[i]), "\(d.kind) point \(i)")
                }
            }
        }
        #expect(Distribution2D.gaussian().classCount == nil)
        let sampler = try DataSource.distribution(.gaussianRing(count: 3)).sampler(pointSize: 2) { _ in "" }
        #expect(sampler.classCount == 3)
        #expect(try DataSource.standardNormal.sampler(pointSize: 4) { _ in "" }.classCount == nil)
    }

    @Test("normal sources draw N(0, std²) in the model's dimension; point files are drawn with replacement")
    func samplers() throws {
        var rng = Random(seed: 2)
        let n = try DataSource.normal(dimension: nil, std: 2).sampler(pointSize: 3) { _ in "" }
        #expect(n.pointShape == [3] && !n.isStandardNormal)
        let x = n.sample(20_000, rng: &rng)
        let mean = x.data.reduce(0, +) / Float(x.count)
        let std = (x.data.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Float(x.count)).squareRoot()
        #expect(abs(mean) < 0.05 && abs(std - 2) < 0.05, "mean \(mean), std \(std)")
        // The standard normal draws exactly rng.normal([n, d]) (pairs store the generator state).
        var a = Random(seed: 9), b = Random(seed: 9)
        let s = try DataSource.standardNormal.sampler(pointSize: 5) { _ in "" }
        #expect(s.isStandardNormal)
        expectBitwiseEqual(s.sample(100, rng: &a), b.normal([100, 5]))

        let dir = NSTemporaryDirectory() + "reflow-ds-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let rows: [[Float]] = [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]
        try Data(PointFiles.npyBytes(Tensor(shape: [3, 4], data: rows.flatMap { $0 }))).write(to: URL(fileURLWithPath: dir + "/p.npy"))
        let p = try DataSource.points(.path("p.npy")).sampler(pointSize: 4) { _ in dir + "/p.npy" }
        let drawn = p.sample(300, rng: &rng)
        var seen = Set<Int>()
        for i in 0..<300 {
            let row = (0..<4).map { drawn[i, $0] }
            let k = try #require(rows.firstIndex(of: row), "row \(i) is not a file row: \(row)")
            seen.insert(k)
        }
        #expect(seen.count == 3)
        #expect(throws: DataSourceError.self) { try DataSource.points(.path("p.npy")).sampler(pointSize: 2) { _ in dir + "/p.npy" } }
    }

    @Test("wire forms: every kind round-trips; unknown keys are refused with their path")
    func wire() throws {
        for json in [#"{"kind": "twoMoons"}"#, #"{"kind": "normal", "std": 2}"#, #"{"kind": "normal", "dimension": 8, "std": 1}"#,
                     #"{"kind": "points", "job": "abc", "artifact": "samples"}"#, #"{"kind": "points", "path": "x.csv"}"#] {
            let d = try JSONDecoder().decode(DataSource.self, from: Data(json.utf8))
            #expect(try JSONDecoder().decode(DataSource.self, from: JSONEncoder().encode(d)) == d, "\(json)")
        }
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(DataSource.self, from: Data(#"{"kind": "normal", "mean": 1}"#.utf8)) }
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(DataSource.self, from: Data(#"{"kind": "points", "job": "a", "n": 1}"#.utf8)) }
        #expect(DataSource.normal(dimension: 0, std: 1).validationError()?.pointer == "/dimension")
        #expect(DataSource.normal(dimension: 2, std: 0).validationError()?.pointer == "/std")
        #expect(DataSource.points(.job(id: "../x", artifact: nil)).validationError()?.pointer == "/job")
    }

    @Test("the rectified-flow interpolant against the formula: x_t = t·x1 + (1 − t)·x0, target x1 − x0")
    func interpolant() {
        var rng = Random(seed: 4)
        let rows = 17, size = 3
        let x0 = rng.normal([rows, size]), x1 = rng.normal([rows, size]), t = rng.uniform([rows])
        var xt = [Float](repeating: 0, count: rows * size), target = xt, times = t.data
        xt.withUnsafeMutableBufferPointer { pxt in
            target.withUnsafeMutableBufferPointer { ptg in
                times.withUnsafeMutableBufferPointer { pt in
                    Interpolant.rectifiedFlow.fill(x0: x0.data, x1: x1.data, t: pt.baseAddress!, rows: rows, size: size,
                                                   xt: pxt.baseAddress!, target: ptg.baseAddress!)
                }
            }
        }
        #expect(times == t.data, "the flow leaves t as drawn")
        for r in 0..<rows {
            for c in 0..<size {
                let a = Double(x0[r, c]), b = Double(x1[r, c]), tt = Double(t.data[r])
                #expect(abs(Double(xt[r * size + c]) - (tt * b + (1 - tt) * a)) < 1e-6)
                #expect(Double(target[r * size + c]) == Double(x1[r, c] - x0[r, c]))
            }
        }
    }
}
