import Synchronization
import Testing
import Dispatch
import Glibc
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

@Suite("ComputePool")
struct ComputePoolTests {
    /// Per-index hit counters that workers may bump concurrently.
    final class Counters: Sendable {
        let hits: Mutex<[Int]>
        init(_ n: Int) { hits = Mutex([Int](repeating: 0, count: n)) }
        func hit(_ i: Int) { hits.withLock { $0[i] += 1 } }
        var values: [Int] { hits.withLock { $0 } }
    }

    @Test("every task runs exactly once, over many consecutive regions")
    func everyTaskOnce() {
        let pool = ComputePool.shared
        for round in 0..<2_000 {
            let n = 1 + round % 7
            let c = Counters(n)
            pool.run(n) { c.hit($0) }
            #expect(c.values == [Int](repeating: 1, count: n), "round \(round)")
        }
    }

    @Test("a region started inside a task runs serially instead of deadlocking")
    func nestedRegionRunsInline() {
        let outer = Counters(4), inner = Counters(4 * 3)
        ComputePool.shared.run(4) { i in
            outer.hit(i)
            ComputePool.shared.run(3) { j in inner.hit(i * 3 + j) }
        }
        #expect(outer.values == [1, 1, 1, 1])
        #expect(inner.values == [Int](repeating: 1, count: 12))
    }

    @Test("regions started from several threads at once all complete correctly")
    func concurrentCallers() {
        let c = Counters(8 * 50 * 5)
        DispatchQueue.concurrentPerform(iterations: 8) { caller in
            for r in 0..<50 {
                ComputePool.shared.run(5) { c.hit((caller * 50 + r) * 5 + $0) }
            }
        }
        #expect(c.values.allSatisfy { $0 == 1 })
    }

    @Test("workers really run tasks concurrently (two tasks wait for each other)")
    func tasksRunConcurrently() {
        let pool = ComputePool(workers: 1)
        let arrived = Atomic<Int>(0)
        let bothSeen = Mutex<[Bool]>([false, false])
        for _ in 0..<50 {
            arrived.store(0, ordering: .relaxed)
            bothSeen.withLock { $0 = [false, false] }
            pool.run(2) { i in
                arrived.add(1, ordering: .relaxed)
                // Wait (bounded) for the other task: only possible if another thread runs it.
                let deadline = DispatchTime.now().uptimeNanoseconds + 10_000_000_000  // 10 s, for loaded CI machines
                while arrived.load(ordering: .relaxed) < 2 && DispatchTime.now().uptimeNanoseconds < deadline {}
                bothSeen.withLock { $0[i] = arrived.load(ordering: .relaxed) == 2 }
            }
            #expect(bothSeen.withLock { $0 } == [true, true])
        }
    }

    @Test("alternating region sizes with sleeping workers never loses or repeats a task")
    func alternatingSizesStress() {
        let pool = ComputePool(workers: 3)
        for round in 0..<3_000 {
            let n = round % 3 == 0 ? 64 : 2
            let c = Counters(n)
            pool.run(n) { i in
                if i == 0 && round % 97 == 0 { usleep(200) }  // let workers fall behind or sleep
                c.hit(i)
            }
            #expect(c.values == [Int](repeating: 1, count: n), "round \(round)")
        }
    }

    @Test("a pool that has slept picks up new work")
    func wakesAfterSleeping() async throws {
        let pool = ComputePool(workers: 1)
        let first = Counters(2)
        pool.run(2) { first.hit($0) }
        try await Task.sleep(nanoseconds: 300_000_000)  // long enough for the worker to go to sleep
        let second = Counters(64)
        pool.run(64) { second.hit($0) }
        #expect(first.values == [1, 1])
        #expect(second.values == [Int](repeating: 1, count: 64))
    }
}
