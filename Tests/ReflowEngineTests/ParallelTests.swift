import Synchronization
import Testing
import ReflowEngine

@Suite("parallelChunks")
struct ParallelTests {
    static let cases: [(count: Int, threads: Int, grain: Int)] = {
        var out = [(count: Int, threads: Int, grain: Int)]()
        for count in [0, 1, 2, 7, 8, 9, 63, 64, 65, 100, 1000, 1023] {
            for threads in [1, 2, 3, 4, 7, 16] {
                for grain in [1, 3, 8, 64, 2000] { out.append((count, threads, grain)) }
            }
        }
        return out
    }()

    @Test("covers every index exactly once in at most `threads` grain-aligned chunks")
    func coverage() {
        for c in Self.cases {
            let ranges = Mutex<[Range<Int>]>([])
            let hits = Mutex<[Int]>([Int](repeating: 0, count: c.count))
            parallelChunks(count: c.count, threads: c.threads, grain: c.grain) { r in
                ranges.withLock { $0.append(r) }
                hits.withLock { h in for i in r { h[i] += 1 } }
            }
            let label = "count \(c.count) threads \(c.threads) grain \(c.grain)"
            let rs = ranges.withLock { $0 }.sorted { $0.lowerBound < $1.lowerBound }
            #expect(hits.withLock { $0 }.allSatisfy { $0 == 1 }, "\(label): not every index exactly once")
            #expect(rs.allSatisfy { !$0.isEmpty }, "\(label): empty chunk")
            #expect(rs.count <= max(1, c.threads), "\(label): \(rs.count) chunks")
            if c.count == 0 { #expect(rs.isEmpty, "\(label): body ran for an empty range") }
            // Chunks tile 0..<count in order; all but the last start and end on grain multiples.
            var next = 0
            for (i, r) in rs.enumerated() {
                #expect(r.lowerBound == next, "\(label): gap/overlap at \(r)")
                #expect(r.lowerBound % c.grain == 0, "\(label): chunk \(r) not grain-aligned")
                if i < rs.count - 1 { #expect(r.count % c.grain == 0, "\(label): chunk \(r) not a grain multiple") }
                next = r.upperBound
            }
            if c.count > 0 { #expect(next == c.count, "\(label): ends at \(next)") }
            // Uses the available parallelism when there is enough work.
            let units = (c.count + c.grain - 1) / c.grain
            if c.count > 0 { #expect(rs.count == min(c.threads, units), "\(label): \(rs.count) chunks for \(units) units") }
        }
    }

    @Test("a single chunk runs on the calling thread")
    func singleChunkInline() {
        let ran = Mutex(0)
        parallelChunks(count: 5, threads: 1) { r in ran.withLock { $0 += r.count } }
        #expect(ran.withLock { $0 } == 5)
    }
}
