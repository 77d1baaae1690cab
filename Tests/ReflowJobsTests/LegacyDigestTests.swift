import Foundation
import Testing
import ReflowCodec
@testable import ReflowJobs

/// Specs as the previous release (cdc7a42) printed them with `reflowd validate` (its canonical
/// JSON, whose SHA-256 its checkpoints record), kept verbatim.
enum LegacySpecs {
    static let d0 = #"""
{
  "input" : {
    "batchSize" : 512,
    "checkpointEvery" : 1000,
    "data" : {
      "count" : 8,
      "kind" : "gaussianRing",
      "radius" : 4,
      "std" : 0.1
    },
    "emaDecay" : 0.999,
    "gradClipNorm" : null,
    "learningRate" : 0.001,
    "logEvery" : 100,
    "loss" : {
      "kind" : "mse"
    },
    "model" : {
      "activation" : "silu",
      "depth" : 3,
      "dimension" : 2,
      "timeInput" : {
        "kind" : "raw"
      },
      "width" : 256
    },
    "optimizer" : {
      "beta1" : 0.9,
      "beta2" : 0.999,
      "eps" : 1e-08,
      "kind" : "adam",
      "weightDecay" : 0
    },
    "previewPoints" : 2000,
    "schedule" : {
      "kind" : "constant"
    },
    "seed" : 0,
    "source" : {
      "kind" : "gaussian",
      "mean" : [
        0,
        0
      ],
      "std" : 1
    },
    "steps" : 5000,
    "timeSampler" : {
      "epsilon" : 0,
      "kind" : "uniform"
    }
  },
  "type" : "train"
}
"""#
    static let d0Digest = "4449057a696bb954f3370e1c75908c90f7a0a5522b3940466593bd59ec80f17e"
    static let d1 = #"""
{
  "input" : {
    "batchSize" : 512,
    "checkpointEvery" : 1000,
    "data" : {
      "kind" : "twoMoons",
      "noise" : 0.05,
      "scale" : 3
    },
    "emaDecay" : 0.9999,
    "gradClipNorm" : 1.5,
    "learningRate" : 0.003,
    "logEvery" : 100,
    "loss" : {
      "kind" : "mse"
    },
    "model" : {
      "activation" : "silu",
      "depth" : 2,
      "dimension" : 2,
      "timeInput" : {
        "features" : 16,
        "kind" : "sinusoidal",
        "scale" : 1000
      },
      "width" : 64
    },
    "optimizer" : {
      "beta1" : 0.9,
      "beta2" : 0.999,
      "eps" : 1e-08,
      "kind" : "adamW",
      "weightDecay" : 0.01
    },
    "previewPoints" : 2000,
    "schedule" : {
      "kind" : "constant"
    },
    "seed" : 0,
    "source" : {
      "kind" : "gaussian",
      "mean" : [
        0,
        0
      ],
      "std" : 1
    },
    "steps" : 777,
    "timeSampler" : {
      "a" : 4,
      "kind" : "uShaped"
    }
  },
  "type" : "train"
}
"""#
    static let d1Digest = "bf78e6aa1f325d9934df51138b6aa03d8877d82345c75d438ef2c6214da58a8f"
}

@Suite("Upgrade: checkpoints of the previous release")
struct LegacyDigestTests {
    @Test("a spec stored by the previous release has, after the upgrade, a legacy digest equal to the one its checkpoints carry",
          arguments: [(LegacySpecs.d0, LegacySpecs.d0Digest), (LegacySpecs.d1, LegacySpecs.d1Digest)])
    func legacyDigest(old: String, digest: String) throws {
        #expect(SHA256.hex(of: Array(old.utf8)) == digest)
        let spec = try SpecParser.parse(Array(old.utf8))
        #expect(JobRunner.digest(spec) != digest, "the canonical form changed (model kind/version, interpolant)")
        #expect(JobRunner.legacyDigests(spec).last == digest)
    }

    @Test("a spec of the release before class conditioning keeps its digest as a legacy one; setting a new key drops it")
    func beforeConditioning() throws {
        let spec = try SpecParser.parse(Array(#"{"type": "reflow", "input": {"teacher": {"job": "t"}, "pairs": 10}}"#.utf8))
        // The canonical form of that release: this release's without the conditioning keys.
        guard case .object(var root) = try JSONDecoder().decode(ResultValue.self, from: Data(SpecParser.canonicalJSON(spec))),
              case .object(var input)? = root["input"] else { Issue.record("not an object"); return }
        #expect(input["labelDropout"] == .double(0.1) && input["guidance"] == .null && input["initFrom"] == .null && input["perceptual"] == .null)
        #expect(input["inversionData"] == .null)
        #expect(input["annealing"] == .null && input["flipPairs"] == .bool(false))
        #expect(input["lossSpace"] == .string("output") && input["phases"] == .null)
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        // The release before the diffusion models (issue #12's second part), then the one before conditioning.
        for k in JobRunner.addedForDiffusion.keys { input[k] = nil }
        root["input"] = .object(input)
        let beforeDiffusion = SHA256.hex(of: Array(try e.encode(ResultValue.object(root))))
        for k in JobRunner.addedForConditioning.keys { input[k] = nil }
        root["input"] = .object(input)
        let old = SHA256.hex(of: Array(try e.encode(ResultValue.object(root))))
        #expect(JobRunner.legacyDigests(spec).prefix(2) == [beforeDiffusion, old])
        let guided = try SpecParser.parse(Array(#"{"type": "reflow", "input": {"teacher": {"job": "t"}, "pairs": 10, "guidance": 2}}"#.utf8))
        #expect(JobRunner.legacyDigests(guided).count == 1, "guidance existed in the release before the diffusion models")
        let phased = try SpecParser.parse(Array(#"{"type": "reflow", "input": {"teacher": {"job": "t"}, "lossSpace": "data"}}"#.utf8))
        #expect(JobRunner.legacyDigests(phased).isEmpty)
        // Conditional (U-Net) models trained without label dropout before: 0 is their neutral value.
        let unet = #"{"type": "train", "input": {"model": {"kind": "unet", "classes": 10}, "data": {"kind": "images", "dataset": "builtin:shapes"}, "labelDropout": DROP}}"#
        #expect(JobRunner.legacyDigests(try SpecParser.parse(Array(unet.replacingOccurrences(of: "DROP", with: "0").utf8))).count == 2)
        #expect(JobRunner.legacyDigests(try SpecParser.parse(Array(unet.replacingOccurrences(of: "DROP", with: "0.1").utf8))).count == 1)
    }

    @Test("a spec using what the previous release did not have has no legacy digest")
    func noLegacyForNewFeatures() throws {
        let spec = try SpecParser.parse(Array(#"{"type": "train", "input": {"model": {"dimension": 3}, "data": {"kind": "normal", "std": 2}}}"#.utf8))
        let legacy = try #require(JobRunner.legacyDigests(spec).last)
        #expect(legacy != JobRunner.digest(spec))   // computed, but no old checkpoint can carry it
        let sample = try SpecParser.parse(Array(#"{"type": "sample", "input": {"model": {"job": "x"}}}"#.utf8))
        #expect(JobRunner.legacyDigests(sample).count == 1, "only the conditioning keys to strip (no model spec or interpolant)")
    }
}
