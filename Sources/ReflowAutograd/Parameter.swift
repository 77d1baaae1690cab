public import ReflowEngine

/// A trainable tensor and its accumulated gradient.
///
/// Parameters are reference types so that a module, an optimizer and a graph can all refer to
/// the same weights. They are deliberately not `Sendable`: a model lives on the worker that
/// trains it; what crosses threads is a state dict (`[String: Tensor]`).
public final class Parameter {
    /// The weights.
    public var value: Tensor
    /// Sum of gradients since the last ``zeroGrad()``; same shape as `value`.
    public var grad: Tensor

    public init(_ value: Tensor) {
        self.value = value
        self.grad = Tensor.zeros(value.shape)
    }

    /// Resets the accumulated gradient to zero (keeps its storage).
    public func zeroGrad() {
        grad.data.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
    }

    public var shape: [Int] { value.shape }
}
