import ReflowNN
import ReflowCodec
import Foundation

/// A job spec that cannot be accepted: where (an RFC 6901 JSON pointer into the submitted
/// document) and why. `malformed` means the bytes are not one strict RFC 8259 JSON document
/// (the server answers 400 `malformed_json`); otherwise the document is well-formed but not an
/// acceptable spec (422 with `pointer`).
public struct SpecError: Error, CustomStringConvertible, Sendable, Equatable {
    public var pointer: String
    public var message: String
    public var malformed: Bool

    public init(pointer: String, message: String, malformed: Bool = false) {
        self.pointer = pointer
        self.message = message
        self.malformed = malformed
    }

    public var description: String { pointer.isEmpty ? message : "\(pointer): \(message)" }
}

/// Parses and validates job specs.
///
/// Order of checks: the bytes are one strict RFC 8259 JSON object (≤ ``maxBytes``, nesting ≤
/// ``maxDepth``; trailing commas, duplicate keys, leading zeros and invalid UTF-8 are refused
/// with a pointer, see `StrictJSON`); its `type` is a registered kind (``JobKinds``); the
/// `input` decodes over the kind's defaults (type errors and missing required fields carry the
/// field's pointer); every key the user sent is one the spec understands (a typo such as
/// `"learningrate"` is an error, not a silently ignored field: the filled-in spec is re-encoded
/// and each submitted key must appear in it); finally the values are range-checked.
public enum SpecParser {
    /// Largest accepted spec document (inline point lists included).
    public static let maxBytes = 8 << 20
    /// Deepest nesting accepted, checked before any recursive decoder runs (RELIABILITY.md S2).
    public static let maxDepth = 32

    public static func parse(_ bytes: [UInt8]) throws(SpecError) -> JobSpec {
        guard bytes.count <= maxBytes else { throw SpecError(pointer: "", message: "the spec is larger than \(maxBytes) bytes") }
        let strict: JSONValue
        do { strict = try StrictJSON.parse(bytes, maxDepth: maxDepth) } catch {
            throw SpecError(pointer: error.pointer, message: "not valid JSON (RFC 8259): \(error.message) at byte \(error.offset)", malformed: true)
        }
        guard case .object(let members) = strict else {
            throw SpecError(pointer: "", message: "the spec must be a JSON object {\"type\": ..., \"input\": {...}}")
        }
        for (k, _) in members where k != "type" && k != "input" {
            throw SpecError(pointer: "/" + StrictJSON.escapePointerToken(k), message: "unknown field (a spec has \"type\" and \"input\")")
        }
        guard let typeValue = strict["type"] else {
            throw SpecError(pointer: "/type", message: "is required (one of \(JobKinds.names.joined(separator: ", ")))")
        }
        guard case .string(let type) = typeValue, let kind = JobKinds.named(type) else {
            throw SpecError(pointer: "/type", message: "is not one of the accepted values (\(JobKinds.names.joined(separator: ", ")))")
        }
        let raw: Any
        do { raw = try JSONSerialization.jsonObject(with: Data(bytes), options: []) } catch {
            throw SpecError(pointer: "", message: "not valid JSON", malformed: true)
        }
        let user = (raw as? [String: Any])?["input"] ?? [String: Any]()
        guard user is [String: Any] else { throw SpecError(pointer: "/input", message: "must be an object") }
        let input = try decode(kind, user, strict["input"])
        let spec = JobSpec(type: type, erased: input)
        let echoed: Any
        do {
            echoed = try JSONSerialization.jsonObject(with: JSONEncoder().encode(input), options: [])
        } catch {
            throw SpecError(pointer: "", message: "internal: the spec cannot be re-encoded (\(error))")
        }
        if let unknown = firstUnknownKey(user, known: echoed, pointer: "/input") {
            throw SpecError(pointer: unknown, message: "unknown field")
        }
        if let (pointer, message) = spec.validationError() { throw SpecError(pointer: pointer, message: message) }
        return spec
    }

    /// Decodes a kind's input, turning decoding errors into pointers under `/input`.
    static func decode(_ kind: AnyJobKind, _ user: Any, _ strict: JSONValue?) throws(SpecError) -> any JobInput {
        do {
            return try kind.decodeUser(user)
        } catch let e as SpecError {
            throw e
        } catch let e as DecodingError {
            if case .dataCorrupted(let ctx) = e, ctx.codingPath.isEmpty, let (p, message) = locateNumberError(kind, user, strict) {
                // swift-corelibs-foundation reports a number that does not fit its field (1.5 for
                // an integer, −1 for a seed, 1e308 for a Float) as "not valid JSON" without a
                // path: find it, and say what is wrong with it.
                throw SpecError(pointer: "/input" + p, message: message)
            }
            let d = describe(e)
            throw SpecError(pointer: "/input" + d.pointer, message: d.message)
        } catch {
            throw SpecError(pointer: "/input", message: "\(error)")
        }
    }

    /// The filled-in spec as pretty, key-sorted JSON (the `input` echo and `spec.json`).
    public static func canonicalJSON(_ spec: JobSpec) -> [UInt8] {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        return (try? Array(e.encode(spec))) ?? []
    }

    static func pointer(_ path: [any CodingKey]) -> String {
        path.map { k in "/" + (k.intValue.map(String.init) ?? StrictJSON.escapePointerToken(k.stringValue)) }.joined()
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
                // An enum raw value (a `kind`, activation, …) outside its cases.
                message = "is not one of the accepted values"
                if ctx.codingPath.last?.stringValue == "kind" { message += " for this field (see docs/JOBS.md)" }
            } else if message.contains("does not fit") {
                message = "is out of range for this field"
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
        default:
            let name = "\(t)"
            if name.hasPrefix("Array") { return "an array" }
            if name.hasPrefix("Dictionary") { return "an object" }
            return "a valid value"
        }
    }

    /// The pointer (under `/input`) of the number whose replacement makes the pathless decoding
    /// error go away, and what is wrong with it: a fraction for an integer field, a negative
    /// number for an unsigned one, or a magnitude beyond the field's type (a Float field's
    /// ±3.4e38, an integer field's 2^63).
    static func locateNumberError(_ kind: AnyJobKind, _ raw: Any, _ strict: JSONValue?) -> (String, String)? {
        var candidates = [[Any]]()  // paths (String keys / Int indices) of suspicious numbers
        // Each candidate costs full decodes of the document, so the search is bounded: at most
        // 16 candidates, and of a long array (inline points) only its first and last 8 entries,
        // where a number out of a field's range is a Float beyond ±3.4e38 (the only kind a
        // list of floats can hold). A number the search does not reach gets the generic message.
        func walk(_ v: Any, _ path: [Any]) {
            if candidates.count >= 16 { return }
            if let d = v as? [String: Any] { for k in d.keys.sorted() { walk(d[k]!, path + [k]) } }
            else if let a = v as? [Any] {
                let shown = a.count <= 16 ? Array(a.indices) : Array(0..<8) + Array((a.count - 8)..<a.count)
                for i in shown { walk(a[i], path + [i]) }
            }
            else if !(v is Bool), let n = v as? NSNumber {
                let x = n.doubleValue
                if x != x.rounded() || x < 0 || abs(x) >= 3.4e38 || abs(x) >= 9.2e18 { candidates.append(path) }
            }
        }
        func replacing(_ v: Any, _ path: ArraySlice<Any>, with value: Any) -> Any {
            guard let head = path.first else { return value }
            if var d = v as? [String: Any], let k = head as? String { d[k] = replacing(d[k]!, path.dropFirst(), with: value); return d }
            if var a = v as? [Any], let i = head as? Int { a[i] = replacing(a[i], path.dropFirst(), with: value); return a }
            return v
        }
        func decodes(_ doc: Any) -> Bool {
            do { _ = try kind.decodeUser(doc) } catch let DecodingError.dataCorrupted(ctx) where ctx.codingPath.isEmpty {
                return false
            } catch {}
            return true
        }
        func literal(_ path: [Any]) -> String {
            var v = strict
            for p in path {
                if let k = p as? String { v = v?[k] } else if let i = p as? Int, case .array(let a)? = v, i < a.count { v = a[i] } else { v = nil }
            }
            if case .number(let text)? = v { return text }
            return "this number"
        }
        walk(raw, [])
        for path in candidates where decodes(replacing(raw, path[...], with: 1)) {
            let p = path.map { "/" + (($0 as? Int).map(String.init) ?? StrictJSON.escapePointerToken($0 as! String)) }.joined()
            let x = ((path.isEmpty ? raw : nil) as? NSNumber)?.doubleValue
                ?? Double(literal(path)) ?? .nan
            let text = literal(path)
            let acceptsFractions = decodes(replacing(raw, path[...], with: 1.5))
            if acceptsFractions { return (p, "\(text) is outside the range of a 32-bit float (|x| ≤ 3.4e38)") }
            if x != x.rounded() { return (p, "must be an integer, got \(text)") }
            if x < 0 && decodes(replacing(raw, path[...], with: 0)) && !decodes(replacing(raw, path[...], with: -1)) {
                return (p, "must be a non-negative integer, got \(text)")
            }
            return (p, "\(text) is outside the range of a 64-bit integer")
        }
        return nil
    }

    /// The pointer of the first key of `raw` that the re-encoded spec lacks (sorted, depth first).
    static func firstUnknownKey(_ raw: Any, known: Any, pointer: String) -> String? {
        if let r = raw as? [String: Any] {
            guard let k = known as? [String: Any] else { return nil }
            for key in r.keys.sorted() {
                let p = pointer + "/" + StrictJSON.escapePointerToken(key)
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
