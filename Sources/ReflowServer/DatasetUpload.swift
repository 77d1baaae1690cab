import ReflowStore
import Foundation
import Synchronization
import Glibc

/// One upload in progress: the body goes to a temporary file in the store's `.staging/`
/// directory as it arrives (never whole in memory), bounded by ``limit`` and by the data
/// directory's free-space floor. Made by ``DatasetStore/beginUpload(name:file:replace:contentLength:)``;
/// ends with ``DatasetStore/commit(_:)`` or ``abort()`` (also run when the last reference goes,
/// so an upload nobody finished never leaks its file or its claim on the name).
public final class DatasetUpload: Sendable {
    /// The dataset being created or changed.
    public let name: String
    /// The file uploaded into the dataset, or nil when the body is a tar of the whole dataset.
    public let file: String?
    /// Whether an existing dataset (tar) or file (single file) may be replaced.
    public let replace: Bool
    /// Most body bytes accepted (413 beyond).
    public let limit: Int
    let tempPath: String
    let store: DatasetStore

    struct State {
        var fd: Int32
        var written = 0
        /// Bytes since free space was last checked.
        var sinceCheck = 0
        /// Committed or aborted: nothing more may happen.
        var finished = false
    }
    let state: Mutex<State>

    init(store: DatasetStore, name: String, file: String?, replace: Bool, limit: Int, tempPath: String, fd: Int32) {
        self.store = store
        self.name = name
        self.file = file
        self.replace = replace
        self.limit = limit
        self.tempPath = tempPath
        state = Mutex(State(fd: fd))
    }

    deinit { abort() }

    /// Body bytes received so far.
    public var bytesWritten: Int { state.withLock { $0.written } }

    /// Free space is checked again after this many bytes.
    static let spaceCheckInterval = 8 << 20

    /// Appends the next piece of the body to the temporary file.
    /// - Throws: `tooLarge` past ``limit``, `insufficientStorage` when free space falls below the
    ///   floor or the disk fills up, `storage` for other write errors. The caller then aborts.
    public func write(_ bytes: UnsafeRawBufferPointer) throws(DatasetError) {
        try state.withLock { st throws(DatasetError) in
            guard !st.finished else { throw DatasetError(.storage, "the upload was already finished") }
            guard bytes.count <= limit - st.written else {
                throw DatasetError(.tooLarge, "the body is larger than \(limit) bytes (maxDatasetBytes is \(store.maxBytes))")
            }
            guard let base = bytes.baseAddress else { return }
            var offset = 0
            while offset < bytes.count {
                let n = Glibc.write(st.fd, base + offset, bytes.count - offset)
                if n < 0 {
                    let e = errno
                    if e == EINTR { continue }
                    if e == ENOSPC || e == EDQUOT { throw DatasetStore.outOfSpace }
                    throw DatasetError(.storage, "the upload could not be written (errno \(e))")
                }
                offset += n
            }
            st.written += bytes.count
            st.sinceCheck += bytes.count
            if st.sinceCheck >= Self.spaceCheckInterval {
                st.sinceCheck = 0
                if store.storage?.isBelowFloor == true { throw DatasetStore.outOfSpace }
            }
        }
    }

    /// Drops the upload: the temporary file is removed and the name released. Idempotent.
    public func abort() {
        guard let fd = finish() else { return }
        if fd >= 0 { close(fd) }
        unlink(tempPath)
        store.release(name)
    }

    /// Marks the upload finished; returns its descriptor the first time, nil after.
    func finish() -> Int32? {
        state.withLock { st -> Int32? in
            guard !st.finished else { return nil }
            st.finished = true
            let fd = st.fd
            st.fd = -1
            return fd
        }
    }
}

extension DatasetStore {
    static let outOfSpace = DatasetError(.insufficientStorage, "the server's disk is too full to store the dataset; retry once space has been freed")

    /// Most entries (files and directories) in one uploaded archive.
    static let maxArchiveEntries = 1 << 20

    /// Starts an upload into dataset `name`: checks everything that can be known before the
    /// body arrives (so a refused upload costs nothing), claims the name and opens the
    /// temporary file.
    /// - Parameters:
    ///   - file: the file to add or replace (`PUT /v1/datasets/{name}/files/{file}`), or nil
    ///     when the body is a tar of the whole dataset (`PUT /v1/datasets/{name}`).
    ///   - replace: allow replacing an existing dataset (tar) or an existing file (single file).
    ///   - contentLength: the body size when announced (nil: chunked), checked against the limit
    ///     and the free-space floor now.
    /// - Throws: `readOnly`, `invalidName`, `badRequest` (file name), `exists`, `inUse`,
    ///   `tooLarge`, `insufficientStorage`, `busy`, `storage`.
    public func beginUpload(name: String, file: String?, replace: Bool, contentLength: Int?) throws(DatasetError) -> DatasetUpload {
        try checkStoredName(name)
        if let file, !Self.isValidFileName(file) {
            throw DatasetError(.badRequest, field: "file", "'\(file.prefix(80))' is not a file name (it must match \(Self.fileNamePattern))")
        }
        if storage?.isBelowFloor == true { throw Self.outOfSpace }
        let dir = path(name)
        let exists = Self.isDirectory(dir)
        var limit = maxBytes
        if exists {
            if let file {
                if !replace && Self.isRegularFile(dir + "/" + file) {
                    throw DatasetError(.exists, "dataset '\(name)' already has a file '\(file)'; add ?replace=true to replace it")
                }
                // A dataset grown one file at a time stays within maxDatasetBytes too.
                var kept = knownBytes(name, directory: dir)
                var st = stat()
                if lstat(dir + "/" + file, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG { kept -= Int(st.st_size) }
                limit = maxBytes - kept
                guard limit > 0 else {
                    throw DatasetError(.tooLarge, "dataset '\(name)' already holds \(kept) bytes; maxDatasetBytes is \(maxBytes)")
                }
            } else if !replace {
                throw DatasetError(.exists, "dataset '\(name)' exists; add ?replace=true to replace it")
            }
            if isInUse(name) {
                throw DatasetError(.inUse, "dataset '\(name)' is used by a queued or running job; it cannot change until the job has finished")
            }
        }
        if let length = contentLength {
            guard length <= limit else {
                throw DatasetError(.tooLarge, "the body is \(length) bytes; the limit is \(limit) bytes (maxDatasetBytes is \(maxBytes))")
            }
            if let storage, storage.minFreeBytes > 0, let free = storage.freeBytes(), free - length < storage.minFreeBytes {
                throw Self.outOfSpace
            }
        }
        try claim(name)
        let temp = stagingDir + "/upload-" + Self.randomName()
        var fd: Int32
        repeat { fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644) } while fd < 0 && errno == EINTR
        guard fd >= 0 else {
            let e = errno
            release(name)
            if e == ENOSPC || e == EDQUOT { throw Self.outOfSpace }
            throw DatasetError(.storage, "the upload could not be stored (errno \(e))")
        }
        return DatasetUpload(store: self, name: name, file: file, replace: replace, limit: limit, tempPath: temp, fd: fd)
    }

    /// Finishes an upload whose body has been received: makes the new version of the dataset in
    /// `.staging/` (extracting the tar, or linking the current files plus the uploaded one),
    /// validates it, and moves it into place. On any failure nothing changes and nothing is left.
    /// Slow (fsync, extraction, validation): call it off the connection queues.
    /// - Returns: the dataset as listed, and whether it was created (false: replaced or changed).
    /// - Throws: `invalid` (empty body, not a tar, refused by the validator), `tooLarge`,
    ///   `inUse`, `insufficientStorage`, `storage`.
    public func commit(_ upload: DatasetUpload) throws(DatasetError) -> (info: DatasetInfo, created: Bool) {
        guard let fd = upload.finish() else { throw DatasetError(.storage, "the upload was already finished") }
        let name = upload.name
        let staged = stagingDir + "/" + Self.randomName() + ".d"
        defer {
            unlink(upload.tempPath)
            try? FileManager.default.removeItem(atPath: staged)
            release(name)
        }
        let written = upload.state.withLock { $0.written }
        let synced = fsync(fd) == 0
        let syncErrno = errno
        close(fd)
        guard written > 0 else {
            throw DatasetError(.invalid, upload.file == nil
                ? "the body is empty; send the dataset as a tar archive: curl -T dataset.tar"
                : "the body is empty; send the file: curl -T \(upload.file ?? "file")")
        }
        guard synced else {
            if syncErrno == ENOSPC || syncErrno == EDQUOT { throw Self.outOfSpace }
            throw DatasetError(.storage, "the upload could not be stored (fsync errno \(syncErrno))")
        }
        guard mkdir(staged, 0o755) == 0 else { throw Self.fileError("create the staging directory", errno) }
        let dir = path(name)
        if let file = upload.file {
            if Self.isDirectory(dir) { try Self.linkTree(from: dir, to: staged, skipping: file) }
            guard rename(upload.tempPath, staged + "/" + file) == 0 else { throw Self.fileError("move the upload", errno) }
        } else {
            // Extraction needs about the archive's size again.
            if let storage, storage.minFreeBytes > 0, let free = storage.freeBytes(), free - written < storage.minFreeBytes {
                throw Self.outOfSpace
            }
            _ = try TarArchive.extract(path: upload.tempPath, into: staged, maxEntries: Self.maxArchiveEntries)
            unlink(upload.tempPath)
        }
        do { try AtomicFile.syncDirectory(staged) } catch { throw Self.fileError("sync the staging directory", (error as? StoreError)?.errno ?? EIO) }
        let summary: DatasetSummary
        do { summary = try validator(URL(fileURLWithPath: staged, isDirectory: true)) } catch {
            throw DatasetError(.invalid, Self.redact("\(error)", staged))
        }
        let size = Self.bytes(staged)
        guard size <= maxBytes else {
            throw DatasetError(.tooLarge, "the dataset would hold \(size) bytes; maxDatasetBytes is \(maxBytes)")
        }
        // Into place. The name is claimed, so nothing else changes it meanwhile.
        let existed = Self.isDirectory(dir)
        if existed {
            // Checked at the start too; another upload may have created it since.
            if upload.file == nil && !upload.replace {
                throw DatasetError(.exists, "dataset '\(name)' exists; add ?replace=true to replace it")
            }
            if let file = upload.file, !upload.replace, Self.isRegularFile(dir + "/" + file) {
                throw DatasetError(.exists, "dataset '\(name)' already has a file '\(file)'; add ?replace=true to replace it")
            }
            if isInUse(name) {
                throw DatasetError(.inUse, "dataset '\(name)' is used by a queued or running job; it cannot change until the job has finished")
            }
            let old = replacedDir + "/" + name
            try? FileManager.default.removeItem(atPath: old)
            guard rename(dir, old) == 0 else { throw Self.fileError("move the old version aside", errno) }
            guard rename(staged, dir) == 0 else {
                let e = errno
                _ = rename(old, dir)
                throw Self.fileError("move the new version into place", e)
            }
            try? AtomicFile.syncDirectory(root)
            try? FileManager.default.removeItem(atPath: old)
        } else {
            guard rename(staged, dir) == 0 else { throw Self.fileError("move the dataset into place", errno) }
            try? AtomicFile.syncDirectory(root)
        }
        let described = Described(stamp: Self.stamp(dir), summary: summary, error: nil, bytes: size)
        remember(name, described, persist: true)
        let info = DatasetInfo(name: name, source: .uploaded, summary: summary, bytes: size, url: "/v1/datasets/" + name)
        return (info, !existed)
    }

    /// A file-system failure while building a dataset: 507 for no space, 503 otherwise.
    static func fileError(_ what: String, _ code: Int32) -> DatasetError {
        if code == ENOSPC || code == EDQUOT { return outOfSpace }
        return DatasetError(.storage, "could not \(what) (errno \(code))")
    }

    /// Recreates the tree at `source` in `target` with hard links (files are never changed in
    /// place, so versions can share them), leaving out the top-level file `skipping`.
    static func linkTree(from source: String, to target: String, skipping: String?) throws(DatasetError) {
        let names: [String]
        do { names = try FileManager.default.contentsOfDirectory(atPath: source) } catch {
            throw DatasetError(.storage, "could not read the current version of the dataset")
        }
        for n in names where n != skipping {
            let from = source + "/" + n, to = target + "/" + n
            var st = stat()
            guard lstat(from, &st) == 0 else { continue }
            switch st.st_mode & S_IFMT {
            case S_IFDIR:
                guard mkdir(to, 0o755) == 0 else { throw fileError("copy the dataset's directories", errno) }
                try linkTree(from: from, to: to, skipping: nil)
                do { try AtomicFile.syncDirectory(to) } catch { throw fileError("sync a directory", EIO) }
            case S_IFREG:
                guard link(from, to) == 0 else { throw fileError("link the dataset's files", errno) }
            default:
                continue
            }
        }
    }
}
