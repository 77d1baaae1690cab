/// A dense `Float` tensor: contiguous, row-major storage plus a shape.
///
/// `Tensor` is a value type. Its storage is a Swift `[Float]`, so copies are cheap until one of
/// them is written (copy-on-write) and a tensor is `Sendable` for free. Kernels operate on the
/// storage through unsafe buffer pointers; shapes are checked with `precondition`, because a shape
/// mismatch inside the engine is a programmer error. User-supplied shapes must be validated at the
/// boundary (job specs, checkpoint readers) before they reach the engine.
///
/// ```swift
/// var x = Tensor(shape: [2, 3], data: [1, 2, 3, 4, 5, 6])
/// x[1, 2] = 0
/// let y = x.transposed()   // [3, 2]
/// ```
public struct Tensor: Sendable, Equatable, CustomStringConvertible {
    /// Dimensions, outermost first. `[]` is a scalar (one element).
    public private(set) var shape: [Int]
    /// Row-major elements; `data.count == shape.reduce(1, *)`.
    public var data: [Float]

    /// Creates a tensor from a shape and its row-major elements.
    public init(shape: [Int], data: [Float]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "Tensor: negative dimension in \(shape)")
        precondition(Tensor.count(of: shape) == data.count,
                     "Tensor: shape \(shape) needs \(Tensor.count(of: shape)) elements, got \(data.count)")
        self.shape = shape
        self.data = data
    }

    /// Creates a tensor filled with `value`.
    public init(shape: [Int], repeating value: Float = 0) {
        self.init(shape: shape, data: [Float](repeating: value, count: Tensor.count(of: shape)))
    }

    /// A scalar tensor (shape `[]`).
    public init(scalar: Float) { self.init(shape: [], data: [scalar]) }

    /// Creates a tensor whose storage is not initialised; `body` must write every element.
    public init(shape: [Int], uninitialized body: (UnsafeMutableBufferPointer<Float>) -> Void) {
        let n = Tensor.count(of: shape)
        self.shape = shape
        self.data = [Float](unsafeUninitializedCapacity: n) { buffer, initialized in
            body(buffer)
            initialized = n
        }
    }

    public static func zeros(_ shape: [Int]) -> Tensor { Tensor(shape: shape, repeating: 0) }
    public static func ones(_ shape: [Int]) -> Tensor { Tensor(shape: shape, repeating: 1) }

    /// Number of elements of a shape (1 for a scalar).
    @inlinable public static func count(of shape: [Int]) -> Int {
        var n = 1
        for d in shape { n *= d }
        return n
    }

    /// Number of elements.
    @inlinable public var count: Int { data.count }
    /// Number of dimensions.
    @inlinable public var rank: Int { shape.count }

    /// Row-major strides of `shape` in elements.
    public static func strides(of shape: [Int]) -> [Int] {
        var strides = [Int](repeating: 1, count: shape.count)
        var s = 1
        for i in stride(from: shape.count - 1, through: 0, by: -1) {
            strides[i] = s
            s *= shape[i]
        }
        return strides
    }

    /// Element access by multi-index (slow path; for tests and small code).
    public subscript(_ index: Int...) -> Float {
        get { data[flatIndex(index)] }
        set { data[flatIndex(index)] = newValue }
    }

    private func flatIndex(_ index: [Int]) -> Int {
        precondition(index.count == shape.count, "Tensor: index \(index) for shape \(shape)")
        var flat = 0
        for (i, d) in zip(index, shape) {
            precondition(i >= 0 && i < d, "Tensor: index \(index) out of range for shape \(shape)")
            flat = flat * d + i
        }
        return flat
    }

    /// The same elements under another shape with the same element count.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        precondition(Tensor.count(of: newShape) == count, "reshape: \(shape) -> \(newShape)")
        var t = self
        t.shape = newShape
        return t
    }

    /// Changes the shape in place (element count must not change).
    public mutating func reshape(_ newShape: [Int]) {
        precondition(Tensor.count(of: newShape) == count, "reshape: \(shape) -> \(newShape)")
        shape = newShape
    }

    /// Transpose of a rank-2 tensor.
    public func transposed() -> Tensor {
        precondition(rank == 2, "transposed: rank-2 only, got \(shape)")
        let (r, c) = (shape[0], shape[1])
        return data.withUnsafeBufferPointer { src in
            Tensor(shape: [c, r]) { dst in
                for i in 0..<r { for j in 0..<c { dst[j * r + i] = src[i * c + j] } }
            }
        }
    }

    /// Largest absolute elementwise difference (shapes must match).
    public func maxAbsDifference(_ other: Tensor) -> Float {
        precondition(shape == other.shape, "maxAbsDifference: \(shape) vs \(other.shape)")
        var m: Float = 0
        for i in 0..<count { m = max(m, abs(data[i] - other.data[i])) }
        return m
    }

    public var description: String {
        let preview = data.prefix(8).map { String($0) }.joined(separator: ", ")
        return "Tensor(\(shape), [\(preview)\(count > 8 ? ", …" : "")])"
    }
}
