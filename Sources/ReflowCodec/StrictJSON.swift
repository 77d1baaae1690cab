// A strict RFC 8259 JSON reader with no Foundation dependency.
//
// Foundation's JSONSerialization/JSONDecoder on Linux accept trailing commas and silently keep
// the first of two duplicate keys, so `{"steps":5,"steps":9999999}` runs 5 steps while another
// reader would run 9999999. This reader refuses both, and everything else RFC 8259 does not
// allow, and reports where: the byte offset and the RFC 6901 pointer of the offending member.

/// A parsed JSON value (RFC 8259 §3).
///
/// Numbers keep their literal text so that a caller can report exactly what was sent (`1e308`
/// for an integer field, not `inf` or a rounded value); use ``doubleValue`` and ``intValue`` to
/// interpret them. Object members are kept in document order.
///
/// Equality is structural: numbers compare by literal text (`1.0 != 1`), strings with Swift's
/// `==` (canonical equivalence), objects member by member in order.
///
/// The value is a recursive tree: destroying or comparing it recurses once per nesting level,
/// which is why ``StrictJSON/parse(_:maxDepth:)`` bounds nesting depth.
public enum JSONValue: Sendable, Equatable {
    /// `null` (RFC 8259 §3).
    case null
    /// `true` or `false` (RFC 8259 §3).
    case bool(Bool)
    /// A number, as its literal text, e.g. `"-12"`, `"1.5e3"`, `"1e400"` (RFC 8259 §6).
    case number(String)
    /// A string, with escapes decoded (RFC 8259 §7).
    case string(String)
    /// An array (RFC 8259 §5).
    case array([JSONValue])
    /// An object's members in document order (RFC 8259 §4). Values from
    /// ``StrictJSON/parse(_:maxDepth:)`` never hold two equal keys.
    case object([(key: String, value: JSONValue)])

    public static func == (lhs: JSONValue, rhs: JSONValue) -> Bool {
        switch (lhs, rhs) {
        case (.null, .null): return true
        case let (.bool(a), .bool(b)): return a == b
        case let (.number(a), .number(b)): return a == b
        case let (.string(a), .string(b)): return a == b
        case let (.array(a), .array(b)): return a == b
        case let (.object(a), .object(b)):
            guard a.count == b.count else { return false }
            for (x, y) in zip(a, b) where x.key != y.key || x.value != y.value { return false }
            return true
        default: return false
        }
    }

    /// The number as a `Double`, or `nil` when this is not a number or its magnitude is too
    /// large for a finite `Double` (e.g. `1e400`). Values are correctly rounded; literals too
    /// small to represent (e.g. `1e-400`) become `0`, with the literal's sign.
    public var doubleValue: Double? {
        guard case .number(let text) = self, let d = Double(text), d.isFinite else { return nil }
        return d
    }

    /// The number as an `Int` when its value is an exact integer in `Int`'s range, else `nil`.
    ///
    /// The value, not the spelling, decides: `5`, `5.0`, `5e0`, `50e-1` and `0.5e1` are all 5, and
    /// `-0` is 0; `5.5`, `1e19` and `9223372036854775808` are `nil`. Exact decimal arithmetic
    /// is used (no `Double` round trip), so large integers near `Int.max` are not rounded.
    public var intValue: Int? {
        guard case .number(let text) = self else { return nil }
        return StrictJSON.exactInteger(Array(text.utf8))
    }

    /// The value of the member named `key` when this is an object, else `nil`.
    ///
    /// Keys match with Swift's `==`. Objects from ``StrictJSON/parse(_:maxDepth:)`` hold no two
    /// keys that compare equal, so the answer does not depend on member order.
    public subscript(key: String) -> JSONValue? {
        guard case .object(let members) = self else { return nil }
        return members.first(where: { $0.key == key })?.value
    }

    /// A short English name for the kind of value ("an object", "a number", ...), for messages.
    public var kindName: String {
        switch self {
        case .null: return "null"
        case .bool: return "a boolean"
        case .number: return "a number"
        case .string: return "a string"
        case .array: return "an array"
        case .object: return "an object"
        }
    }
}

/// Why a document was refused by ``StrictJSON/parse(_:maxDepth:)``, and where.
public struct StrictJSONError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Zero-based byte offset of the offending byte (for a duplicate key, the key's opening
    /// quote; for a trailing comma, the comma; at end of input, the input's length).
    public var offset: Int
    /// RFC 6901 JSON pointer of the member being read when the error was found (`""` is the
    /// whole document). For a duplicate key it is the duplicate member; for a trailing comma,
    /// the array or object containing it; for a bad key, the object it belongs to.
    public var pointer: String
    /// What is wrong, for a user: `duplicate key "steps"`, `trailing comma in object`, ...
    public var message: String

    public init(offset: Int, pointer: String, message: String) {
        self.offset = offset
        self.pointer = pointer
        self.message = message
    }

    public var description: String {
        pointer.isEmpty
            ? "invalid JSON at byte \(offset): \(message)"
            : "invalid JSON at byte \(offset) (\(pointer)): \(message)"
    }
}

/// A strict RFC 8259 JSON parser.
///
/// It accepts exactly the grammar of RFC 8259 §2–§8 over UTF-8 input, any value at top level,
/// and refuses, with an offset and pointer (``StrictJSONError``):
/// - trailing commas in arrays and objects, and missing or extra separators (§2, §4, §5);
/// - duplicate keys in one object (§4 says names SHOULD be unique; two readers that pick
///   different duplicates see different documents, so duplicates are an error here). Keys are
///   compared with Swift's `==`, i.e. canonically equivalent keys (`"\u00e9"` and `"e\u0301"`)
///   are duplicates too, because a Swift consumer would collapse them;
/// - numbers outside the §6 grammar: leading zeros (`01`), `+1`, `.5`, `1.`, `1e`, `NaN`,
///   `Infinity`. Out-of-range literals such as `1e400` are valid numbers (§6 lets
///   implementations limit range; this reader keeps the text and lets the caller decide);
/// - strings with unescaped control characters (< U+0020), unknown escapes, or `\u` escapes
///   that are lone or mis-ordered UTF-16 surrogates (§7);
/// - ill-formed UTF-8 anywhere (overlong forms, UTF-8-encoded surrogates, code points above
///   U+10FFFF, truncated sequences, stray continuation bytes) (§8.1);
/// - a byte order mark: §8.1 says implementations MUST NOT add one and MAY ignore one; this
///   reader refuses it (and UTF-16/32 BOMs), so that every accepted document is plain UTF-8
///   JSON to every other reader too;
/// - nesting deeper than `maxDepth` (§9 lets implementations limit depth). The parser is
///   iterative, so no document can overflow the stack while parsing;
/// - anything but whitespace (space, tab, LF, CR: §2) after the top-level value, and empty
///   or all-whitespace input.
public enum StrictJSON {
    /// The largest `maxDepth` honoured; larger requests are lowered to this. Parsing is
    /// iterative, but destroying or comparing a ``JSONValue`` recurses once per level, so an
    /// unbounded depth would move the stack overflow from the parser to the caller.
    public static let maxDepthLimit = 512

    /// Parses `bytes` as one JSON text (RFC 8259 §2): a single value with optional surrounding
    /// whitespace.
    ///
    /// - Parameters:
    ///   - bytes: UTF-8 encoded JSON, without a byte order mark (RFC 8259 §8.1).
    ///   - maxDepth: deepest accepted nesting of arrays and objects (RFC 8259 §9): `[]` is depth
    ///     1, `[[1]]` depth 2, a lone scalar depth 0. Clamped to `0...maxDepthLimit`.
    /// - Returns: the value, with number literals kept verbatim and object members in order.
    /// - Throws: ``StrictJSONError`` with the byte offset, JSON pointer and a message for the
    ///   first violation found. Never traps on any input; time and memory are linear in
    ///   `bytes.count`.
    public static func parse(_ bytes: [UInt8], maxDepth: Int = 32) throws(StrictJSONError) -> JSONValue {
        var parser = Parser(bytes: bytes, maxDepth: min(max(maxDepth, 0), maxDepthLimit))
        return try parser.parseDocument()
    }

    /// Parses the UTF-8 of `text` (convenience for tests and literals).
    public static func parse(_ text: String, maxDepth: Int = 32) throws(StrictJSONError) -> JSONValue {
        try parse(Array(text.utf8), maxDepth: maxDepth)
    }

    /// Builds an RFC 6901 JSON pointer from reference tokens (object keys, or array indices
    /// written in decimal): each token is prefixed with `/`, with `~` escaped as `~0` and `/`
    /// as `~1` (RFC 6901 §3). No tokens give `""`, the whole document.
    ///
    ///     StrictJSON.pointer(["input", "a/b", "0"]) == "/input/a~1b/0"
    public static func pointer(_ tokens: some Sequence<String>) -> String {
        var out = ""
        for token in tokens {
            out += "/"
            out += escapePointerToken(token)
        }
        return out
    }

    /// One RFC 6901 reference token escaped: `~` → `~0`, then `/` → `~1` (RFC 6901 §3).
    public static func escapePointerToken(_ token: String) -> String {
        guard token.utf8.contains(where: { $0 == UInt8(ascii: "~") || $0 == UInt8(ascii: "/") }) else { return token }
        var out = ""
        for ch in token.unicodeScalars {
            switch ch {
            case "~": out += "~0"
            case "/": out += "~1"
            default: out.unicodeScalars.append(ch)
            }
        }
        return out
    }

    /// The exact integer value of a valid RFC 8259 number literal, or `nil` if it has a
    /// fractional part or lies outside `Int`'s range.
    static func exactInteger(_ s: [UInt8]) -> Int? {
        var i = 0
        var negative = false
        if i < s.count && s[i] == UInt8(ascii: "-") { negative = true; i += 1 }
        // Significant digits (integer and fraction parts) and the power of ten they are scaled by.
        var digits: [UInt8] = []
        var scale = 0
        var seenNonZero = false
        while i < s.count, isDigit(s[i]) {
            if s[i] != UInt8(ascii: "0") || seenNonZero { digits.append(s[i] - 0x30); seenNonZero = true }
            i += 1
        }
        if i < s.count && s[i] == UInt8(ascii: ".") {
            i += 1
            while i < s.count, isDigit(s[i]) {
                if s[i] != UInt8(ascii: "0") || seenNonZero { digits.append(s[i] - 0x30); seenNonZero = true }
                scale -= 1
                i += 1
            }
            if !seenNonZero { scale = 0 }
        }
        if i < s.count && (s[i] == UInt8(ascii: "e") || s[i] == UInt8(ascii: "E")) {
            i += 1
            var expNegative = false
            if i < s.count && (s[i] == UInt8(ascii: "+") || s[i] == UInt8(ascii: "-")) {
                expNegative = s[i] == UInt8(ascii: "-")
                i += 1
            }
            var exp = 0
            while i < s.count, isDigit(s[i]) {
                exp = min(exp * 10 + Int(s[i] - 0x30), 1_000_000)  // saturate: beyond this, nil anyway
                i += 1
            }
            if seenNonZero { scale += expNegative ? -exp : exp }
        }
        guard i == s.count else { return nil }
        // Trailing zeros of the significand move into the scale.
        while let last = digits.last, last == 0 { digits.removeLast(); scale += 1 }
        guard !digits.isEmpty else { return 0 }
        guard scale >= 0, digits.count + scale <= 19 else { return nil }
        var magnitude: UInt64 = 0
        for d in digits + [UInt8](repeating: 0, count: scale) {
            let (m, o1) = magnitude.multipliedReportingOverflow(by: 10)
            let (a, o2) = m.addingReportingOverflow(UInt64(d))
            if o1 || o2 { return nil }
            magnitude = a
        }
        if negative {
            if magnitude == UInt64(Int.max) + 1 { return Int.min }
            return magnitude <= UInt64(Int.max) ? -Int(magnitude) : nil
        }
        return magnitude <= UInt64(Int.max) ? Int(magnitude) : nil
    }

    @inline(__always)
    static func isDigit(_ b: UInt8) -> Bool { b >= 0x30 && b <= 0x39 }
}

// MARK: - Parser

extension StrictJSON {
    /// An open array or object on the explicit parse stack.
    private struct Frame {
        var isObject: Bool
        var elements: [JSONValue] = []
        var members: [(key: String, value: JSONValue)] = []
        var keys: Set<String> = []
        /// The key of the member whose value is being parsed (objects).
        var key = ""
        /// Whether a member's value (not a separator or key) is being parsed, i.e. whether the
        /// pointer of an error includes this frame's current key or index.
        var inValue = false

        init(isObject: Bool) { self.isObject = isObject }
    }

    private struct Parser {
        let bytes: [UInt8]
        let maxDepth: Int
        var index = 0
        var stack: [Frame] = []

        init(bytes: [UInt8], maxDepth: Int) {
            self.bytes = bytes
            self.maxDepth = maxDepth
        }

        // MARK: Errors

        /// The JSON pointer of the member currently being read.
        func currentPointer() -> String {
            var tokens: [String] = []
            for frame in stack {
                guard frame.inValue else { break }
                tokens.append(frame.isObject ? frame.key : String(frame.elements.count))
            }
            return StrictJSON.pointer(tokens)
        }

        func fail(_ message: String, at offset: Int? = nil) -> StrictJSONError {
            StrictJSONError(offset: offset ?? index, pointer: currentPointer(), message: message)
        }

        /// A byte for a message: `'x'` for printable ASCII, `0xNN` otherwise.
        static func show(_ b: UInt8) -> String {
            b >= 0x20 && b < 0x7F ? "'\(Character(Unicode.Scalar(b)))'" : "byte 0x" + hex2(b)
        }

        static func hex2(_ b: UInt8) -> String {
            let digits = Array("0123456789ABCDEF".utf8)
            return String(decoding: [digits[Int(b >> 4)], digits[Int(b & 0xF)]], as: UTF8.self)
        }

        /// A key for a message: quoted, control characters escaped, long keys shortened.
        static func quoteKey(_ key: String) -> String {
            var out = "\""
            var count = 0
            for ch in key.unicodeScalars {
                if count == 64 { out += "…"; break }
                switch ch {
                case "\"": out += "\\\""
                case "\\": out += "\\\\"
                case _ where ch.value < 0x20 || ch.value == 0x7F:
                    out += "\\u00" + hex2(UInt8(ch.value))
                default: out.unicodeScalars.append(ch)
                }
                count += 1
            }
            return out + "\""
        }

        // MARK: Document

        mutating func parseDocument() throws(StrictJSONError) -> JSONValue {
            if bytes.isEmpty { throw fail("empty document") }
            if bytes.count >= 3 && bytes[0] == 0xEF && bytes[1] == 0xBB && bytes[2] == 0xBF {
                throw fail("byte order mark (U+FEFF) before the JSON text; send plain UTF-8 without a BOM")
            }
            if bytes.count >= 2 && ((bytes[0] == 0xFE && bytes[1] == 0xFF) || (bytes[0] == 0xFF && bytes[1] == 0xFE)) {
                throw fail("UTF-16/UTF-32 byte order mark; JSON must be UTF-8 without a BOM")
            }
            skipWhitespace()
            if index == bytes.count { throw fail("the document is only whitespace; expected a JSON value") }

            var value: JSONValue
            parsing: while true {
                // Read one value, or open a container and continue with its first element.
                guard let scalar = try parseValueOrOpen() else { continue parsing }
                value = scalar
                // A value is complete: attach it to the enclosing container(s) and read separators.
                while !stack.isEmpty {
                    let top = stack.count - 1
                    if stack[top].isObject {
                        let key = stack[top].key
                        stack[top].members.append((key: key, value: value))
                    } else {
                        stack[top].elements.append(value)
                    }
                    stack[top].inValue = false
                    skipWhitespace()
                    guard index < bytes.count else {
                        throw fail(stack[top].isObject ? "unterminated object: expected ',' or '}'"
                                                       : "unterminated array: expected ',' or ']'")
                    }
                    let b = bytes[index]
                    if b == UInt8(ascii: ",") {
                        let comma = index
                        index += 1
                        skipWhitespace()
                        if stack[top].isObject {
                            if index < bytes.count && bytes[index] == UInt8(ascii: "}") {
                                throw fail("trailing comma in object", at: comma)
                            }
                            try readKey()
                        } else {
                            if index < bytes.count && bytes[index] == UInt8(ascii: "]") {
                                throw fail("trailing comma in array", at: comma)
                            }
                            stack[top].inValue = true
                        }
                        continue parsing
                    }
                    if stack[top].isObject && b == UInt8(ascii: "}") {
                        index += 1
                        let frame = stack.removeLast()
                        value = .object(frame.members)
                        continue
                    }
                    if !stack[top].isObject && b == UInt8(ascii: "]") {
                        index += 1
                        let frame = stack.removeLast()
                        value = .array(frame.elements)
                        continue
                    }
                    if stack[top].isObject {
                        throw fail(b == UInt8(ascii: "]") ? "expected ',' or '}', found ']' (mismatched bracket)"
                                                          : "expected ',' or '}' after an object member, found \(Self.show(b))")
                    }
                    throw fail(b == UInt8(ascii: "}") ? "expected ',' or ']', found '}' (mismatched bracket)"
                                                      : "expected ',' or ']' after an array element, found \(Self.show(b))")
                }
                break
            }
            skipWhitespace()
            if index < bytes.count {
                throw fail("unexpected \(Self.show(bytes[index])) after the JSON value; only whitespace may follow it")
            }
            return value
        }

        /// Reads a scalar or an empty container at `index` (after whitespace), or pushes a frame
        /// for a non-empty container, positioned at its first element's value, and returns `nil`.
        mutating func parseValueOrOpen() throws(StrictJSONError) -> JSONValue? {
            skipWhitespace()
            guard index < bytes.count else { throw fail("unexpected end of input; expected a value") }
            let b = bytes[index]
            switch b {
            case UInt8(ascii: "\""):
                return .string(try parseString())
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                return .number(try parseNumber())
            case UInt8(ascii: "["), UInt8(ascii: "{"):
                let isObject = b == UInt8(ascii: "{")
                if stack.count >= maxDepth {
                    throw fail("nesting deeper than \(maxDepth) levels")
                }
                index += 1
                skipWhitespace()
                if index < bytes.count && bytes[index] == (isObject ? UInt8(ascii: "}") : UInt8(ascii: "]")) {
                    index += 1
                    return isObject ? .object([]) : .array([])
                }
                stack.append(Frame(isObject: isObject))
                if isObject {
                    try readKey()
                } else {
                    if index < bytes.count && bytes[index] == UInt8(ascii: ",") {
                        throw fail("expected a value or ']', found ','")
                    }
                    stack[stack.count - 1].inValue = true
                }
                return nil
            case UInt8(ascii: "t"): try literal("true"); return .bool(true)
            case UInt8(ascii: "f"): try literal("false"); return .bool(false)
            case UInt8(ascii: "n"): try literal("null"); return .null
            case UInt8(ascii: "+"):
                throw fail("a number cannot start with '+'")
            case UInt8(ascii: "."):
                throw fail("a number needs a digit before '.'")
            case UInt8(ascii: "N"), UInt8(ascii: "I"):
                throw fail("NaN and Infinity are not JSON numbers")
            case UInt8(ascii: ","):
                throw fail("expected a value, found ','")
            case UInt8(ascii: "]"), UInt8(ascii: "}"):
                throw fail("expected a value, found \(Self.show(b))")
            case UInt8(ascii: "'"):
                throw fail("strings must use double quotes")
            default:
                throw fail("expected a value, found \(Self.show(b))")
            }
        }

        /// In the top (object) frame, at `index` after whitespace: reads `"key"`, checks it is
        /// not a duplicate, reads `:`, and marks the frame as reading that member's value.
        mutating func readKey() throws(StrictJSONError) {
            let top = stack.count - 1
            guard index < bytes.count else { throw fail("unterminated object: expected a key") }
            guard bytes[index] == UInt8(ascii: "\"") else {
                let b = bytes[index]
                if b == UInt8(ascii: ",") { throw fail("expected a key or '}', found ','") }
                throw fail("expected a key in double quotes, found \(Self.show(b))")
            }
            let keyOffset = index
            let key = try parseString()
            let (inserted, existing) = stack[top].keys.insert(key)
            stack[top].key = key
            if !inserted {
                stack[top].inValue = true
                let same = Array(existing.utf8) == Array(key.utf8)
                throw fail(same ? "duplicate key \(Self.quoteKey(key))"
                                : "duplicate key \(Self.quoteKey(key)) (canonically equivalent to the earlier key \(Self.quoteKey(existing)))",
                           at: keyOffset)
            }
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else {
                stack[top].inValue = true
                if index == bytes.count { throw fail("unterminated object: expected ':' after the key") }
                throw fail("expected ':' after the key, found \(Self.show(bytes[index]))")
            }
            index += 1
            stack[top].inValue = true
        }

        @inline(__always)
        mutating func skipWhitespace() {
            while index < bytes.count {
                switch bytes[index] {
                case 0x20, 0x09, 0x0A, 0x0D: index += 1
                default: return
                }
            }
        }

        mutating func literal(_ word: StaticString) throws(StrictJSONError) {
            let count = word.utf8CodeUnitCount
            let matches = word.withUTF8Buffer { w in
                bytes.count - index >= count && (0..<count).allSatisfy { bytes[index + $0] == w[$0] }
            }
            guard matches else { throw fail("invalid literal; expected \(word)") }
            index += count
            // `truex` / `nullnull`: report here rather than as a missing separator.
            if index < bytes.count, Self.isLetter(bytes[index]) {
                throw fail("invalid literal; expected \(word)", at: index - count)
            }
        }

        static func isLetter(_ b: UInt8) -> Bool { (b | 0x20) >= UInt8(ascii: "a") && (b | 0x20) <= UInt8(ascii: "z") }

        // MARK: Numbers (RFC 8259 §6)

        mutating func parseNumber() throws(StrictJSONError) -> String {
            let start = index
            if bytes[index] == UInt8(ascii: "-") {
                index += 1
                guard index < bytes.count, StrictJSON.isDigit(bytes[index]) else {
                    if index < bytes.count && (bytes[index] == UInt8(ascii: "I") || bytes[index] == UInt8(ascii: "N")) {
                        throw fail("NaN and Infinity are not JSON numbers", at: start)
                    }
                    throw fail("expected a digit after '-'")
                }
            }
            if bytes[index] == UInt8(ascii: "0") {
                index += 1
                if index < bytes.count && StrictJSON.isDigit(bytes[index]) {
                    throw fail("leading zero in a number", at: start)
                }
            } else {
                while index < bytes.count && StrictJSON.isDigit(bytes[index]) { index += 1 }
            }
            if index < bytes.count && bytes[index] == UInt8(ascii: ".") {
                index += 1
                guard index < bytes.count, StrictJSON.isDigit(bytes[index]) else {
                    throw fail("expected a digit after '.' in a number")
                }
                while index < bytes.count && StrictJSON.isDigit(bytes[index]) { index += 1 }
            }
            if index < bytes.count && (bytes[index] | 0x20) == UInt8(ascii: "e") {
                index += 1
                if index < bytes.count && (bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-")) {
                    index += 1
                }
                guard index < bytes.count, StrictJSON.isDigit(bytes[index]) else {
                    throw fail("expected a digit in the exponent of a number")
                }
                while index < bytes.count && StrictJSON.isDigit(bytes[index]) { index += 1 }
            }
            return String(decoding: bytes[start..<index], as: UTF8.self)
        }

        // MARK: Strings (RFC 8259 §7, §8.1)

        /// Reads a string starting at the opening quote; validates UTF-8 and escapes.
        mutating func parseString() throws(StrictJSONError) -> String {
            let open = index
            index += 1
            var out: [UInt8] = []
            var escaped = false  // whether `out` is in use
            var runStart = index
            while true {
                guard index < bytes.count else { throw fail("unterminated string", at: open) }
                let b = bytes[index]
                if b >= 0x20 && b < 0x80 && b != UInt8(ascii: "\"") && b != UInt8(ascii: "\\") {
                    index += 1
                    continue
                }
                if b == UInt8(ascii: "\"") {
                    let s: String
                    if escaped {
                        out.append(contentsOf: bytes[runStart..<index])
                        s = String(decoding: out, as: UTF8.self)
                    } else {
                        s = String(decoding: bytes[runStart..<index], as: UTF8.self)
                    }
                    index += 1
                    return s
                }
                if b < 0x20 {
                    throw fail("unescaped control character (byte 0x\(Self.hex2(b))) in a string; write it as \\u00\(Self.hex2(b))")
                }
                if b >= 0x80 {
                    try skipUTF8Sequence()
                    continue
                }
                // Backslash.
                if !escaped { escaped = true; out.reserveCapacity(index - runStart + 16) }
                out.append(contentsOf: bytes[runStart..<index])
                let escapeStart = index
                index += 1
                guard index < bytes.count else { throw fail("unterminated string", at: open) }
                let e = bytes[index]
                index += 1
                switch e {
                case UInt8(ascii: "\""): out.append(0x22)
                case UInt8(ascii: "\\"): out.append(0x5C)
                case UInt8(ascii: "/"): out.append(0x2F)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    let unit = try hex4(escapeStart)
                    var scalar = UInt32(unit)
                    if unit >= 0xDC00 && unit <= 0xDFFF {
                        throw fail("lone low surrogate \\u\(Self.hex4String(unit)) in a string (a low surrogate must follow a high one)", at: escapeStart)
                    }
                    if unit >= 0xD800 && unit <= 0xDBFF {
                        guard bytes.count - index >= 2, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u") else {
                            throw fail("lone high surrogate \\u\(Self.hex4String(unit)) in a string (must be followed by a \\uDC00-\\uDFFF escape)", at: escapeStart)
                        }
                        let lowStart = index
                        index += 2
                        let low = try hex4(lowStart)
                        guard low >= 0xDC00 && low <= 0xDFFF else {
                            throw fail("high surrogate \\u\(Self.hex4String(unit)) followed by \\u\(Self.hex4String(low)), not a low surrogate", at: escapeStart)
                        }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (UInt32(low) - 0xDC00)
                    }
                    // Cannot fail: surrogates were handled above and the maximum is U+10FFFF.
                    let u = Unicode.Scalar(scalar) ?? "\u{FFFD}"
                    appendUTF8(u, to: &out)
                default:
                    let shown = e >= 0x20 && e < 0x7F ? "\\\(Character(Unicode.Scalar(e)))" : "\\ followed by byte 0x\(Self.hex2(e))"
                    throw fail("invalid escape \(shown) in a string (allowed: \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX)", at: escapeStart)
                }
                runStart = index
            }
        }

        @inline(__always)
        func appendUTF8(_ u: Unicode.Scalar, to out: inout [UInt8]) {
            let v = u.value
            switch v {
            case 0..<0x80: out.append(UInt8(v))
            case 0x80..<0x800:
                out.append(0xC0 | UInt8(v >> 6)); out.append(0x80 | UInt8(v & 0x3F))
            case 0x800..<0x10000:
                out.append(0xE0 | UInt8(v >> 12)); out.append(0x80 | UInt8((v >> 6) & 0x3F))
                out.append(0x80 | UInt8(v & 0x3F))
            default:
                out.append(0xF0 | UInt8(v >> 18)); out.append(0x80 | UInt8((v >> 12) & 0x3F))
                out.append(0x80 | UInt8((v >> 6) & 0x3F)); out.append(0x80 | UInt8(v & 0x3F))
            }
        }

        static func hex4String(_ v: UInt16) -> String { hex2(UInt8(v >> 8)) + hex2(UInt8(v & 0xFF)) }

        /// Four hex digits at `index` (after `\u`).
        mutating func hex4(_ escapeStart: Int) throws(StrictJSONError) -> UInt16 {
            var v: UInt16 = 0
            for _ in 0..<4 {
                guard index < bytes.count else { throw fail("truncated \\u escape in a string", at: escapeStart) }
                let c = bytes[index]
                let d: UInt16
                switch c {
                case 0x30...0x39: d = UInt16(c - 0x30)
                case 0x41...0x46: d = UInt16(c - 0x41 + 10)
                case 0x61...0x66: d = UInt16(c - 0x61 + 10)
                default: throw fail("\\u escape needs four hex digits, found \(Self.show(c))", at: escapeStart)
                }
                v = v << 4 | d
                index += 1
            }
            return v
        }

        /// Validates one multi-byte UTF-8 sequence at `index` (lead byte ≥ 0x80) against the
        /// well-formed byte sequences of Unicode §3.9 Table 3-7, and steps over it.
        mutating func skipUTF8Sequence() throws(StrictJSONError) {
            let start = index
            let lead = bytes[index]
            let length: Int
            var lo: UInt8 = 0x80, hi: UInt8 = 0xBF  // allowed range of the second byte
            switch lead {
            case 0x80...0xBF:
                throw fail("invalid UTF-8: unexpected continuation byte 0x\(Self.hex2(lead))")
            case 0xC0, 0xC1:
                throw fail("invalid UTF-8: overlong encoding (lead byte 0x\(Self.hex2(lead)))")
            case 0xC2...0xDF: length = 2
            case 0xE0: length = 3; lo = 0xA0
            case 0xE1...0xEC, 0xEE, 0xEF: length = 3
            case 0xED: length = 3; hi = 0x9F
            case 0xF0: length = 4; lo = 0x90
            case 0xF1...0xF3: length = 4
            case 0xF4: length = 4; hi = 0x8F
            default:  // 0xF5...0xFF
                throw fail("invalid UTF-8: byte 0x\(Self.hex2(lead)) encodes a code point above U+10FFFF or is never valid")
            }
            for k in 1..<length {
                let i = start + k
                guard i < bytes.count, bytes[i] >= 0x80 && bytes[i] <= 0xBF else {
                    throw fail("invalid UTF-8: truncated \(length)-byte sequence", at: start)
                }
                if k == 1 && (bytes[i] < lo || bytes[i] > hi) {
                    switch lead {
                    case 0xE0, 0xF0: throw fail("invalid UTF-8: overlong encoding", at: start)
                    case 0xED: throw fail("invalid UTF-8: UTF-16 surrogate (U+D800-U+DFFF) encoded in UTF-8", at: start)
                    default: throw fail("invalid UTF-8: code point above U+10FFFF", at: start)
                    }
                }
            }
            index = start + length
        }
    }
}
