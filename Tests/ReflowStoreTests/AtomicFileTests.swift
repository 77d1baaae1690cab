import Testing
import ReflowStore
import Glibc

@Suite struct AtomicFileTests {
    @Test func writesContentAndLeavesNoTempFiles() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let path = dir.file("out.bin")
        var rng = XorShift(seed: 5)
        let first = rng.bytes(100_000)
        try AtomicFile.write(first, to: path)
        #expect(readFileBytes(path) == first)
        #expect(dir.entries() == ["out.bin"])

        // Replacing an existing file.
        let second = Array("replaced".utf8)
        try AtomicFile.write(second, to: path)
        #expect(readFileBytes(path) == second)
        #expect(try AtomicFile.read(path: path, maxBytes: 100) == second)
        #expect(dir.entries() == ["out.bin"])

        // Empty content.
        try AtomicFile.write([], to: path)
        #expect(readFileBytes(path) == [])
        #expect(dir.entries() == ["out.bin"])
    }

    @Test func missingDirectoryThrowsWithCallAndPath() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let path = dir.file("no-such-dir/file.bin")
        let error = #expect(throws: StoreError.self) { try AtomicFile.write([1, 2, 3], to: path) }
        #expect(error?.call == "open")
        #expect(error?.errno == ENOENT)
        #expect(error?.path.contains(dir.file("no-such-dir")) == true)
        #expect(error?.description.contains("open") == true)
        #expect(error?.description.contains("no-such-dir") == true)
        #expect(dir.entries().isEmpty)
    }

    @Test func renameFailureRemovesTempFile() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let target = dir.file("occupied")
        try #require(mkdir(target, 0o755) == 0)  // a directory cannot be replaced by a file
        let error = #expect(throws: StoreError.self) { try AtomicFile.write([9], to: target) }
        #expect(error?.call == "rename")
        #expect(error?.path == target)
        #expect(dir.entries() == ["occupied"])
    }

    @Test func invalidPathsAndSizeLimit() throws {
        #expect(throws: StoreError.self) { try AtomicFile.write([1], to: "") }
        #expect(throws: StoreError.self) { try AtomicFile.write([1], to: "/tmp/") }
        let dir = try TempDir()
        defer { dir.remove() }
        let path = dir.file("big")
        try AtomicFile.write([UInt8](repeating: 7, count: 1000), to: path)
        let error = #expect(throws: StoreError.self) { try AtomicFile.read(path: path, maxBytes: 999) }
        #expect(error?.call == "size")
        #expect(try AtomicFile.read(path: path, maxBytes: 1000).count == 1000)
        #expect(throws: StoreError.self) { try AtomicFile.read(path: dir.file("missing"), maxBytes: 10) }
    }
}

@Suite("AtomicFile permissions")
struct AtomicFilePermissionTests {
    @Test("replacing a file keeps its permission bits")
    func keepsMode() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let path = dir.file("secret")
        try AtomicFile.write([1, 2, 3], to: path)
        #expect(chmod(path, 0o600) == 0)
        try AtomicFile.write([4, 5], to: path)
        var st = stat()
        #expect(stat(path, &st) == 0)
        #expect(st.st_mode & 0o777 == 0o600)
        #expect(try AtomicFile.read(path: path, maxBytes: 10) == [4, 5])
    }
}
