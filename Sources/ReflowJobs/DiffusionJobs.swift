import ReflowFlow
import ReflowEngine

// How the job kinds treat VP diffusion models (issue #12): such a model samples and inverts
// with DDIM only, and a flow never with DDIM. Checked at submit with the pointer of the solver;
// a solver left at its kind's default becomes DDIM with as many steps (rk45: 50), so
// `{"type": "sample", "input": {"model": {"job": "ddpm"}}}` works as it does for a flow.

enum DiffusionSolvers {
    /// The solver to use for a model trained with `interpolant`: `method` itself when it suits
    /// the model; for a diffusion model a `method` equal to `kindDefault` becomes
    /// ``diffusionDefault(for:interpolant:)``; anything else is a 422 at `pointer`/kind.
    static func adapt(_ method: ODEMethod, kindDefault: ODEMethod?, interpolant: Interpolant, pointer: String) throws(SpecError) -> ODEMethod {
        if let message = interpolant.methodError(method) {
            guard interpolant.diffusion != nil, let kindDefault, method == kindDefault else {
                throw SpecError(pointer: pointer + "/kind", message: message)
            }
            return diffusionDefault(for: method, interpolant: interpolant)
        }
        if case .ddim(let n) = method, let vp = interpolant.diffusion, n > vp.steps {
            throw SpecError(pointer: pointer + "/steps", message: "ddim takes at most the schedule's \(vp.steps) steps, got \(n)")
        }
        return method
    }

    /// DDIM with the steps of a flow method (rk45: 50), at most the schedule's.
    static func diffusionDefault(for method: ODEMethod, interpolant: Interpolant) -> ODEMethod {
        let t = interpolant.diffusion?.steps ?? 1000
        return .ddim(steps: min(t, method.steps ?? 50))
    }

    /// Rectified Diffusion's first-order-ness (``FirstOrderness``) of a forward DDIM trajectory
    /// of `frames.count − 1` trailing steps; nil for a flow (whose counterpart is straightness).
    static func firstOrderness(_ interpolant: Interpolant, frames: [Tensor]) -> Double? {
        guard let vp = interpolant.diffusion, frames.count >= 2, let d = frames.first?.shape.last else { return nil }
        return FirstOrderness.measure(vp, indices: DDIM.trailingIndices(steps: frames.count - 1, of: vp.steps),
                                      frames: frames.map(\.data), dimension: d)
    }

    /// A solver list: each entry adapted; a list equal to the kind's default becomes the DDIM
    /// counterparts of its fixed-step entries, without repeats.
    static func adapt(_ methods: [ODEMethod], kindDefault: [ODEMethod], interpolant: Interpolant, pointer: String) throws(SpecError) -> [ODEMethod] {
        if interpolant.diffusion != nil && methods == kindDefault {
            var out: [ODEMethod] = []
            for m in methods where m.steps != nil {
                let d = diffusionDefault(for: m, interpolant: interpolant)
                if !out.contains(d) { out.append(d) }
            }
            return out
        }
        var out: [ODEMethod] = []
        for (i, m) in methods.enumerated() {
            out.append(try adapt(m, kindDefault: nil, interpolant: interpolant, pointer: pointer + "/\(i)"))
        }
        return out
    }
}
