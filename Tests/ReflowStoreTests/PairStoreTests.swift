import Testing
import Foundation
import ReflowEngine
@testable import ReflowStore

@Suite("PairStore")
struct PairStoreTests {
    @Test("z0 is regenerated bit for bit from the stored noise state; z1 and metadata round-trip")
    func roundTrip() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        var rng = Random(seed: 11)
        _ = rng.normal()  // a state in the middle of a stream, with a cached spare normal
        let state = rng.state
        let z0 = rng.normal([37, 2])
        let z1 = z0 * 2
        let path = dir.file("pairs.safetensors")
        try PairStore.write(z1: z1, noise: state, z0: z0, metadata: ["reflowd.teacher": "abc", "reflowd.solver": "euler100"], to: path)
        let back = try PairStore.read(path: path)
        #expect(back.z0.data == z0.data && back.z0.shape == z0.shape)
        #expect(back.z1.data == z1.data)
        #expect(back.metadata == ["reflowd.teacher": "abc", "reflowd.solver": "euler100"])
        // Only z1 is stored: the file holds one tensor.
        #expect(try SafeTensors.read(path: path).order == ["z1"])
    }

    @Test func mismatchesAndBadFilesAreRejected() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let state = Random(seed: 1).state
        let z1 = Tensor.zeros([4, 2])
        #expect(throws: PairStoreError.noiseMismatch) {
            try PairStore.write(z1: z1, noise: state, z0: Tensor.ones([4, 2]), to: dir.file("a.safetensors"))
        }
        #expect(throws: PairStoreError.badShape([0, 2])) { try PairStore.write(z1: Tensor.zeros([0, 2]), noise: state, to: dir.file("b.safetensors")) }
        // A file whose recorded digest does not match its noise state.
        let path = dir.file("c.safetensors")
        try PairStore.write(z1: z1, noise: state, to: path)
        var file = try SafeTensors.read(path: path)
        file.metadata["reflowd.noise_rng"] = String(decoding: try JSONEncoder().encode(Random(seed: 2).state), as: UTF8.self)
        try SafeTensors.write(file.tensors, metadata: file.metadata, to: path)
        #expect(throws: PairStoreError.noiseMismatch) { try PairStore.read(path: path) }
        // Missing version / garbage state / extra tensors.
        try SafeTensors.write(["z1": z1], metadata: [:], to: path)
        #expect(throws: PairStoreError.self) { try PairStore.read(path: path) }
        try SafeTensors.write(["z1": z1], metadata: ["reflowd.pairs_version": "1", "reflowd.noise_rng": "{}"], to: path)
        #expect(throws: PairStoreError.self) { try PairStore.read(path: path) }
        try SafeTensors.write(["z1": z1, "x": z1], metadata: ["reflowd.pairs_version": "1"], to: path)
        #expect(throws: PairStoreError.self) { try PairStore.read(path: path) }
    }

    @Test("pairs from a non-Gaussian source store z0 explicitly and check its digest")
    func explicitZ0() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        var rng = Random(seed: 4)
        let z0 = rng.uniform([9, 2]), z1 = rng.normal([9, 2])
        let path = dir.file("p.safetensors")
        try PairStore.write(z0: z0, z1: z1, metadata: ["reflowd.teacher": "t"], to: path)
        let back = try PairStore.read(path: path)
        #expect(back.z0.data == z0.data && back.z1.data == z1.data && back.metadata == ["reflowd.teacher": "t"])
        var file = try SafeTensors.read(path: path)
        file.tensors["z0"]![0, 0] += 1
        try SafeTensors.write(file.tensors, metadata: file.metadata, to: path)
        #expect(throws: PairStoreError.noiseMismatch) { try PairStore.read(path: path) }
        #expect(throws: PairStoreError.badShape([3, 2])) { try PairStore.write(z0: Tensor.zeros([3, 2]), z1: z1, to: path) }
    }
}
