import Glibc

/// Extracts an uploaded dataset archive: an uncompressed tar (ustar, pax or GNU, as `tar -cf`
/// and Python's `tarfile` write them).
///
/// Only regular files and directories are extracted. The archive is refused (``DatasetError``
/// `invalid`, naming the entry) for links, devices and FIFOs, absolute paths, `..` components,
/// control characters in names, damaged headers and truncated data. Hidden entries (a component
/// starting with `.`, such as macOS `._x` files and `.DS_Store`) are skipped. Every file and
/// directory is fsynced. Nothing is ever written outside the target directory: paths are built
/// from checked components under it, files are opened with `O_NOFOLLOW`, and no symbolic link is
/// ever created.
enum TarArchive {
    static let block = 512
    /// Longest path kept (bytes) and most components.
    static let maxPath = 4096, maxDepth = 32
    /// Largest pax extended header or GNU long name read into memory.
    static let maxMetadata = 1 << 20

    /// Extracts the tar at `path` into the existing directory `target`; returns the number of
    /// files written.
    static func extract(path: String, into target: String, maxEntries: Int) throws(DatasetError) -> Int {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw DatasetStore.fileError("read the upload", errno) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw DatasetStore.fileError("read the upload", errno) }
        let reader = Reader(fd: fd, size: Int(st.st_size))
        var header = [UInt8](repeating: 0, count: block)
        var files = 0, entries = 0
        var directories: Set<String> = []
        var longName: String?
        var paxPath: String?
        var paxSize: Int?
        var first = true
        while true {
            let at = reader.offset
            guard try reader.read(into: &header, count: block) == block else {
                if first { throw notTar() }
                throw invalid("the archive ends without its end-of-archive blocks (byte \(at))")
            }
            if header.allSatisfy({ $0 == 0 }) {
                if first { throw invalid("the archive is empty") }
                break  // end of archive (a second zero block may follow; nothing after it matters)
            }
            guard checksumMatches(header) else {
                if first { throw notTar() }
                throw invalid("the archive header at byte \(at) is damaged (bad checksum)")
            }
            first = false
            let type = header[156]
            guard let headerSize = octal(header, 124, 12) else {
                throw invalid("the archive header at byte \(at) has an unreadable size")
            }
            let size = type == UInt8(ascii: "x") || type == UInt8(ascii: "L") ? headerSize : (paxSize ?? headerSize)
            guard size <= reader.size - reader.offset else {
                throw invalid("the archive is truncated: the entry at byte \(at) needs \(size) bytes, \(reader.size - reader.offset) remain")
            }
            let padding = (block - size % block) % block
            switch type {
            case UInt8(ascii: "x"):  // pax extended header for the next entry
                let records = try reader.metadata(size, padding, at)
                let pax = parsePax(records)
                paxPath = pax.path
                paxSize = pax.size
                continue
            case UInt8(ascii: "g"):  // pax global header: nothing in it concerns extraction
                try reader.skip(size + padding)
                continue
            case UInt8(ascii: "L"):  // GNU long name for the next entry
                let bytes = try reader.metadata(size, padding, at)
                longName = String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
                continue
            case UInt8(ascii: "K"):  // GNU long link name: only links use it, and they are refused
                try reader.skip(size + padding)
                continue
            default:
                break
            }
            let rawName = paxPath ?? longName ?? headerName(header)
            (paxPath, longName, paxSize) = (nil, nil, nil)
            let regular = type == 0 || type == UInt8(ascii: "0") || type == UInt8(ascii: "7")
            let directory = type == UInt8(ascii: "5")
            guard regular || directory else {
                throw invalid("archive entry '\(printable(rawName))' is \(kind(type)); only regular files and directories are allowed")
            }
            guard let components = try components(rawName) else {
                try reader.skip(size + padding)  // hidden or the archive's own root
                continue
            }
            entries += 1
            guard entries <= maxEntries else { throw invalid("the archive has more than \(maxEntries) entries") }
            // Parent directories, made as needed (an archive need not list them).
            var dir = target
            for c in directory ? components : components.dropLast() {
                dir += "/" + c
                if directories.contains(dir) { continue }
                if mkdir(dir, 0o755) != 0 {
                    let e = errno
                    var ds = stat()
                    guard e == EEXIST, lstat(dir, &ds) == 0, (ds.st_mode & S_IFMT) == S_IFDIR else {
                        if e == EEXIST { throw invalid("archive entry '\(printable(rawName))' needs a directory where the archive has a file") }
                        throw DatasetStore.fileError("create a directory", e)
                    }
                }
                directories.insert(dir)
            }
            if directory {
                try reader.skip(size + padding)
                continue
            }
            let file = target + "/" + components.joined(separator: "/")
            let out = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0o644)
            guard out >= 0 else {
                let e = errno
                if e == EISDIR || e == ELOOP { throw invalid("archive entry '\(printable(rawName))' is a file where the archive has a directory") }
                throw DatasetStore.fileError("create a file", e)
            }
            do throws(DatasetError) {
                try reader.copy(size, to: out, name: rawName)
                guard fsync(out) == 0 else { throw DatasetStore.fileError("sync a file", errno) }
            } catch {
                close(out)
                throw error
            }
            close(out)
            try reader.skip(padding)
            files += 1
        }
        guard files > 0 else { throw invalid("the archive holds no files") }
        for d in directories.sorted(by: >) {
            let dfd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            if dfd >= 0 { defer { close(dfd) }; guard fsync(dfd) == 0 else { throw DatasetStore.fileError("sync a directory", errno) } }
        }
        return files
    }

    // MARK: headers

    static func invalid(_ message: String) -> DatasetError { DatasetError(.invalid, message) }

    static func notTar() -> DatasetError {
        invalid("the body is not a tar archive; send the whole dataset as an uncompressed .tar (tar -C dir -cf dataset.tar .), or one file with PUT /v1/datasets/{name}/files/{file}")
    }

    /// The header's checksum field equals the sum of its bytes with that field read as spaces
    /// (unsigned, as POSIX says; some old writers summed signed bytes, also accepted).
    static func checksumMatches(_ h: [UInt8]) -> Bool {
        guard let stored = octal(h, 148, 8) else { return false }
        var unsigned = 0, signed = 0
        for (i, b) in h.enumerated() {
            let v = (148..<156).contains(i) ? 0x20 : b
            unsigned += Int(v)
            signed += Int(Int8(bitPattern: v))
        }
        return stored == unsigned || stored == signed
    }

    /// An octal field (leading spaces, digits, then NUL or space). Nil for anything else,
    /// including GNU's base-256 sizes (only entries over 8 GiB need them).
    static func octal(_ h: [UInt8], _ offset: Int, _ length: Int) -> Int? {
        var i = offset, value = 0, digits = 0
        let end = offset + length
        while i < end && h[i] == 0x20 { i += 1 }
        while i < end, h[i] >= 0x30, h[i] <= 0x37 {
            guard value < 1 << 58 else { return nil }
            value = value * 8 + Int(h[i] - 0x30)
            digits += 1
            i += 1
        }
        guard digits > 0, i == end || h[i] == 0 || h[i] == 0x20 else { return nil }
        return value
    }

    /// `prefix/name` of a ustar header (`name` alone for old-style headers).
    static func headerName(_ h: [UInt8]) -> String {
        func field(_ offset: Int, _ length: Int) -> String {
            String(decoding: h[offset..<(offset + length)].prefix { $0 != 0 }, as: UTF8.self)
        }
        let name = field(0, 100)
        let ustar = h[257..<262].elementsEqual("ustar".utf8)
        let prefix = ustar ? field(345, 155) : ""
        return prefix.isEmpty ? name : prefix + "/" + name
    }

    /// `path` and `size` from pax records (`"<length> <key>=<value>\n"`); others are ignored.
    static func parsePax(_ bytes: [UInt8]) -> (path: String?, size: Int?) {
        var path: String?, size: Int?
        var i = 0
        while i < bytes.count {
            guard let space = bytes[i...].firstIndex(of: 0x20),
                  let length = Int(String(decoding: bytes[i..<space], as: UTF8.self)), length > 0,
                  length <= bytes.count - i else { break }
            let record = bytes[(space + 1)..<(i + length)]
            if let eq = record.firstIndex(of: UInt8(ascii: "=")) {
                let key = String(decoding: record[record.startIndex..<eq], as: UTF8.self)
                var value = record[(eq + 1)...]
                if value.last == 0x0A { value = value.dropLast() }
                if key == "path" { path = String(decoding: value, as: UTF8.self) }
                if key == "size" { size = Int(String(decoding: value, as: UTF8.self)) }
            }
            i += length
        }
        return (path, size)
    }

    /// The checked components of an entry's path, or nil for an entry to skip (hidden, or the
    /// archive's root `./`).
    static func components(_ raw: String) throws(DatasetError) -> [String]? {
        guard raw.utf8.count <= maxPath else { throw invalid("archive entry '\(printable(raw))…' has a path longer than \(maxPath) bytes") }
        if raw.utf8.contains(where: { $0 < 0x20 || $0 == 0x7F || $0 == UInt8(ascii: "\\") }) {
            throw invalid("archive entry '\(printable(raw))' has a control character or backslash in its name")
        }
        if raw.hasPrefix("/") { throw invalid("archive entry '\(printable(raw))' has an absolute path") }
        let parts = raw.split(separator: "/").map(String.init).filter { $0 != "." }
        if parts.contains("..") { throw invalid("archive entry '\(printable(raw))' has a '..' component") }
        guard !parts.isEmpty else { return nil }
        guard parts.count <= maxDepth else { throw invalid("archive entry '\(printable(raw))' is nested deeper than \(maxDepth) levels") }
        if parts.contains(where: { $0.hasPrefix(".") }) { return nil }
        if parts.contains(where: { $0.utf8.count > 255 }) { throw invalid("archive entry '\(printable(raw))' has a name component longer than 255 bytes") }
        return parts
    }

    static func kind(_ type: UInt8) -> String {
        switch type {
        case UInt8(ascii: "1"): "a hard link"
        case UInt8(ascii: "2"): "a symbolic link"
        case UInt8(ascii: "3"), UInt8(ascii: "4"): "a device"
        case UInt8(ascii: "6"): "a FIFO"
        default: "of unsupported type '\(type >= 0x20 && type < 0x7F ? String(UnicodeScalar(type)) : "\\(type)")'"
        }
    }

    /// A name for a message: at most 200 characters, control characters dropped.
    static func printable(_ s: String) -> String { String(String(s.unicodeScalars.filter { $0.value >= 0x20 && $0.value != 0x7F }).prefix(200)) }

    // MARK: reading

    /// Sequential reads of the archive file, with the offset for messages.
    final class Reader {
        let fd: Int32
        let size: Int
        var offset = 0
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 256 << 10, alignment: 16)

        init(fd: Int32, size: Int) {
            self.fd = fd
            self.size = size
        }

        deinit { buffer.deallocate() }

        /// Reads up to `count` bytes to `out`; returns how many (fewer only at the end).
        func read(into out: UnsafeMutableRawPointer, count: Int) throws(DatasetError) -> Int {
            var got = 0
            while got < count {
                let n = Glibc.read(fd, out + got, count - got)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw DatasetStore.fileError("read the upload", errno)
                }
                if n == 0 { break }
                got += n
            }
            offset += got
            return got
        }

        func read(into out: inout [UInt8], count: Int) throws(DatasetError) -> Int {
            let n = try read(into: buffer.baseAddress!, count: min(count, out.count, buffer.count))
            out.withUnsafeMutableBytes { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: buffer[0..<n])) }
            return n
        }

        func skip(_ count: Int) throws(DatasetError) {
            guard count > 0 else { return }
            guard count <= size - offset else { throw TarArchive.invalid("the archive is truncated at byte \(size)") }
            guard lseek(fd, off_t(count), SEEK_CUR) >= 0 else { throw DatasetStore.fileError("read the upload", errno) }
            offset += count
        }

        /// Reads a metadata entry's data (pax records, a long name) and its padding.
        func metadata(_ size: Int, _ padding: Int, _ at: Int) throws(DatasetError) -> [UInt8] {
            guard size <= TarArchive.maxMetadata else {
                throw TarArchive.invalid("the archive's metadata entry at byte \(at) is larger than \(TarArchive.maxMetadata) bytes")
            }
            var out = [UInt8]()
            out.reserveCapacity(size)
            while out.count < size {
                let n = try read(into: buffer.baseAddress!, count: min(size - out.count, buffer.count))
                guard n > 0 else { throw TarArchive.invalid("the archive is truncated at byte \(offset)") }
                out.append(contentsOf: UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
            }
            try skip(padding)
            return out
        }

        /// Copies `count` bytes to the descriptor `out`.
        func copy(_ count: Int, to out: Int32, name: String) throws(DatasetError) {
            var left = count
            while left > 0 {
                let want = min(left, buffer.count)
                let n = try read(into: buffer.baseAddress!, count: want)
                guard n == want else { throw TarArchive.invalid("the archive ends inside entry '\(TarArchive.printable(name))'") }
                var done = 0
                while done < n {
                    let w = Glibc.write(out, buffer.baseAddress! + done, n - done)
                    if w < 0 {
                        if errno == EINTR { continue }
                        throw DatasetStore.fileError("write a file", errno)
                    }
                    done += w
                }
                left -= n
            }
        }
    }
}
