import Foundation
import Testing
import ReflowEngine
import ReflowFlow
import ReflowMRI
import ReflowStore
@testable import ReflowJobs

@Suite("RIM training and reconstruct jobs")
struct ReconstructJobTests {
    static let rimTrain = #"{"type": "train", "input": {"model": {"kind": "rim", "cell": "indrnn", "features": 4, "steps": 2}, "data": {"kind": "phantoms", "height": 16, "width": 16}, "acquisition": {"mask": {"kind": "gaussian2D", "acceleration": 3, "centerFraction": 0.1}}, "batchSize": 4, "steps": 6, "logEvery": 2, "checkpointEvery": 3, "checkImages": 4}}"#

    /// Base64 of a .npy array.
    static func b64(_ a: NPYArray) -> String { Data(a.bytes()).base64EncodedString() }

    /// n phantoms of 16×16, their Gaussian-mask k-space (noise-free) and the masks.
    static func upload(_ n: Int, seed: UInt64 = 3) throws -> (kspace: NPYArray, masks: NPYArray, reference: NPYArray, problems: [MRIProblem]) {
        var rng = Random(seed: seed)
        let acq = Acquisition(mask: MaskSpec(kind: .gaussian2D, acceleration: 3, centerFraction: 0.1))
        let ps = try (0..<n).map { _ in try acq.simulate(Phantoms.randomEllipses(height: 16, width: 16, seed: rng.next()).data, height: 16, width: 16, rng: &rng) }
        return (NPYArray(dtype: .complex64, shape: [n, 16, 16], values: ps.flatMap(\.measurements.data)),
                NPYArray(dtype: .float32, shape: [n, 16, 16], values: ps.flatMap(\.model.mask.data)),
                NPYArray(dtype: .float32, shape: [n, 16, 16], values: ps.flatMap { $0.reference!.magnitude.data }), ps)
    }

    func prepareError(_ json: String, _ dir: JobsDir) -> SpecError? {
        do { _ = try JobRunner.prepare(try SpecParser.parse(Array(json.utf8)), resolver: dir.resolver); return nil } catch { return error }
    }

    @Test("train on a rim model: RIM checkpoint with its config, loss log, a check section; echoes the RIM spec; finished runs are not retrained")
    func train() throws {
        let dir = try JobsDir()
        defer { dir.remove() }
        let r = try dir.run("rim", Self.rimTrain)
        #expect(r.training?.steps == 6 && r.training?.parameters == RIMConfig(cell: .indrnn, features: 4, steps: 2).parameterCount)
        let check = r.section("check", as: RIMCheck.self)
        #expect(check?.images == 4 && check!.rim.nmse.isFinite && check!.zeroFilled.ssim != nil)
        let snap = try Checkpoint.read(path: dir.path + "/rim/model.safetensors")
        #expect(snap.metadata[RIMConfig.metadataKey]?.contains("\"indrnn\"") == true && snap.step == 6)
        #expect(snap.model["cascades.0.cell1.u"] != nil)
        let log = try String(contentsOfFile: dir.path + "/rim/loss.csv", encoding: .utf8)
        #expect(log.split(separator: "\n").count == 4)
        let spec = try JobRunner.prepare(try SpecParser.parse(Array(Self.rimTrain.utf8)), resolver: dir.resolver)
        let echoed = String(decoding: try JSONEncoder().encode(spec), as: UTF8.self)
        #expect(echoed.contains("\"acquisition\"") && !echoed.contains("interpolant"), "\(echoed)")
        // The same directory again: the finished model is kept.
        let again = try dir.run("rim", Self.rimTrain)
        #expect(again.training?.resumedFromStep == 6)
    }

    @Test("a RIM training interrupted after a checkpoint resumes to the same weights as an uninterrupted run")
    func resume() throws {
        let dir = try JobsDir()
        defer { dir.remove() }
        try dir.run("full", Self.rimTrain)
        #expect(throws: JobError.self) { try dir.run("cut", Self.rimTrain, stopAfter: 2) }
        #expect(FileManager.default.fileExists(atPath: dir.path + "/cut/checkpoint.safetensors"))
        let r = try dir.run("cut", Self.rimTrain)
        #expect((r.training?.resumedFromStep ?? 0) > 0)
        let a = try Checkpoint.read(path: dir.path + "/full/model.safetensors").model
        let b = try Checkpoint.read(path: dir.path + "/cut/model.safetensors").model
        #expect(a == b)
    }

    @Test("uploaded k-space: zero filling equals Aᴴy, the mask defaults to the sampled entries, references score SSIM/PSNR/NMSE; files written")
    func upload() throws {
        let dir = try JobsDir()
        defer { dir.remove() }
        let u = try Self.upload(3)
        let explicit = try dir.run("zf", #"{"type": "reconstruct", "input": {"method": {"kind": "zeroFilled"}, "kspace": "\#(Self.b64(u.kspace))", "mask": "\#(Self.b64(u.masks))", "reference": "\#(Self.b64(u.reference))"}}"#)
        let derived = try dir.run("zf2", #"{"type": "reconstruct", "input": {"method": {"kind": "zeroFilled"}, "kspace": "data:application/octet-stream;base64,\#(Self.b64(u.kspace))"}}"#)
        let out = try NPYArray.parse(Array(try Data(contentsOf: URL(fileURLWithPath: dir.path + "/zf/reconstructed.npy"))), name: "r")
        #expect(out.dtype == .complex64 && out.shape == [3, 16, 16])
        #expect(out.values == u.problems.flatMap(\.zeroFilled.data))
        let out2 = try NPYArray.parse(Array(try Data(contentsOf: URL(fileURLWithPath: dir.path + "/zf2/reconstructed.npy"))), name: "r")
        #expect(out2.values == out.values)
        let s = try #require(explicit.reconstruction)
        #expect(s.images == 3 && s.method == "zeroFilled" && s.perImage?.count == 3)
        let want = ReconstructionMetrics.measure(u.problems[1].zeroFilled, reference: u.problems[1].reference!)
        #expect(abs(s.perImage![1].metrics.psnr - want.psnr) < 1e-9 && s.perImage![1].metrics.ssim == want.ssim)
        #expect(abs(s.acceleration - 3) < 0.2)
        #expect(derived.reconstruction?.metrics == nil, "no reference, no metrics")
        for f in ["reconstructed.png", "comparison.png", "mask.png", "mask.npy", "metrics.csv"] {
            #expect(FileManager.default.fileExists(atPath: dir.path + "/zf/" + f), "\(f)")
        }
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/zf2/comparison.png"))
        let csv = try String(contentsOfFile: dir.path + "/zf/metrics.csv", encoding: .utf8)
        #expect(csv.hasPrefix("image,ssim,psnr,nmse") && csv.split(separator: "\n").count == 4)
        // A complex reference scores like its magnitude here (zero phase).
        let cref = NPYArray(dtype: .complex64, shape: [3, 16, 16], values: u.problems.flatMap { $0.reference!.data })
        let c = try dir.run("zf3", #"{"type": "reconstruct", "input": {"method": {"kind": "zeroFilled"}, "kspace": "\#(Self.b64(u.kspace))", "reference": "\#(Self.b64(cref))"}}"#)
        #expect(c.reconstruction?.metrics == s.metrics)
    }

    @Test("an image plus a mask: an uploaded reference is acquired with the uploaded mask, and simulated images take an uploaded mask instead of the acquisition's")
    func imagePlusMask() throws {
        let dir = try JobsDir()
        defer { dir.remove() }
        let u = try Self.upload(2)
        let r = try dir.run("ref", #"{"type": "reconstruct", "input": {"method": {"kind": "zeroFilled"}, "reference": "\#(Self.b64(u.reference))", "mask": "\#(Self.b64(u.masks))"}}"#)
        let out = try NPYArray.parse(Array(try Data(contentsOf: URL(fileURLWithPath: dir.path + "/ref/reconstructed.npy"))), name: "r")
        #expect(out.values == u.problems.flatMap(\.zeroFilled.data), "noise-free: the same k-space as the simulation that made the upload")
        #expect(r.reconstruction?.perImage?.count == 2 && r.reconstruction?.metrics != nil)
        let one = NPYArray(dtype: .float32, shape: [16, 16], values: Array(u.masks.values[0..<256]))
        try dir.run("img", #"{"type": "reconstruct", "input": {"method": {"kind": "zeroFilled"}, "images": {"phantoms": {"count": 3, "height": 16, "width": 16}}, "mask": "\#(Self.b64(one))"}}"#)
        let masks = try NPYArray.parse(Array(try Data(contentsOf: URL(fileURLWithPath: dir.path + "/img/mask.npy"))), name: "m")
        #expect(masks.shape == [3, 16, 16] && masks.values == Array(repeating: one.values, count: 3).flatMap { $0 })
    }

    @Test("CS beats zero filling; a λ sweep picks the best mean SSIM and the trace finds the iterations within 1 %; TV works too")
    func compressedSensing() throws {
        let dir = try JobsDir()
        defer { dir.remove() }
        let u = try Self.upload(4)
        let base = #""kspace": "\#(Self.b64(u.kspace))", "reference": "\#(Self.b64(u.reference))""#
        let r = try dir.run("cs", #"{"type": "reconstruct", "input": {"method": {"kind": "cs", "sweep": [0.0001, 0.01, 10], "iterations": 60, "trace": true}, \#(base)}}"#)
        let s = try #require(r.reconstruction)
        let cs = try #require(s.cs)
        #expect(cs.sweep.count == 3 && cs.lambda == cs.sweep.max { ($0.metrics.ssim ?? 0) < ($1.metrics.ssim ?? 0) }!.lambda)
        #expect(cs.lambda != 10, "a huge λ wipes the image")
        let trace = try #require(cs.ssimByIteration)
        #expect(trace.count == 60)
        let k = try #require(cs.iterationsWithin1Percent)
        let last = trace[59]
        #expect(abs(trace[k - 1] - last) <= 0.01 * last && (k == 1 || abs(trace[k - 2] - last) > 0.01 * last))
        #expect(s.metrics!.ssim!.mean > s.zeroFilled!.ssim!.mean)
        // The reported metrics are those of the chosen λ's sweep row (same arithmetic).
        #expect(abs(cs.sweep.first { $0.lambda == cs.lambda }!.metrics.ssim! - s.metrics!.ssim!.mean) < 1e-12)
        let tv = try dir.run("tv", #"{"type": "reconstruct", "input": {"method": {"kind": "cs", "regularizer": "tv", "lambda": 0.01, "iterations": 30}, \#(base)}}"#)
        #expect(tv.reconstruction!.metrics!.ssim!.mean > s.zeroFilled!.ssim!.mean)
    }

    @Test("a trained RIM reconstructs uploads and simulated images (phantoms with lesions, Shepp–Logan); its output equals the library's")
    func rim() throws {
        let dir = try JobsDir()
        defer { dir.remove() }
        try dir.run("rim", Self.rimTrain)
        let u = try Self.upload(2)
        let r = try dir.run("up", #"{"type": "reconstruct", "input": {"method": {"kind": "rim", "model": {"job": "rim"}}, "kspace": "\#(Self.b64(u.kspace))", "mask": "\#(Self.b64(u.masks))"}}"#)
        #expect(r.reconstruction?.method == "rim" && r.reconstruction!.secondsPerImage > 0)
        let snap = try Checkpoint.read(path: dir.path + "/rim/model.safetensors")
        let net = try RIMNetwork(RIMConfig(cell: .indrnn, features: 4, steps: 2), stateDict: snap.model)
        let out = try NPYArray.parse(Array(try Data(contentsOf: URL(fileURLWithPath: dir.path + "/up/reconstructed.npy"))), name: "r")
        #expect(out.values == net.reconstruct(u.problems, threads: 1).flatMap(\.data))
        let l = try dir.run("les", #"{"type": "reconstruct", "input": {"method": {"kind": "rim", "model": {"job": "rim"}}, "images": {"phantoms": {"count": 3, "height": 16, "width": 16, "seed": 9}}, "acquisition": {"mask": {"kind": "poissonDisc", "acceleration": 3, "seed": 1}}, "lesions": 2}}"#)
        let s = try #require(l.reconstruction)
        #expect(s.lesionNMSE?.n == 3 && s.zeroFilledLesionNMSE?.n == 3 && s.perImage?.allSatisfy { $0.lesionNMSE != nil } == true)
        let csv = try String(contentsOfFile: dir.path + "/les/metrics.csv", encoding: .utf8)
        #expect(csv.hasPrefix("image,ssim,psnr,nmse,zero_filled_ssim,zero_filled_psnr,zero_filled_nmse,lesion_nmse"))
        let sl = try dir.run("sl", #"{"type": "reconstruct", "input": {"method": {"kind": "zeroFilled"}, "images": {"sheppLogan": {"height": 32, "width": 32}}, "acquisition": {"mask": {"kind": "equispaced1D", "acceleration": 2, "seed": 1}}}}"#)
        #expect(sl.reconstruction?.images == 1 && sl.reconstruction?.width == 32)
        // A flow job cannot use the RIM, nor reconstruct a flow.
        try dir.run("flow", #"{"type": "train", "input": {\#(tinyModel), "steps": 5}}"#)
        let notRIM = prepareError(#"{"type": "reconstruct", "input": {"method": {"kind": "rim", "model": {"job": "flow"}}, "kspace": "\#(Self.b64(u.kspace))"}}"#, dir)
        #expect(notRIM?.pointer == "/input/method/model" && notRIM?.message.contains("not a RIM") == true)
        let sample = prepareError(#"{"type": "sample", "input": {"model": {"job": "rim"}}}"#, dir)
        #expect(sample?.pointer.hasPrefix("/input/model") == true, "\(String(describing: sample))")
    }

    @Test("images under SSIM's window rank sweeps by PSNR and report no SSIM; a stop request ends long CS runs; the figure count has a size limit")
    func smallImagesStopsAndFigures() throws {
        let dir = try JobsDir()
        defer { dir.remove() }
        let r = try dir.run("small", #"{"type": "reconstruct", "input": {"method": {"kind": "cs", "sweep": [0.0001, 0.01, 10], "iterations": 20, "trace": true}, "images": {"phantoms": {"count": 3, "height": 10, "width": 10}}}}"#)
        let s = try #require(r.reconstruction)
        #expect(s.metrics?.ssim == nil && s.metrics!.psnr.mean.isFinite && s.perImage!.allSatisfy { $0.metrics.ssim == nil })
        let best = s.cs!.sweep.max { $0.metrics.psnr < $1.metrics.psnr }!
        #expect(s.cs!.lambda == best.lambda && s.cs!.ssimByIteration?.count == 20)
        // 10,000 TV iterations with 500 FGP steps each would take minutes; a stop ends them.
        #expect(throws: JobError.self) {
            try dir.run("stop", #"{"type": "reconstruct", "input": {"method": {"kind": "cs", "regularizer": "tv", "iterations": 10000, "tvIterations": 500}, "images": {"phantoms": {"count": 2, "height": 32, "width": 32}}}}"#, stopAfter: 2)
        }
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/stop/reconstructed.npy"))
        #expect(ReconstructSpec.maxFigureImages(height: 256, width: 256) == 56)
        let big = prepareError(#"{"type": "reconstruct", "input": {"method": {"kind": "zeroFilled"}, "images": {"phantoms": {"count": 60, "height": 256, "width": 256}}, "figureImages": 57}}"#, dir)
        #expect(big?.pointer == "/input/figureImages" && big?.message.contains("at most 56") == true, "\(String(describing: big))")
    }

    @Test("a checkpoint whose RIM config is invalid is refused at submit; RIM specs echo to a fixed point")
    func badCheckpointConfig() throws {
        let dir = try JobsDir()
        defer { dir.remove() }
        try dir.run("rim", Self.rimTrain)
        var snap = try Checkpoint.read(path: dir.path + "/rim/model.safetensors")
        snap.metadata[RIMConfig.metadataKey] = #"{"kind": "rim", "cell": "gru", "features": 0, "steps": 8, "cascades": 1}"#
        try Checkpoint.write(snap, to: dir.path + "/bad.safetensors")
        let u = try Self.upload(1)
        let e = prepareError(#"{"type": "reconstruct", "input": {"method": {"kind": "rim", "model": {"path": "\#(dir.path)/bad.safetensors"}}, "kspace": "\#(Self.b64(u.kspace))"}}"#, dir)
        #expect(e?.pointer == "/input/method/model" && e?.message.contains("invalid RIM config: /features") == true, "\(String(describing: e))")
        let spec = try SpecParser.parse(Array(Self.rimTrain.utf8))
        let echo = SpecParser.canonicalJSON(spec)
        #expect(SpecParser.canonicalJSON(try SpecParser.parse(echo)) == echo)
        let stored = try JSONDecoder().decode(JobSpec.self, from: Data(echo))
        #expect(stored == spec && stored.input(as: TrainSpec.self)?.rim?.model.cell == .indrnn)
    }

    @Test("malformed uploads and inconsistent specs get 4xx reasons with pointers, before any job exists")
    func refusals() throws {
        let dir = try JobsDir()
        defer { dir.remove() }
        let u = try Self.upload(2)
        let k = Self.b64(u.kspace)
        func refusal(_ rest: String, method: String = #"{"kind": "zeroFilled"}"#) -> SpecError? {
            prepareError(#"{"type": "reconstruct", "input": {"method": \#(method), \#(rest)}}"#, dir)
        }
        func expect(_ rest: String, _ pointer: String, _ words: String, method: String = #"{"kind": "zeroFilled"}"#, _ line: Int = #line) {
            let e = refusal(rest, method: method)
            #expect(e?.pointer == pointer && e?.message.contains(words) == true, "line \(line): \(String(describing: e?.pointer)) \(String(describing: e?.message))")
        }
        let real = Self.b64(NPYArray(dtype: .float32, shape: [2, 16, 16], values: [Float](repeating: 1, count: 512)))
        expect(#""kspace": "\#(real)""#, "/input/kspace", "'<f4' is not accepted")
        var nan = u.kspace
        nan.values[37] = .nan
        expect(#""kspace": "\#(Self.b64(nan))""#, "/input/kspace", "element 18 (imaginary part): non-finite")
        expect(#""kspace": "\#(Self.b64(NPYArray(dtype: .complex64, shape: [16], values: [Float](repeating: 1, count: 32))))""#, "/input/kspace", "[H, W] or [n, H, W]")
        expect(#""kspace": "\#(Self.b64(NPYArray(dtype: .complex64, shape: [4, 4], values: [Float](repeating: 1, count: 32))))""#, "/input/kspace", "8 to 256")
        expect(#""kspace": "%%%""#, "/input/kspace", "base64")
        var huge = u.kspace
        huge.values[6] = 1e20
        expect(#""kspace": "\#(Self.b64(huge))""#, "/input/kspace", "element 3 is 1e+20")
        expect(#""kspace": "\#(k)""#, "/input/method/kind", "unknown method", method: #"{"kind": "magic"}"#)
        expect(#""kspace": "\#(k)", "mask": "\#(Self.b64(NPYArray(dtype: .float32, shape: [16, 16], values: [Float](repeating: 2, count: 256))))""#, "/input/mask", "only 0 and 1")
        expect(#""kspace": "\#(k)", "mask": "\#(Self.b64(NPYArray(dtype: .float32, shape: [3, 16, 16], values: [Float](repeating: 1, count: 768))))""#, "/input/mask", "like the k-space")
        expect(#""kspace": "\#(k)", "mask": "\#(Self.b64(NPYArray(dtype: .float32, shape: [16, 16], values: [Float](repeating: 0, count: 256))))""#, "/input/mask", "samples no k-space point")
        expect(#""kspace": "\#(k)", "reference": "\#(Self.b64(NPYArray(dtype: .float32, shape: [2, 8, 8], values: [Float](repeating: 1, count: 128))))""#, "/input/reference", "like the k-space")
        expect(#""kspace": "\#(k)", "images": {"phantoms": {"count": 2}}"#, "/input/kspace", "exactly one")
        expect(#""seed": 1"#, "/input/kspace", "exactly one")
        expect(#""images": {"phantoms": {"count": 2}}, "reference": "\#(Self.b64(u.reference))""#, "/input/images", "drop reference")
        expect(#""reference": "\#(Self.b64(u.reference))""#, "/input/mask", "give mask")
        expect(#""images": {"phantoms": {"count": 2, "height": 16, "width": 16}}, "mask": "\#(Self.b64(NPYArray(dtype: .float32, shape: [3, 16, 16], values: [Float](repeating: 1, count: 768))))""#, "/input/mask", "like the images")
        expect(#""reference": "\#(Self.b64(u.reference))", "mask": "\#(Self.b64(NPYArray(dtype: .float32, shape: [8, 8], values: [Float](repeating: 1, count: 64))))""#, "/input/mask", "like the reference")
        expect(#""kspace": "\#(k)""#, "/input/method/sweep", "needs reference", method: #"{"kind": "cs", "sweep": [0.1]}"#)
        expect(#""kspace": "\#(k)""#, "/input/method/trace", "needs reference", method: #"{"kind": "cs", "trace": true}"#)
        expect(#""kspace": "\#(k)", "lesions": 2"#, "/input/lesions", "simulated")
        expect(#""images": {"phantoms": {"count": 2, "height": 16, "width": 16}}, "acquisition": {"mask": {"acceleration": 2, "centerFraction": 0.9}}"#, "/input/acquisition/mask/centerFraction", "alone samples")
        expect(#""images": {"phantoms": {"count": 0}}"#, "/input/images/phantoms/count", "must be in")
        expect(#""images": {"dataset": "builtin:shapes", "indices": [100000]}"#, "/input/images/indices/0", "does not exist")
        #expect(refusal(#""images": {"dataset": "builtin:shapes", "indices": [1]}"#) == nil, "built-in images are one-channel 28×28")
        expect(#""kspace": "\#(k)""#, "/input/method/iterations", "must be in", method: #"{"kind": "cs", "iterations": 0}"#)
        expect(#""kspace": "\#(k)""#, "/input/method/model/job", "has no model", method: #"{"kind": "rim", "model": {"job": "nope"}}"#)
        #expect(refusal(#""kspace": "\#(k)""#) == nil)
        // A rim train spec's own refusals.
        let bad = prepareError(#"{"type": "train", "input": {"model": {"kind": "rim", "features": 0}}}"#, dir)
        #expect(bad?.pointer == "/input/model/features", "\(String(describing: bad))")
        let mask = prepareError(#"{"type": "train", "input": {"model": {"kind": "rim"}, "data": {"kind": "phantoms", "height": 8, "width": 8}, "acquisition": {"mask": {"acceleration": 30, "centerFraction": 0.5}}}}"#, dir)
        #expect(mask?.pointer.hasPrefix("/input/acquisition/mask") == true, "\(String(describing: mask))")
        let mixed = prepareError(#"{"type": "train", "input": {"model": {"kind": "rim"}, "data": {"kind": "mixed", "parts": [{"kind": "phantoms", "height": 16, "width": 16}, {"kind": "phantoms", "height": 20, "width": 16}]}}}"#, dir)
        #expect(mixed?.pointer == "/input/data/parts/1", "\(String(describing: mixed))")
        let missing = prepareError(#"{"type": "train", "input": {"model": {"kind": "rim"}, "data": {"kind": "images", "dataset": "builtin:nope"}}}"#, dir)
        #expect(missing?.pointer.hasPrefix("/input/data") == true, "\(String(describing: missing?.pointer))")
        let typo = prepareError(#"{"type": "train", "input": {"model": {"kind": "rim"}, "stepz": 3}}"#, dir)
        #expect(typo?.pointer == "/input/stepz", "\(String(describing: typo))")
    }
}
