import Testing
import Foundation
import ReflowBench

@Suite("CLI")
struct CLITests {
    @Test func flagsParseAndReject() throws {
        let f = try Flags(["--steps", "10", "--lr=0.5", "--resume"], allowed: ["steps", "lr"], booleans: ["resume"])
        #expect(try f.int("steps", default: 1) == 10)
        #expect(try f.float("lr", default: 1) == 0.5)
        #expect(f.bool("resume"))
        #expect(throws: CLIError.self) { try Flags(["--nope", "1"], allowed: ["steps"]) }
        #expect(throws: CLIError.self) { try Flags(["--steps"], allowed: ["steps"]) }
        #expect(throws: CLIError.self) { try Flags(["positional"], allowed: ["steps"]) }
        let big = try Flags(["--steps", "99999999999999999999"], allowed: ["steps"])
        #expect(throws: CLIError.self) { try big.int("steps", default: 1, min: 1, max: 100) }
        let nan = try Flags(["--lr", "nan"], allowed: ["lr"])
        #expect(throws: CLIError.self) { try nan.float("lr", default: 1) }
    }

    @Test("bench flags are bounded before anything is allocated")
    func benchBounds() {
        #expect(throws: CLIError.self) { try ToyBenchmark.run(["--block-rows", "9223372036854775807"]) }
        #expect(throws: CLIError.self) { try ToyBenchmark.run(["--sample-n", "999999999999"]) }
        #expect(throws: CLIError.self) { try ToyBenchmark.run(["--sample-steps", "1,0"]) }
        #expect(throws: CLIError.self) { try ToyBenchmark.run(["--lr", "-1"]) }
        #expect(throws: CLIError.self) { try KernelBenchmark.gemm(["--m", "100000000"]) }
        #expect(throws: CLIError.self) { try KernelBenchmark.gemm(["--op", "XY"]) }
    }

    @Test("demo refuses bad configs with the field's pointer, and resuming under another config")
    func demoErrors() throws {
        let dir = NSTemporaryDirectory() + "reflowd-cli-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        func writeConfig(_ json: String) throws -> String {
            let p = dir + "/c\(json.hashValue).json"
            try json.write(toFile: p, atomically: true, encoding: .utf8)
            return p
        }
        func message(_ args: [String]) -> String? {
            do { _ = try Demo.run(args) { _ in }; return nil } catch { return "\(error)" }
        }
        #expect(message(["--config", try writeConfig(#"{"batchSize": 0}"#), "--out", dir])?.contains("/batchSize") == true)
        #expect(message(["--config", try writeConfig(#"{"model": {"width": "x"}}"#), "--out", dir])?.contains("/model/width") == true)
        #expect(message(["--config", dir + "/missing.json", "--out", dir])?.contains("cannot read") == true)
        // A tiny run, then a resume under a different config is refused.
        let small = try writeConfig(#"{"batchSize": 16, "model": {"width": 8, "depth": 1}}"#)
        #expect(message(["--config", small, "--out", dir, "--steps", "3", "--samples", "10", "--threads", "1"]) == nil)
        let other = try writeConfig(#"{"batchSize": 32, "model": {"width": 8, "depth": 1}}"#)
        #expect(message(["--config", other, "--out", dir, "--steps", "5", "--resume", "--samples", "10"])?.contains("different configuration") == true)
        #expect(message(["--config", small, "--out", dir, "--steps", "5", "--resume", "--samples", "10", "--threads", "1"]) == nil)
    }

    @Test("toy-quality on a non-mixture target reports support coverage", arguments: ["twoMoons", "checkerboard"])
    func otherTargets(kind: String) throws {
        let line = try QualityBenchmark.run(["--data", kind, "--train-steps", "10", "--reflow-steps", "10", "--reflow-pairs", "128",
                                             "--sample-n", "128", "--width", "8", "--depth", "1", "--batch", "32", "--threads", "1"])
        #expect(line.contains("\"data\":\"\(kind)\""))
        #expect(throws: CLIError.self) { try QualityBenchmark.run(["--data", "nope"]) }
    }

    @Test func pairsBenchmarkSmoke() throws {
        let line = try PairsBenchmark.run(["--pairs", "300", "--steps", "3", "--reps", "1", "--width", "8", "--depth", "1"])
        let json = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(json["pairs"] as? Int == 300)
        #expect((json["generate"] as? [String: Any])?["median_ms"] is Double)
        #expect(throws: CLIError.self) { try PairsBenchmark.run(["--pairs", "0"]) }
    }

    @Test func jsonLineMapsNonFiniteToNull() {
        let s = jsonLine(["a": Double.nan, "b": [1.0, .infinity], "c": ["d": Float.nan]])
        #expect(s == #"{"a":null,"b":[1,null],"c":{"d":null}}"#)
    }
}

@Suite("toy-quality smoke")
struct QualitySmokeTests {
    @Test("a tiny pipeline runs end to end and reports every model and the data baseline")
    func tinyPipeline() throws {
        let dir = NSTemporaryDirectory() + "reflowd-quality-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let line = try QualityBenchmark.run(["--train-steps", "20", "--reflow-steps", "20", "--reflow-pairs", "256",
                                             "--sample-n", "256", "--distill-steps", "10", "--rf3-steps", "10",
                                             "--width", "16", "--depth", "1", "--batch", "64", "--threads", "2",
                                             "--figures", dir])
        for name in ["trajectories_rf1.png", "trajectories_rf2.png"] {
            let png = try #require(FileManager.default.contents(atPath: dir + "/" + name))
            #expect(Array(png.prefix(8)) == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        }
        let json = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        let quality = try #require(json["quality"] as? [String: Any])
        #expect(Set(quality.keys) == ["rf1", "rf2", "rf2_distilled", "rf3", "data"])
        let rf2 = try #require(quality["rf2"] as? [String: Any])
        #expect(rf2["straightness"] is Double)
        #expect((rf2["euler100"] as? [String: Any])?["transport_cost"] is Double)
        #expect(((quality["rf2_distilled"] as? [String: Any])?.keys).map(Set.init) == ["euler1"])
    }
}
