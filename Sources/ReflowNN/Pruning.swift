public import ReflowEngine

// Unstructured and structured pruning as pure functions over named weight tensors: masks, the
// magnitude / random selection of a global or per-layer threshold, Activating-while-Pruning's
// selection (Liu et al., TMLR 2023), and the L1 ranking of whole units. The prune job
// (ReflowJobs/PruneJob.swift) drives them; optimizers honour the masks (``Optimizer/setMasks(_:)``).

/// Where a pruning threshold applies.
public enum PruneScope: String, Codable, Sendable, CaseIterable {
    /// One threshold over every prunable tensor together (layers end with different sparsities).
    case global
    /// The same fraction of each prunable tensor's surviving weights.
    case layerwise
}

/// How the base method ranks surviving weights.
public enum PruneCriterion: String, Codable, Sendable, CaseIterable {
    /// Smallest |w| first.
    case magnitude
    /// Uniformly at random (the baseline every criterion should beat).
    case random
}

/// Which surviving weights Activating-while-Pruning removes (the paper's rule and the three
/// ablations of ALGORITHMS.md §7).
public enum APSelection: String, Codable, Sendable, CaseIterable {
    /// AP: negative weights (w_T < 0) with the smallest movement |w_T − w_0| since the cycle began.
    case movement
    /// Ablation: negative weights at random.
    case random
    /// Ablation: negative weights with the smallest |w_T|.
    case magnitude
    /// Ablation: positive weights (w_T > 0) with the smallest movement (expected to raise the DNR).
    case positive
}

/// 0/1 masks of prunable parameters by name (same shapes as the parameters). A weight whose
/// mask is 0 is pruned: it is zero and stays zero (the optimizer re-applies the mask).
public struct PruneMasks: Sendable, Equatable {
    public var masks: [String: Tensor]

    public init(_ masks: [String: Tensor] = [:]) { self.masks = masks }

    /// All-ones masks for the named tensors of `weights`.
    public init(dense names: [String], weights: [String: Tensor]) {
        var m = [String: Tensor]()
        for n in names { if let w = weights[n] { m[n] = Tensor.ones(w.shape) } }
        masks = m
    }

    /// Surviving (mask 1) entries of one tensor.
    public func alive(_ name: String) -> Int { masks[name].map { Self.count($0) } ?? 0 }

    /// Entries of one tensor.
    public func size(_ name: String) -> Int { masks[name]?.count ?? 0 }

    public var aliveCount: Int { masks.values.reduce(0) { $0 + Self.count($1) } }
    public var totalCount: Int { masks.values.reduce(0) { $0 + $1.count } }

    /// Fraction of masked entries over all masks (0 with no masks).
    public var sparsity: Double { totalCount == 0 ? 0 : 1 - Double(aliveCount) / Double(totalCount) }

    /// Fraction of masked entries of one tensor.
    public func sparsity(_ name: String) -> Double {
        let n = size(name)
        return n == 0 ? 0 : 1 - Double(alive(name)) / Double(n)
    }

    /// `weights` with every masked entry set to exactly 0 (tensors without a mask unchanged).
    public func applied(to weights: [String: Tensor]) -> [String: Tensor] {
        var out = weights
        for (n, m) in masks {
            guard var w = out[n], w.shape == m.shape else { continue }
            w.data.withUnsafeMutableBufferPointer { wb in
                m.data.withUnsafeBufferPointer { mb in for j in wb.indices where mb[j] == 0 { wb[j] = 0 } }
            }
            out[n] = w
        }
        return out
    }

    static func count(_ t: Tensor) -> Int { t.data.reduce(0) { $0 + ($1 != 0 ? 1 : 0) } }
}

/// What one pruning step removed.
public struct PruneStepReport: Sendable, Equatable {
    /// Weights removed by the base method (magnitude or random).
    public var base: Int
    /// Weights removed by AP's selection.
    public var ap: Int

    public init(base: Int, ap: Int) {
        self.base = base
        self.ap = ap
    }
}

public enum Pruning {
    /// Removes `fraction` of the surviving prunable weights (`names`, in this order): first
    /// `fraction − apFraction` of them by `criterion` under `scope`, then `apFraction` of them
    /// (of the survivors counted before this step) by `ap` among what is left. Counts are
    /// rounded to the nearest integer; with `layerwise` they are taken per tensor.
    ///
    /// - Parameters:
    ///   - weights: the trained weights w_T (the ranking's input).
    ///   - start: the weights at the start of the cycle w_0 (AP's movement |w_T − w_0|); needed
    ///     only when `apFraction > 0` with `.movement` or `.positive`.
    ///   - rng: draws of the random criterion and the random ablation.
    ///
    /// Ties are broken by tensor order, then index, so a selection is a function of its inputs.
    @discardableResult
    public static func prune(_ masks: inout PruneMasks, names: [String], weights: [String: Tensor],
                             start: [String: Tensor]? = nil, fraction: Double, apFraction: Double = 0,
                             criterion: PruneCriterion = .magnitude, scope: PruneScope = .global,
                             ap: APSelection = .movement, rng: inout Random) -> PruneStepReport {
        let names = names.filter { masks.masks[$0] != nil && weights[$0]?.shape == masks.masks[$0]?.shape }
        let apShare = max(0, min(apFraction, fraction)), baseShare = max(0, fraction - apShare)
        var report = PruneStepReport(base: 0, ap: 0)
        let groups: [[String]] = scope == .global ? [names] : names.map { [$0] }
        // Survivor counts before this step, per group: both shares are fractions of them.
        let before = groups.map { g in g.reduce(0) { $0 + masks.alive($1) } }
        for (gi, group) in groups.enumerated() {
            let n = Int((Double(before[gi]) * baseShare).rounded())
            report.base += remove(&masks, group, count: n, key: criterion == .magnitude ? .magnitude : .random,
                                  sign: .any, weights: weights, start: nil, rng: &rng)
        }
        guard apShare > 0 else { return report }
        let key: RankKey = switch ap {
        case .movement, .positive: .movement
        case .magnitude: .magnitude
        case .random: .random
        }
        for (gi, group) in groups.enumerated() {
            let n = Int((Double(before[gi]) * apShare).rounded())
            report.ap += remove(&masks, group, count: n, key: key, sign: ap == .positive ? .positive : .negative,
                                weights: weights, start: start, rng: &rng)
        }
        return report
    }

    enum RankKey { case magnitude, movement, random }
    enum SignFilter { case any, negative, positive }

    /// Removes `count` surviving entries of `group` (with the sign `sign`) of the smallest key:
    /// |w|, or |w − start| (a missing start counts as 0), or a uniformly random choice. Returns
    /// how many were removed (fewer when fewer are eligible).
    static func remove(_ masks: inout PruneMasks, _ group: [String], count: Int, key: RankKey, sign: SignFilter,
                       weights: [String: Tensor], start: [String: Tensor]?, rng: inout Random) -> Int {
        guard count > 0 else { return 0 }
        // Candidates as (tensor index, entry index) with their keys in a parallel array.
        var cand = [(Int32, Int32)](), keys = [Float]()
        for (ti, name) in group.enumerated() {
            guard let m = masks.masks[name]?.data, let w = weights[name]?.data else { continue }
            let s0 = start?[name]?.data
            let s = (s0?.count == w.count) ? s0 : nil
            for j in 0..<m.count where m[j] != 0 {
                let wj = w[j]
                switch sign {
                case .any: break
                case .negative: if !(wj < 0) { continue }
                case .positive: if !(wj > 0) { continue }
                }
                cand.append((Int32(ti), Int32(j)))
                switch key {
                case .magnitude: keys.append(Swift.abs(wj))
                case .movement: keys.append(Swift.abs(wj - (s?[j] ?? 0)))
                case .random: break
                }
            }
        }
        let n = min(count, cand.count)
        guard n > 0 else { return 0 }
        var chosen: ArraySlice<(Int32, Int32)>
        if key == .random {
            // Partial Fisher–Yates: the first n of a uniform permutation.
            for i in 0..<n { cand.swapAt(i, i + rng.int(below: cand.count - i)) }
            chosen = cand[0..<n]
        } else {
            // Candidates are in (tensor, index) order, so a stable sort by key breaks ties by position.
            let order = cand.indices.sorted { a, b in keys[a] != keys[b] ? keys[a] < keys[b] : a < b }
            chosen = ArraySlice(order.prefix(n).map { cand[$0] })
        }
        for (ti, j) in chosen { masks.masks[group[Int(ti)]]!.data[Int(j)] = 0 }
        return n
    }

    /// Number of cycles that prune `rate` of the survivors each until `target` sparsity is
    /// reached (the last cycle prunes only what is still missing), and each cycle's fraction of
    /// the survivors: 1 − (1 − rate)^c ≥ target.
    public static func schedule(target: Double, rate: Double) -> [Double] {
        guard target > 0, rate > 0 else { return [] }
        var out = [Double](), alive = 1.0
        while 1 - alive < target - 1e-9 && out.count < 1000 {
            let needed = 1 - (1 - target) / alive
            let f = needed > rate - 1e-12 ? rate : needed   // a target on the schedule's grid needs no sliver cycle
            out.append(f)
            alive *= 1 - f
        }
        return out
    }

    // MARK: structured

    /// L1 norm of each output unit's incoming weights: rows of a linear weight [out, in], filters
    /// of a convolution weight [O, C, KH, KW] (everything after the first axis).
    public static func unitNorms(_ weight: Tensor) -> [Double] {
        let units = weight.shape[0], per = weight.count / max(1, units)
        return (0..<units).map { u in
            var s = 0.0
            for j in 0..<per { s += Double(Swift.abs(weight.data[u * per + j])) }
            return s
        }
    }

    /// The units kept when `fraction` of them (rounded, at most all but one) with the smallest
    /// norms are removed; ascending indices. Ties: the lower index is removed first.
    public static func keptUnits(norms: [Double], fraction: Double) -> [Int] {
        let remove = min(max(0, Int((Double(norms.count) * fraction).rounded())), max(0, norms.count - 1))
        let order = norms.indices.sorted { norms[$0] != norms[$1] ? norms[$0] < norms[$1] : $0 < $1 }
        return Set(order.dropFirst(remove)).sorted()
    }

    /// Rows `keep` of the first axis of `t` (output units of a weight or a bias).
    public static func selectOutputs(_ t: Tensor, _ keep: [Int]) -> Tensor {
        let per = t.count / max(1, t.shape[0])
        var data = [Float]()
        data.reserveCapacity(keep.count * per)
        for u in keep { data.append(contentsOf: t.data[(u * per)..<((u + 1) * per)]) }
        return Tensor(shape: [keep.count] + Array(t.shape.dropFirst()), data: data)
    }

    /// Columns of the second axis of `t` kept in groups of `block` (input units of a weight:
    /// a linear weight's columns with block 1, a convolution's input channels, or a linear layer
    /// after a flattened [C, H, W] map with block H·W).
    public static func selectInputs(_ t: Tensor, _ keep: [Int], block: Int = 1) -> Tensor {
        let rows = t.shape[0], cols = t.count / max(1, rows)
        let inner = t.rank > 2 ? Array(t.shape.dropFirst(2)).reduce(1, *) : 1
        let unit = block * inner
        var data = [Float]()
        data.reserveCapacity(rows * keep.count * unit)
        for r in 0..<rows {
            for u in keep { data.append(contentsOf: t.data[(r * cols + u * unit)..<(r * cols + (u + 1) * unit)]) }
        }
        var shape = t.shape
        shape[1] = t.rank > 2 ? keep.count : keep.count * block
        return Tensor(shape: shape, data: data)
    }
}
