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
        #expect(JobRunner.legacyDigest(spec) == digest)
    }

    @Test("a spec using what the previous release did not have has no legacy digest")
    func noLegacyForNewFeatures() throws {
        let spec = try SpecParser.parse(Array(#"{"type": "train", "input": {"model": {"dimension": 3}, "data": {"kind": "normal", "std": 2}}}"#.utf8))
        let legacy = try #require(JobRunner.legacyDigest(spec))
        #expect(legacy != JobRunner.digest(spec))   // computed, but no old checkpoint can carry it
        let sample = try SpecParser.parse(Array(#"{"type": "sample", "input": {"model": {"job": "x"}}}"#.utf8))
        #expect(JobRunner.legacyDigest(sample) == nil, "no model spec or interpolant to strip")
    }
}
