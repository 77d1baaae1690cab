public import Foundation
import Glibc
import ReflowCodec

/// Loads a folder of PNG files (on disk, or packed in a tar archive) as an ``ImageSet`` of 8-bit
/// images.
///
/// **Layout.** Either all PNGs lie directly in the folder (an unlabelled set), or the folder holds
/// one level of class sub-folders, each holding PNGs (a labelled set): class names are the
/// sub-folder names sorted by their UTF-8 bytes, and a label is the index of its class name.
/// Mixing the two, deeper nesting, and an empty class folder are errors. Hidden entries (names
/// starting with `.`, including macOS `._` files and whole hidden folders) are ignored; any other
/// file whose name does not end in `.png` (any case) is refused, by name.
///
/// **Order.** Images are ordered by label, then by file name (UTF-8 byte order); an unlabelled
/// set by file name. The result is the same on every machine.
///
/// **Pixels.** PNGs must be 8-bit gray, gray + alpha, RGB or RGBA (see ``PNG``'s decoder) and all
/// the same width and height. The set is RGB (3 channels) when any image has color, gray
/// replicated into the three channels of the gray ones; otherwise it is gray (1 channel). Alpha
/// is dropped (not composited), as PIL's `convert("RGB")` does.
///
/// **Limits.** The ``ImageLimits`` are checked before any pixel is decoded: the file count first,
/// then every PNG's `IHDR` (width and height against `maxSide`; files are read only up to their
/// header), then the whole set's size; only then is the set allocated and are the PNGs decoded
/// one at a time.
///
/// Errors name the file by its path inside the folder (`cats/003.png`), never by a server path.
public enum ImageFolder {
    /// Default cap on a tar archive's size (after gzip decompression): 2 GiB.
    public static let defaultMaxArchiveBytes = 1 << 31

    /// Loads the PNGs of a directory (see ``ImageFolder`` for the layout and the rules).
    /// Symbolic links are followed.
    public static func load(directory: URL, limits: ImageLimits = .default) throws(ImageDataError) -> ImageSet {
        let name = directory.lastPathComponent
        let rootPath = directory.path
        var files: [String] = [], dirs: [String] = []
        for entry in try list(rootPath, shown: name) where !entry.hasPrefix(".") {
            switch try kind(rootPath + "/" + entry, shown: entry) {
            case .file:
                files.append(entry)
            case .directory:
                dirs.append(entry)
                for inner in try list(rootPath + "/" + entry, shown: entry) where !inner.hasPrefix(".") {
                    let rel = entry + "/" + inner
                    switch try kind(rootPath + "/" + rel, shown: rel) {
                    case .file: files.append(rel)
                    case .directory: dirs.append(rel)
                    }
                }
            }
        }
        let layout = try organize(files: files, directories: dirs, name: name, archiveHint: false)
        return try assemble(layout, name: name, limits: limits, header: { (rel) throws(ImageDataError) in
            try readPrefix(rootPath + "/" + rel, count: 33, shown: rel)
        }, contents: { (rel, maxBytes) throws(ImageDataError) in
            do throws(PointFileError) {
                return try PointFiles.readFile(path: rootPath + "/" + rel, maxBytes: maxBytes)[...]
            } catch {
                throw ImageDataError(file: rel, error.message)
            }
        })
    }

    /// Loads the PNGs of a tar archive file (plain or gzip-compressed, detected from its first
    /// bytes). See ``load(tarBytes:name:limits:root:maxArchiveBytes:)`` for `root`.
    public static func load(tar: URL, limits: ImageLimits = .default, root: String? = nil,
                            maxArchiveBytes: Int = defaultMaxArchiveBytes) throws(ImageDataError) -> ImageSet {
        let name = tar.lastPathComponent
        let bytes: [UInt8]
        do {
            bytes = try PointFiles.readFile(path: tar.path, maxBytes: maxArchiveBytes)
        } catch {
            throw ImageDataError(file: name, error.message)
        }
        return try load(tarBytes: bytes, name: name, limits: limits, root: root, maxArchiveBytes: maxArchiveBytes)
    }

    /// Loads the PNGs of a tar archive in memory (plain or gzip-compressed).
    ///
    /// - Parameters:
    ///   - name: The archive's name, for errors.
    ///   - root: The folder inside the archive that holds the PNGs or the class folders:
    ///     `""` for the archive's top level, `"a/b"` for that folder (entries elsewhere are
    ///     ignored). `nil` (the default) is the top level, except that when every non-hidden
    ///     entry lies inside one top-level folder (`tar -cf data.tar data/`), that folder is the
    ///     root.
    ///   - maxArchiveBytes: Largest archive accepted after gzip decompression.
    public static func load(tarBytes: [UInt8], name: String = "archive.tar", limits: ImageLimits = .default,
                            root: String? = nil, maxArchiveBytes: Int = defaultMaxArchiveBytes) throws(ImageDataError) -> ImageSet {
        var archive = tarBytes
        if archive.starts(with: [0x1f, 0x8b]) {
            do {
                archive = try Gzip.decompress(archive, maxOutputBytes: maxArchiveBytes)
            } catch {
                // Gzip.decompress throws CodecError only (typed throws).
                throw ImageDataError(file: name, "gzip: \(error.detail)")
            }
        }
        guard archive.count <= maxArchiveBytes else {
            throw ImageDataError(file: name, "archive is \(archive.count) bytes, more than the limit of \(maxArchiveBytes)")
        }
        let tarLimits = Tar.Limits(maxEntries: saturating(limits.maxImages, times: 2, plus: 1024),
                                   maxEntryBytes: maxPNGBytes(side: limits.maxSide, channels: 4))
        let entries: [Tar.Entry]
        do {
            entries = try Tar.entries(archive, limits: tarLimits)
        } catch {
            throw ImageDataError(file: name, error.detail)
        }

        // Paths relative to the root; hidden entries (any component starting with ".") dropped.
        let visible = entries.filter { !$0.path.split(separator: "/").contains { $0.hasPrefix(".") } }
        var prefix: String
        if let root {
            let parts = root.split(separator: "/").filter { $0 != "." }
            guard !parts.contains("..") else { throw ImageDataError(file: name, "root '\(root)' has a '..' component") }
            prefix = parts.joined(separator: "/")
        } else {
            prefix = ""
            let tops = Set(visible.map { $0.path.split(separator: "/").first.map(String.init) ?? "" })
            if tops.count == 1, let top = tops.first,
               visible.allSatisfy({ $0.path != top || $0.kind == .directory }), visible.contains(where: { $0.path != top }) {
                prefix = top
            }
        }
        var byPath: [String: ArraySlice<UInt8>] = [:]
        var files: [String] = [], dirs: [String] = []
        for e in visible {
            let rel: String
            if prefix.isEmpty {
                rel = e.path
            } else if e.path.hasPrefix(prefix + "/") {
                rel = String(e.path.dropFirst(prefix.count + 1))
            } else {
                continue
            }
            // Folders implied by file paths count as folders, as on disk.
            let parts = rel.split(separator: "/")
            for k in 1..<max(1, parts.count) { dirs.append(parts[0..<k].joined(separator: "/")) }
            switch e.kind {
            case .file:
                files.append(rel)
                byPath[rel] = e.bytes
            case .directory:
                dirs.append(rel)
            }
        }
        if !prefix.isEmpty && files.isEmpty && dirs.isEmpty {
            throw ImageDataError(file: name, "holds nothing under '\(prefix)'")
        }
        let shownRoot = prefix.isEmpty ? name : name + ":" + prefix
        let display = { (rel: String) in prefix.isEmpty ? rel : prefix + "/" + rel }
        let layout = try organize(files: files, directories: Array(Set(dirs)), name: shownRoot, archiveHint: root == nil,
                                  display: display)
        return try assemble(layout, name: shownRoot, limits: limits, header: { (rel) throws(ImageDataError) in
            let b = byPath[rel] ?? []
            return b.prefix(33)
        }, contents: { (rel, _) throws(ImageDataError) in
            byPath[rel] ?? []
        }, display: display)
    }

    // MARK: Layout

    struct Layout {
        /// Relative paths of the PNGs in load order, with their labels (nil when unlabelled).
        var files: [(path: String, label: Int32?)]
        var classNames: [String]?
    }

    private static func bytewiseLess(_ a: String, _ b: String) -> Bool {
        a.utf8.lexicographicallyPrecedes(b.utf8)
    }

    private static func isPNGName(_ path: String) -> Bool {
        path.lowercased().hasSuffix(".png")
    }

    /// Applies the layout rules to relative paths (files and folders, hidden ones already removed).
    static func organize(files: [String], directories: [String], name: String, archiveHint: Bool,
                         display: (String) -> String = { $0 }) throws(ImageDataError) -> Layout {
        let hint = archiveHint ? " (for an archive of a deeper folder, pass that folder as the root)" : ""
        var rootFiles: [String] = []
        var classFiles: [String: [String]] = [:]
        for d in directories.sorted(by: bytewiseLess) {
            let parts = d.split(separator: "/")
            guard parts.count == 1 else {
                throw ImageDataError(file: display(d), "folder nested too deep: PNGs go directly in the folder or in one level "
                                     + "of class folders\(hint)")
            }
            if classFiles[d] == nil { classFiles[d] = [] }
        }
        for f in files.sorted(by: bytewiseLess) {
            let parts = f.split(separator: "/")
            guard parts.count <= 2 else {
                throw ImageDataError(file: display(f), "file nested too deep: PNGs go directly in the folder or in one level "
                                     + "of class folders\(hint)")
            }
            guard isPNGName(f) else {
                throw ImageDataError(file: display(f), "not a PNG file (only .png files are read; hidden files are ignored)")
            }
            if parts.count == 1 {
                rootFiles.append(f)
            } else {
                classFiles[String(parts[0]), default: []].append(f)
            }
        }
        if !rootFiles.isEmpty && !classFiles.isEmpty {
            throw ImageDataError(file: name, "mixes PNG files (\(rootFiles[0]), ...) with class folders "
                                 + "(\(classFiles.keys.sorted(by: bytewiseLess)[0])/, ...); use one or the other")
        }
        if !rootFiles.isEmpty {
            return Layout(files: rootFiles.map { ($0, nil) }, classNames: nil)
        }
        guard !classFiles.isEmpty else {
            throw ImageDataError(file: name, "holds no PNG files")
        }
        let classNames = classFiles.keys.sorted(by: bytewiseLess)
        var ordered: [(path: String, label: Int32?)] = []
        for (label, c) in classNames.enumerated() {
            let members = classFiles[c] ?? []
            guard !members.isEmpty else { throw ImageDataError(file: display(c), "class folder holds no PNG files") }
            ordered += members.map { ($0, Int32(label)) }  // already sorted by path
        }
        return Layout(files: ordered, classNames: classNames)
    }

    // MARK: Headers, limits, decoding

    /// Checks every header and the limits, then decodes every PNG into one NCHW byte array.
    static func assemble(_ layout: Layout, name: String, limits: ImageLimits,
                         header: (String) throws(ImageDataError) -> ArraySlice<UInt8>,
                         contents: (String, Int) throws(ImageDataError) -> ArraySlice<UInt8>,
                         display: (String) -> String = { $0 }) throws(ImageDataError) -> ImageSet {
        let count = layout.files.count
        guard count <= limits.maxImages else {
            throw ImageDataError(file: name, "\(count) images exceed the limit of \(limits.maxImages)")
        }
        // Pass 1: headers only.
        var first: (path: String, header: PNG.Header)?
        var anyColor = false
        for (path, _) in layout.files {
            let h: PNG.Header
            do {
                h = try PNG.readHeader(try header(path))
            } catch let e as ImageDataError {
                throw e
            } catch let e as CodecError {
                throw ImageDataError(file: display(path), e.detail)
            } catch {
                throw ImageDataError(file: display(path), "\(error)")
            }
            guard h.width <= limits.maxSide, h.height <= limits.maxSide else {
                throw ImageDataError(file: display(path), "image is \(h.width)x\(h.height) (width x height), over the limit "
                                     + "of \(limits.maxSide) pixels per side")
            }
            if let first {
                guard h.width == first.header.width, h.height == first.header.height else {
                    throw ImageDataError(file: display(path), "image is \(h.width)x\(h.height) (width x height), but "
                                         + "'\(display(first.path))' is \(first.header.width)x\(first.header.height); "
                                         + "all images must have the same size")
                }
            } else {
                first = (path, h)
            }
            anyColor = anyColor || h.colorType == 2 || h.colorType == 6
        }
        guard let first else { throw ImageDataError(file: name, "holds no PNG files") }
        let (width, height) = (first.header.width, first.header.height)
        let channels = anyColor ? 3 : 1
        try limits.check(count: count, channels: channels, height: height, width: width, bytesPerValue: 1, file: name)

        // Pass 2: decode into the set, one file at a time.
        let plane = height * width
        let per = channels * plane
        var pixels = [UInt8](repeating: 0, count: count * per)
        let decodeLimits = PNG.DecodeLimits(maxSide: limits.maxSide, maxPixels: plane)
        for (n, item) in layout.files.enumerated() {
            let path = item.path
            let image: PNG.Image
            do {
                let bytes = try contents(path, maxPNGBytes(side: max(width, height), channels: 4))
                image = try PNG.decode(bytes, limits: decodeLimits)
            } catch let e as ImageDataError {
                throw e
            } catch let e as CodecError {
                throw ImageDataError(file: display(path), e.detail)
            } catch {
                throw ImageDataError(file: display(path), "\(error)")
            }
            guard image.width == width, image.height == height else {
                throw ImageDataError(file: display(path), "image is \(image.width)x\(image.height) (width x height) "
                                     + "but its header said \(width)x\(height) (the file changed while loading?)")
            }
            let cs = image.channels
            image.pixels.withUnsafeBufferPointer { src in
                pixels.withUnsafeMutableBufferPointer { dst in
                    let out = n * per
                    for i in 0..<plane {
                        let s = i * cs
                        if channels == 1 || cs <= 2 {
                            for c in 0..<channels { dst[out + c * plane + i] = src[s] }
                        } else {
                            for c in 0..<3 { dst[out + c * plane + i] = src[s + c] }
                        }
                    }
                }
            }
        }
        let labels: [Int32]? = layout.classNames == nil ? nil : layout.files.map { $0.label ?? 0 }
        return try ImageSet(channels: channels, height: height, width: width, pixels: .bytes(pixels),
                            labels: labels, classNames: layout.classNames)
    }

    /// A generous cap on the file size of a PNG whose sides are at most `side`: twice the
    /// scanline bytes (stored deflate blocks add ~0.03 %) plus 16 MiB of ancillary chunks.
    static func maxPNGBytes(side: Int, channels: Int) -> Int {
        let row = saturating(side, times: channels, plus: 1)
        let raw = saturating(row, times: side, plus: 0)
        return saturating(raw, times: 2, plus: 16 << 20)
    }

    private static func saturating(_ a: Int, times b: Int, plus c: Int) -> Int {
        let (m, o1) = a.multipliedReportingOverflow(by: b)
        let (s, o2) = m.addingReportingOverflow(c)
        return o1 || o2 ? Int.max / 4 : s
    }

    // MARK: Files

    private enum EntryKind { case file, directory }

    private static func errnoText() -> String {
        let e = errno
        return "\(String(cString: strerror(e))) (errno \(e))"
    }

    /// Names in a directory, without `.` and `..`.
    private static func list(_ path: String, shown: String) throws(ImageDataError) -> [String] {
        guard let dir = opendir(path) else { throw ImageDataError(file: shown, "cannot list the folder: \(errnoText())") }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: Int(NAME_MAX) + 1) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// File or folder (following symbolic links); anything else is an error.
    private static func kind(_ path: String, shown: String) throws(ImageDataError) -> EntryKind {
        var st = stat()
        guard stat(path, &st) == 0 else { throw ImageDataError(file: shown, "cannot stat: \(errnoText())") }
        switch st.st_mode & S_IFMT {
        case S_IFREG: return .file
        case S_IFDIR: return .directory
        default: throw ImageDataError(file: shown, "not a regular file or folder")
        }
    }

    /// The first `count` bytes of a regular file (fewer if it is shorter).
    private static func readPrefix(_ path: String, count: Int, shown: String) throws(ImageDataError) -> ArraySlice<UInt8> {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { throw ImageDataError(file: shown, "cannot open: \(errnoText())") }
        defer { _ = close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else {
            throw ImageDataError(file: shown, "not a regular file")
        }
        var out = [UInt8](repeating: 0, count: count)
        var total = 0
        while total < count {
            let n = out.withUnsafeMutableBytes { read(fd, $0.baseAddress! + total, count - total) }
            if n < 0 {
                if errno == EINTR { continue }
                throw ImageDataError(file: shown, "read failed: \(errnoText())")
            }
            if n == 0 { break }
            total += n
        }
        return out[0..<total]
    }
}
