import ReflowNN
import ReflowFlow

/// Which class labels a sampling job asks a class-conditional model for, and its
/// classifier-free guidance: the `labels`, `perClass` and `guidance` keys of `sample` and
/// `evaluate` (flat in their specs). One place, so both jobs check and resolve them the same way.
public enum Conditioning {
    /// Largest guidance scale accepted (beyond it samples only diverge).
    public static let maxGuidance: Float = 100

    /// Checks the fields that need no model: guidance finite and bounded, labels non-negative,
    /// perClass positive. Pointers are relative to the job input.
    static func validationError(labels: [Int]?, perClass: Int?, guidance: Float?, maxPoints: Int) -> FieldError? {
        Validation.first(
            {
                guard let labels else { return nil }
                if labels.isEmpty || labels.count > maxPoints { return ("/labels", "must list 1 to \(maxPoints) labels") }
                if let i = labels.firstIndex(where: { $0 < 0 }) { return ("/labels/\(i)", "must be a class index ≥ 0, got \(labels[i])") }
                return nil
            },
            { perClass.flatMap { Validation.range("/perClass", $0, 1, maxPoints) } },
            { labels != nil && perClass != nil ? ("/perClass", "give either labels or perClass, not both") : nil },
            { guidance.flatMap { $0.isFinite && abs($0) <= maxGuidance ? nil : ("/guidance", "must be a number in [-\(Int(maxGuidance)), \(Int(maxGuidance))], got \($0)") } })
    }

    /// Checks the fields against the model (at submit, so a bad label is a 422 with its pointer):
    /// an unconditional model takes none of them; labels must be below the model's classes;
    /// perClass × classes must fit `maxPoints`.
    static func check(labels: [Int]?, perClass: Int?, guidance: Float?, model: ModelSpec, maxPoints: Int) throws(SpecError) {
        guard let k = model.classes else {
            for (key, given) in [("labels", labels != nil), ("perClass", perClass != nil), ("guidance", guidance != nil)] where given {
                throw SpecError(pointer: "/input/\(key)", message: "needs a class-conditional model; this model is unconditional (its spec has no classes)")
            }
            return
        }
        if let labels, let i = labels.firstIndex(where: { $0 >= k }) {
            throw SpecError(pointer: "/input/labels/\(i)", message: "class \(labels[i]) is out of range: the model has \(k) classes (0…\(k - 1))")
        }
        if let p = perClass, p > maxPoints / k {
            throw SpecError(pointer: "/input/perClass", message: "\(p) per class × \(k) classes exceeds \(maxPoints) samples")
        }
    }

    /// The labels of n samples: the given list, `perClass` samples of each class in class
    /// order, or (a conditional model with neither) the balanced labels i mod classes; nil for
    /// an unconditional model.
    static func labels(_ labels: [Int]?, perClass: Int?, n: Int, model: ModelSpec) -> [Int32]? {
        guard let k = model.classes else { return nil }
        if let labels { return labels.map { Int32($0) } }
        if let p = perClass { return (0..<(p * k)).map { Int32($0 / p) } }
        return (0..<n).map { Int32($0 % k) }
    }
}
