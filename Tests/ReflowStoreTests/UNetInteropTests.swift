import Testing
import Foundation
import ReflowEngine
import ReflowAutograd
import ReflowNN
import ReflowFlow
import ReflowStore

/// The U-Net's checkpoint is PyTorch's `state_dict` of `rf_torch.py`'s `UNet`: numpy
/// (`.ci/unet_numpy_ref.py`, float64, no torch) reproduces reflowd's forward pass from the
/// safetensors file alone. (`.ci/unet_torch_interop.py` does the same with PyTorch itself,
/// outside `make test`: docs/pytorch_interop.md.)
@Suite struct UNetInteropTests {
    /// A U-Net with every tensor random (GroupNorm scales and biases too, so a wrong
    /// normalisation axis or a transposed weight cannot hide behind the initialisation).
    static func randomUNet(_ config: UNetConfig, seed: UInt64) throws -> UNet {
        var rng = Random(seed: seed)
        let net = UNet(config, rng: &rng)
        var sd = [String: Tensor]()
        for (name, p) in net.namedParameters() {
            let scale: Float = name.contains(".n1.") || name.contains(".n2.") || name.hasPrefix("onorm") ? 0.5 : 0.3
            var r = rng.normal(p.value.shape)
            r.data = r.data.map { $0 * scale + (name.hasSuffix("weight") && (name.contains(".n") || name.hasPrefix("onorm")) ? 1 : 0) }
            sd[name] = r
        }
        try net.load(stateDict: sd)
        return net
    }

    @Test(arguments: [UNetConfig(channels: [8, 16], blocksPerLevel: 1, groups: 4),
                      UNetConfig(imageShape: [1, 12, 12], channels: [8, 16], blocksPerLevel: 2, groups: 2)])
    func numpyReproducesTheUNetForwardPass(_ config: UNetConfig) throws {
        let py = try InteropTests.python()
        let dir = NSTemporaryDirectory() + "reflowd-unet-interop-\(getpid())-\(config.imageShape[1])"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }

        let net = try Self.randomUNet(config, seed: 5)
        var meta = ["format": "pt"]
        meta[ModelSpec.metadataKey] = String(decoding: ModelSpec(config).canonicalJSON, as: UTF8.self)
        try SafeTensors.write(net.stateDict(), metadata: meta, to: dir + "/unet.safetensors")

        var rng = Random(seed: 6)
        let n = 3, shape = config.imageShape
        let x = rng.normal([n] + shape)
        let t = Tensor(shape: [n], data: [0, 0.37, 1])
        let v = net.velocity(x: x, t: t.data)
        try Data(PointFiles.npyBytes(x)).write(to: URL(fileURLWithPath: dir + "/x.npy"))
        try Data(PointFiles.npyBytes(t)).write(to: URL(fileURLWithPath: dir + "/t.npy"))

        let script = InteropTests.packageRoot + "/.ci/unet_numpy_ref.py"
        let (code, output) = try InteropTests.run(py, [script, dir + "/unet.safetensors", dir + "/x.npy", dir + "/t.npy", dir + "/out.npy"])
        try #require(code == 0, "numpy reference failed:\n\(output)")
        let ref = try Self.floatsOfNPY(Array(try Data(contentsOf: URL(fileURLWithPath: dir + "/out.npy"))))
        #expect(ref.count == v.count)
        let err = zip(ref, v.data).map { abs($0 - $1) }.max() ?? .infinity
        let scale = v.data.map(abs).max() ?? 0
        #expect(err <= 1e-4, "max |numpy − reflowd| = \(err) (output scale \(scale))")
        #expect(scale > 0.1, "the output must not be trivially small")
    }

    /// The `<f4` payload of an NPY file (version 1.0 header), whatever its shape.
    static func floatsOfNPY(_ b: [UInt8]) throws -> [Float] {
        try #require(b.count >= 10 && b[6] == 1)
        let start = 10 + (Int(b[8]) | Int(b[9]) << 8)
        try #require(String(decoding: b[10..<start], as: UTF8.self).contains("'<f4'"))
        return stride(from: start, to: b.count - 3, by: 4).map {
            Float(bitPattern: UInt32(b[$0]) | UInt32(b[$0 + 1]) << 8 | UInt32(b[$0 + 2]) << 16 | UInt32(b[$0 + 3]) << 24)
        }
    }
}
