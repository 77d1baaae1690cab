import ReflowEngine
public import ReflowNN
import ReflowCodec
import Foundation

/// Training checkpoints: one safetensors file holding a ``TrainingSnapshot``.
///
/// Layout (docs/CHECKPOINT_FORMAT.md is normative):
/// - model weights under their PyTorch names (`layers.0.weight`, `[out, in]`),
/// - EMA weights under `ema.<name>`, optimizer state under `optimizer.<name>.<slot>`
///   (`exp_avg`, `exp_avg_sq`, `momentum_buffer`),
/// - `__metadata__`: `format = "pt"`, `reflowd.checkpoint_version = "1"`, `reflowd.step`,
///   `reflowd.rng` (the RNG state as JSON) and the snapshot's own metadata.
///
/// The file is written atomically (temp → fsync → rename → fsync of the directory) and its
/// SHA-256 is recorded in a sidecar `<file>.sha256` (`sha256sum` format), written the same way.
/// `safetensors.torch.load_file(path)` followed by `load_state_dict(..., strict=False)` loads the
/// weights into the equivalent PyTorch module.
public enum Checkpoint {
    public static let version = "1"
    static let emaPrefix = "ema.", optimizerPrefix = "optimizer."

    /// Writes `snapshot` to `path` (and `path.sha256`); returns the file's SHA-256 hex digest.
    @discardableResult
    public static func write(_ snapshot: TrainingSnapshot, to path: String) throws -> String {
        var tensors = [(name: String, tensor: Tensor)]()
        for (k, v) in snapshot.model { tensors.append((k, v)) }
        for (k, v) in snapshot.ema { tensors.append((emaPrefix + k, v)) }
        for (k, v) in snapshot.optimizer { tensors.append((optimizerPrefix + k, v)) }
        var meta = snapshot.metadata
        meta["format"] = "pt"
        meta["reflowd.checkpoint_version"] = version
        meta["reflowd.step"] = String(snapshot.step)
        let rngJSON = try JSONEncoder().encode(snapshot.rng)
        meta["reflowd.rng"] = String(decoding: rngJSON, as: UTF8.self)
        let digest = try SafeTensors.write(tensors, metadata: meta, to: path)
        let base = path.split(separator: "/").last.map(String.init) ?? path
        try AtomicFile.write(Array("\(digest)  \(base)\n".utf8), to: path + ".sha256")
        return digest
    }

    /// Reads and validates a checkpoint. With `verifyDigest`, a present `.sha256` sidecar must
    /// match the file's bytes.
    public static func read(path: String, verifyDigest: Bool = true) throws -> TrainingSnapshot {
        let bytes = try AtomicFile.read(path: path, maxBytes: SafeTensors.defaultMaxFileBytes)
        if verifyDigest, let side = try? AtomicFile.read(path: path + ".sha256", maxBytes: 4096) {
            let expected = String(decoding: side.prefix(64), as: UTF8.self)
            let actual = SHA256.hex(of: bytes)
            guard expected == actual else { throw CheckpointError.digestMismatch(path: path, expected: expected, actual: actual) }
        }
        let file = try SafeTensors.decode(bytes)
        let meta = file.metadata
        guard let v = meta["reflowd.checkpoint_version"] else { throw CheckpointError.missingMetadata("reflowd.checkpoint_version") }
        guard v == version else { throw CheckpointError.badMetadata(key: "reflowd.checkpoint_version", value: v) }
        guard let stepText = meta["reflowd.step"] else { throw CheckpointError.missingMetadata("reflowd.step") }
        guard let step = Int(stepText), step >= 0 else { throw CheckpointError.badMetadata(key: "reflowd.step", value: stepText) }
        guard let rngText = meta["reflowd.rng"] else { throw CheckpointError.missingMetadata("reflowd.rng") }
        let rng: Random.State
        do {
            rng = try JSONDecoder().decode(Random.State.self, from: Data(rngText.utf8))
            _ = try Random(state: rng)
        } catch {
            throw CheckpointError.badMetadata(key: "reflowd.rng", value: rngText)
        }
        var model = [String: Tensor](), ema = [String: Tensor](), opt = [String: Tensor]()
        for (k, t) in file.tensors {
            if k.hasPrefix(emaPrefix) { ema[String(k.dropFirst(emaPrefix.count))] = t }
            else if k.hasPrefix(optimizerPrefix) { opt[String(k.dropFirst(optimizerPrefix.count))] = t }
            else { model[k] = t }
        }
        var own = meta
        for k in ["format", "reflowd.checkpoint_version", "reflowd.step", "reflowd.rng"] { own[k] = nil }
        return TrainingSnapshot(model: model, ema: ema, optimizer: opt, step: step, rng: rng, metadata: own)
    }
}

/// A checkpoint file is readable safetensors but not a valid reflowd checkpoint.
public enum CheckpointError: Error, CustomStringConvertible, Equatable {
    case missingMetadata(String)
    case badMetadata(key: String, value: String)
    case digestMismatch(path: String, expected: String, actual: String)

    public var description: String {
        switch self {
        case .missingMetadata(let k): return "checkpoint: metadata key '\(k)' is missing"
        case .badMetadata(let k, let v): return "checkpoint: metadata '\(k)' has an invalid value '\(v.prefix(80))'"
        case .digestMismatch(let p, let e, let a):
            return "checkpoint: \(p) does not match its .sha256 (recorded \(e.prefix(16))…, file \(a.prefix(16))…)"
        }
    }
}
