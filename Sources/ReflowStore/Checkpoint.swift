import ReflowEngine
public import ReflowNN
import ReflowCodec
import Foundation

/// Training checkpoints: one safetensors file holding a ``TrainingSnapshot``.
///
/// Layout (docs/CHECKPOINT_FORMAT.md is normative):
/// - model weights under their PyTorch names (`layers.0.weight`, `[out, in]`),
/// - EMA weights under `ema.<name>`, optimizer state under `optimizer.<name>.<slot>`
///   (`exp_avg`, `exp_avg_sq`, `momentum_buffer`), pruning masks (0/1) under `mask.<name>`,
/// - `__metadata__`: `format = "pt"`, `reflowd.checkpoint_version = "1"`, `reflowd.step`,
///   `reflowd.rng` (the RNG state as JSON) and the snapshot's own metadata.
///
/// The file is written atomically (temp → fsync → rename → fsync of the directory). It carries
/// the SHA-256 of its tensor bytes in `reflowd.data_sha256`, checked on every read; the whole
/// file's SHA-256 is also recorded in a sidecar `<file>.sha256` (`sha256sum` format).
/// `safetensors.torch.load_file(path)` followed by `load_state_dict(..., strict=False)` loads the
/// weights into the equivalent PyTorch module.
public enum Checkpoint {
    public static let version = "1"
    static let emaPrefix = "ema.", optimizerPrefix = "optimizer.", maskPrefix = "mask."

    /// Largest step a checkpoint may claim (2⁵³: counters stay exact in Double and never overflow).
    public static let maxStep = 1 << 53

    /// Writes `snapshot` to `path` (and `path.sha256`); returns the file's SHA-256 hex digest.
    ///
    /// The file verifies itself: `reflowd.data_sha256` in its header is the SHA-256 of the tensor
    /// bytes, so one atomic rename publishes a complete, checkable checkpoint. The sidecar (the
    /// whole file's digest, `sha256sum` format, usable as an ETag) is written afterwards and is
    /// informational: a crash between the two renames leaves a stale sidecar, never a checkpoint
    /// that fails to load.
    @discardableResult
    public static func write(_ snapshot: TrainingSnapshot, to path: String) throws -> String {
        var tensors = [(name: String, tensor: Tensor)]()
        for (k, v) in snapshot.model {
            guard !k.hasPrefix(emaPrefix), !k.hasPrefix(optimizerPrefix), !k.hasPrefix(maskPrefix) else {
                throw CheckpointError.reservedName(k)
            }
            tensors.append((k, v))
        }
        for (k, v) in snapshot.ema { tensors.append((emaPrefix + k, v)) }
        for (k, v) in snapshot.optimizer { tensors.append((optimizerPrefix + k, v)) }
        for (k, v) in snapshot.masks {
            guard let w = snapshot.model[k], w.shape == v.shape else { throw CheckpointError.badMask(k) }
            tensors.append((maskPrefix + k, v))
        }
        guard snapshot.step >= 0 && snapshot.step <= maxStep else { throw CheckpointError.badMetadata(key: "reflowd.step", value: String(snapshot.step)) }
        var meta = snapshot.metadata
        meta["format"] = "pt"
        meta["reflowd.checkpoint_version"] = version
        meta["reflowd.step"] = String(snapshot.step)
        let rngJSON = try JSONEncoder().encode(snapshot.rng)
        meta["reflowd.rng"] = String(decoding: rngJSON, as: UTF8.self)
        // The data section does not depend on the metadata, so encode once to hash it.
        meta["reflowd.data_sha256"] = dataDigest(try SafeTensors.encode(tensors, metadata: meta))
        let bytes = try SafeTensors.encode(tensors, metadata: meta)
        let digest = SHA256.hex(of: bytes)
        try AtomicFile.write(bytes, to: path)
        let base = path.split(separator: "/").last.map(String.init) ?? path
        try AtomicFile.write(Array("\(digest)  \(base)\n".utf8), to: path + ".sha256")
        return digest
    }

    /// SHA-256 of the byte buffer after the header of a safetensors image (callers pass
    /// encoder output or bytes that `SafeTensors.decode` accepted, so the length prefix is sane).
    static func dataDigest(_ bytes: [UInt8]) -> String {
        var n: UInt64 = 0
        for i in 0..<8 { n |= UInt64(bytes[i]) << (8 * UInt64(i)) }
        return SHA256.hex(of: bytes[(8 + Int(n))...])
    }

    /// Reads and validates a checkpoint, including its embedded data digest.
    public static func read(path: String) throws -> TrainingSnapshot {
        let bytes = try AtomicFile.read(path: path, maxBytes: SafeTensors.defaultMaxFileBytes)
        let file = try SafeTensors.decode(bytes)
        let meta = file.metadata
        guard let v = meta["reflowd.checkpoint_version"] else { throw CheckpointError.missingMetadata("reflowd.checkpoint_version") }
        guard v == version else { throw CheckpointError.badMetadata(key: "reflowd.checkpoint_version", value: v) }
        guard let expected = meta["reflowd.data_sha256"] else { throw CheckpointError.missingMetadata("reflowd.data_sha256") }
        let actual = dataDigest(bytes)
        guard expected == actual else { throw CheckpointError.digestMismatch(path: path, expected: expected, actual: actual) }
        guard let stepText = meta["reflowd.step"] else { throw CheckpointError.missingMetadata("reflowd.step") }
        guard let step = Int(stepText), step >= 0, step <= maxStep else {
            throw CheckpointError.badMetadata(key: "reflowd.step", value: stepText)
        }
        guard let rngText = meta["reflowd.rng"] else { throw CheckpointError.missingMetadata("reflowd.rng") }
        let rng: Random.State
        do {
            rng = try JSONDecoder().decode(Random.State.self, from: Data(rngText.utf8))
            _ = try Random(state: rng)
        } catch {
            throw CheckpointError.badMetadata(key: "reflowd.rng", value: rngText)
        }
        var model = [String: Tensor](), ema = [String: Tensor](), opt = [String: Tensor](), masks = [String: Tensor]()
        for (k, t) in file.tensors {
            if k.hasPrefix(emaPrefix) { ema[String(k.dropFirst(emaPrefix.count))] = t }
            else if k.hasPrefix(optimizerPrefix) { opt[String(k.dropFirst(optimizerPrefix.count))] = t }
            else if k.hasPrefix(maskPrefix) { masks[String(k.dropFirst(maskPrefix.count))] = t }
            else { model[k] = t }
        }
        // A mask must cover a weight of its shape and hold only 0 and 1.
        for (k, m) in masks {
            guard let w = model[k], w.shape == m.shape, m.data.allSatisfy({ $0 == 0 || $0 == 1 }) else { throw CheckpointError.badMask(k) }
        }
        var own = meta
        for k in ["format", "reflowd.checkpoint_version", "reflowd.step", "reflowd.rng", "reflowd.data_sha256"] { own[k] = nil }
        return TrainingSnapshot(model: model, ema: ema, optimizer: opt, step: step, rng: rng, metadata: own, masks: masks)
    }
}

/// A checkpoint file is readable safetensors but not a valid reflowd checkpoint.
public enum CheckpointError: Error, CustomStringConvertible, Equatable {
    case missingMetadata(String)
    case badMetadata(key: String, value: String)
    case digestMismatch(path: String, expected: String, actual: String)
    case reservedName(String)
    /// A `mask.<name>` tensor without a weight of its shape, or with values other than 0 and 1.
    case badMask(String)

    public var description: String {
        switch self {
        case .missingMetadata(let k): return "checkpoint: metadata key '\(k)' is missing"
        case .badMetadata(let k, let v): return "checkpoint: metadata '\(k)' has an invalid value '\(v.prefix(80))'"
        case .digestMismatch(let p, let e, let a):
            return "checkpoint: the tensor data of \(p) is corrupt (recorded SHA-256 \(e.prefix(16))…, actual \(a.prefix(16))…)"
        case .reservedName(let n):
            return "checkpoint: model tensor '\(n)' uses a reserved prefix (ema., optimizer., mask.)"
        case .badMask(let n): return "checkpoint: mask '\(n)' has no weight of its shape or holds values other than 0 and 1"
        }
    }
}
