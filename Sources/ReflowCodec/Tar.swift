/// A strict reader of tar archives in ustar, POSIX (pax) and GNU format, for archives of data
/// files uploaded by clients.
///
/// **Read:** regular files (type `0`, NUL, and `7`) and directories (`5`); GNU long names (`L`);
/// pax extended headers (`x`: the `path` and `size` records are honoured, every other record is
/// ignored); pax global headers (`g`) and GNU long link names (`K`) are skipped.
///
/// **Refused, each with an error naming the entry and the byte offset of its header:** headers
/// without the `ustar` magic (pre-POSIX v7 archives); a wrong header checksum (the unsigned sum,
/// and the historical signed sum, are both accepted); size fields that are not octal (GNU's
/// base-256 sizes included); entries whose data runs past the end of the archive; links, devices,
/// FIFOs and every other type; absolute paths, `..` components and paths that are not UTF-8;
/// duplicate paths and a path used both as a file and a directory; more entries than
/// ``Limits/maxEntries`` or an entry over ``Limits/maxEntryBytes``; an archive without its
/// end-of-archive marker (a zero block: a truncated archive); and non-zero bytes after it.
///
/// Paths are normalised: `.` components and repeated or trailing slashes are removed
/// (`./cats//1.png` → `cats/1.png`); the root directory entry (`./`) is dropped.
public enum Tar {
    /// Caps checked while reading headers, before any entry's data is used.
    public struct Limits: Sendable, Equatable {
        /// Most headers of any type (files, directories, long names, pax headers).
        public var maxEntries: Int
        /// Largest file entry, in bytes.
        public var maxEntryBytes: Int

        /// Defaults: 1,000,000 headers, 1 GiB per file.
        public init(maxEntries: Int = 1_000_000, maxEntryBytes: Int = 1 << 30) {
            self.maxEntries = maxEntries
            self.maxEntryBytes = maxEntryBytes
        }

        public static let `default` = Limits()
    }

    /// Largest GNU long-name or pax header accepted (their data is metadata, not a file).
    public static let maxMetadataBytes = 1 << 20

    /// One file or directory of an archive.
    public struct Entry: Sendable, Equatable {
        public enum Kind: Sendable, Equatable {
            case file
            case directory
        }

        /// Normalised relative path with `/` separators, without a trailing slash.
        public var path: String
        public var kind: Kind
        /// Offset of the entry's data in the archive (just after its 512-byte header).
        public var offset: Int
        /// Size of the data in bytes (0 for a directory).
        public var size: Int
        /// The data: a slice of the archive, `archive[offset..<offset + size]`.
        public var bytes: ArraySlice<UInt8>
    }

    /// Reads every entry of a tar archive, in archive order.
    ///
    /// - Throws: ``CodecError`` (source `.input`, operation `"Tar.read"`) for anything the type's
    ///   documentation lists as refused.
    public static func entries(_ archive: [UInt8], limits: Limits = .default) throws(CodecError) -> [Entry] {
        func fail(_ m: String) -> CodecError { CodecError.input("Tar.read", m) }
        let total = archive.count
        var entries: [Entry] = []
        var at = 0
        var headers = 0
        var longName: String?  // from a GNU 'L' entry, for the next header
        var pax: (path: String?, size: Int?)?  // from a pax 'x' entry, for the next header
        var files = Set<String>(), dirs = Set<String>()

        while true {
            guard at + 512 <= total else {
                if at == total {
                    throw fail("archive ends at byte \(at) without its end-of-archive marker (a zero block); "
                               + "it is probably truncated")
                }
                throw fail("archive is truncated: \(total - at) byte(s) at byte \(at) are not a whole 512-byte header")
            }
            let header = archive[at..<(at + 512)]
            if header.allSatisfy({ $0 == 0 }) {
                guard longName == nil, pax == nil else {
                    throw fail("archive ends at byte \(at) after a long-name or pax header with no entry to apply it to")
                }
                if let junk = archive[(at + 512)...].firstIndex(where: { $0 != 0 }) {
                    throw fail("non-zero byte at \(junk), after the end-of-archive marker at byte \(at)")
                }
                return entries
            }
            headers += 1
            guard headers <= limits.maxEntries else {
                throw fail("more than \(limits.maxEntries) entries (header at byte \(at))")
            }

            let rawName = cString(header, 0, 100)
            func shownName() -> String {
                String(decoding: rawName, as: UTF8.self)
            }
            // Magic: POSIX "ustar\0" (+ version) or GNU "ustar  \0".
            let magic = Array(archive[(at + 257)..<(at + 265)])
            let isPOSIX = magic.starts(with: Array("ustar".utf8) + [0])
            let isGNU = magic == Array("ustar  ".utf8) + [0]
            guard isPOSIX || isGNU else {
                throw fail("header at byte \(at) ('\(shownName())') has no ustar magic; only ustar, POSIX (pax) "
                           + "and GNU tar archives are read")
            }
            guard let stored = octal(header, 148, 8) else {
                throw fail("header at byte \(at) ('\(shownName())'): checksum field is not an octal number")
            }
            var unsigned = 0, signed = 0
            for (i, b) in header.enumerated() {
                let v = (148..<156).contains(i) ? 32 : b
                unsigned += Int(v)
                signed += Int(Int8(bitPattern: v))
            }
            guard stored == unsigned || stored == signed else {
                throw fail("header at byte \(at) ('\(shownName())'): bad header checksum "
                           + "(stored \(stored), computed \(unsigned))")
            }

            let type = header[at + 156]
            let isMetadata = type == UInt8(ascii: "L") || type == UInt8(ascii: "x") || type == UInt8(ascii: "g")
                || type == UInt8(ascii: "K")
            guard header[at + 124] & 0x80 == 0 else {
                throw fail("header at byte \(at) ('\(shownName())'): base-256 size fields are not supported")
            }
            guard var size = octal(header, 124, 12) else {
                throw fail("header at byte \(at) ('\(shownName())'): size field is not an octal number")
            }
            if !isMetadata, let paxSize = pax?.size { size = paxSize }
            let cap = isMetadata ? maxMetadataBytes : limits.maxEntryBytes
            guard size <= cap else {
                throw fail("entry '\(shownName())' (header at byte \(at)) is \(size) bytes, over the limit of \(cap)")
            }
            let dataStart = at + 512
            let padded = (size + 511) / 512 * 512
            guard padded <= total - dataStart else {
                throw fail("archive is truncated: entry '\(shownName())' (header at byte \(at)) needs \(padded) bytes "
                           + "of data, but only \(total - dataStart) remain")
            }
            let data = archive[dataStart..<(dataStart + size)]
            defer { at = dataStart + padded }

            switch type {
            case UInt8(ascii: "L"):
                guard let name = String(validating: trimmingNULs(data), as: UTF8.self), !name.isEmpty else {
                    throw fail("GNU long name at byte \(at) is empty or not UTF-8")
                }
                longName = name
                continue
            case UInt8(ascii: "x"):
                pax = try parsePax(data, headerAt: at)
                continue
            case UInt8(ascii: "g"), UInt8(ascii: "K"):
                continue
            default:
                break
            }

            // The entry's path: long name, pax path, or ustar prefix + name.
            var path: String
            if let name = longName ?? pax?.path {
                path = name
            } else {
                let prefix = isPOSIX ? cString(header, 345, 155) : []
                let joined = prefix.isEmpty ? rawName : prefix + [UInt8(ascii: "/")] + rawName
                guard let s = String(validating: joined, as: UTF8.self) else {
                    throw fail("entry at byte \(at): path \(joined) is not valid UTF-8")
                }
                path = s
            }
            longName = nil
            pax = nil

            let kind: Entry.Kind
            switch type {
            case UInt8(ascii: "0"), 0, UInt8(ascii: "7"): kind = .file
            case UInt8(ascii: "5"): kind = .directory
            default:
                let what: String
                switch type {
                case UInt8(ascii: "1"): what = "a hard link"
                case UInt8(ascii: "2"): what = "a symbolic link"
                case UInt8(ascii: "3"), UInt8(ascii: "4"): what = "a device"
                case UInt8(ascii: "6"): what = "a FIFO"
                default:
                    what = (32...126).contains(type) ? "of unsupported type '\(String(UnicodeScalar(type)))'"
                        : "of unsupported type byte \(type)"
                }
                throw fail("entry '\(path)' (header at byte \(at)) is \(what); only regular files and directories are read")
            }
            guard kind == .file || size == 0 else {
                throw fail("directory entry '\(path)' (header at byte \(at)) has size \(size), expected 0")
            }

            // Normalise and check the path.
            guard !path.hasPrefix("/") else {
                throw fail("entry '\(path)' (header at byte \(at)) has an absolute path")
            }
            let parts = path.split(separator: "/", omittingEmptySubsequences: true).filter { $0 != "." }
            guard !parts.contains("..") else {
                throw fail("entry '\(path)' (header at byte \(at)) has a '..' component")
            }
            if parts.isEmpty {
                guard kind == .directory else { throw fail("file entry at byte \(at) has an empty path") }
                continue  // the archive's root directory ("./")
            }
            let normalized = parts.joined(separator: "/")
            var prefix = ""
            for part in parts.dropLast() {
                prefix += prefix.isEmpty ? String(part) : "/" + part
                guard !files.contains(prefix) else {
                    throw fail("entry '\(normalized)' (header at byte \(at)) is inside '\(prefix)', which is a file")
                }
                dirs.insert(prefix)
            }
            switch kind {
            case .file:
                guard !files.contains(normalized) else {
                    throw fail("duplicate entry '\(normalized)' (header at byte \(at))")
                }
                guard !dirs.contains(normalized) else {
                    throw fail("entry '\(normalized)' (header at byte \(at)) is a file but also a directory")
                }
                files.insert(normalized)
            case .directory:
                guard !files.contains(normalized) else {
                    throw fail("entry '\(normalized)' (header at byte \(at)) is a directory but also a file")
                }
                dirs.insert(normalized)
            }
            entries.append(Entry(path: normalized, kind: kind, offset: dataStart, size: size, bytes: data))
        }
    }

    /// The bytes of a NUL-terminated field (all of it when there is no NUL).
    private static func cString(_ header: ArraySlice<UInt8>, _ offset: Int, _ length: Int) -> [UInt8] {
        let field = header[(header.startIndex + offset)..<(header.startIndex + offset + length)]
        return Array(field.prefix { $0 != 0 })
    }

    private static func trimmingNULs(_ data: ArraySlice<UInt8>) -> ArraySlice<UInt8> {
        var end = data.endIndex
        while end > data.startIndex && data[end - 1] == 0 { end -= 1 }
        return data[data.startIndex..<end]
    }

    /// An octal field: optional leading spaces, at least one digit 0-7, then only NULs or spaces.
    private static func octal(_ header: ArraySlice<UInt8>, _ offset: Int, _ length: Int) -> Int? {
        let start = header.startIndex + offset
        var i = start
        let end = start + length
        while i < end && header[i] == 32 { i += 1 }
        var value = 0, digits = 0
        while i < end, (48...55).contains(header[i]) {
            value = value * 8 + Int(header[i] - 48)  // at most 12 digits: no overflow
            digits += 1
            i += 1
        }
        guard digits > 0 else { return nil }
        while i < end {
            guard header[i] == 0 || header[i] == 32 else { return nil }
            i += 1
        }
        return value
    }

    /// Parses pax records `"<length> <key>=<value>\n"`; returns the `path` and `size` values.
    private static func parsePax(_ data: ArraySlice<UInt8>, headerAt at: Int) throws(CodecError) -> (path: String?, size: Int?) {
        func fail(_ m: String) -> CodecError { CodecError.input("Tar.read", "pax header at byte \(at): \(m)") }
        var path: String?, size: Int?
        var i = data.startIndex
        while i < data.endIndex {
            // Trailing NUL padding inside the declared size is tolerated.
            if data[i...].allSatisfy({ $0 == 0 }) { break }
            var length = 0, j = i
            while j < data.endIndex, (48...57).contains(data[j]), j - i < 8 {
                length = length * 10 + Int(data[j] - 48)
                j += 1
            }
            guard j > i, j < data.endIndex, data[j] == 32, length > j - i + 1, length <= data.endIndex - i,
                  data[i + length - 1] == 10 else {
                throw fail("malformed record at offset \(i - data.startIndex)")
            }
            let record = data[(j + 1)..<(i + length - 1)]
            guard let eq = record.firstIndex(of: UInt8(ascii: "=")),
                  let key = String(validating: record[record.startIndex..<eq], as: UTF8.self),
                  let value = String(validating: record[(eq + 1)...], as: UTF8.self) else {
                throw fail("malformed record at offset \(i - data.startIndex)")
            }
            switch key {
            case "path":
                path = value.isEmpty ? nil : value
            case "size":
                guard !value.isEmpty, value.utf8.count <= 18, value.utf8.allSatisfy({ (48...57).contains($0) }),
                      let n = Int(value) else {
                    throw fail("size '\(value)' is not a decimal number")
                }
                size = n
            default:
                break  // times, owners, charset, vendor records: not needed to read the data
            }
            i += length
        }
        return (path, size)
    }
}
