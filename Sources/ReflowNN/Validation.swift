/// The first invalid field of a value: an RFC 6901 JSON pointer relative to the value, and a
/// message a user can act on ("must be in [1, 64], got 0").
public typealias FieldError = (pointer: String, message: String)

/// A value that user input can make invalid.
///
/// Every spec and configuration type reflowd accepts from a user (job specs, model specs, data
/// sources, optimizers, solvers) conforms, and its `validationError()` is called at the
/// boundary, before any work: shape and range errors never reach a `precondition` in the
/// engine. Containers prefix the pointer of the member they check, so the error a client sees
/// points into the document it sent (`/input/model/width`). ``Validation/first(_:)`` chains
/// members in document order.
public protocol Validatable {
    /// The first invalid field, or nil when the value can be used.
    func validationError() -> FieldError?
}

/// Helpers for composing ``Validatable`` checks.
public enum Validation {
    /// The first error of `checks`, evaluated lazily in order.
    public static func first(_ checks: (() -> FieldError?)...) -> FieldError? {
        for c in checks { if let e = c() { return e } }
        return nil
    }

    /// `value`'s error with `pointer` prefixed (nil-safe for optional members).
    public static func member(_ pointer: String, _ value: (any Validatable)?) -> FieldError? {
        guard let e = value?.validationError() else { return nil }
        return (pointer + e.pointer, e.message)
    }

    /// `"must be in [lo, hi], got v"` at `pointer` when `v` is outside the closed range.
    public static func range<T: Comparable>(_ pointer: String, _ v: T, _ lo: T, _ hi: T) -> FieldError? {
        v >= lo && v <= hi ? nil : (pointer, "must be in [\(lo), \(hi)], got \(v)")
    }
}

extension OptimizerKind: Validatable {}
