public import ReflowEngine
public import ReflowAutograd

/// Something with named parameters. Names follow PyTorch `state_dict` keys
/// (`layers.0.weight`, shape `[out, in]`), so checkpoints load into the equivalent `nn.Module`.
public protocol Module: AnyObject {
    /// Parameters in a stable order with dotted names.
    func namedParameters() -> [(name: String, parameter: Parameter)]
}

/// A module mapping one variable to another.
public protocol Layer: Module {
    func callAsFunction(_ x: Var) -> Var
}

/// Why a state dict does not fit a module.
public enum StateDictError: Error, CustomStringConvertible, Equatable {
    case missing(String)
    case unexpected(String)
    case shapeMismatch(name: String, expected: [Int], found: [Int])

    public var description: String {
        switch self {
        case .missing(let n): return "state dict: missing tensor '\(n)'"
        case .unexpected(let n): return "state dict: unexpected tensor '\(n)'"
        case .shapeMismatch(let n, let e, let f): return "state dict: '\(n)' has shape \(f), the model needs \(e)"
        }
    }
}

extension Module {
    /// Total number of scalar parameters.
    public var parameterCount: Int { namedParameters().reduce(0) { $0 + $1.parameter.value.count } }

    /// The parameters only.
    public var parameters: [Parameter] { namedParameters().map(\.parameter) }

    /// A snapshot of all weights by name (a Sendable value that can cross threads).
    public func stateDict() -> [String: Tensor] {
        var d = [String: Tensor]()
        for (n, p) in namedParameters() { d[n] = p.value }
        return d
    }

    /// Loads weights by name. With `strict`, missing and unexpected names are errors; shapes must
    /// always match. Nothing is changed unless every tensor fits.
    public func load(stateDict: [String: Tensor], prefix: String = "", strict: Bool = true) throws {
        let named = namedParameters()
        for (n, p) in named {
            guard let t = stateDict[prefix + n] else {
                if strict { throw StateDictError.missing(prefix + n) }
                continue
            }
            guard t.shape == p.value.shape else {
                throw StateDictError.shapeMismatch(name: prefix + n, expected: p.value.shape, found: t.shape)
            }
        }
        if strict {
            let names = Set(named.map { prefix + $0.name })
            for k in stateDict.keys.sorted() where k.hasPrefix(prefix) && !names.contains(k) {
                throw StateDictError.unexpected(k)
            }
        }
        for (n, p) in named { if let t = stateDict[prefix + n] { p.value = t } }
    }

    /// Zeroes every parameter's gradient.
    public func zeroGrad() { for (_, p) in namedParameters() { p.zeroGrad() } }
}

/// Prefixes child parameter names (`prefix.name`).
public func prefixed(_ prefix: String, _ params: [(name: String, parameter: Parameter)]) -> [(name: String, parameter: Parameter)] {
    params.map { (prefix + "." + $0.name, $0.parameter) }
}
