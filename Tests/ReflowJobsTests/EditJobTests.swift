import Foundation
import Testing
import ReflowEngine
import ReflowFlow
import ReflowStore
@testable import ReflowCodec
@testable import ReflowJobs

/// A class-conditional U-Net with self-attention at 14×14, small enough for tests.
let tinyAttentionUNet = #""model": {"kind": "unet", "channels": [4, 8], "blocksPerLevel": 1, "groups": 2, "timeFeatures": 8, "timeEmbedding": 16, "attentionResolutions": [14], "classes": 10}"#

@Suite("Image inversion and RF-Edit jobs")
struct EditJobTests {
    static let shapes = #""data": {"kind": "images", "dataset": "builtin:shapes", "limit": 256}"#

    /// A trained conditional attention U-Net in job "u" (6 steps: enough for the plumbing).
    static func trained() throws -> JobsDir {
        let dir = try JobsDir()
        try dir.run("u", #"{"type": "train", "input": {\#(tinyAttentionUNet), \#(shapes), "batchSize": 8, "steps": 6, "previewPoints": 0}}"#)
        return dir
    }

    /// A 28×28 test picture: a gray gradient PNG, or the same as RGB.
    static func png(rgb: Bool = false, side: Int = 28) throws -> String {
        let gray = (0..<(side * side)).map { UInt8(($0 % side) * 255 / (side - 1)) }
        let bytes = rgb ? try PNG.encodeRGB(width: side, height: side, pixels: gray.flatMap { [$0, $0, $0] })
                        : try PNG.encodeGray(width: side, height: side, pixels: gray)
        return Data(bytes).base64EncodedString()
    }

    func prepareError(_ json: String, _ dir: JobsDir) -> SpecError? {
        do { _ = try JobRunner.prepare(try SpecParser.parse(Array(json.utf8)), resolver: dir.resolver); return nil } catch { return error }
    }

    @Test("invert takes uploaded PNGs (gray, RGB as luma, data: URLs) and dataset items, under labels; writes the noise as .npy and safetensors and scores the round trip")
    func invertImages() throws {
        let dir = try Self.trained()
        defer { dir.remove() }
        let gray = try Self.png(), rgb = try Self.png(rgb: true)
        let r = try dir.run("inv", #"{"type": "invert", "input": {"model": {"job": "u"}, "images": {"png": ["\#(gray)", "data:image/png;base64,\#(rgb)"]}, "labels": [1, 2], "solver": {"kind": "rfSolver2", "steps": 4}}}"#)
        let inv = try #require(r.invert)
        #expect(inv.n == 2 && inv.nfe == 8)
        let fidelity = try #require(inv.reconstruction)
        #expect(fidelity.perImage.count == 2 && fidelity.mse.isFinite && fidelity.psnr > 0)
        #expect((fidelity.ssim ?? -2) > -1 && (fidelity.ssim ?? 2) <= 1)
        let noise = try SafeTensors.read(path: dir.path + "/inv/noise.safetensors")
        #expect(noise.tensors["noise"]?.shape == [2, 1, 28, 28])
        #expect(noise.tensors["labels"]?.data == [1, 2])
        let latents = try PointFiles.load(path: dir.path + "/inv/latents.npy")
        #expect(latents.shape == [2, 784] && latents.data == noise.tensors["noise"]?.data)
        // The RGB copy is the same picture: its luma equals the gray values, so both inversions
        // start from the same image under different labels.
        let (a, b) = (ImageInput.decodePNGForTests(gray) ?? [], ImageInput.decodePNGForTests(rgb) ?? [])
        #expect(a.count == 784 && b.count == 784 && zip(a, b).allSatisfy { abs($0 - $1) < 1e-5 })
        // Coloured pixels take PIL's fixed-point BT.601 luma, as the dataset loaders: (R, G, B) =
        // (200, 40, 90) → (19595·200 + 38470·40 + 7471·90 + 32768) >> 16 = 94, and alpha is dropped.
        let rgba = try PNG.encode(try PNG.Image(width: 28, height: 28, channels: 4, pixels: [UInt8](repeating: 0, count: 784 * 4).enumerated().map { [200, 40, 90, 7][$0.offset % 4] }))
        let luma = ImageInput.decodePNGForTests(Data(rgba).base64EncodedString()) ?? []
        #expect(luma.count == 784 && luma.allSatisfy { $0 == Float(94) * (1 / 127.5) - 1 })

        // Dataset items default to the dataset's labels; any solver inverts.
        for solver in [#"{"kind": "euler", "steps": 8}"#, #"{"kind": "heun", "steps": 4}"#, #"{"kind": "rk45", "maxNFE": 2000, "rtol": 1e-3, "atol": 1e-3}"#] {
            let d = try dir.run("ds", #"{"type": "invert", "input": {"model": {"job": "u"}, "images": {"dataset": "builtin:shapes", "split": "test", "indices": [3, 0, 7]}, "solver": \#(solver)}}"#)
            #expect(d.invert?.n == 3 && d.invert?.reconstruction?.perImage.count == 3, "\(solver)")
            let file = try SafeTensors.read(path: dir.path + "/ds/noise.safetensors")
            #expect(file.tensors["labels"]?.data == [3, 0, 7], "builtin:shapes labels are i mod 10")
            try FileManager.default.removeItem(atPath: dir.path + "/ds")
        }
    }

    @Test("invert's local error: one row per step against RK45, far smaller for RK4 than for Euler; refused for rk45")
    func localError() throws {
        let dir = try JobsDir()
        defer { dir.remove() }
        try dir.run("m", #"{"type": "train", "input": {"model": {"width": 16, "depth": 2}, "steps": 30, "previewPoints": 0}}"#)
        func rows(_ solver: String) throws -> [LocalErrorRow] {
            let r = try dir.run("l", #"{"type": "invert", "input": {"model": {"job": "m"}, "points": {"distribution": {"kind": "twoMoons"}, "n": 50, "seed": 1}, "solver": \#(solver), "localError": true, "reconstruct": false}}"#)
            try FileManager.default.removeItem(atPath: dir.path + "/l")
            return try #require(r.invert?.localErrors)
        }
        let euler = try rows(#"{"kind": "euler", "steps": 4}"#), rk4 = try rows(#"{"kind": "rk4", "steps": 4}"#)
        #expect(euler.count == 4 && rk4.count == 4)
        #expect(euler.map(\.tStart) == [1, 0.75, 0.5, 0.25] && euler.map(\.tEnd) == [0.75, 0.5, 0.25, 0])
        #expect(euler.allSatisfy { $0.rms > 0 && $0.referenceNFE > 6 })
        let eulerTotal: Double = euler.map(\.rms).reduce(0, +), rk4Total: Double = rk4.map(\.rms).reduce(0, +)
        #expect(eulerTotal > 10 * rk4Total)
        let e = prepareError(#"{"type": "invert", "input": {"model": {"job": "m"}, "solver": {"kind": "rk45"}, "localError": true}}"#, dir)
        #expect(e?.pointer == "/input/localError")
        // The recorded inversion must fit the trajectory limit: refused at submit, not after the solve.
        let big = prepareError(#"{"type": "invert", "input": {"model": {"job": "m"}, "points": {"distribution": {"kind": "twoMoons"}, "n": 100000}, "solver": {"kind": "euler", "steps": 2000}, "localError": true}}"#, dir)
        #expect(big?.pointer == "/input/localError" && big?.message.contains("floats") == true)
    }

    @Test("malformed, mis-sized and oversized PNGs are refused at submit with the image's pointer")
    func pngRefusals() throws {
        let dir = try Self.trained()
        defer { dir.remove() }
        let good = try Self.png()
        func refusal(_ images: String, kind: String = "invert") -> SpecError? {
            let extra = kind == "edit" ? #", "targetLabels": [1]"# : ""
            return prepareError(#"{"type": "\#(kind)", "input": {"model": {"job": "u"}, "images": \#(images)\#(extra)}}"#, dir)
        }
        for kind in ["invert", "edit"] {
            let notBase64 = refusal(#"{"png": ["\#(good)", "%%%"]}"#, kind: kind)
            #expect(notBase64?.pointer == "/input/images/png/1" && notBase64?.message.contains("base64") == true, "\(kind)")
            let notPNG = refusal(#"{"png": ["\#(Data("hello, world".utf8).base64EncodedString())"]}"#, kind: kind)
            #expect(notPNG?.pointer == "/input/images/png/0" && notPNG?.message.contains("PNG") == true, "\(kind)")
            // A corrupted body (flipped byte in the image data) fails its CRC.
            var bytes = [UInt8](Data(base64Encoded: good)!)
            bytes[bytes.count - 20] ^= 0xFF
            let corrupt = refusal(#"{"png": ["\#(Data(bytes).base64EncodedString())"]}"#, kind: kind)
            #expect(corrupt?.pointer == "/input/images/png/0", "\(kind)")
            let small = refusal(#"{"png": ["\#(try Self.png(side: 16))"]}"#, kind: kind)
            #expect(small?.pointer == "/input/images/png/0" && small?.message.contains("16×16") == true, "\(kind)")
            // A (valid) header claiming 60000×60000 is refused from IHDR, before anything is inflated.
            var huge = [UInt8](Data(base64Encoded: good)!)
            for (i, b) in [UInt8(0), 0, 0xEA, 0x60, 0, 0, 0xEA, 0x60].enumerated() { huge[16 + i] = b }
            let crc = huge[12..<29].withUnsafeBufferPointer { ZlibStream.crc32(0, $0) }     // "IHDR" + its 13 bytes
            for i in 0..<4 { huge[29 + i] = UInt8(truncatingIfNeeded: crc >> (24 - 8 * i)) }
            #expect(try PNG.readHeader(huge).width == 60000)
            let big = refusal(#"{"png": ["\#(Data(huge).base64EncodedString())"]}"#, kind: kind)
            #expect(big?.pointer == "/input/images/png/0" && big?.message.contains("60000×60000") == true, "\(kind) \(String(describing: big))")
            let tooLong = refusal(#"{"png": ["\#(String(repeating: "A", count: ImageInput.maxPNGText + 4))"]}"#, kind: kind)
            #expect(tooLong?.pointer == "/input/images/png/0", "\(kind) \(String(describing: tooLong))")
            #expect(refusal(#"{"png": []}"#, kind: kind)?.pointer == "/input/images/png", "\(kind)")
            #expect(refusal(#"{"dataset": "builtin:shapes", "split": "test", "indices": [5000]}"#, kind: kind)?.pointer == "/input/images/indices/0", "\(kind)")
            #expect(refusal(#"{"dataset": "builtin:shapes", "indices": [-1]}"#, kind: kind)?.pointer == "/input/images/indices/0", "\(kind)")
            let mixed = refusal(#"{"png": ["\#(good)"], "indices": [1]}"#, kind: kind)
            #expect(mixed?.pointer == "/input/images/indices", "\(kind) \(String(describing: mixed))")
            #expect(refusal(#"{"png": ["\#(good)"]}"#, kind: kind) == nil, "\(kind)")
        }
        #expect(prepareError(#"{"type": "invert", "input": {"model": {"job": "u"}, "images": {"png": ["\#(good)"]}, "labels": [1, 2]}}"#, dir)?.pointer == "/input/labels")
        #expect(prepareError(#"{"type": "invert", "input": {"model": {"job": "u"}, "images": {"png": ["\#(good)"]}, "labels": [10]}}"#, dir)?.pointer == "/input/labels/0")
        #expect(prepareError(#"{"type": "invert", "input": {"model": {"job": "u"}, "images": {"png": ["\#(good)"]}, "points": {"inline": [[1, 2]]}}}"#, dir)?.pointer == "/input/images")
    }

    @Test("edit with inject 0 is plain invert-then-sample, bit for bit; sharing changes the edit; sharing a whole activation for every step returns the source; an on-disk cache gives the same bits")
    func editSharing() throws {
        let dir = try Self.trained()
        defer { dir.remove() }
        let images = #""images": {"dataset": "builtin:shapes", "split": "test", "indices": [0, 1, 2, 3, 4]}"#
        let base = #""model": {"job": "u"}, \#(images), "targetLabels": [4], "guidance": 2, "solver": {"kind": "rfSolver2", "steps": 6}"#
        let e0 = try dir.run("e0", #"{"type": "edit", "input": {\#(base), "inject": 0}}"#)
        #expect(e0.edit?.cache == nil && e0.edit?.nfe == 24)
        // The same by hand: invert under the dataset labels, sample under the target with guidance.
        let m = try ModelArtifact.read(path: dir.path + "/u/model.safetensors")
        let w = m.weights(useEMA: true)
        let set = try BuiltinImageSets.load("shapes", split: .test)
        let x = Tensor(shape: [5, 784], data: set.tensor([0, 1, 2, 3, 4]).data)
        let rows = JobExecution.blockRows(m.model, n: 5, threads: 2)
        let z = try ODESolver.solve(model: m.model, stateDict: w, x: x, labels: [0, 1, 2, 3, 4], method: .rfSolver2(steps: 6), direction: .backward,
                                    threads: 2, blockRows: rows)
        let plain = try ODESolver.solve(model: m.model, stateDict: w, x: z.x, labels: [4, 4, 4, 4, 4], guidance: 2, method: .rfSolver2(steps: 6),
                                        direction: .forward, threads: 2, blockRows: rows)
        let edited0 = try PointFiles.load(path: dir.path + "/e0/edited.npy")
        #expect(edited0.data == plain.x.data, "inject 0 must be plain sampling of the inverted noise")

        let e3 = try dir.run("e3", #"{"type": "edit", "input": {\#(base), "inject": 3}}"#)
        let cache = try #require(e3.edit?.cache)
        #expect(cache.sites == ["down2_attn.0", "mid_attn.0", "mid_attn.1", "up2_attn.0"] && !cache.onDisk)
        #expect(cache.bytes == 3 * 2 * 5 * 4 * (8 * 196 * 4))
        let edited3 = try PointFiles.load(path: dir.path + "/e3/edited.npy")
        #expect(edited3.data != edited0.data)
        let disk = try dir.run("e3d", #"{"type": "edit", "input": {\#(base), "inject": 3, "featureMemoryMB": 0}}"#)
        #expect(disk.edit?.cache?.onDisk == true)
        #expect(try PointFiles.load(path: dir.path + "/e3d/edited.npy").data == edited3.data)
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/e3d/.features.tmp-edit"), "the mapped file is removed")
        #expect(!(disk.artifacts ?? []).contains { $0.name.contains("features") })

        // Sharing every ResBlock output for all steps replays the inversion: the edit is the source.
        let replay = try dir.run("rep", #"{"type": "edit", "input": {\#(base), "inject": 6, "sites": ["up1.0"]}}"#)
        #expect(replay.edit!.structure.mse < 1e-8, "full replay returns the source, got MSE \(replay.edit!.structure.mse)")
        #expect(e3.edit!.structure.perImage.count == 5)
        for name in ["edit.png", "edited.png"] { #expect(FileManager.default.fileExists(atPath: dir.path + "/e3/" + name)) }
        let bands = try PNG.decode(Array(try Data(contentsOf: URL(fileURLWithPath: dir.path + "/e3/edit.png"))))
        #expect(bands.height == 2 + 3 * 58, "source, edited and difference rows")
    }

    @Test("edit success is scored by a classifier; edit refusals carry their pointers")
    func editChecks() throws {
        let dir = try Self.trained()
        defer { dir.remove() }
        try dir.run("clf", #"{"type": "classify", "input": {"data": {"kind": "images", "dataset": "builtin:shapes", "limit": 64}, "model": {"kind": "mlp", "hidden": [16]}, "steps": 3, "batchSize": 8}}"#)
        let png = try Self.png()
        let r = try dir.run("e", #"{"type": "edit", "input": {"model": {"job": "u"}, "images": {"png": ["\#(png)", "\#(png)"]}, "sourceLabels": [0, 1], "targetLabels": [2, 3], "solver": {"kind": "euler", "steps": 4}, "inject": 2, "classifier": {"job": "clf"}}}"#)
        let success = try #require(r.edit?.success)
        #expect(success.perImage.count == 2 && success.perImage.allSatisfy { $0 > 0 && $0 < 1 })
        #expect(success.targetAccuracy >= 0 && success.targetAccuracy <= 1 && success.sourceTargetProbability > 0)

        try dir.run("plain", #"{"type": "train", "input": {\#(tinyUNet), \#(Self.shapes), "batchSize": 8, "steps": 2, "previewPoints": 0}}"#)
        try dir.run("noattn", #"{"type": "train", "input": {"model": {"kind": "unet", "channels": [4, 8], "blocksPerLevel": 1, "groups": 2, "timeFeatures": 8, "timeEmbedding": 16, "classes": 10}, \#(Self.shapes), "batchSize": 8, "steps": 2, "previewPoints": 0}}"#)
        // The feature cache is in the memory estimate when it fits the budget, else on disk with one slot resident.
        func cacheTerm(_ extra: String) throws -> ResourceEstimate.Term? {
            let spec = try JobRunner.prepare(try SpecParser.parse(Array(#"{"type": "edit", "input": {"model": {"job": "u"}, "images": {"png": ["\#(png)", "\#(png)"]}, "targetLabels": [2], "inject": 3\#(extra)}}"#.utf8)), resolver: dir.resolver)
            return try JobRunner.estimate(spec, resolver: dir.resolver, threads: 2).terms.first { $0.name.hasPrefix("shared features") }
        }
        let bytes = 3 * 2 * 2 * 4 * (8 * 196 * 4)      // steps × evaluations × images × sites × floats × 4 B
        let inMemory = try #require(try cacheTerm(""))
        #expect(inMemory.bytes == bytes && inMemory.name.contains("in memory"))
        let onDisk = try #require(try cacheTerm(#", "featureMemoryMB": 0"#))
        #expect(onDisk.bytes == bytes / 6 && onDisk.name.contains("on disk"))

        let base = #""images": {"png": ["\#(png)"]}, "targetLabels": [1]"#
        func refusal(_ rest: String, model: String = "u") -> SpecError? {
            prepareError(#"{"type": "edit", "input": {"model": {"job": "\#(model)"}, \#(base)\#(rest)}}"#, dir)
        }
        #expect(refusal("", model: "plain")?.pointer == "/input/model", "unconditional")
        let noAttention = refusal("", model: "noattn")
        #expect(noAttention?.pointer == "/input/sites" && noAttention?.message.contains("mid.0") == true)
        #expect(refusal(#", "sites": ["mid.0"]"#, model: "noattn") == nil, "a named activation is the fallback")
        #expect(refusal(#", "inject": 0"#, model: "noattn") == nil)
        #expect(refusal(#", "sites": ["nope"]"#)?.pointer == "/input/sites/0")
        #expect(refusal(#", "sites": ["mid.0", "mid.0"]"#)?.pointer == "/input/sites/1")
        #expect(refusal(#", "inject": 30"#)?.pointer == "/input/inject")
        // 1000 images × 1000 steps × 4 evaluations × 75 KB of sites: above the 64 GiB cap.
        let many = "[" + Array(repeating: #""\#(png)""#, count: 1000).joined(separator: ",") + "]"
        let huge = prepareError(#"{"type": "edit", "input": {"model": {"job": "u"}, "images": {"png": \#(many)}, "targetLabels": [1], "solver": {"kind": "rk4", "steps": 1000}, "inject": 1000, "sites": ["down1.0", "down2.0", "down2_attn.0", "mid.0", "mid_attn.0", "mid.1", "mid_attn.1", "up2.0", "up2_attn.0", "up1.0"]}}"#, dir)
        #expect(huge?.pointer == "/input/inject" && huge?.message.contains("GiB") == true, "\(String(describing: huge))")
        #expect(refusal(#", "solver": {"kind": "rk45"}"#)?.pointer == "/input/solver/kind")
        #expect(refusal(#", "solver": {"kind": "remix", "steps": 4}"#)?.pointer == "/input/solver/kind")
        #expect(prepareError(#"{"type": "edit", "input": {"model": {"job": "u"}, "images": {"png": ["\#(png)"]}, "targetLabels": [10]}}"#, dir)?.pointer == "/input/targetLabels/0")
        #expect(prepareError(#"{"type": "edit", "input": {"model": {"job": "u"}, "images": {"png": ["\#(png)"]}, "targetLabels": [1, 2]}}"#, dir)?.pointer == "/input/targetLabels")
        #expect(refusal(#", "sourceLabels": [0, 1]"#)?.pointer == "/input/sourceLabels")
        #expect(refusal(#", "guidance": 1e9"#)?.pointer == "/input/guidance")
        #expect(refusal(#", "inversionGuidance": 1e9"#)?.pointer == "/input/inversionGuidance")
        #expect(refusal(#", "classifier": {"job": "nope"}"#)?.pointer == "/input/classifier/job")
        #expect(prepareError(#"{"type": "edit", "input": {"model": {"job": "u"}, "images": {"png": ["\#(png)"]}}}"#, dir)?.pointer == "/input/targetLabels")
    }
}

extension ImageInput {
    /// The decoded floats of a base64 PNG at the test models' shape.
    static func decodePNGForTests(_ text: String) -> [Float]? { try? decodePNG(text, shape: [1, 28, 28]) }
}
