import Testing
import Foundation
import ReflowEngine
import ReflowNN
import ReflowFlow
@testable import ReflowStore

@Suite struct CheckpointTests {
    static func smallConfig() -> TrainingConfig {
        var c = TrainingConfig()
        c.model = ModelSpec(VelocityMLPConfig(dimension: 2, width: 32, depth: 2, activation: .silu))
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
        let straight = try FlowTrainer(config, threads: threads)
        var straightLosses = [Float]()
        for _ in 0..<40 { straightLosses.append(straight.trainStep()) }

        let first = try FlowTrainer(config, threads: threads)
        for _ in 0..<20 { first.trainStep() }
        let path = dir.file("ckpt.safetensors")
        try Checkpoint.write(first.snapshot(), to: path)
        let resumed = try FlowTrainer(config, threads: threads, restoring: try Checkpoint.read(path: path))
        #expect(resumed.step == 20)
        var resumedLosses = [Float]()
        for _ in 0..<20 { resumedLosses.append(resumed.trainStep()) }

        #expect(Array(straightLosses[20...]) == resumedLosses)
        Self.expectIdentical(straight.snapshot(), resumed.snapshot())
    }

    @Test func roundTripKeepsEverythingAndWritesDigest() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let t = try FlowTrainer(Self.smallConfig(), threads: 1)
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

    @Test("pruning masks round-trip under mask.<name>; a mask without its weight, of another shape or not 0/1 is refused")
    func masks() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let t = try FlowTrainer(Self.smallConfig(), threads: 1)
        var snap = t.snapshot()
        var m = Tensor.ones([32, 3])
        m.data[4] = 0
        snap.masks = ["layers.0.weight": m]
        let path = dir.file("m.safetensors")
        try Checkpoint.write(snap, to: path)
        let back = try Checkpoint.read(path: path)
        #expect(back.masks == snap.masks && back.model.count == snap.model.count && back.model["mask.layers.0.weight"] == nil)
        snap.masks = ["layers.9.weight": m]
        #expect(throws: CheckpointError.badMask("layers.9.weight")) { try Checkpoint.write(snap, to: path) }
        snap.masks = ["layers.0.weight": Tensor.ones([3, 32])]
        #expect(throws: CheckpointError.badMask("layers.0.weight")) { try Checkpoint.write(snap, to: path) }
        // A hand-made file whose mask holds a 2 is refused on read.
        var tensors = snap.model.map { (name: $0.key, tensor: $0.value) }
        tensors.append((name: "mask.layers.0.weight", tensor: Tensor(shape: [32, 3], repeating: 2)))
        let meta = ["reflowd.checkpoint_version": "1", "reflowd.step": "0",
                    "reflowd.rng": String(decoding: try JSONEncoder().encode(snap.rng), as: UTF8.self)]
        var withDigest = meta
        withDigest["reflowd.data_sha256"] = Checkpoint.dataDigest(try SafeTensors.encode(tensors, metadata: meta))
        try AtomicFile.write(try SafeTensors.encode(tensors, metadata: withDigest), to: path)
        #expect(throws: CheckpointError.badMask("layers.0.weight")) { try Checkpoint.read(path: path) }
    }

    @Test func corruptedDataIsCaughtByTheEmbeddedDigest() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let path = dir.file("c.safetensors")
        try Checkpoint.write(try FlowTrainer(Self.smallConfig(), threads: 1).snapshot(), to: path)
        var bytes = try AtomicFile.read(path: path, maxBytes: 1 << 30)
        bytes[bytes.count - 3] ^= 0x40  // a weight byte: the file is still valid safetensors
        #expect(throws: Never.self) { try SafeTensors.decode(bytes) }
        try AtomicFile.write(bytes, to: path)
        #expect {
            try Checkpoint.read(path: path)
        } throws: { error in
            guard case CheckpointError.digestMismatch = error else { return false }
            return true
        }
    }

    @Test("a stale .sha256 sidecar (crash between the two renames) does not block loading")
    func staleSidecarIsHarmless() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let path = dir.file("c.safetensors")
        let t = try FlowTrainer(Self.smallConfig(), threads: 1)
        try Checkpoint.write(t.snapshot(), to: path)
        let oldSidecar = try AtomicFile.read(path: path + ".sha256", maxBytes: 1000)
        t.trainStep()
        try Checkpoint.write(t.snapshot(), to: path)
        try AtomicFile.write(oldSidecar, to: path + ".sha256")
        #expect(try Checkpoint.read(path: path).step == 1)
    }

    @Test func reservedModelNamesAndHugeStepsAreRejected() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let rng = Random(seed: 1).state
        let bad = TrainingSnapshot(model: ["ema.x": Tensor.zeros([2])], step: 0, rng: rng)
        #expect(throws: CheckpointError.reservedName("ema.x")) { try Checkpoint.write(bad, to: dir.file("a.safetensors")) }
        let huge = TrainingSnapshot(model: ["w": Tensor.zeros([2])], step: Int.max, rng: rng)
        #expect(throws: CheckpointError.self) { try Checkpoint.write(huge, to: dir.file("b.safetensors")) }
        // A hand-made file claiming a huge step is refused on read.
        var meta = ["reflowd.checkpoint_version": "1", "reflowd.step": String(Int.max),
                    "reflowd.rng": String(decoding: try JSONEncoder().encode(rng), as: UTF8.self)]
        let w = ["w": Tensor.zeros([2])]
        meta["reflowd.data_sha256"] = Checkpoint.dataDigest(try SafeTensors.encode(w, metadata: meta))
        try SafeTensors.write(w, metadata: meta, to: dir.file("c.safetensors"))
        #expect(throws: CheckpointError.badMetadata(key: "reflowd.step", value: String(Int.max))) {
            try Checkpoint.read(path: dir.file("c.safetensors"))
        }
    }

    @Test func missingOrBadMetadataIsRejected() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let w = ["layers.0.weight": Tensor.zeros([2, 3])]
        let digest = Checkpoint.dataDigest(try SafeTensors.encode(w, metadata: [:]))
        let good = Random(seed: 1).state
        let rngJSON = String(decoding: try JSONEncoder().encode(good), as: UTF8.self)
        let v1 = ["reflowd.checkpoint_version": "1", "reflowd.data_sha256": digest]
        let cases: [([String: String], CheckpointError)] = [
            ([:], .missingMetadata("reflowd.checkpoint_version")),
            (["reflowd.checkpoint_version": "9"], .badMetadata(key: "reflowd.checkpoint_version", value: "9")),
            (["reflowd.checkpoint_version": "1"], .missingMetadata("reflowd.data_sha256")),
            (v1, .missingMetadata("reflowd.step")),
            (v1.merging(["reflowd.step": "-4"]) { $1 }, .badMetadata(key: "reflowd.step", value: "-4")),
            (v1.merging(["reflowd.step": "3"]) { $1 }, .missingMetadata("reflowd.rng")),
            (v1.merging(["reflowd.step": "3", "reflowd.rng": "{\"words\":[\"zz\"]}"]) { $1 },
             .badMetadata(key: "reflowd.rng", value: "{\"words\":[\"zz\"]}")),
        ]
        for (i, (meta, expected)) in cases.enumerated() {
            let path = dir.file("m\(i).safetensors")
            try SafeTensors.write(w, metadata: meta, to: path)
            #expect(throws: expected) { try Checkpoint.read(path: path) }
        }
        let ok = dir.file("ok.safetensors")
        try SafeTensors.write(w, metadata: v1.merging(["reflowd.step": "3", "reflowd.rng": rngJSON]) { $1 }, to: ok)
        #expect(try Checkpoint.read(path: ok).step == 3)
    }

    @Test func restoringIntoTheWrongArchitectureThrows() throws {
        let snap = try FlowTrainer(Self.smallConfig(), threads: 1).snapshot()
        var other = Self.smallConfig()
        other.model.mlp?.width = 16
        #expect(throws: StateDictError.self) { try FlowTrainer(other, threads: 1, restoring: snap) }
    }
}
