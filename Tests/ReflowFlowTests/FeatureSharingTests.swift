import Foundation
import Testing
import ReflowEngine
import ReflowAutograd
import ReflowNN
@testable import ReflowFlow
import ReflowTestSupport

/// Records the (step, evaluation) announcements of a solver and evaluates a linear field.
private final class AnnouncingField: VelocityField {
    let dimension = 2
    var calls: [(step: Int, evaluation: Int)] = []
    func willEvaluate(step: Int, evaluation: Int) { calls.append((step, evaluation)) }
    func velocity(_ x: UnsafePointer<Float>, count: Int, t: Float, into v: UnsafeMutablePointer<Float>) {
        for j in 0..<(count * 2) { v[j] = -x[j] + t }
    }
}

/// A tap that keeps what a pass computed at every site, and optionally hands it straight back.
private final class CapturingTap: FeatureTap {
    var seen: [String: [Float]] = [:]
    var order: [String] = []
    let echo: Bool
    init(echo: Bool = false) { self.echo = echo }
    func share(site: String, rows: Int, computed: () -> [Float]) -> [Float]? {
        let v = computed()
        seen[site] = v
        order.append(site)
        return echo ? v : nil
    }
}

@Suite("RF-Edit feature sharing")
struct FeatureSharingTests {
    static let mlp = VelocityMLPConfig(dimension: 6, width: 16, depth: 2, timeInput: .sinusoidal(features: 8, scale: 1000), classes: 3)

    static func weights(_ spec: ModelSpec, seed: UInt64 = 3) -> [String: Tensor] {
        var rng = Random(seed: seed)
        return spec.makeNetwork(rng: &rng).stateDict()
    }

    @Test("fixed-step solvers announce every evaluation as (step, evaluation) in order; rk45 announces none")
    func announcements() throws {
        for (method, per) in [(ODEMethod.euler(steps: 3), 1), (.heun(steps: 3), 2), (.midpoint(steps: 3), 2), (.rfSolver2(steps: 3), 2), (.rk4(steps: 3), 4)] {
            for direction in [ODEDirection.forward, .backward] {
                let f = AnnouncingField()
                var x: [Float] = [0.5, -1, 2, 0.25]
                _ = try x.withUnsafeMutableBufferPointer { try ODESolver.integrate(f, x: $0.baseAddress!, rows: 2, method: method, direction: direction) }
                let want = (0..<3).flatMap { s in (0..<per).map { (s, $0) } }
                #expect(f.calls.map(\.step) == want.map(\.0) && f.calls.map(\.evaluation) == want.map(\.1), "\(method.name) \(direction)")
            }
        }
        let f = AnnouncingField()
        var x: [Float] = [0.5, -1]
        _ = try x.withUnsafeMutableBufferPointer { try ODESolver.integrate(f, x: $0.baseAddress!, rows: 1, method: .rk45(), direction: .forward) }
        #expect(f.calls.isEmpty)
    }

    @Test("the MLP and U-Net offer their sites in forward order with the advertised sizes; echoing every feature back changes nothing, bit for bit")
    func sitesAndEcho() throws {
        let unet = UNetConfig(imageShape: [1, 8, 8], channels: [4, 8], blocksPerLevel: 1, groups: 2, attentionResolutions: [4], attentionHeads: 2,
                              timeFeatures: 8, timeEmbedding: 16, classes: 3)
        for spec in [ModelSpec(Self.mlp), ModelSpec(unet)] {
            var rng = Random(seed: 5)
            let net = spec.makeNetwork(rng: &rng)
            let rows = 3, d = spec.pointSize
            let x = rng.normal([rows, d]).data, t: [Float] = [0.1, 0.5, 0.9], labels: [Int32] = [0, 2, 3]
            func pass(_ tap: (any FeatureTap)?) -> [Float] {
                let g = Graph(threads: 1, gradEnabled: false)
                return x.withUnsafeBufferPointer { xp in t.withUnsafeBufferPointer { tp in labels.withUnsafeBufferPointer { lp in
                    net.velocity(g, x: xp.baseAddress!, t: tp.baseAddress!, labels: lp.baseAddress!, rows: rows, tap: tap).value.data
                } } }
            }
            let plain = pass(nil)
            let capture = CapturingTap(echo: true)
            let echoed = pass(capture)
            #expect(plain == echoed, "\(spec.kind): replacing each feature by itself must be the identity")
            #expect(capture.order == spec.featureSites.map(\.name))
            for site in spec.featureSites { #expect(capture.seen[site.name]?.count == rows * site.floatsPerRow, "\(site.name)") }
            // A wrong feature does change the output.
            final class Zero: FeatureTap {
                let site: String
                init(_ s: String) { site = s }
                func share(site: String, rows: Int, computed: () -> [Float]) -> [Float]? {
                    site == self.site ? [Float](repeating: 0, count: computed().count) : nil
                }
            }
            let target = spec.featureSites.last { $0.kind == .attentionValue } ?? spec.featureSites[0]
            #expect(pass(Zero(target.name)) != plain, "\(spec.kind): \(target.name)")
        }
        #expect(unet.featureSites.filter { $0.kind == .attentionValue }.map(\.name) == ["down2_attn.0", "mid_attn.0", "mid_attn.1", "up2_attn.0"])
        #expect(unet.featureSites.first { $0.name == "down2_attn.0" }?.floatsPerRow == 8 * 4 * 4)
    }

    @Test("the cache holds, for interval j and evaluation e, the feature the inversion computed at step N − 1 − j, evaluation e")
    func cacheIndexing() throws {
        let spec = ModelSpec(Self.mlp), w = Self.weights(spec)
        let net = try spec.makeNetwork(stateDict: w)
        var rng = Random(seed: 9)
        let n = 5, d = 6, steps = 4, k = 3
        let x = rng.normal([n, d]), labels: [Int32] = [0, 1, 2, 0, 1]
        for method in [ODEMethod.euler(steps: steps), .midpoint(steps: steps)] {
            let per = method.evaluationsPerStep!
            let site = spec.featureSites[1]
            let cache = try FeatureCache(sites: [site], steps: k, evaluations: per, rows: n)
            // Two row blocks, so both the row offset and the step key are exercised.
            let inv = try ODESolver.solve(model: spec, stateDict: w, x: x, labels: labels, method: method, direction: .backward,
                                          threads: 2, blockRows: 3, recordTrajectory: true, features: FeatureSharing(cache: cache, mode: .record))
            let frames = inv.trajectory!
            let h: Float = -1 / Float(steps)
            func feature(_ state: [Float], _ t: Float) -> [Float] {
                let tap = CapturingTap()
                let g = Graph(threads: 1, gradEnabled: false)
                let ts = [Float](repeating: t, count: n)
                _ = state.withUnsafeBufferPointer { xp in ts.withUnsafeBufferPointer { tp in labels.withUnsafeBufferPointer { lp in
                    net.velocity(g, x: xp.baseAddress!, t: tp.baseAddress!, labels: lp.baseAddress!, rows: n, tap: tap)
                } } }
                return tap.seen[site.name]!
            }
            var expected: [[[Float]]] = []   // [interval][evaluation]
            for j in 0..<k {
                let i = steps - 1 - j
                let xi = frames[i].x.data, ti = frames[i].t
                var evals = [feature(xi, ti)]
                if per == 2 {
                    let v = net.velocity(x: Tensor(shape: [n, d], data: xi), t: [Float](repeating: ti, count: n), labels: labels).data
                    evals.append(feature(zip(xi, v).map { $0 + h / 2 * $1 }, ti + h / 2))
                }
                expected.append(evals)
            }
            for j in 0..<k {
                for e in 0..<per {
                    #expect(cache.isComplete(interval: j, evaluation: e, site: 0))
                    let got = cache.feature(interval: j, evaluation: e, site: 0).data
                    expectClose(vec(got), vec(expected[j][e]), atol: 1e-5, rtol: 1e-4, "\(method.name) interval \(j) evaluation \(e)")
                    // Every other slot holds something else, so a swapped index would fail above.
                    for j2 in 0..<k { for e2 in 0..<per where (j2, e2) != (j, e) {
                        #expect(maxAbsDiff(got, expected[j2][e2]) > 1e-3, "slots (\(j), \(e)) and (\(j2), \(e2)) must differ")
                    } }
                }
            }
        }
    }

    @Test("sharing a whole MLP layer for every step replays the inversion: the edit returns the source under any label, for each solver")
    func fullReplay() throws {
        let spec = ModelSpec(Self.mlp), w = Self.weights(spec)
        var rng = Random(seed: 11)
        let n = 4, steps = 5
        let x = rng.normal([n, 6])
        for method in [ODEMethod.euler(steps: steps), .heun(steps: steps), .midpoint(steps: steps), .rfSolver2(steps: steps), .rk4(steps: steps)] {
            let cache = try FeatureCache(sites: [spec.featureSites[0]], steps: steps, evaluations: method.evaluationsPerStep!, rows: n)
            let inv = try ODESolver.solve(model: spec, stateDict: w, x: x, labels: [0, 0, 1, 1], method: method, direction: .backward,
                                          threads: 2, blockRows: 2, features: FeatureSharing(cache: cache, mode: .record))
            let back = try ODESolver.solve(model: spec, stateDict: w, x: inv.x, labels: [2, 2, 2, 2], guidance: 3, method: method,
                                           direction: .forward, threads: 1, blockRows: 4, features: FeatureSharing(cache: cache, mode: .inject))
            expectClose(back.x, x, atol: 2e-5, rtol: 1e-4, "\(method.name)")
            let plain = try ODESolver.solve(model: spec, stateDict: w, x: inv.x, labels: [2, 2, 2, 2], guidance: 3, method: method,
                                            direction: .forward, threads: 1, blockRows: 4)
            #expect(maxAbsDiff(plain.x.data, x.data) > 1e-2, "without sharing the target label changes the result")
        }
    }

    @Test("a record-mode tap leaves the solve bit-identical; a file-backed cache equals the in-memory one and is removed with it")
    func recordIsTransparentAndFileCache() throws {
        let spec = ModelSpec(Self.mlp), w = Self.weights(spec)
        var rng = Random(seed: 13)
        let x = rng.normal([6, 6]), labels: [Int32] = [0, 1, 2, 0, 1, 2]
        let method = ODEMethod.rfSolver2(steps: 4)
        let plain = try ODESolver.solve(model: spec, stateDict: w, x: x, labels: labels, method: method, direction: .backward, threads: 2, blockRows: 4)
        let memory = try FeatureCache(sites: spec.featureSites, steps: 2, evaluations: 2, rows: 6)
        let recorded = try ODESolver.solve(model: spec, stateDict: w, x: x, labels: labels, method: method, direction: .backward, threads: 2,
                                           blockRows: 4, features: FeatureSharing(cache: memory, mode: .record))
        #expect(plain.x.data == recorded.x.data)
        let path = NSTemporaryDirectory() + "features-\(UUID().uuidString).bin"
        var file: FeatureCache? = try FeatureCache(sites: spec.featureSites, steps: 2, evaluations: 2, rows: 6, file: path)
        _ = try ODESolver.solve(model: spec, stateDict: w, x: x, labels: labels, method: method, direction: .backward, threads: 2,
                                blockRows: 4, features: FeatureSharing(cache: file!, mode: .record))
        #expect(FileManager.default.fileExists(atPath: path))
        #expect((try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) == memory.byteCount)
        for j in 0..<2 { for e in 0..<2 { for s in 0..<spec.featureSites.count {
            #expect(file!.feature(interval: j, evaluation: e, site: s).data == memory.feature(interval: j, evaluation: e, site: s).data)
        } } }
        let a = try ODESolver.solve(model: spec, stateDict: w, x: recorded.x, labels: [1, 1, 1, 1, 1, 1], method: method, direction: .forward,
                                    threads: 2, blockRows: 4, features: FeatureSharing(cache: memory, mode: .inject))
        let b = try ODESolver.solve(model: spec, stateDict: w, x: recorded.x, labels: [1, 1, 1, 1, 1, 1], method: method, direction: .forward,
                                    threads: 2, blockRows: 4, features: FeatureSharing(cache: file!, mode: .inject))
        #expect(a.x.data == b.x.data)
        file = nil
        #expect(!FileManager.default.fileExists(atPath: path))
    }

    @Test("misuse is an error, never a trap: other solvers, sizes, an unrecorded cache, an existing file")
    func misuse() throws {
        let spec = ModelSpec(Self.mlp), w = Self.weights(spec)
        let cache = try FeatureCache(sites: [spec.featureSites[0]], steps: 2, evaluations: 2, rows: 2)
        func problem(_ m: ODEMethod, _ rows: Int = 2, mode: FeatureSharing.Mode = .record, direction: ODEDirection? = nil) -> String? {
            do {
                _ = try ODESolver.solve(model: spec, stateDict: w, x: Tensor(shape: [rows, 6], data: [Float](repeating: 0.1, count: rows * 6)),
                                        labels: [Int32](repeating: 0, count: rows), method: m, direction: direction ?? (mode == .record ? .backward : .forward),
                                        threads: 1, features: FeatureSharing(cache: cache, mode: mode))
                return nil
            } catch { return "\(error)" }
        }
        #expect(problem(.rk45())?.contains("fixed-step") == true)
        #expect(problem(.euler(steps: 4))?.contains("evaluations") == true)
        #expect(problem(.midpoint(steps: 1))?.contains("steps") == true)
        #expect(problem(.midpoint(steps: 4), 3)?.contains("rows") == true)
        #expect(problem(.midpoint(steps: 4), mode: .inject)?.contains("never recorded") == true)
        #expect(problem(.midpoint(steps: 4), direction: .forward)?.contains("inversion") == true)
        #expect(problem(.midpoint(steps: 4)) == nil)
        #expect(cache.recordedSteps == 4)
        #expect(problem(.midpoint(steps: 4), mode: .inject, direction: .backward)?.contains("denoising") == true)
        #expect(problem(.midpoint(steps: 5), mode: .inject)?.contains("recorded by a solve of 4 steps") == true)
        #expect(problem(.midpoint(steps: 4), mode: .inject) == nil)
        #expect(throws: FeatureCacheError.self) { try FeatureCache(sites: [], steps: 1, evaluations: 1, rows: 1) }
        #expect(throws: FeatureCacheError.self) {
            try FeatureCache(sites: [FeatureSite(name: "a", kind: .activation, floatsPerRow: Int.max / 2)], steps: 4, evaluations: 2, rows: 2)
        }
        let path = NSTemporaryDirectory() + "features-\(UUID().uuidString).bin"
        FileManager.default.createFile(atPath: path, contents: Data([1]))
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(throws: FeatureCacheError.self) { try FeatureCache(sites: [spec.featureSites[0]], steps: 1, evaluations: 1, rows: 1, file: path) }
    }
}

private func vec(_ a: [Float]) -> Tensor { Tensor(shape: [a.count], data: a) }

private func maxAbsDiff(_ a: [Float], _ b: [Float]) -> Float {
    zip(a, b).reduce(0) { max($0, abs($1.0 - $1.1)) }
}
