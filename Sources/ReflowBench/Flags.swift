/// Minimal `--name value` / `--flag` parsing for the CLI, with errors users can act on.
public struct Flags {
    public internal(set) var values: [String: String] = [:]
    var seen: Set<String> = []
    let allowed: Set<String>

    /// Parses `args`; every name must be in `allowed` (names without the leading dashes).
    public init(_ args: [String], allowed: [String], booleans: [String] = []) throws {
        self.allowed = Set(allowed + booleans)
        var i = 0
        while i < args.count {
            let a = args[i]
            guard a.hasPrefix("--"), a.count > 2 else { throw CLIError("unexpected argument '\(a)'") }
            var name = String(a.dropFirst(2))
            var value: String?
            if let eq = name.firstIndex(of: "=") {
                value = String(name[name.index(after: eq)...])
                name = String(name[..<eq])
            }
            guard self.allowed.contains(name) else {
                throw CLIError("unknown option '--\(name)'; allowed: \(self.allowed.sorted().map { "--" + $0 }.joined(separator: " "))")
            }
            if booleans.contains(name) {
                values[name] = value ?? "true"
            } else {
                if value == nil {
                    guard i + 1 < args.count else { throw CLIError("option '--\(name)' needs a value") }
                    i += 1
                    value = args[i]
                }
                values[name] = value
            }
            i += 1
        }
    }

    public func int(_ name: String, default d: Int, min lo: Int = Int.min, max hi: Int = Int.max) throws -> Int {
        guard let s = values[name] else { return d }
        guard let v = Int(s), v >= lo, v <= hi else { throw CLIError("--\(name) must be an integer in [\(lo), \(hi)], got '\(s)'") }
        return v
    }

    public func float(_ name: String, default d: Float) throws -> Float {
        guard let s = values[name] else { return d }
        guard let v = Float(s), v.isFinite else { throw CLIError("--\(name) must be a number, got '\(s)'") }
        return v
    }

    public func string(_ name: String, default d: String) -> String { values[name] ?? d }
    public func bool(_ name: String) -> Bool { values[name] == "true" || values[name] == "1" }
}

/// A command-line usage error (printed, exit status 2).
public struct CLIError: Error, CustomStringConvertible {
    public let description: String
    public init(_ m: String) { description = m }
}
