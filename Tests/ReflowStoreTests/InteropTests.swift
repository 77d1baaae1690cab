import Testing
import Foundation
import Synchronization
import ReflowEngine
import ReflowAutograd
import ReflowNN
import ReflowFlow
import ReflowStore

/// PyTorch-ecosystem interop: a reflowd checkpoint loads with the reference `safetensors`
/// package, and numpy reproduces reflowd's forward pass of the MLP from it. The test creates
/// its own venv (numpy + safetensors from PyPI) under .build/interop-venv, once.
@Suite struct InteropTests {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().path

    @discardableResult
    static func run(_ exe: String, _ args: [String]) throws -> (Int32, String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = args
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    /// Serialises the venv's creation: tests (and the cases of parameterised tests) run in
    /// parallel, and two concurrent `python3 -m venv` of one directory fail ("File exists").
    static let venvLock = Mutex(())

    /// The venv's python, creating the venv on first use.
    static func python() throws -> String {
        try venvLock.withLock { _ in try createVenv() }
    }

    private static func createVenv() throws -> String {
        let venv = packageRoot + "/.build/interop-venv"
        let py = venv + "/bin/python"
        let ready = venv + "/.ready"
        if FileManager.default.fileExists(atPath: ready) { return py }
        let (c1, o1) = try run("/usr/bin/env", ["python3", "-m", "venv", "--clear", venv])
        guard c1 == 0 else { throw InteropFailure("python3 -m venv failed (install python3-venv: make deps):\n\(o1)") }
        let (c2, o2) = try run(py, ["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "numpy", "safetensors"])
        guard c2 == 0 else { throw InteropFailure("pip install numpy safetensors failed:\n\(o2)") }
        _ = FileManager.default.createFile(atPath: ready, contents: Data())
        return py
    }

    static let script = """
    import json, sys
    import numpy as np
    from safetensors.numpy import load_file
    from safetensors import safe_open
    ckpt, io = sys.argv[1], sys.argv[2]
    sd = load_file(ckpt)
    with safe_open(ckpt, framework="np") as f:
        meta = f.metadata()
    arch = json.loads(meta["reflowd.arch"])
    assert meta["format"] == "pt"
    data = load_file(io)
    x, t, expected = data["x"].astype(np.float64), data["t"].astype(np.float64), data["v"].astype(np.float64)
    h = np.concatenate([x, t[:, None]], 1)
    n = arch["depth"] + 1
    for i in range(n):
        w, b = sd[f"layers.{i}.weight"].astype(np.float64), sd[f"layers.{i}.bias"].astype(np.float64)
        assert w.shape[1] == h.shape[1], (i, w.shape, h.shape)   # PyTorch layout [out, in]
        h = h @ w.T + b
        if i < n - 1:
            h = h / (1 + np.exp(-h))                               # SiLU
    err = np.abs(h - expected) / np.maximum(1.0, np.abs(h))
    print(json.dumps({"max_rel_err": float(err.max()), "ema_tensors": sum(k.startswith("ema.") for k in sd),
                      "optimizer_tensors": sum(k.startswith("optimizer.") for k in sd), "shape": list(h.shape)}))
    sys.exit(0 if err.max() <= 1e-5 else 1)
    """

    @Test func numpyReproducesTheForwardPassFromACheckpoint() throws {
        let py = try Self.python()
        let dir = NSTemporaryDirectory() + "reflowd-interop-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }

        var config = TrainingConfig()
        config.model = ModelSpec(VelocityMLPConfig(dimension: 2, width: 64, depth: 3, activation: .silu))
        config.batchSize = 128
        let trainer = try FlowTrainer(config, threads: 1)
        for _ in 0..<50 { trainer.trainStep() }
        var snap = trainer.snapshot()
        snap.metadata["reflowd.arch"] = String(decoding: try JSONEncoder().encode(config.model), as: UTF8.self)
        let ckpt = dir + "/model.safetensors"
        try Checkpoint.write(snap, to: ckpt)

        // reflowd's own forward pass on fixed inputs.
        var rng = Random(seed: 99)
        let x = rng.normal([17, 2]), t = rng.uniform([17])
        let v = trainer.model.velocity(x: x, t: t.data)
        try SafeTensors.write(["x": x, "t": t, "v": v], to: dir + "/io.safetensors")

        let scriptPath = dir + "/check.py"
        try Self.script.write(toFile: scriptPath, atomically: true, encoding: .utf8)
        let (code, output) = try Self.run(py, [scriptPath, ckpt, dir + "/io.safetensors"])
        #expect(code == 0, "numpy forward pass disagrees or the checkpoint did not load:\n\(output)")
        #expect(output.contains("\"shape\": [17, 2]"))
        #expect(output.contains("\"optimizer_tensors\": 16"))  // 8 params × (exp_avg, exp_avg_sq)
    }
}

struct InteropFailure: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}
