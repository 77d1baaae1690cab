import Foundation
import ReflowFlow

/// A job spec that cannot be accepted: where (an RFC 6901 JSON pointer into the submitted
/// document) and why. The server returns it as a 422 problem+json with `pointer`.
public struct SpecError: Error, CustomStringConvertible, Sendable, Equatable {
    public var pointer: String
    public var message: String

    public init(pointer: String, message: String) {
        self.pointer = pointer
        self.message = message
    }

    public var description: String { pointer.isEmpty ? message : "\(pointer): \(message)" }
}

/// Parses and validates job specs.
///
/// Order of checks: the bytes are one JSON object (≤ ``maxBytes``); it decodes into a
/// ``JobSpec`` (type errors and missing required fields carry the field's pointer); every key
/// the user sent is one the spec understands (a typo such as `"learningrate"` is an error, not a
/// silently ignored field: the filled-in spec is re-encoded and each submitted key must appear
/// in it); finally the values are range-checked.
public enum SpecParser {
    /// Largest accepted spec document (inline point lists included).
    public static let maxBytes = 8 << 20

    public static func parse(_ bytes: [UInt8]) throws(SpecError) -> JobSpec {
        guard bytes.count <= maxBytes else { throw SpecError(pointer: "", message: "the spec is larger than \(maxBytes) bytes") }
        if nestingDepth(bytes) > maxDepth {
            throw SpecError(pointer: "", message: "the JSON nests deeper than \(maxDepth) levels")
        }
        let raw: Any
        do {
            raw = try JSONSerialization.jsonObject(with: Data(bytes), options: [])
        } catch {
            throw SpecError(pointer: "", message: "the body is not valid JSON")
        }
        guard raw is [String: Any] else { throw SpecError(pointer: "", message: "the spec must be a JSON object {\"type\": ..., \"input\": {...}}") }
        let spec: JobSpec
        do {
            spec = try JSONDecoder().decode(JobSpec.self, from: Data(bytes))
        } catch let e as DecodingError {
            if case .dataCorrupted(let ctx) = e, ctx.codingPath.isEmpty, let p = locateNumberError(raw) {
                // swift-corelibs-foundation reports a number that does not fit its field (1.5 for
                // an integer, −1 for a seed) as "not valid JSON" without a path: find it.
                throw SpecError(pointer: p, message: "must be an integer in range")
            }
            throw describe(e)
        } catch {
            throw SpecError(pointer: "", message: "\(error)")
        }
        let echoed: Any
        do {
            echoed = try JSONSerialization.jsonObject(with: JSONEncoder().encode(spec), options: [])
        } catch {
            throw SpecError(pointer: "", message: "internal: the spec cannot be re-encoded (\(error))")
        }
        if let unknown = firstUnknownKey(raw, known: echoed, pointer: "") {
            throw SpecError(pointer: unknown, message: "unknown field")
        }
        if let (pointer, message) = spec.validationError() { throw SpecError(pointer: pointer, message: message) }
        return spec
    }

    /// Deepest nesting accepted, checked on the bytes before any recursive decoder runs (RELIABILITY.md S2).
    public static let maxDepth = 32

    /// Maximum depth of `[`/`{` nesting outside strings (a linear scan, no recursion).
    static func nestingDepth(_ bytes: [UInt8]) -> Int {
        var depth = 0, deepest = 0, inString = false, escaped = false
        for b in bytes {
            if inString {
                if escaped { escaped = false } else if b == 0x5C { escaped = true } else if b == 0x22 { inString = false }
                continue
            }
            switch b {
            case 0x22: inString = true
            case 0x5B, 0x7B: depth += 1; deepest = max(deepest, depth)
            case 0x5D, 0x7D: depth -= 1
            default: break
            }
        }
        return deepest
    }

    /// The filled-in spec as pretty, key-sorted JSON (the `input` echo and `spec.json`).
    public static func canonicalJSON(_ spec: JobSpec) -> [UInt8] {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        return (try? Array(e.encode(spec))) ?? []
    }

    /// RFC 6901 escaping of one reference token.
    static func escape(_ key: String) -> String {
        key.replacingOccurrences(of: "~", with: "~0").replacingOccurrences(of: "/", with: "~1")
    }

    static func pointer(_ path: [any CodingKey]) -> String {
        path.map { k in "/" + (k.intValue.map(String.init) ?? escape(k.stringValue)) }.joined()
    }

    static func describe(_ e: DecodingError) -> SpecError {
        switch e {
        case .keyNotFound(let key, let ctx):
            return SpecError(pointer: pointer(ctx.codingPath + [key]), message: "is required")
        case .typeMismatch(let type, let ctx):
            return SpecError(pointer: pointer(ctx.codingPath), message: "must be \(typeName(type))")
        case .valueNotFound(let type, let ctx):
            return SpecError(pointer: pointer(ctx.codingPath), message: "must be \(typeName(type)), not null")
        case .dataCorrupted(let ctx):
            var message = ctx.debugDescription
            if message.hasPrefix("Cannot initialize") {
                // An enum raw value (a `kind`, `type`, activation, …) outside its cases.
                message = "is not one of the accepted values"
                if let last = ctx.codingPath.last?.stringValue {
                    switch last {
                    case "type": message += " (\(JobType.allCases.map(\.rawValue).joined(separator: ", ")))"
                    case "kind": message += " for this field (see docs/JOBS.md)"
                    default: break
                    }
                }
            } else if message.contains("does not fit") {
                // A fraction or an out-of-range number where an integer is expected.
                message = "must be an integer in range"
            }
            return SpecError(pointer: pointer(ctx.codingPath), message: message)
        @unknown default:
            return SpecError(pointer: "", message: "\(e)")
        }
    }

    static func typeName(_ t: Any.Type) -> String {
        switch t {
        case is String.Type: return "a string"
        case is Bool.Type: return "true or false"
        case is Int.Type, is UInt64.Type: return "an integer"
        case is Float.Type, is Double.Type: return "a number"
        case is [Any].Type: return "an array"
        default:
            let name = "\(t)"
            if name.hasPrefix("Array") { return "an array" }
            if name.hasPrefix("Dictionary") { return "an object" }
            return "a valid value"
        }
    }

    /// The pointer of the number whose replacement by 1 makes the pathless decoding error go away.
    static func locateNumberError(_ raw: Any) -> String? {
        var candidates = [[Any]]()  // paths (String keys / Int indices) of suspicious numbers
        func walk(_ v: Any, _ path: [Any]) {
            if let d = v as? [String: Any] { for k in d.keys.sorted() { walk(d[k]!, path + [k]) } }
            else if let a = v as? [Any] { for (i, x) in a.enumerated() { walk(x, path + [i]) } }
            else if !(v is Bool), let n = v as? NSNumber {
                let x = n.doubleValue
                // At most 64 candidates: each costs a full decode (inline point lists hold many floats).
                if (x != x.rounded() || x < 0 || abs(x) >= 9.2e18) && candidates.count < 64 { candidates.append(path) }
            }
        }
        func replacing(_ v: Any, _ path: ArraySlice<Any>) -> Any {
            guard let head = path.first else { return 1 }
            if var d = v as? [String: Any], let k = head as? String { d[k] = replacing(d[k]!, path.dropFirst()); return d }
            if var a = v as? [Any], let i = head as? Int { a[i] = replacing(a[i], path.dropFirst()); return a }
            return v
        }
        walk(raw, [])
        for path in candidates {
            guard let data = try? JSONSerialization.data(withJSONObject: replacing(raw, path[...])) else { continue }
            do { _ = try JSONDecoder().decode(JobSpec.self, from: data); } catch let DecodingError.dataCorrupted(ctx) where ctx.codingPath.isEmpty {
                continue
            } catch {}
            return path.map { "/" + (($0 as? Int).map(String.init) ?? escape($0 as! String)) }.joined()
        }
        return nil
    }

    /// The pointer of the first key of `raw` that the re-encoded spec lacks (sorted, depth first).
    static func firstUnknownKey(_ raw: Any, known: Any, pointer: String) -> String? {
        if let r = raw as? [String: Any] {
            guard let k = known as? [String: Any] else { return nil }
            for key in r.keys.sorted() {
                let p = pointer + "/" + escape(key)
                guard let sub = k[key] else { return p }
                if let deeper = firstUnknownKey(r[key]!, known: sub, pointer: p) { return deeper }
            }
        } else if let r = raw as? [Any], let k = known as? [Any], r.count == k.count {
            for i in r.indices {
                if let deeper = firstUnknownKey(r[i], known: k[i], pointer: pointer + "/\(i)") { return deeper }
            }
        }
        return nil
    }
}
