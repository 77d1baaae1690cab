public import ReflowEngine
import Foundation
import ReflowCodec

/// Reflow pairs on disk: the endpoints z1 plus the state of the noise generator that drew z0.
///
/// A reflow stores (z0, z1) from a teacher ODE (Liu et al. 2022, Alg. 1). z0 is standard normal
/// noise, so instead of the tensor the file keeps the ``Random/State`` it was drawn from and the
/// draw order (`Random.normal([N, d])`, row-major); z0 is regenerated bit for bit on load, as
/// rfpp's `NoiseGenerator` does. That halves the file and records exactly which noise was used.
/// Format: a safetensors file with one tensor `z1` [N, d] and `__metadata__` keys
/// `reflowd.pairs_version = "1"`, `reflowd.noise_rng` (JSON state), `reflowd.z0_sha256` (digest
/// of the regenerated z0 bytes, checked on load) and any caller metadata (teacher, solver, NFE).
/// Pairs a class-conditional teacher generated also hold `labels` [N] (the class of each pair,
/// as exact small integers in float32, since safetensors readers expect one dtype here).
/// Written atomically like checkpoints.
public enum PairStore {
    public static let version = "1"

    /// Writes pairs whose z0 was drawn as `Random(state: noise).normal(z1.shape)`.
    /// Throws ``PairStoreError/noiseMismatch`` if `z0` is given and does not match that draw.
    public static func write(z1: Tensor, noise: Random.State, z0 expected: Tensor? = nil, labels: [Int32]? = nil,
                             metadata: [String: String] = [:], to path: String) throws {
        guard z1.rank == 2, z1.shape[0] > 0, z1.shape[1] > 0 else { throw PairStoreError.badShape(z1.shape) }
        var rng = try Random(state: noise)
        let z0 = rng.normal(z1.shape)
        if let expected, expected.shape != z0.shape || expected.data != z0.data { throw PairStoreError.noiseMismatch }
        var meta = metadata
        meta["reflowd.pairs_version"] = version
        meta["reflowd.noise_rng"] = String(decoding: try JSONEncoder().encode(noise), as: UTF8.self)
        meta["reflowd.z0_sha256"] = digest(z0)
        try SafeTensors.write([(name: "z1", tensor: z1)] + (try labelTensor(labels, rows: z1.shape[0])), metadata: meta, to: path)
    }

    /// `labels` as a [N] tensor (checked against the row count), or nothing.
    static func labelTensor(_ labels: [Int32]?, rows: Int) throws -> [(name: String, tensor: Tensor)] {
        guard let labels else { return [] }
        guard labels.count == rows, labels.allSatisfy({ $0 >= 0 && $0 < 1 << 24 }) else { throw PairStoreError.badShape([labels.count]) }
        return [(name: "labels", tensor: Tensor(shape: [rows], data: labels.map(Float.init)))]
    }

    /// Writes pairs whose z0 is not standard normal noise (π0 another distribution, the
    /// domain-transfer case): both tensors are stored and `reflowd.noise_rng` is absent.
    public static func write(z0: Tensor, z1: Tensor, labels: [Int32]? = nil, metadata: [String: String] = [:], to path: String) throws {
        guard z1.rank == 2, z1.shape[0] > 0, z1.shape[1] > 0 else { throw PairStoreError.badShape(z1.shape) }
        guard z0.shape == z1.shape else { throw PairStoreError.badShape(z0.shape) }
        var meta = metadata
        meta["reflowd.pairs_version"] = version
        meta["reflowd.z0_sha256"] = digest(z0)
        try SafeTensors.write([(name: "z0", tensor: z0), (name: "z1", tensor: z1)] + (try labelTensor(labels, rows: z1.shape[0])),
                              metadata: meta, to: path)
    }

    /// Reads pairs (regenerating z0 from the recorded noise state when it is not stored) and
    /// checks z0 against its digest; returns them with their labels (nil when unlabelled) and
    /// the caller metadata.
    public static func read(path: String) throws -> (z0: Tensor, z1: Tensor, labels: [Int32]?, metadata: [String: String]) {
        let file = try SafeTensors.read(path: path)
        guard file.metadata["reflowd.pairs_version"] == version else {
            throw PairStoreError.badMetadata("reflowd.pairs_version", file.metadata["reflowd.pairs_version"] ?? "missing")
        }
        let stored = file.tensors["z0"], labelTensor = file.tensors["labels"]
        guard let z1 = file.tensors["z1"], file.tensors.count == 1 + (stored == nil ? 0 : 1) + (labelTensor == nil ? 0 : 1) else {
            throw PairStoreError.badMetadata("tensors", file.order.joined(separator: ","))
        }
        guard z1.rank == 2, z1.shape[0] > 0, z1.shape[1] > 0 else { throw PairStoreError.badShape(z1.shape) }
        guard z1.count <= 1 << 28 else { throw PairStoreError.badShape(z1.shape) }
        var labels: [Int32]?
        if let l = labelTensor {
            guard l.shape == [z1.shape[0]], l.data.allSatisfy({ $0 >= 0 && $0 < 16_777_216 && $0 == $0.rounded() }) else {
                throw PairStoreError.badMetadata("labels", "\(l.shape) (need one non-negative integer per pair)")
            }
            labels = l.data.map { Int32($0) }
        }
        if let stored {
            guard stored.shape == z1.shape else { throw PairStoreError.badShape(stored.shape) }
            guard file.metadata["reflowd.z0_sha256"] == digest(stored) else { throw PairStoreError.noiseMismatch }
            var own = file.metadata
            for k in ["reflowd.pairs_version", "reflowd.z0_sha256"] { own[k] = nil }
            return (stored, z1, labels, own)
        }
        guard let text = file.metadata["reflowd.noise_rng"],
              let state = try? JSONDecoder().decode(Random.State.self, from: Data(text.utf8)),
              var rng = try? Random(state: state) else {
            throw PairStoreError.badMetadata("reflowd.noise_rng", file.metadata["reflowd.noise_rng"] ?? "missing")
        }
        let z0 = rng.normal(z1.shape)
        guard file.metadata["reflowd.z0_sha256"] == digest(z0) else { throw PairStoreError.noiseMismatch }
        var own = file.metadata
        for k in ["reflowd.pairs_version", "reflowd.noise_rng", "reflowd.z0_sha256"] { own[k] = nil }
        return (z0, z1, labels, own)
    }

    static func digest(_ t: Tensor) -> String {
        t.data.withUnsafeBytes { SHA256.hex(of: $0) }
    }
}

/// A pairs file cannot be written or is not a valid reflowd pairs file.
public enum PairStoreError: Error, CustomStringConvertible, Equatable {
    case badShape([Int])
    case badMetadata(String, String)
    case noiseMismatch

    public var description: String {
        switch self {
        case .badShape(let s): return "pairs: z1 must be a non-empty [N, d] tensor, got \(s)"
        case .badMetadata(let k, let v): return "pairs: '\(k)' is invalid ('\(v.prefix(80))')"
        case .noiseMismatch: return "pairs: z0 does not match the recorded noise generator state"
        }
    }
}
