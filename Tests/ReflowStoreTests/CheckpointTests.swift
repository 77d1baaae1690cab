import Testing
import Foundation
import ReflowEngine
import ReflowNN
import ReflowFlow
@testable import ReflowStore

@Suite struct CheckpointTests {
    static func smallConfig() -> ToyTrainingConfig {
        var c = ToyTrainingConfig()
        c.model = VelocityMLPConfig(dimension: 2, width: 32, depth: 2, activation: .silu)
        c.batchSize = 64
        c.emaDecay = 0.9
        c.gradClipNorm = 5
        c.seed = 7
        return c
    }

    static func expectIdentical(_ a: TrainingSnapshot, _ b: TrainingSnapshot) {
        #expect(a.step == b.step)
        #expect(a.rng == b.rng)
        for (k, v) in a.model { #expect(b.model[k]?.data == v.data, "model \(k)") }
        for (k, v) in a.ema { #expect(b.ema[k]?.data == v.data, "ema \(k)") }
        for (k, v) in a.optimizer { #expect(b.optimizer[k]?.data == v.data, "optimizer \(k)") }
        #expect(a.model.count == b.model.count && a.ema.count == b.ema.count && a.optimizer.count == b.optimizer.count)
    }

    @Test(arguments: [1, 2])
    func resumeFromFileIsBitExact(threads: Int) throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let config = Self.smallConfig()
        let straight = ToyTrainer(config, threads: threads)
        var straightLosses = [Float]()
        for _ in 0..<40 { straightLosses.append(straight.trainStep()) }

        let first = ToyTrainer(config, threads: threads)
        for _ in 0..<20 { first.trainStep() }
        let path = dir.file("ckpt.safetensors")
        try Checkpoint.write(first.snapshot(), to: path)
        let resumed = try ToyTrainer(config, threads: threads, restoring: try Checkpoint.read(path: path))
        #expect(resumed.step == 20)
        var resumedLosses = [Float]()
        for _ in 0..<20 { resumedLosses.append(resumed.trainStep()) }

        #expect(Array(straightLosses[20...]) == resumedLosses)
        Self.expectIdentical(straight.snapshot(), resumed.snapshot())
    }

    @Test func roundTripKeepsEverythingAndWritesDigest() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let t = ToyTrainer(Self.smallConfig(), threads: 1)
        for _ in 0..<3 { t.trainStep() }
        var snap = t.snapshot()
        snap.metadata = ["reflowd.arch": "{\"width\":32}"]
        let path = dir.file("c.safetensors")
        let digest = try Checkpoint.write(snap, to: path)
        let sidecar = String(decoding: try AtomicFile.read(path: path + ".sha256", maxBytes: 1000), as: UTF8.self)
        #expect(sidecar == "\(digest)  c.safetensors\n")
        let back = try Checkpoint.read(path: path)
        Self.expectIdentical(snap, back)
        #expect(back.metadata == snap.metadata)
        // PyTorch names and layout: layers.0.weight is [out, in].
        #expect(back.model["layers.0.weight"]?.shape == [32, 3])
        #expect(back.model["layers.2.weight"]?.shape == [2, 32])
        #expect(back.optimizer["layers.0.weight.exp_avg"]?.shape == [32, 3])
    }

    @Test func corruptedDataIsCaughtByTheDigest() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let path = dir.file("c.safetensors")
        try Checkpoint.write(ToyTrainer(Self.smallConfig(), threads: 1).snapshot(), to: path)
        var bytes = try AtomicFile.read(path: path, maxBytes: 1 << 30)
        bytes[bytes.count - 3] ^= 0x40  // a weight byte: still valid safetensors
        try AtomicFile.write(bytes, to: path)
        #expect(throws: CheckpointError.self) { try Checkpoint.read(path: path) }
        // Without verification the file decodes, so the digest is what caught it.
        #expect(try Checkpoint.read(path: path, verifyDigest: false).step == 0)
    }

    @Test func missingOrBadMetadataIsRejected() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let w = ["layers.0.weight": Tensor.zeros([2, 3])]
        let good = Random(seed: 1).state
        let rngJSON = String(decoding: try JSONEncoder().encode(good), as: UTF8.self)
        let cases: [([String: String], CheckpointError)] = [
            ([:], .missingMetadata("reflowd.checkpoint_version")),
            (["reflowd.checkpoint_version": "9"], .badMetadata(key: "reflowd.checkpoint_version", value: "9")),
            (["reflowd.checkpoint_version": "1"], .missingMetadata("reflowd.step")),
            (["reflowd.checkpoint_version": "1", "reflowd.step": "-4"], .badMetadata(key: "reflowd.step", value: "-4")),
            (["reflowd.checkpoint_version": "1", "reflowd.step": "3"], .missingMetadata("reflowd.rng")),
            (["reflowd.checkpoint_version": "1", "reflowd.step": "3", "reflowd.rng": "{\"words\":[\"zz\"]}"],
             .badMetadata(key: "reflowd.rng", value: "{\"words\":[\"zz\"]}")),
        ]
        for (i, (meta, expected)) in cases.enumerated() {
            let path = dir.file("m\(i).safetensors")
            try SafeTensors.write(w, metadata: meta, to: path)
            #expect(throws: expected) { try Checkpoint.read(path: path) }
        }
        let ok = dir.file("ok.safetensors")
        try SafeTensors.write(w, metadata: ["reflowd.checkpoint_version": "1", "reflowd.step": "3", "reflowd.rng": rngJSON], to: ok)
        #expect(try Checkpoint.read(path: ok).step == 3)
    }

    @Test func restoringIntoTheWrongArchitectureThrows() throws {
        let snap = ToyTrainer(Self.smallConfig(), threads: 1).snapshot()
        var other = Self.smallConfig()
        other.model.width = 16
        #expect(throws: StateDictError.self) { try ToyTrainer(other, threads: 1, restoring: snap) }
    }
}
