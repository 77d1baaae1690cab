import Testing
import Foundation
import ReflowNN
import ReflowFlow

@Suite("TrainingConfig")
struct TrainingConfigTests {
    static func decode(_ json: String) throws -> TrainingConfig {
        try TrainingConfig.decodePartial(from: Array(json.utf8))
    }

    @Test func partialJSONKeepsDefaults() throws {
        let c = try Self.decode(#"{"batchSize": 64, "model": {"width": 32}, "data": {"kind": "gaussianRing", "radius": 2}}"#)
        #expect(c.batchSize == 64)
        #expect(c.model == ModelSpec(VelocityMLPConfig(dimension: 2, width: 32, depth: 3, activation: .silu)))
        #expect(c.data == .distribution(.gaussianRing(count: 8, radius: 2, std: 0.1)))
        #expect(c.source == .standardNormal)
        #expect(c.learningRate == TrainingConfig().learningRate)
        #expect(c.emaDecay == 0.999)
        #expect(try Self.decode(#"{"emaDecay": null}"#).emaDecay == nil)
        #expect(try Self.decode("{}") == TrainingConfig())
    }

    @Test func encodeDecodeRoundTrip() throws {
        var c = TrainingConfig()
        c.optimizer = .adamW(beta1: 0.8, beta2: 0.99, eps: 1e-6, weightDecay: 0.1)
        c.schedule = .cosine(warmupSteps: 10, totalSteps: 100, minFactor: 0.1)
        c.loss = .pseudoHuber(c: 0.01)
        c.gradClipNorm = 1
        #expect(try JSONDecoder().decode(TrainingConfig.self, from: JSONEncoder().encode(c)) == c)
    }

    @Test("each invalid field is reported with its JSON pointer")
    func validation() throws {
        func pointer(_ edit: (inout TrainingConfig) -> Void) -> String? {
            var c = TrainingConfig()
            edit(&c)
            return c.validationError()?.pointer
        }
        #expect(pointer { _ in } == nil)
        #expect(pointer { $0.batchSize = 0 } == "/batchSize")
        #expect(pointer { $0.learningRate = .nan } == "/learningRate")
        #expect(pointer { $0.model.mlp?.width = 0 } == "/model/width")
        #expect(pointer { $0.model.mlp?.dimension = 3 } == "/data")
        #expect(pointer { $0.data = .distribution(.gaussianRing(count: 0)) } == "/data/count")
        #expect(pointer { $0.data = .distribution(.gaussianRing(std: -1)) } == "/data/std")
        #expect(pointer { $0.source = .distribution(.gaussian(mean: [0], std: 1)) }?.hasPrefix("/source") == true)
        #expect(pointer { $0.timeSampler = .uShaped(a: -1) } == "/timeSampler/a")
        #expect(pointer { $0.emaDecay = 1 } == "/emaDecay")
        #expect(pointer { $0.gradClipNorm = 0 } == "/gradClipNorm")
        #expect(pointer { $0.loss = .pseudoHuber(c: 0) } == "/loss/c")
        #expect(pointer { $0.schedule = .cosine(warmupSteps: 10, totalSteps: 5) } == "/schedule/totalSteps")
        #expect(pointer { $0.optimizer = .adam(beta1: 1) } == "/optimizer/beta1")
        #expect(pointer { $0.optimizer = .adamW(eps: 0) } == "/optimizer/eps")
        #expect(pointer { $0.optimizer = .sgd(momentum: -0.1) } == "/optimizer/momentum")
        #expect(pointer { $0.optimizer = .sgd(weightDecay: .infinity) } == "/optimizer/weightDecay")
    }

    @Test("a model of any dimension d: N(0, I) source in d dimensions, 2-D data refused with a pointer")
    func anyDimension() throws {
        var c = try Self.decode(#"{"model": {"kind": "mlp", "dimension": 5, "width": 16, "depth": 1}, "data": {"kind": "normal", "std": 2}, "batchSize": 32}"#)
        #expect(c.validationError() == nil)
        #expect(c.model.pointSize == 5 && c.model.kind == "mlp")
        let t = try FlowTrainer(c, threads: 2)
        for _ in 0..<3 { #expect(t.trainStep().isFinite) }
        c.data = .distribution(.twoMoons())
        #expect(c.validationError()?.pointer == "/data")
        c.data = .normal(dimension: 4, std: 1)
        #expect(c.validationError()?.pointer == "/data")
    }

    @Test("model specs are tagged and versioned; an unknown kind or a future version is refused")
    func modelSpecTags() throws {
        let m = try JSONDecoder().decode(ModelSpec.self, from: Data(#"{"width": 8}"#.utf8))
        #expect(m.kind == "mlp" && m.mlp?.width == 8)
        let json = String(decoding: m.canonicalJSON, as: UTF8.self)
        #expect(json.contains(#""kind":"mlp""#) && json.contains(#""version":1"#))
        #expect(try JSONDecoder().decode(ModelSpec.self, from: Data(m.canonicalJSON)) == m)
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(ModelSpec.self, from: Data(#"{"kind": "transformer"}"#.utf8)) }
        let unet = try JSONDecoder().decode(ModelSpec.self, from: Data(#"{"kind": "unet"}"#.utf8))
        #expect(unet.kind == "unet" && (unet.config as? UNetConfig) == UNetConfig())
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(ModelSpec.self, from: Data(#"{"kind": "mlp", "version": 2}"#.utf8)) }
        #expect(ModelSpec(VelocityMLPConfig(dimension: 2, width: 4, depth: 1)).parameterCount == (3 * 4 + 4) + (4 * 2 + 2))
    }

    @Test("enums use the {\"kind\": …} wire form with defaults for absent fields")
    func kindWireForm() throws {
        let c = try Self.decode(#"{"optimizer": {"kind": "adamW"}, "schedule": {"kind": "cosine", "totalSteps": 100}, "loss": {"kind": "pseudoHuber", "c": 0.01}}"#)
        #expect(c.optimizer == .adamW(beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01))
        #expect(c.schedule == .cosine(warmupSteps: 0, totalSteps: 100, minFactor: 0))
        #expect(c.loss == .pseudoHuber(c: 0.01))
        #expect(try Self.decode(#"{"optimizer": {"kind": "sgd", "momentum": 0.9}}"#).optimizer == .sgd(momentum: 0.9))
        #expect(throws: DecodingError.self) { try Self.decode(#"{"optimizer": {"kind": "lion"}}"#) }
        #expect(throws: DecodingError.self) { try Self.decode(#"{"loss": {"kind": "pseudoHuber"}}"#) }
    }
}
