public import ReflowEngine
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

// RF-Edit's feature sharing (Wang et al., "Taming Rectified Flow for Inversion and Editing",
// ICML 2025, arXiv:2411.04746; official code `FLUX_Image_Edit/src/flux/{sampling.py,
// modules/layers.py}`): while an image is inverted, the self-attention values V of chosen
// blocks are stored for the last k inversion steps, for every solver evaluation of those steps,
// keyed by (timestep, first/second evaluation, block); the first k denoising steps of the edit
// replace V by the stored values (Q and K come from the current pass).
//
// Keys here: the *interval* j of the denoising order (j = 0 is the interval next to the noise,
// t ∈ [0, 1/N] in reflowd's convention), the evaluation e within a step, and the site. Inversion
// step i (integration order, from the data) covers interval N − 1 − i; denoising step j covers
// interval j. This is the official code's pairing: it keys an inversion step by its end time
// (`t_prev`) and a denoising step by its start time (`t_curr`), which name the same interval.

/// A place in a network whose features an edit can share between passes.
public struct FeatureSite: Sendable, Equatable, Codable {
    public enum Kind: String, Sendable, Codable {
        /// The value tensor V of a self-attention block ([C, H, W] per image); Q and K stay
        /// the current pass's.
        case attentionValue
        /// A hidden activation (a ResBlock's output, an MLP hidden layer after its nonlinearity),
        /// replaced whole: the fallback for models without attention.
        case activation
    }
    /// The name a spec uses (`down2_attn.0`, `mid.1`, `layers.1`).
    public var name: String
    public var kind: Kind
    /// Floats of the feature per row (per image).
    public var floatsPerRow: Int

    public init(name: String, kind: Kind, floatsPerRow: Int) {
        self.name = name
        self.kind = kind
        self.floatsPerRow = floatsPerRow
    }
}

/// What a network asks at each of its feature sites during a forward pass (set by
/// ``NetworkVelocityField`` for an edit; nil otherwise, which is the plain pass).
public protocol FeatureTap: AnyObject {
    /// Site `site` of a pass of `rows` rows: `computed()` gives the feature the pass computed,
    /// [rows × floatsPerRow] row-major (called only when the tap needs it). Returns the
    /// [rows × floatsPerRow] floats the pass should use instead, or nil to keep its own.
    func share(site: String, rows: Int, computed: () -> [Float]) -> [Float]?
}

/// Why a feature cache could not be made or used.
public struct FeatureCacheError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { "feature cache: \(message)" }
}

/// Storage of the shared features of an edit: `steps` intervals × `evaluations` per step ×
/// `sites`, each holding `rows` rows of the site's floats.
///
/// Layout (floats): slot (j, e) = j·evaluations + e holds, for each site s in order, its
/// [rows, floatsPerRow(s)] block. Row blocks of different solver workers write disjoint rows.
///
/// The storage is anonymous memory, or, when `file` is given, a file mapped shared into memory
/// (`mmap`): the kernel writes its pages back to the disk and drops them under memory pressure,
/// so an edit whose features exceed its memory budget keeps only the pages in use resident.
/// The file is removed when the cache is released.
public final class FeatureCache: @unchecked Sendable {
    public let sites: [FeatureSite]
    /// k: the intervals kept (the last k inversion steps, the first k denoising steps).
    public let steps: Int
    /// Solver evaluations per step (2 for RF-Solver-2 and midpoint).
    public let evaluations: Int
    public let rows: Int
    /// The backing file, when on disk.
    public let file: String?
    /// Bytes of feature storage.
    public let byteCount: Int

    private let base: UnsafeMutablePointer<Float>
    private let siteOffsets: [Int]      // floats before site s within a slot, per row
    private let floatsPerSlot: Int
    /// Rows written per (slot, site), to refuse injecting what was never recorded.
    private let written: Mutex<[Int]>
    /// Steps of the recording solve, once one has finished (an injecting solve must match).
    private let recorded = Mutex<Int?>(nil)

    /// Bytes a cache of this geometry needs, or nil on overflow.
    public static func bytes(sites: [FeatureSite], steps: Int, evaluations: Int, rows: Int) -> Int? {
        var perRow = 0
        for s in sites {
            let (a, o) = perRow.addingReportingOverflow(s.floatsPerRow)
            if o { return nil }
            perRow = a
        }
        var total = perRow
        for f in [steps, evaluations, rows, MemoryLayout<Float>.size] {
            let (a, o) = total.multipliedReportingOverflow(by: f)
            if o { return nil }
            total = a
        }
        return total
    }

    /// Allocates the cache (zeroed), in memory or mapped from a new `file`.
    /// - Throws: ``FeatureCacheError`` for an empty or overflowing geometry, or a failed file
    ///   call (with its errno).
    public init(sites: [FeatureSite], steps: Int, evaluations: Int, rows: Int, file: String? = nil) throws {
        guard !sites.isEmpty, steps >= 1, evaluations >= 1, rows >= 1, sites.allSatisfy({ $0.floatsPerRow >= 1 }) else {
            throw FeatureCacheError("needs at least one site, step, evaluation and row")
        }
        guard let bytes = FeatureCache.bytes(sites: sites, steps: steps, evaluations: evaluations, rows: rows) else {
            throw FeatureCacheError("\(steps) steps × \(evaluations) evaluations × \(rows) rows of \(sites.count) sites overflow")
        }
        self.sites = sites
        self.steps = steps
        self.evaluations = evaluations
        self.rows = rows
        self.file = file
        self.byteCount = bytes
        var offsets = [Int](), acc = 0
        for s in sites { offsets.append(acc); acc += s.floatsPerRow }
        siteOffsets = offsets
        floatsPerSlot = acc * rows
        written = Mutex([Int](repeating: 0, count: steps * evaluations * sites.count))
        if let file {
            let fd = open(file, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw FeatureCacheError("open(\(file)): \(String(cString: strerror(errno)))") }
            defer { close(fd) }
            // Allocated, not sparse: a full disk is an error here (ENOSPC) rather than a SIGBUS
            // when a page of the mapping is first written.
            let rc = posix_fallocate(fd, 0, off_t(bytes))
            guard rc == 0 else {
                unlink(file)
                throw FeatureCacheError("posix_fallocate(\(file), \(bytes) bytes): \(String(cString: strerror(rc)))")
            }
            let p = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
            guard let p, p != MAP_FAILED else {
                let e = errno
                unlink(file)
                throw FeatureCacheError("mmap(\(file), \(bytes) bytes): \(String(cString: strerror(e)))")
            }
            base = p.bindMemory(to: Float.self, capacity: bytes / 4)
        } else {
            base = .allocate(capacity: bytes / 4)
            base.initialize(repeating: 0, count: bytes / 4)
        }
    }

    deinit {
        if let file {
            munmap(UnsafeMutableRawPointer(base), byteCount)
            unlink(file)
        } else {
            base.deallocate()
        }
    }

    /// The index of a site by name.
    public func siteIndex(_ name: String) -> Int? { sites.firstIndex { $0.name == name } }

    /// Row `row` of site `site` in slot (interval, evaluation): floatsPerRow floats.
    func pointer(interval j: Int, evaluation e: Int, site s: Int, row: Int) -> UnsafeMutablePointer<Float> {
        base + (j * evaluations + e) * floatsPerSlot + siteOffsets[s] * rows + row * sites[s].floatsPerRow
    }

    /// Stores rows `row..<row + count` of a site's feature (`values`: [count × floatsPerRow]).
    func store(interval j: Int, evaluation e: Int, site s: Int, row: Int, count: Int, values: UnsafePointer<Float>) {
        pointer(interval: j, evaluation: e, site: s, row: row).update(from: values, count: count * sites[s].floatsPerRow)
        written.withLock { $0[(j * evaluations + e) * sites.count + s] += count }
    }

    /// Notes that a recording solve of `steps` steps stored its blocks.
    func markRecorded(steps: Int) { recorded.withLock { $0 = steps } }

    /// Steps of the solve that recorded the cache (nil before one finished).
    public var recordedSteps: Int? { recorded.withLock { $0 } }

    /// Whether every row of slot (interval, evaluation) of a site was stored.
    public func isComplete(interval j: Int, evaluation e: Int, site s: Int) -> Bool {
        written.withLock { $0[(j * evaluations + e) * sites.count + s] >= rows }
    }

    /// A copy of one stored feature: [rows, floatsPerRow] of slot (interval, evaluation, site).
    public func feature(interval j: Int, evaluation e: Int, site s: Int) -> Tensor {
        let f = sites[s].floatsPerRow
        let p = pointer(interval: j, evaluation: e, site: s, row: 0)
        return Tensor(shape: [rows, f], data: Array(UnsafeBufferPointer(start: p, count: rows * f)))
    }
}

/// What a solve does with a ``FeatureCache``: `record` (an inversion: its last `cache.steps`
/// steps store) or `inject` (a denoising: its first `cache.steps` steps read).
public struct FeatureSharing: Sendable {
    public enum Mode: String, Sendable { case record, inject }
    public let cache: FeatureCache
    public let mode: Mode

    public init(cache: FeatureCache, mode: Mode) {
        self.cache = cache
        self.mode = mode
    }

    /// The cached interval of step `i` (integration order) of a solve of `steps` steps, or nil.
    public func interval(ofStep i: Int, steps: Int) -> Int? {
        let j = mode == .record ? steps - 1 - i : i
        return j >= 0 && j < cache.steps ? j : nil
    }

    /// Why this sharing cannot run with `method` in `direction` on `rows` rows (nil when it can):
    /// a recording is an inversion (backward), an injection a denoising (forward) with the
    /// recording's steps.
    func problem(method: ODEMethod, direction: ODEDirection, rows: Int) -> String? {
        switch method {
        case .euler, .heun, .midpoint, .rk4, .rfSolver2: break
        case .rk45, .remix, .ddim:
            return "feature sharing needs a fixed-step flow solver (euler, heun, midpoint, rk4 or rfSolver2), not \(method.name)"
        }
        let steps = method.steps!, e = method.evaluationsPerStep!
        if e != cache.evaluations { return "the cache holds \(cache.evaluations) evaluations per step, \(method.name) makes \(e)" }
        if cache.steps > steps { return "the cache holds \(cache.steps) steps, the solve has \(steps)" }
        if rows != cache.rows { return "the cache holds \(cache.rows) rows, the solve has \(rows)" }
        switch mode {
        case .record where direction != .backward: return "features are recorded by an inversion (direction backward)"
        case .inject where direction != .forward: return "features are injected into a denoising (direction forward)"
        case .inject:
            if let r = cache.recordedSteps, r != steps { return "the cache was recorded by a solve of \(r) steps, this one has \(steps)" }
        default: break
        }
        return nil
    }
}

/// A solver worker's view of a ``FeatureSharing``: the rows of its current block and the
/// (interval, evaluation) of the evaluation in progress (``NetworkVelocityField`` sets both).
final class FeatureSharingTap: FeatureTap {
    let sharing: FeatureSharing
    let steps: Int
    var rowOffset = 0, blockRows = 0
    /// (interval, evaluation) of the current evaluation, nil outside the cached steps.
    var current: (interval: Int, evaluation: Int)?
    /// The first inconsistency met (a feature injected that was never recorded, a site of
    /// another shape); the solve fails with it.
    var failure: String?

    init(_ sharing: FeatureSharing, steps: Int) {
        self.sharing = sharing
        self.steps = steps
    }

    func position(step: Int, evaluation: Int) {
        current = sharing.interval(ofStep: step, steps: steps).map { ($0, evaluation) }
    }

    func share(site: String, rows: Int, computed: () -> [Float]) -> [Float]? {
        guard let (j, e) = current, let s = sharing.cache.siteIndex(site), failure == nil else { return nil }
        let cache = sharing.cache, f = cache.sites[s].floatsPerRow
        // A guided pass evaluates the block twice over (labelled rows, then the null label).
        // Recording keeps the labelled half; injecting gives the recorded block to both halves.
        // There is no null-label record of an unguided inversion, and the features depend on the
        // label (it enters every block), so the null half gets the source label's features: at
        // a whole-activation site this makes both halves equal, so guidance has no effect in
        // the shared steps; at an attention V the halves still differ through Q, K and the rest.
        guard blockRows > 0, rows % blockRows == 0 else {
            failure = "site \(site): a pass of \(rows) rows in a block of \(blockRows)"
            return nil
        }
        switch sharing.mode {
        case .record:
            let values = computed()
            guard values.count == rows * f else {
                failure = "site \(site) computed \(values.count) floats for \(rows) rows, expected \(f) per row"
                return nil
            }
            values.withUnsafeBufferPointer { cache.store(interval: j, evaluation: e, site: s, row: rowOffset, count: blockRows, values: $0.baseAddress!) }
            return nil
        case .inject:
            guard cache.isComplete(interval: j, evaluation: e, site: s) else {
                failure = "site \(site) of interval \(j), evaluation \(e) was never recorded"
                return nil
            }
            let src = cache.pointer(interval: j, evaluation: e, site: s, row: rowOffset)
            var out = [Float](repeating: 0, count: rows * f)
            out.withUnsafeMutableBufferPointer { o in
                for copy in 0..<(rows / blockRows) { (o.baseAddress! + copy * blockRows * f).update(from: src, count: blockRows * f) }
            }
            return out
        }
    }
}
