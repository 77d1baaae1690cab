import Foundation
import Testing
import ReflowFlow
@testable import ReflowJobs

/// Parses `json`, returning the error's (pointer, message) or nil on success.
func specError(_ json: String) -> SpecError? {
    do { _ = try SpecParser.parse(Array(json.utf8)); return nil } catch { return error }
}

func parse(_ json: String) throws -> JobSpec { try SpecParser.parse(Array(json.utf8)) }

@Suite("Job specs")
struct SpecParserTests {
    @Test("a train spec with no input gets every default, and the echo names every field")
    func trainDefaults() throws {
        let spec = try parse(#"{"type": "train"}"#)
        guard let s = spec.input(as: TrainSpec.self) else { Issue.record("not a train spec"); return }
        #expect(s == TrainSpec())
        let echo = try JSONSerialization.jsonObject(with: Data(SpecParser.canonicalJSON(spec))) as! [String: Any]
        let input = echo["input"] as! [String: Any]
        for key in ["data", "source", "model", "batchSize", "learningRate", "optimizer", "schedule", "loss", "emaDecay",
                    "gradClipNorm", "seed", "timeSampler", "interpolant", "steps", "checkpointEvery", "logEvery", "previewPoints"] {
            #expect(input[key] != nil, "echo lacks \(key)")
        }
        // The echo parses back to the same spec.
        #expect(try SpecParser.parse(SpecParser.canonicalJSON(spec)) == spec)
    }

    @Test("partial inputs keep the other defaults")
    func partial() throws {
        guard let s = try parse(#"{"type": "train", "input": {"steps": 10, "data": {"kind": "twoMoons"}, "model": {"width": 32}}}"#).input(as: TrainSpec.self) else {
            Issue.record("not train"); return
        }
        #expect(s.loop.steps == 10 && s.loop.checkpointEvery == 1000)
        #expect(s.training.data == .distribution(.twoMoons()) && s.training.model.mlp?.width == 32 && s.training.model.mlp?.depth == 3)
    }

    @Test("unknown fields are errors with their pointer, at any depth",
          arguments: [
            (#"{"type": "train", "input": {"learningrate": 0.1}}"#, "/input/learningrate"),
            (#"{"type": "train", "input": {"model": {"widht": 3}}}"#, "/input/model/widht"),
            (#"{"type": "train", "inptu": {}}"#, "/inptu"),
            (#"{"type": "train", "input": {"optimizer": {"kind": "adam", "momentum": 0.9}}}"#, "/input/optimizer/momentum"),
            (#"{"type": "sample", "input": {"model": {"job": "a", "path": "b"}}}"#, "/input/model/path"),
            (#"{"type": "evaluate", "input": {"model": {"job": "a"}, "solvers": [{"kind": "euler", "steps": 2, "rtol": 1}]}}"#, "/input/solvers/0/rtol"),
            (#"{"type": "reflow", "input": {"teacher": {"job": "a"}, "k": 2}}"#, "/input/k"),
          ])
    func unknownFields(json: String, pointer: String) {
        #expect(specError(json)?.pointer == pointer, "\(String(describing: specError(json)))")
    }

    @Test("type errors, missing fields and bad values name the field",
          arguments: [
            (#"{"type": "train", "input": {"steps": "many"}}"#, "/input/steps", "must be an integer"),
            (#"{"type": "train", "input": {"steps": 0}}"#, "/input/steps", "must be in"),
            (#"{"type": "train", "input": {"steps": 1.5}}"#, "/input/steps", "integer"),
            (#"{"type": "train", "input": {"seed": -3, "learningRate": 0.5}}"#, "/input/seed", "integer"),
            (#"{"type": "sample", "input": {"model": {"job": "a"}, "n": 1e30}}"#, "/input/n", "integer"),
            (#"{"type": "train", "input": {"learningRate": -1}}"#, "/input/learningRate", "positive"),
            (#"{"type": "train", "input": {"model": {"timeInput": {"kind": "sinusoidal", "features": 3}}}}"#, "/input/model/timeInput/features", "even"),
            (#"{"type": "train", "input": {"data": {"kind": "nope"}}}"#, "/input/data/kind", "nope"),
            (#"{"type": "train", "input": {"timeSampler": {"kind": "uShaped", "a": -1}}}"#, "/input/timeSampler/a", "must be in"),
            (#"{"type": "train", "input": {"schedule": {"kind": "cosine", "totalSteps": 0, "warmupSteps": 5}}}"#, "/input/schedule/totalSteps", "exceed"),
            (#"{"type": "bake"}"#, "/type", "accepted values"),
            (#"{"input": {}}"#, "/type", "required"),
            (#"{"type": "reflow", "input": {}}"#, "/input/teacher", "required"),
            (#"{"type": "reflow", "input": {"teacher": {}}}"#, "/input/teacher/job", "required"),
            (#"{"type": "reflow", "input": {"teacher": {"job": "../etc"}}}"#, "/input/teacher/job", "job id"),
            (#"{"type": "reflow", "input": {"teacher": {"job": "a"}, "solver": {"kind": "rk45", "rtol": 0}}}"#, "/input/solver/rtol", "rtol"),
            (#"{"type": "reflow", "input": {"teacher": {"job": "a"}, "pairs": 0}}"#, "/input/pairs", "must be in"),
            (#"{"type": "distill", "input": {"teacher": {"job": "a"}, "k": 2, "timeSampler": {"kind": "uniform"}}}"#, "/input/timeSampler", "grid"),
            (#"{"type": "sample", "input": {"model": {"job": "a"}, "n": 0}}"#, "/input/n", "must be in"),
            (#"{"type": "sample", "input": {"model": {"job": "a"}, "solver": {"kind": "heun"}}}"#, "/input/solver/steps", "required"),
            (#"{"type": "invert", "input": {"model": {"job": "a"}, "points": {"inline": [[1, 2], [3]]}}}"#, "/input/points/inline/1", "point"),
            (#"{"type": "invert", "input": {"model": {"job": "a"}, "points": {}}}"#, "/input/points", "exactly one"),
            (#"{"type": "evaluate", "input": {"model": {"job": "a"}, "solvers": []}}"#, "/input/solvers", "1 to 32"),
            (#"[1, 2]"#, "", "object"),
          ])
    func badValues(json: String, pointer: String, fragment: String) {
        let e = specError(json)
        #expect(e?.pointer == pointer, "\(String(describing: e))")
        #expect(e?.message.contains(fragment) == true, "\(String(describing: e))")
    }

    @Test("distill defaults to k = 1 on the grid; an explicit k sets the grid")
    func distillGrid() throws {
        guard let a = try parse(#"{"type": "distill", "input": {"teacher": {"job": "t"}}}"#).input(as: DistillSpec.self),
              let b = try parse(#"{"type": "distill", "input": {"teacher": {"job": "t"}, "k": 4}}"#).input(as: DistillSpec.self) else {
            Issue.record("not distill"); return
        }
        #expect(a.k == 1 && a.training.timeSampler == .grid(k: 1, epsilon: 0))
        #expect(b.k == 4 && b.training.timeSampler == .grid(k: 4, epsilon: 0))
        #expect(a.inherited == ["model", "data", "source", "interpolant"])
    }

    @Test("strict RFC 8259: trailing commas, duplicate keys and other malformed documents are refused as malformed",
          arguments: [
            (#"{"type": "train", "input": {"steps": 5,}}"#, "trailing comma"),
            (#"{"type": "train", "input": {"steps": 5, "steps": 9999999}}"#, "duplicate"),
            (#"{"type": "train", "input": {"steps": [1, 2,]}}"#, "trailing comma"),
            (#"{"type": "train", "input": {"steps": 05}}"#, "leading zero"),
            (#"{"type": "train"} x"#, "after the json value"),
            (#"{"type": "#, "end of input"),
            (String(repeating: "[", count: 40) + String(repeating: "]", count: 40), "deeper"),
          ])
    func strictJSON(json: String, fragment: String) {
        let e = specError(json)
        #expect(e?.malformed == true, "\(String(describing: e))")
        #expect(e?.message.lowercased().contains(fragment) == true, "\(String(describing: e))")
    }

    @Test("numbers out of range are reported for what they are")
    func numberRanges() {
        let float = specError(#"{"type": "train", "input": {"data": {"kind": "gaussianRing", "std": 1e308}}}"#)
        #expect(float?.pointer == "/input/data/std" && float?.message.contains("32-bit float") == true, "\(String(describing: float))")
        let fraction = specError(#"{"type": "train", "input": {"batchSize": 2.5}}"#)
        #expect(fraction?.pointer == "/input/batchSize" && fraction?.message.contains("must be an integer, got 2.5") == true, "\(String(describing: fraction))")
        let huge = specError(#"{"type": "train", "input": {"steps": 1e19}}"#)
        #expect(huge?.pointer == "/input/steps" && huge?.message.contains("64-bit integer") == true, "\(String(describing: huge))")
        let negative = specError(#"{"type": "train", "input": {"seed": -1}}"#)
        #expect(negative?.pointer == "/input/seed" && negative?.message.contains("non-negative") == true, "\(String(describing: negative))")
    }

    @Test("every registered kind parses with its required fields and echoes back to itself")
    func registryRoundTrip() throws {
        #expect(JobKinds.names == ["train", "reflow", "distill", "sample", "invert", "evaluate", "classify", "prune", "analytic", "edit", "reconstruct"])
        for kind in JobKinds.all {
            let input = ["train": "{}", "reflow": #"{"teacher": {"job": "t"}}"#, "distill": #"{"teacher": {"job": "t"}}"#,
                         "sample": #"{"model": {"job": "m"}}"#, "invert": #"{"model": {"job": "m"}}"#, "evaluate": #"{"model": {"job": "m"}}"#, "classify": "{}",
                         "prune": #"{"model": {"job": "m"}}"#, "analytic": "{}",
                         "edit": #"{"model": {"job": "m"}, "images": {"dataset": "d", "indices": [0]}, "targetLabels": [1]}"#,
                         "reconstruct": #"{"method": {"kind": "zeroFilled"}, "images": {"sheppLogan": {}}}"#][kind.name] ?? "{}"
            let spec = try parse(#"{"type": "\#(kind.name)", "input": \#(input)}"#)
            #expect(spec.type == kind.name)
            // The echo is a fixed point (a student spec parsed from its echo no longer inherits,
            // so it is compared through its canonical form).
            let echo = SpecParser.canonicalJSON(spec)
            #expect(SpecParser.canonicalJSON(try SpecParser.parse(echo)) == echo, "\(kind.name)")
            #expect(!kind.outputs.isEmpty && !kind.summary.isEmpty)
        }
    }

    @Test("JSON pointer tokens are escaped (RFC 6901)")
    func escaping() {
        #expect(specError(#"{"type": "train", "input": {"a/b~c": 1}}"#)?.pointer == "/input/a~1b~0c")
    }
}
