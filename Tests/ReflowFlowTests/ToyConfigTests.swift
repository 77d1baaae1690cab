import Testing
import Foundation
import ReflowNN
import ReflowFlow

@Suite("ToyTrainingConfig")
struct ToyConfigTests {
    static func decode(_ json: String) throws -> ToyTrainingConfig {
        try JSONDecoder().decode(ToyTrainingConfig.self, from: Data(json.utf8))
    }

    @Test func partialJSONKeepsDefaults() throws {
        let c = try Self.decode(#"{"batchSize": 64, "model": {"width": 32}, "data": {"kind": "gaussianRing", "radius": 2}}"#)
        #expect(c.batchSize == 64)
        #expect(c.model == VelocityMLPConfig(dimension: 2, width: 32, depth: 3, activation: .silu))
        #expect(c.data == .gaussianRing(count: 8, radius: 2, std: 0.1))
        #expect(c.source == .gaussian())
        #expect(c.learningRate == ToyTrainingConfig().learningRate)
        #expect(c.emaDecay == 0.999)
        #expect(try Self.decode(#"{"emaDecay": null}"#).emaDecay == nil)
        #expect(try Self.decode("{}") == ToyTrainingConfig())
    }

    @Test func encodeDecodeRoundTrip() throws {
        var c = ToyTrainingConfig()
        c.optimizer = .adamW(beta1: 0.8, beta2: 0.99, eps: 1e-6, weightDecay: 0.1)
        c.schedule = .cosine(warmupSteps: 10, totalSteps: 100, minFactor: 0.1)
        c.loss = .pseudoHuber(c: 0.01)
        c.gradClipNorm = 1
        #expect(try JSONDecoder().decode(ToyTrainingConfig.self, from: JSONEncoder().encode(c)) == c)
    }

    @Test("each invalid field is reported with its JSON pointer")
    func validation() {
        func pointer(_ edit: (inout ToyTrainingConfig) -> Void) -> String? {
            var c = ToyTrainingConfig()
            edit(&c)
            return c.validationError()?.pointer
        }
        #expect(pointer { _ in } == nil)
        #expect(pointer { $0.batchSize = 0 } == "/batchSize")
        #expect(pointer { $0.learningRate = .nan } == "/learningRate")
        #expect(pointer { $0.model.width = 0 } == "/model/width")
        #expect(pointer { $0.model.dimension = 3 } == "/model/dimension")
        #expect(pointer { $0.data = .gaussianRing(count: 0) } == "/data/count")
        #expect(pointer { $0.data = .gaussianRing(std: -1) } == "/data/std")
        #expect(pointer { $0.source = .gaussian(mean: [0], std: 1) }?.hasPrefix("/source") == true)
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
