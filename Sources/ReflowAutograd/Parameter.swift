public import ReflowEngine

/// A trainable tensor and its accumulated gradient.
///
/// Parameters are reference types so that a module, an optimizer and a graph can all refer to
/// the same weights. They are deliberately not `Sendable`: a model lives on the worker that
/// trains it; what crosses threads is a state dict (`[String: Tensor]`).
public final class Parameter {
    /// The weights. Their shape is fixed at creation (kernels and optimizer state rely on it), so
    /// only this package writes them (in place, or through shape-checked loads).
    public package(set) var value: Tensor
    /// Gradient storage; may hold stale values while `gradIsZero` is set.
    var gradStorage: Tensor
    /// The gradient is logically zero (PyTorch's `set_to_none`): the next backward pass may
    /// overwrite `gradStorage` instead of zero-filling and accumulating into it.
    var gradIsZero = true
    /// A frozen parameter is recorded as a leaf that needs no gradient: backward passes skip
    /// its gradient (and every branch that only leads to frozen weights and constants). For
    /// fixed feature networks inside a loss (the perceptual premetric).
    public var isFrozen = false

    public init(_ value: Tensor) {
        self.value = value
        self.gradStorage = Tensor.zeros(value.shape)
    }

    /// Sum of gradients since the last ``zeroGrad()``; same shape as `value`.
    public var grad: Tensor {
        get {
            materializeGrad()
            return gradStorage
        }
        _modify {
            materializeGrad()
            yield &gradStorage
        }
        set {
            precondition(newValue.shape == value.shape, "Parameter.grad: shape \(newValue.shape) for weights \(value.shape)")
            gradStorage = newValue
            gradIsZero = false
        }
    }

    private func materializeGrad() {
        if gradIsZero {
            gradStorage.data.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
            gradIsZero = false
        }
    }

    /// Resets the accumulated gradient to zero (lazily: no memory is touched until it is read
    /// or the next backward pass writes it).
    public func zeroGrad() { gradIsZero = true }

    public var shape: [Int] { value.shape }
}
