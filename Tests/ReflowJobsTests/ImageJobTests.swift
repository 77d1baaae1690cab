import Foundation
import Testing
import ReflowEngine
import ReflowFlow
import ReflowStore
import ReflowCodec
@testable import ReflowJobs

/// A U-Net small enough to train a few steps in a test.
let tinyUNet = #""model": {"kind": "unet", "channels": [4, 8], "blocksPerLevel": 1, "groups": 2, "timeFeatures": 8, "timeEmbedding": 16}"#

@Suite("Image jobs")
struct ImageJobTests {
    @Test("train → reflow → distill (k = 1) → sample → invert on built-in images: files, grids and shapes")
    func chain() throws {
        let dir = try JobsDir()
        defer { dir.remove() }
        let data = #""data": {"kind": "images", "dataset": "builtin:shapes", "limit": 256}"#
        let t = try dir.run("rf1", #"{"type": "train", "input": {\#(tinyUNet), \#(data), "batchSize": 8, "steps": 6, "previewPoints": 16}}"#)
        #expect(t.training?.steps == 6 && t.training?.finalLoss.isFinite == true)
        // The preview is a PNG grid of 16 images, 8 per row, 28×28 upscaled 2×, with the job in tEXt.
        let preview = try PNG.decode(Array(try Data(contentsOf: URL(fileURLWithPath: dir.path + "/rf1/samples.png"))))
        #expect(preview.width == 2 + 8 * (56 + 2) && preview.height == 2 + 2 * (56 + 2))
        let model = try ModelArtifact.read(path: dir.path + "/rf1/model.safetensors")
        #expect(model.model.kind == "unet" && model.model.pointShape == [1, 28, 28])

        let r = try dir.run("rf2", #"{"type": "reflow", "input": {"teacher": {"job": "rf1"}, "pairs": 20, "solver": {"kind": "euler", "steps": 3}, "batchSize": 8, "steps": 3, "previewPoints": 0}}"#)
        #expect(r.pairs?.count == 20)
        let pairs = try PairStore.read(path: dir.path + "/rf2/pairs.safetensors")
        #expect(pairs.z1.count == 20 * 784)
        // z1 is the teacher's Euler-3 solution from z0, whatever the block size.
        let again = try ODESolver.solve(model: model.model, stateDict: model.weights(useEMA: true),
                                        x: Tensor(shape: [2, 784], data: Array(pairs.z0.data.prefix(2 * 784))),
                                        method: .euler(steps: 3), direction: .forward, threads: 1)
        for i in stride(from: 0, to: 2 * 784, by: 37) { #expect(abs(again.x.data[i] - pairs.z1.data[i]) < 1e-4) }

        let d = try dir.run("one", #"{"type": "distill", "input": {"teacher": {"job": "rf2"}, "pairsFrom": {"job": "rf2"}, "batchSize": 8, "steps": 3, "previewPoints": 8}}"#)
        #expect(d.training?.steps == 3)

        let s = try dir.run("s", #"{"type": "sample", "input": {"model": {"job": "one"}, "n": 10, "solver": {"kind": "euler", "steps": 1}}}"#)
        #expect(s.sample?.n == 10)
        let x = try PointFiles.load(path: dir.path + "/s/samples.npy")
        #expect(x.shape == [10, 784] && x.data.allSatisfy(\.isFinite))
        let grid = try PNG.decode(Array(try Data(contentsOf: URL(fileURLWithPath: dir.path + "/s/samples.png"))))
        #expect(grid.width == 2 + 8 * 58 && grid.height == 2 + 2 * 58)

        let inv = try dir.run("inv", #"{"type": "invert", "input": {"model": {"job": "rf1"}, "points": {"distribution": {"kind": "images", "dataset": "builtin:shapes", "split": "test"}, "n": 5, "seed": 0}, "solver": {"kind": "euler", "steps": 4}}}"#)
        #expect(inv.invert?.n == 5 && (inv.invert?.reconstructionMeanError ?? .infinity).isFinite)
        let rows = try PNG.decode(Array(try Data(contentsOf: URL(fileURLWithPath: dir.path + "/inv/inversion.png"))))
        #expect(rows.height == 2 + 3 * 58, "data, latent and reconstruction rows")
    }

    @Test("image data is checked at submit: unknown datasets, missing splits and other shapes get the field's pointer")
    func submitChecks() throws {
        let dir = try JobsDir()
        defer { dir.remove() }
        func refusal(_ json: String) -> SpecError? {
            do { _ = try JobRunner.prepare(try SpecParser.parse(Array(json.utf8)), resolver: dir.resolver); return nil } catch let e as SpecError { return e } catch { return nil }
        }
        let unknown = refusal(#"{"type": "train", "input": {\#(tinyUNet), "data": {"kind": "images", "dataset": "builtin:nope"}}}"#)
        #expect(unknown?.pointer == "/input/data/dataset" && unknown?.message.contains("builtin:shapes") == true)
        let missing = refusal(#"{"type": "train", "input": {\#(tinyUNet), "data": {"kind": "images", "dataset": "no-such-dir"}}}"#)
        #expect(missing?.pointer == "/input/data/dataset")
        // A 2-D model on images: the data's size disagrees with the model's.
        let points = refusal(#"{"type": "train", "input": {"data": {"kind": "images", "dataset": "builtin:shapes"}}}"#)
        #expect(points?.pointer == "/input/data")
        // A 3-channel U-Net on 1-channel images.
        let rgb = refusal(#"{"type": "train", "input": {"model": {"kind": "unet", "imageShape": [3, 28, 28]}, "data": {"kind": "images", "dataset": "builtin:shapes"}}}"#)
        #expect(rgb?.pointer == "/input/data")
        let badKey = refusal(#"{"type": "train", "input": {\#(tinyUNet), "data": {"kind": "images", "dataset": "builtin:shapes", "colour": 1}}}"#)
        #expect(badKey != nil)
        let badLimit = refusal(#"{"type": "train", "input": {\#(tinyUNet), "data": {"kind": "images", "dataset": "builtin:shapes", "limit": 0}}}"#)
        #expect(badLimit?.pointer == "/input/data/limit")
        // An IDX directory with only a test split: the train split is refused by name.
        let idx = dir.path + "/idx"
        try FileManager.default.createDirectory(atPath: idx, withIntermediateDirectories: true)
        var header: [UInt8] = [0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 28, 0, 0, 0, 28]
        header += [UInt8](repeating: 7, count: 2 * 784)
        try Data(header).write(to: URL(fileURLWithPath: idx + "/t10k-images-idx3-ubyte"))
        let split = refusal(#"{"type": "train", "input": {\#(tinyUNet), "data": {"kind": "images", "dataset": "\#(idx)"}}}"#)
        #expect(split?.pointer == "/input/data/split" && split?.message.contains("test") == true)
        #expect(refusal(#"{"type": "train", "input": {\#(tinyUNet), "data": {"kind": "images", "dataset": "\#(idx)", "split": "test"}}}"#) == nil)
    }
}
