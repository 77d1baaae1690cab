import Testing
import ReflowAutograd
import ReflowEngine
import ReflowNN
import ReflowTestSupport

@Suite("Module state dicts")
struct ModuleTests {
    func model(seed: UInt64) -> MLP {
        var rng = Random(seed: seed)
        return MLP(sizes: [3, 4, 2], rng: &rng)
    }

    func snapshot(_ m: MLP) -> [String: Tensor] { m.stateDict() }

    @Test func stateDictRoundTrip() throws {
        let a = model(seed: 1), b = model(seed: 2)
        #expect(a.stateDict().keys.sorted() == ["layers.0.bias", "layers.0.weight", "layers.1.bias", "layers.1.weight"])
        #expect(a.stateDict()["layers.0.weight"]!.shape == [4, 3])
        #expect(a.stateDict() != b.stateDict())
        try b.load(stateDict: a.stateDict())
        #expect(b.stateDict() == a.stateDict())
        let x = randn([5, 3], seed: 3)
        let g = Graph(gradEnabled: false)
        #expect(bitwiseEqual(a(g.input(x)).value, b(g.input(x)).value))
    }

    @Test("missing, unexpected and mis-shaped tensors throw and change nothing")
    func loadErrors() {
        let m = model(seed: 4)
        let original = snapshot(m)
        // A dict whose other entries are valid (and different), so a partial load would show.
        var good = model(seed: 5).stateDict()

        var missing = good
        missing.removeValue(forKey: "layers.1.bias")
        #expect(throws: StateDictError.missing("layers.1.bias")) { try m.load(stateDict: missing) }
        #expect(snapshot(m) == original)

        var unexpected = good
        unexpected["layers.2.weight"] = Tensor.zeros([1])
        #expect(throws: StateDictError.unexpected("layers.2.weight")) { try m.load(stateDict: unexpected) }
        #expect(snapshot(m) == original)

        var misShaped = good
        misShaped["layers.0.weight"] = Tensor.zeros([3, 4])
        #expect(throws: StateDictError.shapeMismatch(name: "layers.0.weight", expected: [4, 3], found: [3, 4])) {
            try m.load(stateDict: misShaped)
        }
        #expect(snapshot(m) == original)
        // Shapes are checked even when not strict.
        #expect(throws: StateDictError.self) { try m.load(stateDict: misShaped, strict: false) }
        #expect(snapshot(m) == original)

        // Not strict: missing and unexpected are fine, present tensors load.
        good.removeValue(forKey: "layers.1.bias")
        good["extra"] = Tensor.zeros([2])
        #expect(throws: Never.self) { try m.load(stateDict: good, strict: false) }
        #expect(bitwiseEqual(m.stateDict()["layers.0.weight"]!, good["layers.0.weight"]!))
        #expect(bitwiseEqual(m.stateDict()["layers.1.bias"]!, original["layers.1.bias"]!))
    }

    @Test func prefixedLoad() throws {
        let m = model(seed: 6), src = model(seed: 7)
        var dict = [String: Tensor]()
        for (k, v) in src.stateDict() { dict["model." + k] = v }
        dict["ema.layers.0.weight"] = Tensor.zeros([9])   // other prefixes are ignored
        try m.load(stateDict: dict, prefix: "model.")
        #expect(m.stateDict() == src.stateDict())
        dict["model.bogus"] = Tensor.zeros([1])
        #expect(throws: StateDictError.unexpected("model.bogus")) { try m.load(stateDict: dict, prefix: "model.") }
        #expect(prefixed("enc", [("w", Parameter(Tensor.zeros([1])))]).map(\.name) == ["enc.w"])
    }

    @Test func errorDescriptions() {
        #expect(StateDictError.missing("a").description.contains("'a'"))
        #expect(StateDictError.shapeMismatch(name: "w", expected: [2], found: [3]).description.contains("[3]"))
    }
}
