import Testing
import Foundation
@testable import ReflowCodec

// MARK: - Tables

/// A document that must parse, and the value it must give.
struct JSONAcceptCase: CustomStringConvertible, Sendable {
    var doc: [UInt8]
    var value: JSONValue
    init(_ doc: String, _ value: JSONValue) { self.doc = Array(doc.utf8); self.value = value }
    init(bytes: [UInt8], _ value: JSONValue) { self.doc = bytes; self.value = value }
    var description: String { String(decoding: doc, as: UTF8.self) }
}

/// A document that must be refused, with the error's pointer, a fragment of its message and
/// (when given) its byte offset.
struct JSONRejectCase: CustomStringConvertible, Sendable {
    var doc: [UInt8]
    var pointer: String
    var fragment: String
    var offset: Int?
    init(_ doc: String, _ pointer: String, _ fragment: String, at offset: Int? = nil) {
        self.doc = Array(doc.utf8); self.pointer = pointer; self.fragment = fragment; self.offset = offset
    }
    init(bytes: [UInt8], _ pointer: String, _ fragment: String, at offset: Int? = nil) {
        self.doc = bytes; self.pointer = pointer; self.fragment = fragment; self.offset = offset
    }
    var description: String { "\(doc.map { String($0, radix: 16) }) \(String(decoding: doc, as: UTF8.self))" }
}

private func str(_ s: String) -> JSONValue { .string(s) }
private func num(_ s: String) -> JSONValue { .number(s) }
private func obj(_ members: (String, JSONValue)...) -> JSONValue { .object(members.map { (key: $0.0, value: $0.1) }) }

let strictJSONAccepted: [JSONAcceptCase] = [
    // Every kind of value at top level (RFC 8259 §2).
    JSONAcceptCase("[]", .array([])),
    JSONAcceptCase("{}", .object([])),
    JSONAcceptCase("null", .null),
    JSONAcceptCase("true", .bool(true)),
    JSONAcceptCase("false", .bool(false)),
    JSONAcceptCase("0", num("0")),
    JSONAcceptCase("-0", num("-0")),
    JSONAcceptCase("-0.0e-0", num("-0.0e-0")),
    JSONAcceptCase("1e400", num("1e400")),
    JSONAcceptCase("-1.5E+10", num("-1.5E+10")),
    JSONAcceptCase("1E-2", num("1E-2")),
    JSONAcceptCase("123456789012345678901234567890", num("123456789012345678901234567890")),
    JSONAcceptCase("\"\"", str("")),
    JSONAcceptCase(" \t\r\n[ 1 , 2 ]\n\r\t ", .array([num("1"), num("2")])),
    // Strings: escapes (RFC 8259 §7).
    JSONAcceptCase(#""\u0000""#, str("\u{0}")),
    JSONAcceptCase(#""\"\\\/\b\f\n\r\t""#, str("\"\\/\u{8}\u{C}\n\r\t")),
    JSONAcceptCase(#""\u00e9\u00C9\u20AC""#, str("éÉ€")),
    JSONAcceptCase(#""\ud83d\ude00""#, str("😀")),
    JSONAcceptCase(#""\uDBFF\uDFFF""#, str("\u{10FFFF}")),
    JSONAcceptCase(#""\uFFFF""#, str("\u{FFFF}")),
    JSONAcceptCase("\"é€😀\u{10FFFF}\"", str("é€😀\u{10FFFF}")),
    JSONAcceptCase("\"\u{7F}\"", str("\u{7F}")),
    JSONAcceptCase("\"\u{FEFF}x\u{FEFF}\"", str("\u{FEFF}x\u{FEFF}")),  // U+FEFF inside a string is just a character  // DEL is not a control character for JSON
    JSONAcceptCase(#""a\nb""#, str("a\nb")),
    // Nesting, order, keys.
    JSONAcceptCase(#"{"a":[1,{"b":null}],"c":"d"}"#, obj(("a", .array([num("1"), obj(("b", .null))])), ("c", str("d")))),
    JSONAcceptCase(#"{"z":1,"a":2,"m":3}"#, obj(("z", num("1")), ("a", num("2")), ("m", num("3")))),
    JSONAcceptCase(#"{"a":1,"A":2}"#, obj(("a", num("1")), ("A", num("2")))),
    JSONAcceptCase(#"{"":1}"#, obj(("", num("1")))),
    JSONAcceptCase(#"{"a":{"a":{"a":1}}}"#, obj(("a", obj(("a", obj(("a", num("1")))))))),
    JSONAcceptCase(#"[{"a":1},{"a":1}]"#, .array([obj(("a", num("1"))), obj(("a", num("1")))])),  // same key, different objects
    JSONAcceptCase("[[],[[]],{}]", .array([.array([]), .array([.array([])]), .object([])])),
    JSONAcceptCase(#"{"a\u0000":1,"a":2}"#, obj(("a\u{0}", num("1")), ("a", num("2")))),
    JSONAcceptCase(#"["a/b","~"]"#, .array([str("a/b"), str("~")])),
]

let strictJSONRejected: [JSONRejectCase] = [
    // Empty input, BOMs (RFC 8259 §8.1: we choose to refuse a BOM).
    JSONRejectCase("", "", "empty document", at: 0),
    JSONRejectCase(" \n\t ", "", "only whitespace", at: 4),
    JSONRejectCase(bytes: [0xEF, 0xBB, 0xBF] + Array("{}".utf8), "", "byte order mark", at: 0),
    JSONRejectCase(bytes: [0xEF, 0xBB, 0xBF], "", "byte order mark", at: 0),
    JSONRejectCase(bytes: [0xFE, 0xFF, 0x00, 0x7B, 0x00, 0x7D], "", "UTF-16", at: 0),
    JSONRejectCase(bytes: [0xFF, 0xFE, 0x7B, 0x00, 0x7D, 0x00], "", "UTF-16", at: 0),
    // Trailing and misplaced commas, separators.
    JSONRejectCase("[1,]", "", "trailing comma in array", at: 2),
    JSONRejectCase("[1 , \n]", "", "trailing comma in array", at: 3),
    JSONRejectCase(#"{"a":1,}"#, "", "trailing comma in object", at: 6),
    JSONRejectCase(#"{"steps": 5,}"#, "", "trailing comma in object", at: 11),
    JSONRejectCase(#"{"a":[1,2,],"b":1}"#, "/a", "trailing comma in array", at: 9),
    JSONRejectCase(#"{"a":{"b":{},},"c":1}"#, "/a", "trailing comma in object", at: 12),
    JSONRejectCase("[,1]", "", "found ','", at: 1),
    JSONRejectCase("[,]", "", "found ','", at: 1),
    JSONRejectCase("[1,,2]", "/1", "expected a value, found ','", at: 3),
    JSONRejectCase("{,}", "", "expected a key or '}', found ','", at: 1),
    JSONRejectCase(#"{"a":1,,"b":2}"#, "", "expected a key", at: 7),
    JSONRejectCase(#"{"a" 1}"#, "/a", "expected ':'", at: 5),
    JSONRejectCase(#"{"a"}"#, "/a", "expected ':'", at: 4),
    JSONRejectCase(#"{"a":}"#, "/a", "expected a value, found '}'", at: 5),
    JSONRejectCase(#"{"a":1 "b":2}"#, "", "expected ',' or '}'", at: 7),
    JSONRejectCase("[1 2]", "", "expected ',' or ']'", at: 3),
    JSONRejectCase("[1}", "", "mismatched", at: 2),
    JSONRejectCase(#"{"a":1]"#, "", "mismatched", at: 6),
    JSONRejectCase("{a:1}", "", "expected a key in double quotes", at: 1),
    JSONRejectCase("{1:1}", "", "expected a key in double quotes", at: 1),
    JSONRejectCase("['a']", "/0", "double quotes", at: 1),
    // Unterminated.
    JSONRejectCase("[", "/0", "unexpected end of input", at: 1),
    JSONRejectCase("[1", "", "unterminated array", at: 2),
    JSONRejectCase(#"{"a":1"#, "", "unterminated object", at: 6),
    JSONRejectCase(#"{"a""#, "/a", "unterminated object", at: 4),
    JSONRejectCase("{", "", "unterminated object", at: 1),
    JSONRejectCase(#"{"a":"#, "/a", "unexpected end of input", at: 5),
    JSONRejectCase(#""abc"#, "", "unterminated string", at: 0),
    JSONRejectCase(#"["a\"#, "/0", "unterminated string", at: 1),
    // Duplicate keys: pointer of the duplicate, message naming the key.
    JSONRejectCase(#"{"steps":5,"steps":9999999}"#, "/steps", #"duplicate key "steps""#, at: 11),
    JSONRejectCase(#"{"a":1,"b":2,"a":1}"#, "/a", #"duplicate key "a""#, at: 13),
    JSONRejectCase(#"{"input":{"a/b~":1,"a/b~":2}}"#, "/input/a~1b~0", #"duplicate key "a/b~""#, at: 19),
    JSONRejectCase(#"[{},{"x":1,"x":1}]"#, "/1/x", #"duplicate key "x""#, at: 11),
    JSONRejectCase(#"{"a":1,"\u0061":2}"#, "/a", #"duplicate key "a""#, at: 7),  // same key, spelt differently
    JSONRejectCase(#"{"":1,"":2}"#, "/", #"duplicate key """#, at: 6),
    JSONRejectCase(#"{"\u00e9":1,"e\u0301":2}"#, "/e\u{301}", "canonically equivalent", at: 12),
    // Numbers (RFC 8259 §6).
    JSONRejectCase("01", "", "leading zero", at: 0),
    JSONRejectCase("[-01]", "/0", "leading zero", at: 1),
    JSONRejectCase("00", "", "leading zero", at: 0),
    JSONRejectCase("+1", "", "cannot start with '+'", at: 0),
    JSONRejectCase(".5", "", "digit before '.'", at: 0),
    JSONRejectCase("-.5", "", "digit after '-'", at: 1),
    JSONRejectCase("1.", "", "digit after '.'", at: 2),
    JSONRejectCase("1.e5", "", "digit after '.'", at: 2),
    JSONRejectCase("1e", "", "exponent", at: 2),
    JSONRejectCase("1e+", "", "exponent", at: 3),
    JSONRejectCase("1E-x", "", "exponent", at: 3),
    JSONRejectCase("-", "", "digit after '-'", at: 1),
    JSONRejectCase("--1", "", "digit after '-'", at: 1),
    JSONRejectCase("NaN", "", "NaN and Infinity", at: 0),
    JSONRejectCase("Infinity", "", "NaN and Infinity", at: 0),
    JSONRejectCase("-Infinity", "", "NaN and Infinity", at: 0),
    JSONRejectCase(#"{"x":NaN}"#, "/x", "NaN and Infinity", at: 5),
    JSONRejectCase("0x10", "", "after the JSON value", at: 1),
    JSONRejectCase("1.5.3", "", "after the JSON value", at: 3),
    JSONRejectCase("[1.0e5.1]", "", "expected ',' or ']'", at: 6),
    // Literals.
    JSONRejectCase("tru", "", "expected true", at: 0),
    JSONRejectCase("nul", "", "expected null", at: 0),
    JSONRejectCase("[truex]", "/0", "expected true", at: 1),
    JSONRejectCase("True", "", "found 'T'", at: 0),
    JSONRejectCase(#"{"a":[true,false,nulL]}"#, "/a/2", "expected null", at: 17),
    // Strings: control characters, escapes, surrogates (RFC 8259 §7).
    JSONRejectCase("\"a\tb\"", "", "unescaped control character", at: 2),
    JSONRejectCase("\"\u{1}\"", "", "unescaped control character", at: 1),
    JSONRejectCase("[\"a\nb\"]", "/0", "unescaped control character", at: 3),
    JSONRejectCase(bytes: [0x22, 0x00, 0x22], "", "unescaped control character", at: 1),
    JSONRejectCase(#""\x41""#, "", #"invalid escape \x"#, at: 1),
    JSONRejectCase(#""\'""#, "", "invalid escape", at: 1),
    JSONRejectCase(#""\U0041""#, "", "invalid escape", at: 1),
    JSONRejectCase(#""\u12G4""#, "", "four hex digits", at: 1),
    JSONRejectCase(#""\u12""#, "", "four hex digits", at: 1),
    JSONRejectCase(#""\u12"#, "", "truncated", at: 1),
    JSONRejectCase(#""\ud800""#, "", "lone high surrogate", at: 1),
    JSONRejectCase(#""\ud800"#, "", "lone high surrogate", at: 1),
    JSONRejectCase(#""\udc00""#, "", "lone low surrogate", at: 1),
    JSONRejectCase(#""\udc00\ud800""#, "", "lone low surrogate", at: 1),
    JSONRejectCase(#""\ud800\u0041""#, "", "not a low surrogate", at: 1),
    JSONRejectCase(#""\ud800\ud800""#, "", "not a low surrogate", at: 1),
    JSONRejectCase(#""\ud800\n""#, "", "lone high surrogate", at: 1),
    JSONRejectCase(#"{"k":"x\ud800y"}"#, "/k", "lone high surrogate", at: 7),
    JSONRejectCase(#"{"\udfff":1}"#, "", "lone low surrogate", at: 2),  // in a key: pointer of the object
    // UTF-8 (RFC 8259 §8.1; Unicode Table 3-7).
    JSONRejectCase(bytes: [0x22, 0xC0, 0xAF, 0x22], "", "overlong", at: 1),
    JSONRejectCase(bytes: [0x22, 0xC1, 0xBF, 0x22], "", "overlong", at: 1),
    JSONRejectCase(bytes: [0x22, 0xE0, 0x80, 0xAF, 0x22], "", "overlong", at: 1),
    JSONRejectCase(bytes: [0x22, 0xE0, 0x9F, 0xBF, 0x22], "", "overlong", at: 1),
    JSONRejectCase(bytes: [0x22, 0xF0, 0x80, 0x80, 0xAF, 0x22], "", "overlong", at: 1),
    JSONRejectCase(bytes: [0x22, 0xF0, 0x8F, 0xBF, 0xBF, 0x22], "", "overlong", at: 1),
    JSONRejectCase(bytes: [0x22, 0xED, 0xA0, 0x80, 0x22], "", "surrogate", at: 1),
    JSONRejectCase(bytes: [0x22, 0xED, 0xBF, 0xBF, 0x22], "", "surrogate", at: 1),
    JSONRejectCase(bytes: [0x22, 0xF4, 0x90, 0x80, 0x80, 0x22], "", "above U+10FFFF", at: 1),
    JSONRejectCase(bytes: [0x22, 0xF5, 0x80, 0x80, 0x80, 0x22], "", "above U+10FFFF", at: 1),
    JSONRejectCase(bytes: [0x22, 0xFF, 0x22], "", "invalid UTF-8", at: 1),
    JSONRejectCase(bytes: [0x22, 0x80, 0x22], "", "continuation byte", at: 1),
    JSONRejectCase(bytes: [0x22, 0x61, 0xBF, 0x22], "", "continuation byte", at: 2),
    JSONRejectCase(bytes: [0x22, 0xE2, 0x82, 0x22], "", "truncated 3-byte", at: 1),
    JSONRejectCase(bytes: [0x22, 0xF0, 0x9F, 0x98, 0x22], "", "truncated 4-byte", at: 1),
    JSONRejectCase(bytes: [0x22, 0xC3], "", "truncated 2-byte", at: 1),
    JSONRejectCase(bytes: [0x22, 0xC3, 0x41, 0x22], "", "truncated 2-byte", at: 1),
    JSONRejectCase(bytes: [0x7B, 0x22, 0x6B, 0x22, 0x3A, 0x22, 0xED, 0xA0, 0x80, 0x22, 0x7D], "/k", "surrogate", at: 6),
    JSONRejectCase(bytes: [0x5B, 0xC3, 0xA9, 0x5D], "/0", "found byte 0xC3", at: 1),  // non-ASCII outside a string
    // Garbage after the top-level value.
    JSONRejectCase("[1] x", "", "after the JSON value", at: 4),
    JSONRejectCase("{} {}", "", "after the JSON value", at: 3),
    JSONRejectCase("1 2", "", "after the JSON value", at: 2),
    JSONRejectCase("[1]]", "", "after the JSON value", at: 3),
    JSONRejectCase("null\u{0}", "", "after the JSON value", at: 4),
    JSONRejectCase("\"a\"\u{A0}", "", "after the JSON value", at: 3),  // U+00A0 is not JSON whitespace
]

// MARK: - Tests

@Suite struct StrictJSONTests {
    @Test(arguments: strictJSONAccepted)
    func acceptsValidDocument(_ c: JSONAcceptCase) throws {
        let value = try StrictJSON.parse(c.doc)
        #expect(value == c.value)
    }

    @Test(arguments: strictJSONRejected)
    func refusesInvalidDocument(_ c: JSONRejectCase) {
        do {
            let value = try StrictJSON.parse(c.doc)
            Issue.record("accepted: \(value)")
        } catch {
            #expect(error.pointer == c.pointer, "\(error)")
            #expect(error.message.contains(c.fragment), "\(error)")
            if let offset = c.offset { #expect(error.offset == offset, "\(error)") }
            #expect(error.offset >= 0 && error.offset <= c.doc.count)
        }
    }

    @Test func errorDescriptionNamesOffsetPointerAndKey() {
        #expect(throws: StrictJSONError(offset: 11, pointer: "/steps", message: #"duplicate key "steps""#)) {
            try StrictJSON.parse(#"{"steps":5,"steps":9999999}"#)
        }
        let e = StrictJSONError(offset: 11, pointer: "/steps", message: #"duplicate key "steps""#)
        #expect(e.description == #"invalid JSON at byte 11 (/steps): duplicate key "steps""#)
        let top = StrictJSONError(offset: 0, pointer: "", message: "empty document")
        #expect(top.description == "invalid JSON at byte 0: empty document")
    }

    @Test func duplicateKeyMessageEscapesAndShortensKey() throws {
        let long = String(repeating: "k", count: 100)
        do {
            _ = try StrictJSON.parse("{\"\(long)\":1,\"\(long)\":2}")
            Issue.record("accepted")
        } catch {
            #expect(error.message == "duplicate key \"" + String(repeating: "k", count: 64) + "…\"")
            #expect(error.pointer == "/" + long)
        }
        do {
            _ = try StrictJSON.parse(#"{"a\n\"":1,"a\n\"":2}"#)
            Issue.record("accepted")
        } catch {
            #expect(error.message == #"duplicate key "a\u000A\"""#)
            #expect(error.pointer == "/a\n\"")
        }
    }

    @Test func jsonPointerEscaping() {
        #expect(StrictJSON.pointer([String]()) == "")
        #expect(StrictJSON.pointer(["a/b", "m~n", "", "0"]) == "/a~1b/m~0n//0")
        #expect(StrictJSON.pointer(["~1"]) == "/~01")  // ~ first, so ~1 in a key stays distinguishable from /
        #expect(StrictJSON.pointer(["/~"]) == "/~1~0")
        #expect(StrictJSON.pointer(["é😀"]) == "/é😀")
        #expect(StrictJSON.escapePointerToken("plain") == "plain")
    }

    // MARK: Depth

    private static func nested(_ depth: Int, object: Bool = false) -> String {
        object
            ? String(repeating: #"{"a":"#, count: depth) + "1" + String(repeating: "}", count: depth)
            : String(repeating: "[", count: depth) + "1" + String(repeating: "]", count: depth)
    }

    @Test func nestingAtMaxDepthIsJSONAcceptCaseAndOneMoreIsRefused() throws {
        for object in [false, true] {
            _ = try StrictJSON.parse(Self.nested(32, object: object))
            do {
                _ = try StrictJSON.parse(Self.nested(33, object: object))
                Issue.record("33 levels accepted")
            } catch {
                #expect(error.message.contains("nesting deeper than 32"))
                // The pointer names the container that is one too deep.
                let token = object ? "/a" : "/0"
                #expect(error.pointer == String(repeating: token, count: 32))
                #expect(error.offset == (object ? 32 * 5 : 32))
            }
        }
        _ = try StrictJSON.parse(Self.nested(5), maxDepth: 5)
        #expect(throws: StrictJSONError.self) { try StrictJSON.parse(Self.nested(6), maxDepth: 5) }
        // Empty containers count as a level too.
        _ = try StrictJSON.parse("[[]]", maxDepth: 2)
        #expect(throws: StrictJSONError.self) { try StrictJSON.parse("[[]]", maxDepth: 1) }
        // maxDepth 0: scalars only.
        #expect(try StrictJSON.parse("7", maxDepth: 0) == num("7"))
        #expect(throws: StrictJSONError.self) { try StrictJSON.parse("[]", maxDepth: 0) }
        #expect(throws: StrictJSONError.self) { try StrictJSON.parse("{}", maxDepth: -3) }
    }

    @Test func hostileDeepNestingIsRefusedWithoutCrashing() {
        let open = [UInt8](repeating: UInt8(ascii: "["), count: 100_000)
        #expect(throws: StrictJSONError(offset: 32, pointer: String(repeating: "/0", count: 32),
                                        message: "nesting deeper than 32 levels")) {
            try StrictJSON.parse(open)
        }
        let balanced = open + [UInt8](repeating: UInt8(ascii: "]"), count: 100_000)
        #expect(throws: StrictJSONError.self) { try StrictJSON.parse(balanced) }
        let objects = Array(String(repeating: #"{"a":"#, count: 100_000).utf8)
        #expect(throws: StrictJSONError.self) { try StrictJSON.parse(objects) }
        // A huge requested depth is clamped, so the value can still be destroyed and compared safely.
        do {
            _ = try StrictJSON.parse(balanced, maxDepth: 1_000_000)
            Issue.record("accepted")
        } catch {
            #expect(error.message.contains("nesting deeper than \(StrictJSON.maxDepthLimit)"))
            #expect(error.offset == StrictJSON.maxDepthLimit)
        }
        #expect(throws: Never.self) { try StrictJSON.parse(Self.nested(StrictJSON.maxDepthLimit), maxDepth: .max) }
    }

    // MARK: Number helpers

    @Test(arguments: [
        ("0", 0), ("-0", 0), ("5", 5), ("5.0", 5), ("5e0", 5), ("50e-1", 5), ("0.5e1", 5), ("-5E+2", -500),
        ("100e-2", 1), ("0.0000", 0), ("0e999999999999999999999", 0), ("0.000e-7", 0),
        ("123456789012345678.9e1", 1_234_567_890_123_456_789),
        ("9223372036854775807", Int.max), ("-9223372036854775808", Int.min),
        ("922337203685477580.7e1", Int.max), ("9.223372036854775807E18", Int.max),
    ] as [(String, Int)])
    func intValueOfExactIntegers(_ literal: String, _ expected: Int) throws {
        let v = try StrictJSON.parse(literal)
        #expect(v == num(literal))
        #expect(v.intValue == expected)
    }

    @Test(arguments: [
        "5.5", "0.1", "-0.5", "1e19", "1e308", "1e400", "9223372036854775808", "-9223372036854775809",
        "1.000000000000000000000000001", "1e-999999999999", "12345678901234567890", "1e-1",
        "99999999999999999999e-2",
    ])
    func intValueIsNilWhenNotAnExactIntInRange(_ literal: String) throws {
        #expect(try StrictJSON.parse(literal).intValue == nil)
    }

    @Test func doubleValue() throws {
        #expect(try StrictJSON.parse("1.5").doubleValue == 1.5)
        #expect(try StrictJSON.parse("-2E3").doubleValue == -2000)
        #expect(try StrictJSON.parse("1e400").doubleValue == nil)
        #expect(try StrictJSON.parse("-1e400").doubleValue == nil)
        #expect(try StrictJSON.parse("1e-400").doubleValue == 0)
        #expect(try StrictJSON.parse("-0").doubleValue?.sign == .minus)
        #expect(try StrictJSON.parse("0.1").doubleValue == 0.1)
        #expect(try StrictJSON.parse("9007199254740993").doubleValue == 9007199254740992)
        #expect(JSONValue.string("1").doubleValue == nil && JSONValue.string("1").intValue == nil)
        #expect(JSONValue.bool(true).intValue == nil)
    }

    @Test func accessorsAndEquality() throws {
        let v = try StrictJSON.parse(#"{"type":"train","input":{"steps":5}}"#)
        #expect(v["type"] == str("train"))
        #expect(v["input"]?["steps"]?.intValue == 5)
        #expect(v["missing"] == nil)
        #expect(JSONValue.array([])["type"] == nil)
        #expect(v.kindName == "an object")
        // Member order matters; number literals compare by text.
        #expect(obj(("a", .null), ("b", .null)) != obj(("b", .null), ("a", .null)))
        #expect(num("1.0") != num("1"))
        #expect(JSONValue.array([.null]) != JSONValue.object([]))
    }

    // MARK: Property test against a serializer and Foundation

    @Test func randomValuesRoundTripAndFoundationAgrees() throws {
        var rng = XorShift(seed: 0x5EED_2025)
        var foundationChecked = 0
        for i in 0..<2_000 {
            let value = RandomJSON.value(&rng, depth: 0)
            var text = ""
            RandomJSON.serialize(value, &rng, into: &text)
            let bytes = Array(text.utf8)
            let parsed: JSONValue
            do {
                parsed = try StrictJSON.parse(bytes)
            } catch {
                Issue.record("case \(i): \(error) in \(text)")
                continue
            }
            #expect(parsed == value, "case \(i): \(text)")
            // The generator never emits duplicate keys or out-of-range numbers, so Foundation must
            // read the same document, except that swift-corelibs-foundation drops U+FEFF at the
            // start of each run of a string between escapes (`"\uFEFFx"` reads as "x"): skip those.
            guard !text.unicodeScalars.contains("\u{FEFF}") else { continue }
            let any = try JSONSerialization.jsonObject(with: Data(bytes), options: [.fragmentsAllowed])
            #expect(RandomJSON.agrees(any, parsed), "case \(i): Foundation disagrees on \(text)")
            foundationChecked += 1
        }
        #expect(foundationChecked > 1_000)
    }

    /// Byte-level mutations of valid documents: never a crash, offsets in range, and anything
    /// accepted is also valid to Foundation (which is laxer, never stricter, except on the
    /// extensions refused here).
    @Test func mutatedDocumentsNeverCrash() throws {
        var rng = XorShift(seed: 99)
        let alphabet = Array("[]{},:\"\\-+.0123456789eEtrufalsn u/".utf8) + [0x00, 0x09, 0x0A, 0x80, 0xC3, 0xED, 0xF4, 0xFF]
        var refused = 0
        for _ in 0..<2_000 {
            var text = ""
            RandomJSON.serialize(RandomJSON.value(&rng, depth: 0), &rng, into: &text)
            var bytes = Array(text.utf8)
            for _ in 0..<(1 + Int(rng.next() % 3)) {
                let pos = Int(rng.next() % UInt64(bytes.count + 1))
                let b = alphabet[Int(rng.next() % UInt64(alphabet.count))]
                switch rng.next() % 3 {
                case 0 where pos < bytes.count: bytes[pos] = b
                case 1 where pos < bytes.count: bytes.remove(at: pos)
                default: bytes.insert(b, at: pos)
                }
            }
            do {
                let value = try StrictJSON.parse(bytes)
                // Foundation refuses numbers beyond Double's range (1e400), which are valid JSON.
                if RandomJSON.numbersAreFinite(value) {
                    #expect((try? JSONSerialization.jsonObject(with: Data(bytes), options: [.fragmentsAllowed])) != nil,
                            "accepted but Foundation refuses: \(bytes)")
                }
            } catch {
                refused += 1
                #expect(error.offset >= 0 && error.offset <= bytes.count)
                #expect(!error.message.isEmpty)
            }
        }
        #expect(refused > 1_000)
    }
}

// MARK: - Random documents

private enum RandomJSON {
    static func pick<T>(_ rng: inout XorShift, _ items: [T]) -> T { items[Int(rng.next() % UInt64(items.count))] }
    static func int(_ rng: inout XorShift, _ range: ClosedRange<Int>) -> Int { Int.random(in: range, using: &rng) }

    static func value(_ rng: inout XorShift, depth: Int) -> JSONValue {
        let kind = depth >= 5 ? int(&rng, 0...3) : int(&rng, 0...5)
        switch kind {
        case 0: return int(&rng, 0...3) == 0 ? .null : .bool(rng.next() & 1 == 0)
        case 1: return .number(number(&rng))
        case 2, 3: return .string(string(&rng))
        case 4:
            return .array((0..<int(&rng, 0...5)).map { _ in value(&rng, depth: depth + 1) })
        default:
            var seen: Set<String> = []
            var members: [(key: String, value: JSONValue)] = []
            for _ in 0..<int(&rng, 0...5) {
                let key = string(&rng)
                if seen.insert(key).inserted { members.append((key, value(&rng, depth: depth + 1))) }
            }
            return .object(members)
        }
    }

    /// A number literal in the RFC 8259 §6 grammar whose value is finite as a Double.
    static func number(_ rng: inout XorShift) -> String {
        switch int(&rng, 0...3) {
        case 0: return String(Int.random(in: -1000...1000, using: &rng))
        case 1: return String(Int64(bitPattern: rng.next()))
        case 2:
            let d = Double(bitPattern: rng.next())
            return d.isFinite ? "\(d)" : "0"
        default:
            var s = rng.next() & 1 == 0 ? "-" : ""
            s += int(&rng, 0...2) == 0 ? "0" : String(int(&rng, 1...999_999))
            if rng.next() & 1 == 0 { s += "." + String(int(&rng, 0...99_999)) }
            if rng.next() & 1 == 0 {
                s += pick(&rng, ["e", "E"]) + pick(&rng, ["", "+", "-"]) + String(int(&rng, 0...40))
            }
            return s
        }
    }

    static let scalarPools: [[Unicode.Scalar]] = [
        Array("abcxyzABCXYZ0189 _-!#$%&'()*+,.:;<=>?@[]^`{|}~".unicodeScalars),
        ["\"", "\\", "/", "\u{0}", "\u{1}", "\u{8}", "\u{9}", "\u{A}", "\u{C}", "\u{D}", "\u{1F}", "\u{7F}"],
        ["é", "ß", "\u{80}", "\u{7FF}", "\u{301}", "€", "中", "\u{FEFF}", "\u{FFFD}", "\u{FFFF}", "\u{E000}"],
        ["😀", "𝄞", "\u{10000}", "\u{10FFFF}", "\u{1F1FA}"],
    ]

    static func string(_ rng: inout XorShift) -> String {
        var s = String.UnicodeScalarView()
        for _ in 0..<int(&rng, 0...8) {
            s.append(pick(&rng, pick(&rng, scalarPools)))
        }
        return String(s)
    }

    static func whitespace(_ rng: inout XorShift, into out: inout String) {
        guard rng.next() % 4 == 0 else { return }
        for _ in 0..<int(&rng, 1...3) { out += pick(&rng, [" ", "\t", "\n", "\r"]) }
    }

    /// Serialises `v` with random insignificant whitespace and random (valid) escape choices.
    static func serialize(_ v: JSONValue, _ rng: inout XorShift, into out: inout String) {
        whitespace(&rng, into: &out)
        switch v {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .number(let t): out += t
        case .string(let s): serializeString(s, &rng, into: &out)
        case .array(let items):
            out += "["
            for (i, item) in items.enumerated() {
                if i > 0 { out += "," }
                serialize(item, &rng, into: &out)
            }
            whitespace(&rng, into: &out)
            out += "]"
        case .object(let members):
            out += "{"
            for (i, m) in members.enumerated() {
                if i > 0 { out += "," }
                whitespace(&rng, into: &out)
                serializeString(m.key, &rng, into: &out)
                whitespace(&rng, into: &out)
                out += ":"
                serialize(m.value, &rng, into: &out)
            }
            whitespace(&rng, into: &out)
            out += "}"
        }
        whitespace(&rng, into: &out)
    }

    static func hex4(_ unit: UInt16, upper: Bool) -> String {
        let h = String(unit, radix: 16, uppercase: upper)
        return String(repeating: "0", count: 4 - h.count) + h
    }

    static func serializeString(_ s: String, _ rng: inout XorShift, into out: inout String) {
        out += "\""
        for u in s.unicodeScalars {
            let mustEscape = u.value < 0x20 || u == "\"" || u == "\\"
            if !mustEscape && rng.next() % 4 != 0 {
                out.unicodeScalars.append(u)
                continue
            }
            let short: String? = switch u {
            case "\"": "\\\""
            case "\\": "\\\\"
            case "/": "\\/"
            case "\u{8}": "\\b"
            case "\u{C}": "\\f"
            case "\n": "\\n"
            case "\r": "\\r"
            case "\t": "\\t"
            default: nil
            }
            if let short, rng.next() & 1 == 0 {
                out += short
                continue
            }
            let upper = rng.next() & 1 == 0
            for unit in utf16Units(u) {
                out += "\\u" + hex4(unit, upper: upper)
            }
        }
        out += "\""
    }

    static func numbersAreFinite(_ v: JSONValue) -> Bool {
        switch v {
        case .number: return v.doubleValue != nil
        case .array(let items): return items.allSatisfy(numbersAreFinite)
        case .object(let members): return members.allSatisfy { numbersAreFinite($0.value) }
        default: return true
        }
    }

    /// Whether Foundation's JSONSerialization result `any` is the same document as `v`.
    static func agrees(_ any: Any, _ v: JSONValue) -> Bool {
        switch v {
        case .null: return any is NSNull
        case .bool(let b):
            guard let n = any as? NSNumber, String(cString: n.objCType) == "c" else { return false }
            return n.boolValue == b
        case .number(let t):
            guard let n = any as? NSNumber, let d = Double(t) else { return false }
            // swift-corelibs-foundation's number reader is not always correctly rounded (it reads
            // -4.097826353058326e-27 four ULPs off); Double(String) is. Allow a few ULPs.
            return n.doubleValue == d || abs(n.doubleValue - d) <= 16 * max(abs(d).ulp, abs(n.doubleValue).ulp)
        case .string(let s): return (any as? String) == s
        case .array(let items):
            guard let a = any as? [Any], a.count == items.count else { return false }
            return zip(a, items).allSatisfy { agrees($0, $1) }
        case .object(let members):
            guard let d = any as? [String: Any], d.count == members.count else { return false }
            return members.allSatisfy { m in d[m.key].map { agrees($0, m.value) } ?? false }
        }
    }
}

private func utf16Units(_ u: Unicode.Scalar) -> [UInt16] {
    var units: [UInt16] = []
    UTF16.encode(u) { units.append($0) }
    return units
}
