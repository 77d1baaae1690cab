/// Why a safetensors file (or a set of tensors to be written) was rejected.
///
/// Each case names the offending tensor where there is one. The rules mirror the reference
/// implementation's validation (huggingface/safetensors, `SafeTensors::read_metadata` /
/// `Metadata::validate`): header size cap, `{` first, contiguous non-overlapping offsets covering
/// the whole buffer, byte sizes consistent with dtype × shape.
public enum SafeTensorsError: Error, CustomStringConvertible, Sendable, Equatable {
    // MARK: Framing
    /// The file is shorter than the 8-byte header-length prefix.
    case fileTooShort(size: Int)
    /// The declared header length exceeds the 100,000,000-byte cap.
    case headerTooLarge(declared: UInt64, limit: Int)
    /// The declared header length runs past the end of the file.
    case headerExceedsFile(declared: UInt64, available: Int)

    // MARK: Header JSON
    /// The header bytes are not valid UTF-8.
    case headerNotUTF8
    /// The header is not syntactically valid JSON; `offset` is relative to the header start.
    case headerNotJSON(offset: Int, reason: String)
    /// The header is JSON but not an object (e.g. `[]`).
    case headerNotObject(found: String)
    /// The header does not begin with `{` (the format forbids leading whitespace).
    case headerInvalidStart(firstByte: UInt8?)

    // MARK: Metadata
    /// `__metadata__` is not an object.
    case metadataNotObject(found: String)
    /// A `__metadata__` value is not a string.
    case metadataValueNotString(key: String, found: String)
    /// A `__metadata__` key appears twice.
    case duplicateMetadataKey(String)

    // MARK: Entries
    /// A tensor name appears twice (in the header, or in the tensors given to the writer).
    case duplicateName(String)
    /// A tensor name is the empty string.
    case emptyName
    /// The writer was given a tensor named `__metadata__`, which the format reserves.
    case reservedName(String)
    /// A tensor's entry is not an object.
    case entryNotObject(tensor: String, found: String)
    /// A tensor's entry has the same field twice.
    case duplicateField(tensor: String, field: String)
    /// A tensor's entry lacks `dtype`, `shape` or `data_offsets`.
    case missingField(tensor: String, field: String)
    /// A field has the wrong JSON type.
    case wrongFieldType(tensor: String, field: String, expected: String, found: String)
    /// The dtype is not one the format defines.
    case unknownDtype(tensor: String, dtype: String)
    /// The dtype is defined by the format but cannot be converted to `Float` (only F32, F64, F16
    /// and BF16 can).
    case unsupportedDtype(tensor: String, dtype: String)
    /// A shape entry is negative, not an integer, or too large for `Int` (`value` is its JSON text).
    case invalidDimension(tensor: String, index: Int, value: String)
    /// The element count or byte size of the shape overflows `Int`.
    case shapeOverflow(tensor: String, shape: [Int])
    /// `data_offsets` is not two ascending non-negative integers.
    case invalidDataOffsets(tensor: String, reason: String)
    /// `end - begin` differs from element count × dtype size.
    case byteSizeMismatch(tensor: String, expected: Int, actual: Int)
    /// A tensor's data ends beyond the byte buffer.
    case offsetsBeyondBuffer(tensor: String, end: Int, bufferLength: Int)
    /// A tensor's data starts before the previous tensor (sorted by offset) ends.
    case overlap(tensor: String, previous: String, begin: Int, previousEnd: Int)
    /// There are unused bytes before a tensor's data.
    case gap(tensor: String, begin: Int, expectedBegin: Int)
    /// The tensors do not cover the byte buffer exactly (trailing bytes, or data missing).
    case bufferLengthMismatch(dataEnd: Int, bufferLength: Int)

    // MARK: Writer
    /// A tensor's `data.count` does not match its shape.
    case elementCountMismatch(tensor: String, shape: [Int], count: Int)
    /// The total file size overflows `Int`.
    case fileSizeOverflow

    public var description: String {
        let p = "safetensors: "
        switch self {
        case .fileTooShort(let size):
            return p + "file is \(size) bytes, shorter than the 8-byte header length prefix"
        case .headerTooLarge(let declared, let limit):
            return p + "declared header length \(declared) exceeds the limit of \(limit) bytes"
        case .headerExceedsFile(let declared, let available):
            return p + "declared header length \(declared) runs past the end of the file (\(available) bytes after the prefix)"
        case .headerNotUTF8:
            return p + "header is not valid UTF-8"
        case .headerNotJSON(let offset, let reason):
            return p + "header is not valid JSON at byte \(offset) of the header: \(reason)"
        case .headerNotObject(let found):
            return p + "header must be a JSON object, found \(found)"
        case .headerInvalidStart(let b):
            return p + "header must start with '{', found " + (b.map { "byte 0x" + String($0, radix: 16) } ?? "an empty header")
        case .metadataNotObject(let found):
            return p + "__metadata__ must be an object of strings, found \(found)"
        case .metadataValueNotString(let key, let found):
            return p + "__metadata__ value for key \"\(key)\" must be a string, found \(found)"
        case .duplicateMetadataKey(let key):
            return p + "__metadata__ key \"\(key)\" appears more than once"
        case .duplicateName(let name):
            return p + "tensor name \"\(name)\" appears more than once"
        case .emptyName:
            return p + "tensor names must not be empty"
        case .reservedName(let name):
            return p + "tensor name \"\(name)\" is reserved by the format"
        case .entryNotObject(let t, let found):
            return p + "entry for tensor \"\(t)\" must be an object, found \(found)"
        case .duplicateField(let t, let field):
            return p + "tensor \"\(t)\": field \"\(field)\" appears more than once"
        case .missingField(let t, let field):
            return p + "tensor \"\(t)\": missing field \"\(field)\""
        case .wrongFieldType(let t, let field, let expected, let found):
            return p + "tensor \"\(t)\": field \"\(field)\" must be \(expected), found \(found)"
        case .unknownDtype(let t, let dtype):
            return p + "tensor \"\(t)\": unknown dtype \"\(dtype)\""
        case .unsupportedDtype(let t, let dtype):
            return p + "tensor \"\(t)\": unsupported dtype \"\(dtype)\" (only F32, F64, F16 and BF16 can be read as Float)"
        case .invalidDimension(let t, let index, let value):
            return p + "tensor \"\(t)\": shape[\(index)] = \(value) is not a non-negative integer that fits in Int"
        case .shapeOverflow(let t, let shape):
            return p + "tensor \"\(t)\": shape \(shape) has too many elements (overflow)"
        case .invalidDataOffsets(let t, let reason):
            return p + "tensor \"\(t)\": invalid data_offsets: \(reason)"
        case .byteSizeMismatch(let t, let expected, let actual):
            return p + "tensor \"\(t)\": data_offsets span \(actual) bytes but dtype × shape needs \(expected)"
        case .offsetsBeyondBuffer(let t, let end, let length):
            return p + "tensor \"\(t)\": data ends at \(end), beyond the \(length)-byte buffer"
        case .overlap(let t, let previous, let begin, let previousEnd):
            return p + "tensor \"\(t)\" starts at \(begin), overlapping \"\(previous)\" which ends at \(previousEnd)"
        case .gap(let t, let begin, let expectedBegin):
            return p + "tensor \"\(t)\" starts at \(begin), leaving unused bytes \(expectedBegin)..<\(begin)"
        case .bufferLengthMismatch(let dataEnd, let length):
            return p + "tensor data ends at \(dataEnd) but the byte buffer is \(length) bytes"
        case .elementCountMismatch(let t, let shape, let count):
            return p + "tensor \"\(t)\": shape \(shape) does not match its \(count) elements"
        case .fileSizeOverflow:
            return p + "total size overflows Int"
        }
    }
}
