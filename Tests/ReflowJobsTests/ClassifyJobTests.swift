import Foundation
import Testing
import ReflowEngine
import ReflowFlow
import ReflowStore
@testable import ReflowJobs

/// A small classify spec on builtin:shapes (fast: 1,500 training images, a tiny CNN).
func tinyClassify(steps: Int = 150, extra: String = "") -> String {
    #"{"type": "classify", "input": {"data": {"kind": "images", "dataset": "builtin:shapes", "limit": 1500}, "test": {"dataset": "builtin:shapes", "split": "test", "limit": 400}, "model": {"kind": "cnn", "channels": [8, 16], "features": 32}, "batchSize": 64, "learningRate": 3e-3, "steps": \#(steps), "logEvery": 10\#(extra)}}"#
}

/// An NPY image dataset directory of `n` labelled `side`×`side` images (8-bit), for shape checks.
func writeNPYDataset(_ dir: String, n: Int, side: Int) throws {
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    func npy(_ descr: String, _ shape: [Int], _ data: [UInt8]) -> [UInt8] {
        let s = shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
        var header = "{'descr': '\(descr)', 'fortran_order': False, 'shape': \(s), }"
        header += String(repeating: " ", count: (64 - (10 + header.utf8.count + 1) % 64) % 64) + "\n"
        let h = Array(header.utf8)
        return [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0, UInt8(h.count & 0xFF), UInt8(h.count >> 8)] + h + data
    }
    for split in ["train", "test"] {
        let px = (0..<(n * side * side)).map { UInt8(truncatingIfNeeded: $0 &* 37) }
        try Data(npy("|u1", [n, side, side], px)).write(to: URL(fileURLWithPath: dir + "/\(split)_images.npy"))
        try Data(npy("|u1", [n], (0..<n).map { UInt8($0 % 3) })).write(to: URL(fileURLWithPath: dir + "/\(split)_labels.npy"))
    }
}

@Suite("Classify job")
struct ClassifyJobTests {
    @Test("a tiny CNN on builtin:shapes: well above chance, classifier.safetensors readable, features computable")
    func tinyRun() throws {
        let dir = try JobsDir()
        defer { dir.remove() }
        let r = try dir.run("c", tinyClassify())
        let c = try #require(r.classifier)
        #expect(c.steps == 150 && c.model.imageShape == [1, 28, 28] && c.model.classes == 10 && c.testImages == 400)
        #expect(c.testAccuracy > 0.6, "test accuracy \(c.testAccuracy) (chance 0.1)")
        #expect(c.perClassAccuracy.count == 10 && c.classNames?.count == 10 && c.featureDimension == 32)
        #expect(r.artifacts.map(\.name).contains("classifier.safetensors"))
        // {"job": id} resolves to the classifier; the artifact loads and computes features.
        let path = try dir.resolver.path(for: .job(id: "c", artifact: nil), kind: .classifier)
        #expect(path.hasSuffix("/c/classifier.safetensors"))
        #expect(try dir.resolver.path(for: .job(id: "c", artifact: "classifier"), kind: .model) == path)
        let art = try ClassifierArtifact.read(path: path)
        #expect(art.config == c.model)
        let images = try BuiltinImageSets.load("shapes", split: .test).subset(Array(0..<20))
        let out = try art.network().evaluate(images.tensor(Array(0..<20)).data, rows: 20, threads: 2)
        #expect(out.features.count == 20 * 32 && out.labels.count == 20)
        // Running again finds the finished classifier and only re-evaluates.
        let again = try #require(try dir.run("c", tinyClassify()).classifier)
        #expect(again.seconds == 0 && again.testAccuracy == c.testAccuracy)
    }

    @Test("refusals at submit: unlabelled data, not images, mismatched test shapes, a given shape that differs")
    func refusals() throws {
        let dir = try JobsDir()
        defer { dir.remove() }
        func prepareError(_ json: String) -> SpecError? {
            do { _ = try JobRunner.prepare(try SpecParser.parse(Array(json.utf8)), resolver: dir.resolver); return nil } catch {
                return error
            }
        }
        let strokes = prepareError(#"{"type": "classify", "input": {"data": {"kind": "images", "dataset": "builtin:strokes"}}}"#)
        #expect(strokes?.pointer == "/input/data" && strokes?.message.contains("no labels") == true)
        #expect(prepareError(#"{"type": "classify", "input": {"data": {"kind": "twoMoons"}}}"#)?.pointer == "/input/data")
        try writeNPYDataset(dir.path + "/small", n: 12, side: 8)
        let mismatch = prepareError(#"{"type": "classify", "input": {"data": {"kind": "images", "dataset": "builtin:shapes"}, "test": {"dataset": "small", "split": "test"}}}"#)
        #expect(mismatch?.pointer == "/input/test")
        #expect(prepareError(#"{"type": "classify", "input": {"model": {"imageShape": [1, 8, 8]}}}"#)?.pointer == "/input/model/imageShape")
        #expect(prepareError(#"{"type": "classify", "input": {"model": {"kind": "mlp", "hidden": []}}}"#)?.pointer == "/input/model/hidden")
        #expect(prepareError(#"{"type": "classify", "input": {"data": {"kind": "images", "dataset": "small"}}}"#) == nil)
        // Filled in from the data.
        let spec = try JobRunner.prepare(try SpecParser.parse(Array(#"{"type": "classify", "input": {"data": {"kind": "images", "dataset": "small"}}}"#.utf8)), resolver: dir.resolver)
        let input = try #require(spec.input(as: ClassifySpec.self))
        #expect(input.model.imageShape == [1, 8, 8] && input.model.classes == 3)
    }

    @Test("a stopped classify job resumes from its checkpoint and ends bit for bit where an uninterrupted run ends")
    func resume() throws {
        let dir = try JobsDir()
        defer { dir.remove() }
        let spec = tinyClassify(steps: 60, extra: #", "checkpointEvery": 10"#)
        try dir.run("straight", spec)
        #expect(throws: JobError.interrupted) { try dir.run("stopped", spec, stopAfter: 3) }
        let ckpt = try Checkpoint.read(path: dir.path + "/stopped/checkpoint.safetensors")
        #expect(ckpt.step > 0 && ckpt.step < 60)
        let resumed = try #require(try dir.run("stopped", spec).classifier)
        #expect(resumed.resumedFromStep == ckpt.step)
        let a = try Checkpoint.read(path: dir.path + "/straight/classifier.safetensors")
        let b = try Checkpoint.read(path: dir.path + "/stopped/classifier.safetensors")
        #expect(a.model == b.model && a.optimizer == b.optimizer)
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/stopped/checkpoint.safetensors"))
    }
}
