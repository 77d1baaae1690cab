import Foundation

// Decoding with defaults, once for every spec type: a type with an `init()` holding its
// defaults decodes a partial JSON object by merging it over the encoding of `init()` and
// decoding the result with the synthesized `Codable`. No type writes an `init(from:)`/`encode`
// pair just to make fields optional.

/// A `Codable` type whose `init()` holds the default of every field, so a partial JSON object
/// can be decoded with ``decodePartial(from:)``.
public protocol DefaultDecodable: Codable {
    init()
    /// Top-level keys that have no default and must be given (removed from the defaults before
    /// the merge, so the synthesized decoder reports them as required).
    static var requiredKeys: [String] { get }
}

extension DefaultDecodable {
    public static var requiredKeys: [String] { [] }

    /// Decodes `json` (a JSON object, possibly partial) over the defaults of `init()`: nested
    /// objects are merged key by key, except that an object whose `kind` differs from the
    /// default's replaces it whole (an `{"kind": "sgd"}` optimizer does not inherit Adam's betas);
    /// arrays, scalars and `null` replace. Errors are the `DecodingError`s of the merged
    /// document, whose coding paths are those of the user's document.
    public static func decodePartial(from json: [UInt8]) throws -> Self {
        let user = try JSONSerialization.jsonObject(with: Data(json), options: [.fragmentsAllowed])
        return try decodePartial(object: user)
    }

    /// ``decodePartial(from:)`` for an already parsed `JSONSerialization` value.
    public static func decodePartial(object user: Any) throws -> Self {
        guard var defaults = try JSONSerialization.jsonObject(with: JSONEncoder().encode(Self())) as? [String: Any] else {
            throw DecodingError.dataCorrupted(.init(codingPath: [], debugDescription: "internal: \(Self.self) does not encode as an object"))
        }
        for k in requiredKeys { defaults[k] = nil }
        guard user is [String: Any] else {
            throw DecodingError.typeMismatch([String: Any].self, .init(codingPath: [], debugDescription: "expected a JSON object"))
        }
        let merged = JSONMerge.merge(defaults, user)
        return try JSONDecoder().decode(Self.self, from: JSONSerialization.data(withJSONObject: merged, options: [.fragmentsAllowed]))
    }
}

/// The merge rule of ``DefaultDecodable``.
public enum JSONMerge {
    public static func merge(_ base: Any, _ over: Any) -> Any {
        guard let b = base as? [String: Any], let o = over as? [String: Any] else { return over }
        if let bk = b["kind"] as? String, let ok = o["kind"] as? String, bk != ok { return o }
        var r = b
        for (k, v) in o { r[k] = b[k].map { merge($0, v) } ?? v }
        return r
    }
}

/// An optional that encodes `nil` as an explicit JSON `null` (the synthesized `Codable` omits
/// the key), and decodes an absent key as `nil`. Spec types use it so that the echoed spec names
/// every field it accepted: `"gradClipNorm": null` means "no clipping", and a misspelt key is
/// still caught by the unknown-field check.
@propertyWrapper
public struct Explicit<Value: Codable & Sendable & Equatable>: Codable, Sendable, Equatable {
    public var wrappedValue: Value?
    public init(wrappedValue: Value?) { self.wrappedValue = wrappedValue }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        wrappedValue = c.decodeNil() ? nil : try c.decode(Value.self)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        if let v = wrappedValue { try c.encode(v) } else { try c.encodeNil() }
    }
}

extension KeyedDecodingContainer {
    /// An absent key is `nil` for an ``Explicit`` field (used by the synthesized decoders).
    public func decode<V>(_ type: Explicit<V>.Type, forKey key: Key) throws -> Explicit<V> {
        try decodeIfPresent(type, forKey: key) ?? Explicit(wrappedValue: nil)
    }
}

/// A coding key for any string: the keys of tagged objects (`{"kind": …, …}`) and of objects
/// whose members are not known statically (result sections).
public struct AnyCodingKey: CodingKey, Sendable {
    public var stringValue: String
    public var intValue: Int? { nil }
    public init(_ s: String) { stringValue = s }
    public init?(stringValue: String) { self.stringValue = stringValue }
    public init?(intValue: Int) { nil }
}
