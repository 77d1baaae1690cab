import Foundation
import Glibc
import Synchronization
import Testing
import ReflowHTTP
@testable import ReflowServer

/// Names a test marks as used by a job (the store's `isInUse` hook).
final class InUseNames: Sendable {
    let names = Mutex<Set<String>>([])
    func set(_ n: Set<String>) { names.withLock { $0 = n } }
    func contains(_ n: String) -> Bool { names.withLock { $0.contains(n) } }
}

final class ValidatorCalls: Sendable {
    let count = Atomic<Int>(0)
}

struct StubValidationError: Error, CustomStringConvertible {
    let description: String
}

/// Accepts any directory without a file called `bad`; counts its files as the `train` split.
let stubValidator: DatasetValidator = { url in
    let files = DatasetTestFiles.regularFiles(url.path)
    if let bad = files.first(where: { ($0 as NSString).lastPathComponent == "bad" }) {
        throw StubValidationError(description: url.path + "/" + bad + ": broken header")
    }
    return DatasetSummary(format: "stub", splits: ["train": .init(count: files.count, channels: 1, height: 2, width: 2, classes: nil)])
}

enum DatasetTestFiles {
    /// Regular files under `root`, as relative paths, sorted.
    static func regularFiles(_ root: String) -> [String] {
        var out = [String]()
        let e = FileManager.default.enumerator(atPath: root)
        while let p = e?.nextObject() as? String {
            var st = stat()
            if lstat(root + "/" + p, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG { out.append(p) }
        }
        return out.sorted()
    }

    /// Everything under `root` (relative paths), hidden entries included.
    static func all(_ root: String) -> [String] {
        ((FileManager.default.enumerator(atPath: root)?.allObjects as? [String]) ?? []).sorted()
    }
}

/// A ustar archive built by hand: (name, typeflag, data); optional link name for links.
func tarArchive(_ entries: [(String, Character, [UInt8])], linkTarget: String = "") -> [UInt8] {
    var out = [UInt8]()
    func put(_ h: inout [UInt8], _ offset: Int, _ s: String) {
        for (i, b) in s.utf8.enumerated() { h[offset + i] = b }
    }
    for (name, type, data) in entries {
        var h = [UInt8](repeating: 0, count: 512)
        put(&h, 0, String(name.prefix(100)))
        put(&h, 100, "0000644\0")
        put(&h, 108, "0000000\0")
        put(&h, 116, "0000000\0")
        put(&h, 124, String(format: "%011o", data.count) + "\0")
        put(&h, 136, "00000000000\0")
        put(&h, 148, "        ")
        h[156] = type.asciiValue ?? 0x30
        if type == "2" || type == "1" { put(&h, 157, linkTarget) }
        put(&h, 257, "ustar\0")
        put(&h, 263, "00")
        let sum = h.reduce(0) { $0 + Int($1) }
        put(&h, 148, String(format: "%06o", sum) + "\0 ")
        out += h + data + [UInt8](repeating: 0, count: (512 - data.count % 512) % 512)
    }
    return out + [UInt8](repeating: 0, count: 1024)
}

/// An API server with a dataset store (stub validator) and the streaming body policy.
final class DatasetServer {
    let dir: String
    let jobs: JobService
    let store: DatasetStore
    let api: API
    let http: HTTPServer
    let inUse = InUseNames()
    let storage: StorageGuard
    var root: String { store.root }

    init(token: String? = nil, maxBytes: Int = 1 << 20, configured: [String: String] = [:], streaming: Bool = true,
         builtins: [DatasetStore.Builtin] = DatasetStore.defaultBuiltins) throws {
        dir = NSTemporaryDirectory() + "reflowd-datasets-\(UUID().uuidString)"
        var settings = JobSettings(dataDir: dir)
        settings.computeThreads = 1
        settings.minFreeBytes = 0
        jobs = try JobService(settings: settings)
        storage = StorageGuard(dataDir: dir, minFreeBytes: 1 << 20, reserveBytes: 0)
        storage.freeBytesOverride.withLock { $0 = 1 << 40 }
        let inUse = self.inUse
        store = try DatasetStore(root: dir + "/datasets", configured: configured, builtins: builtins, maxBytes: maxBytes,
                                 storage: storage, validator: stubValidator, isInUse: { inUse.contains($0) })
        let api = API(jobs: jobs, token: token, datasets: store)
        self.api = api
        var config = HTTPServerConfig()
        config.port = 0
        if streaming { config.bodyPolicy = api.bodyPolicy }
        http = try HTTPServer(config: config) { req, responder in api.handle(req, responder) }
    }

    func client() throws -> TestClient { try TestClient(port: http.port) }

    /// Nothing of an upload is left: the staging area is empty.
    var stagingIsEmpty: Bool { DatasetTestFiles.all(root + "/.staging").isEmpty }

    func stop() {
        http.stopAccepting()
        http.closeAll()
        jobs.shutdown(timeout: 5)
        try? FileManager.default.removeItem(atPath: dir)
    }
}

@Suite("Dataset store and routes", .serialized)
struct DatasetStoreTests {
    let toy = tarArchive([("train/", "5", []), ("train/a.bin", "0", [1, 2, 3]), ("./b.bin", "0", Array(repeating: 7, count: 1000)),
                          ("._b.bin", "0", [9])])

    @Test("a tar upload is streamed to disk, listed, described, resolved and deleted")
    func uploadListGetDelete() throws {
        let s = try DatasetServer()
        defer { s.stop() }
        let c = try s.client()
        let put = try c.request("PUT", "/v1/datasets/toy", headers: [("Content-Type", "application/x-tar")], body: toy)
        #expect(put.status == 201, "\(put.text)")
        #expect(put.header("Location") == "/v1/datasets/toy")
        let j = try put.json()
        #expect(j["name"] as? String == "toy" && j["source"] as? String == "uploaded" && j["bytes"] as? Int == 1003)
        let train = (j["summary"] as? [String: Any]).flatMap { ($0["splits"] as? [String: Any])?["train"] as? [String: Any] }
        #expect(train?["count"] as? Int == 2)
        // The files, without the hidden macOS entry; the body never went through the parser's buffer.
        #expect(DatasetTestFiles.regularFiles(s.root + "/toy") == ["b.bin", "train/a.bin"])
        #expect(try Data(contentsOf: URL(fileURLWithPath: s.root + "/toy/train/a.bin")) == Data([1, 2, 3]))
        #expect(s.http.stats.bodyBytesBuffered == 0)
        #expect(s.stagingIsEmpty)
        #expect(try s.store.resolve("toy") == .directory(URL(fileURLWithPath: s.root + "/toy", isDirectory: true)))

        let list = try c.request("GET", "/v1/datasets")
        #expect(list.status == 200)
        let items = try #require(try list.json()["items"] as? [[String: Any]])
        #expect(items.map { $0["name"] as? String } == ["toy", "builtin:shapes", "builtin:strokes"])
        #expect(items.map { $0["source"] as? String } == ["uploaded", "builtin", "builtin"])
        let get = try c.request("GET", "/v1/datasets/toy")
        #expect(try get.status == 200 && (try get.json()["bytes"] as? Int) == 1003)

        let del = try c.request("DELETE", "/v1/datasets/toy")
        #expect(del.status == 204)
        #expect(try c.request("GET", "/v1/datasets/toy").status == 404)
        #expect(!FileManager.default.fileExists(atPath: s.root + "/toy"))
        #expect(DatasetTestFiles.all(s.root + "/.deleted").isEmpty && DatasetTestFiles.all(s.root + "/.summaries").isEmpty)
        let again = try c.request("DELETE", "/v1/datasets/toy")
        #expect(try again.status == 404 && (try again.json()["code"] as? String) == "dataset_not_found")
        #expect(throws: DatasetError.self) { try s.store.resolve("toy") }
    }

    @Test("files uploaded one at a time build a dataset; an existing file needs replace=true")
    func singleFiles() throws {
        let s = try DatasetServer()
        defer { s.stop() }
        let c = try s.client()
        let first = try c.request("PUT", "/v1/datasets/mnist/files/train-images-idx3-ubyte.gz", body: [1, 2, 3, 4])
        #expect(first.status == 201, "\(first.text)")
        let second = try c.request("PUT", "/v1/datasets/mnist/files/train-labels-idx1-ubyte.gz", body: [5, 6])
        #expect(second.status == 200)
        #expect(DatasetTestFiles.regularFiles(s.root + "/mnist") == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"])
        let dup = try c.request("PUT", "/v1/datasets/mnist/files/train-labels-idx1-ubyte.gz", body: [0])
        #expect(try dup.status == 409 && (try dup.json()["code"] as? String) == "dataset_exists")
        let c2 = try s.client()  // the refusal closed the connection
        let replaced = try c2.request("PUT", "/v1/datasets/mnist/files/train-labels-idx1-ubyte.gz?replace=true", body: [8, 8, 8])
        #expect(replaced.status == 200)
        #expect(try Data(contentsOf: URL(fileURLWithPath: s.root + "/mnist/train-labels-idx1-ubyte.gz")) == Data([8, 8, 8]))
        #expect(try replaced.json()["bytes"] as? Int == 7)
        // A file the validator refuses leaves the dataset as it was.
        let bad = try c2.request("PUT", "/v1/datasets/mnist/files/bad", body: [0])
        #expect(bad.status == 422)
        #expect(DatasetTestFiles.regularFiles(s.root + "/mnist") == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"])
        #expect(s.stagingIsEmpty)
    }

    @Test("an upload larger than maxDatasetBytes is refused from Content-Length before the body, and while streaming a chunked body")
    func oversize() throws {
        let s = try DatasetServer(maxBytes: 64 << 10)
        defer { s.stop() }
        // Content-Length: refused from the head; the body is never sent.
        let c = try s.client()
        try c.send("PUT /v1/datasets/big HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n")
        let r = try c.read()
        #expect(r.status == 413 && r.header("Content-Type") == "application/problem+json" && r.header("X-Request-Id") != nil)
        #expect(try r.json()["code"] as? String == "dataset_too_large")
        #expect(c.isClosedByServer())
        #expect(s.stagingIsEmpty && !FileManager.default.fileExists(atPath: s.root + "/big"))
        // Chunked: refused once the bytes pass the limit; what was written is removed.
        let d = try s.client()
        try d.send("PUT /v1/datasets/big HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        let chunk = [UInt8](repeating: 1, count: 40 << 10)
        for _ in 0..<2 { try d.send(Array((String(chunk.count, radix: 16) + "\r\n").utf8) + chunk + [13, 10]) }
        let t = try d.read()
        #expect(try t.status == 413 && (try t.json()["code"] as? String) == "dataset_too_large")
        #expect(s.stagingIsEmpty && !FileManager.default.fileExists(atPath: s.root + "/big"))
        // The name is free again, and an upload within the limit works.
        let e = try s.client()
        let ok = try e.request("PUT", "/v1/datasets/big", body: toy)
        #expect(ok.status == 201, "\(ok.text)")
        // A single file that would take the dataset past the limit.
        let grow = try e.request("PUT", "/v1/datasets/big/files/more.bin", body: [UInt8](repeating: 0, count: 64 << 10))
        #expect(grow.status == 413)
        #expect(s.stagingIsEmpty && s.http.stats.bodyBytesBuffered == 0)
    }

    @Test("a client that leaves part-way through an upload leaves nothing behind")
    func abandonedUpload() throws {
        let s = try DatasetServer()
        defer { s.stop() }
        do {
            let c = try s.client()
            try c.send("PUT /v1/datasets/gone HTTP/1.1\r\nHost: t\r\nContent-Length: 500000\r\nExpect: 100-continue\r\n\r\n")
            // 100 Continue comes after the body policy accepted the upload (its file exists).
            #expect(try c.line() == "HTTP/1.1 100 Continue" && c.line() == "")
            #expect(!s.stagingIsEmpty)
            try c.send([UInt8](repeating: 3, count: 100_000))
        }
        // The server notices the close on its own queue: poll briefly for the cleanup.
        for _ in 0..<1000 where !s.stagingIsEmpty { usleep(2000) }
        #expect(s.stagingIsEmpty && !FileManager.default.fileExists(atPath: s.root + "/gone"))
        let ok = try s.client().request("PUT", "/v1/datasets/gone", body: toy)
        #expect(ok.status == 201)
    }

    @Test("bad dataset and file names are 400 problems naming the field; builtin: names are reserved")
    func badNames() throws {
        let s = try DatasetServer()
        defer { s.stop() }
        for name in ["Upper", ".hidden", "-dash", String(repeating: "a", count: 65), "sp%20ace", "a%2Fb"] {
            let c = try s.client()
            let r = try c.request("PUT", "/v1/datasets/\(name)", body: toy)
            #expect(r.status == 400, "\(name): \(r.text)")
            let j = try r.json()
            #expect(j["code"] as? String == "invalid_name" && (j["detail"] as? String)?.hasPrefix("name: ") == true, "\(name)")
            #expect(try s.client().request("GET", "/v1/datasets/\(name)").status == 400, "\(name)")
        }
        let f = try s.client().request("PUT", "/v1/datasets/ok/files/..%2Fescape", body: [1])
        #expect(try f.status == 400 && (try f.json()["detail"] as? String)?.hasPrefix("file: ") == true)
        let hidden = try s.client().request("PUT", "/v1/datasets/ok/files/.x", body: [1])
        #expect(hidden.status == 400)
        let q = try s.client().request("PUT", "/v1/datasets/ok?replace=maybe", body: toy)
        #expect(try q.status == 400 && (try q.json()["code"] as? String) == "bad_query")
        let builtin = try s.client().request("PUT", "/v1/datasets/builtin:shapes", body: toy)
        #expect(try builtin.status == 409 && (try builtin.json()["code"] as? String) == "dataset_read_only")
        #expect(s.stagingIsEmpty && DatasetTestFiles.regularFiles(s.root).isEmpty)
        #expect(!DatasetStore.isValidName("a:b") && DatasetStore.isValidName("fashion-mnist_v1.2") && !DatasetStore.isValidName(""))
    }

    @Test("a dataset the validator refuses is a 422 with its message (no server path) and leaves nothing")
    func validatorFailure() throws {
        let s = try DatasetServer()
        defer { s.stop() }
        let body = tarArchive([("ok.bin", "0", [1]), ("sub/bad", "0", [2])])
        let r = try s.client().request("PUT", "/v1/datasets/toy", body: body)
        #expect(r.status == 422)
        let j = try r.json()
        let detail = try #require(j["detail"] as? String)
        #expect(j["code"] as? String == "invalid_dataset" && detail == "sub/bad: broken header", "\(detail)")
        #expect(!detail.contains(s.dir))
        #expect(s.stagingIsEmpty && !FileManager.default.fileExists(atPath: s.root + "/toy"))
    }

    @Test("archives with links, escaping paths, damaged headers or compression are refused with 422")
    func unsafeArchives() throws {
        let s = try DatasetServer()
        defer { s.stop() }
        let cases: [(String, [UInt8], String)] = [
            ("symlink", tarArchive([("a.bin", "0", [1]), ("link", "2", [])], linkTarget: "/etc/passwd"), "symbolic link"),
            ("hardlink", tarArchive([("link", "1", [])], linkTarget: "a.bin"), "hard link"),
            ("dotdot", tarArchive([("../evil", "0", [1])]), "'..'"),
            ("absolute", tarArchive([("/tmp/evil", "0", [1])]), "absolute path"),
            ("truncated", Array(tarArchive([("a.bin", "0", [UInt8](repeating: 1, count: 5000))]).prefix(1500)), "truncated"),
            ("gzip", [0x1f, 0x8b, 8, 0] + [UInt8](repeating: 0, count: 600), "not a tar archive"),
            ("text", Array(String(repeating: "hello ", count: 200).utf8), "not a tar archive"),
            ("empty-archive", [UInt8](repeating: 0, count: 1024), "empty"),
            ("only-hidden", tarArchive([(".DS_Store", "0", [1])]), "no files"),
            ("file-then-dir", tarArchive([("x", "0", [1]), ("x/y", "0", [2])]), "directory"),
        ]
        for (name, body, message) in cases {
            let r = try s.client().request("PUT", "/v1/datasets/\(name)", body: body)
            #expect(r.status == 422, "\(name): \(r.text)")
            #expect(try (try r.json()["detail"] as? String)?.contains(message) == true, "\(name): \(r.text)")
            #expect(!FileManager.default.fileExists(atPath: s.root + "/" + name))
        }
        #expect(!FileManager.default.fileExists(atPath: s.dir + "/evil") && !FileManager.default.fileExists(atPath: s.root + "/evil"))
        #expect(s.stagingIsEmpty)
        let empty = try s.client().request("PUT", "/v1/datasets/nothing", body: [])
        #expect(try empty.status == 422 && (try empty.json()["detail"] as? String)?.contains("empty") == true)
    }

    @Test("archives written by tar (GNU long names, pax headers) extract", .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/tar")))
    func systemTar() throws {
        let s = try DatasetServer()
        defer { s.stop() }
        let src = s.dir + "/src"
        let long = String(repeating: "d", count: 120)
        try FileManager.default.createDirectory(atPath: src + "/" + long, withIntermediateDirectories: true)
        try Data([1, 2]).write(to: URL(fileURLWithPath: src + "/" + long + "/" + String(repeating: "f", count: 110) + ".png"))
        try Data([3]).write(to: URL(fileURLWithPath: src + "/top.bin"))
        for format in ["gnu", "pax"] {
            let out = s.dir + "/\(format).tar"
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/tar")
            p.arguments = ["--format=\(format)", "-C", src, "-cf", out, "."]
            p.standardError = FileHandle.nullDevice
            try p.run()
            p.waitUntilExit()
            let body = try [UInt8](Data(contentsOf: URL(fileURLWithPath: out)))
            let r = try s.client().request("PUT", "/v1/datasets/\(format)", body: body)
            #expect(r.status == 201, "\(format): \(r.text)")
            #expect(DatasetTestFiles.regularFiles(s.root + "/" + format) == [long + "/" + String(repeating: "f", count: 110) + ".png", "top.bin"], "\(format)")
        }
    }

    @Test("replacing needs replace=true, is refused while a job uses the dataset, and swaps the whole version")
    func replaceSemantics() throws {
        let s = try DatasetServer()
        defer { s.stop() }
        #expect(try s.client().request("PUT", "/v1/datasets/toy", body: toy).status == 201)
        let exists = try s.client().request("PUT", "/v1/datasets/toy", body: tarArchive([("new.bin", "0", [1])]))
        #expect(try exists.status == 409 && (try exists.json()["code"] as? String) == "dataset_exists")
        s.inUse.set(["toy"])
        let busy = try s.client().request("PUT", "/v1/datasets/toy?replace=true", body: tarArchive([("new.bin", "0", [1])]))
        #expect(try busy.status == 409 && (try busy.json()["code"] as? String) == "dataset_in_use")
        let file = try s.client().request("PUT", "/v1/datasets/toy/files/extra.bin", body: [1])
        #expect(try file.status == 409 && (try file.json()["code"] as? String) == "dataset_in_use")
        let del = try s.client().request("DELETE", "/v1/datasets/toy")
        #expect(try del.status == 409 && (try del.json()["code"] as? String) == "dataset_in_use")
        s.inUse.set([])
        let replaced = try s.client().request("PUT", "/v1/datasets/toy?replace=true", body: tarArchive([("new.bin", "0", [1])]))
        #expect(replaced.status == 200, "\(replaced.text)")
        #expect(DatasetTestFiles.regularFiles(s.root + "/toy") == ["new.bin"])
        #expect(DatasetTestFiles.all(s.root + "/.replaced").isEmpty && s.stagingIsEmpty)
        // A refused replacement keeps the current version.
        let bad = try s.client().request("PUT", "/v1/datasets/toy?replace=true", body: tarArchive([("bad", "0", [1])]))
        #expect(bad.status == 422)
        #expect(DatasetTestFiles.regularFiles(s.root + "/toy") == ["new.bin"])
        let info = try s.client().request("GET", "/v1/datasets/toy")
        #expect(try info.status == 200 && (try info.json()["bytes"] as? Int) == 1)
    }

    @Test("configured names are listed (missing directories as unavailable), resolvable and read-only")
    func configured() throws {
        let external = NSTemporaryDirectory() + "reflowd-external-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: external, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: external) }
        try Data([1, 2, 3, 4]).write(to: URL(fileURLWithPath: external + "/train.npy"))
        let s = try DatasetServer(configured: ["fmnist": external, "gone": external + "/nope", "Bad": external])
        defer { s.stop() }
        #expect(s.store.warnings.count == 2)
        #expect(s.store.warnings.contains { $0.contains("'gone'") } && s.store.warnings.contains { $0.contains("'Bad'") })
        let items = try #require(try s.client().request("GET", "/v1/datasets").json()["items"] as? [[String: Any]])
        #expect(items.map { $0["name"] as? String } == ["fmnist", "gone", "builtin:shapes", "builtin:strokes"])
        #expect(items[0]["source"] as? String == "config" && items[0]["bytes"] as? Int == 4 && items[0]["summary"] != nil)
        #expect(items[1]["error"] as? String == "the configured directory is missing" && items[1]["summary"] == nil)
        #expect(try s.store.resolve("fmnist") == .directory(URL(fileURLWithPath: external, isDirectory: true)))
        #expect(throws: DatasetError(.unavailable, "the configured directory of dataset 'gone' is missing")) { try s.store.resolve("gone") }
        let del = try s.client().request("DELETE", "/v1/datasets/fmnist")
        #expect(try del.status == 409 && (try del.json()["code"] as? String) == "dataset_read_only")
        let put = try s.client().request("PUT", "/v1/datasets/fmnist", body: toy)
        #expect(try put.status == 409 && (try put.json()["code"] as? String) == "dataset_read_only")
        #expect(FileManager.default.fileExists(atPath: external + "/train.npy"))
        // The config file's validation names the key of an invalid name.
        var config = ServerConfig()
        config.datasets = ["Bad Name": "/x"]
        #expect(config.validationError()?.pointer == "/datasets/Bad Name")
        config.datasets = ["fine": "/x"]
        #expect(config.validationError() == nil)
        let decoded = try JSONDecoder().decode(ServerConfig.self, from: Data(#"{"datasets": {"fashion-mnist": "/usr/share/datasets/fashion-mnist"}, "maxDatasetBytes": 1048576}"#.utf8))
        #expect(decoded.datasets == ["fashion-mnist": "/usr/share/datasets/fashion-mnist"] && decoded.maxDatasetBytes == 1 << 20)
        #expect(ServerConfig().maxDatasetBytes == 512 << 20 && ServerConfig().datasets == ServerConfig.defaultDatasets)
    }

    @Test("built-ins are listed, described and resolved, never changed")
    func builtins() throws {
        let shapes = DatasetSummary(format: "builtin", splits: ["train": .init(count: 10_000, channels: 1, height: 16, width: 16, classes: 4)])
        let s = try DatasetServer(builtins: [.init(name: "shapes", summary: shapes), .init(name: "strokes")])
        defer { s.stop() }
        let get = try s.client().request("GET", "/v1/datasets/builtin:shapes")
        #expect(get.status == 200)
        let j = try get.json()
        #expect(j["source"] as? String == "builtin" && j["bytes"] == nil && ((j["summary"] as? [String: Any])?["format"] as? String) == "builtin")
        #expect(try s.client().request("GET", "/v1/datasets/builtin%3Astrokes").status == 200)
        #expect(try s.client().request("GET", "/v1/datasets/builtin:nope").status == 404)
        let del = try s.client().request("DELETE", "/v1/datasets/builtin:shapes")
        #expect(try del.status == 409 && (try del.json()["code"] as? String) == "dataset_read_only")
        #expect(try s.store.resolve("builtin:shapes") == .builtin("shapes"))
        #expect(throws: DatasetError.self) { try s.store.resolve("builtin:nope") }
        do { _ = try s.store.resolve("nope"); Issue.record("resolved an unknown name") } catch {
            #expect(error.kind == .notFound && error.message.contains("GET /v1/datasets"))
        }
        do { _ = try s.store.resolve("No/pe"); Issue.record("resolved a bad name") } catch { #expect(error.kind == .invalidName) }
    }

    @Test("uploads get 507 below the free-space floor, from the head and part-way")
    func insufficientStorage() throws {
        let s = try DatasetServer(maxBytes: 64 << 20)
        defer { s.stop() }
        s.storage.freeBytesOverride.withLock { $0 = 512 << 10 }
        let r = try s.client().request("PUT", "/v1/datasets/toy", body: toy)
        #expect(try r.status == 507 && (try r.json()["code"] as? String) == "insufficient_storage" && r.header("Retry-After") != nil)
        // Enough for the announced length plus the floor, then the disk fills while the body arrives.
        s.storage.freeBytesOverride.withLock { $0 = 40 << 20 }
        let c = try s.client()
        try c.send("PUT /v1/datasets/toy HTTP/1.1\r\nHost: t\r\nContent-Length: \(20 << 20)\r\n\r\n")
        try c.send([UInt8](repeating: 0, count: 4 << 20))
        s.storage.freeBytesOverride.withLock { $0 = 1 << 10 }
        // Space is checked again after every 8 MiB: send past that point, then read the refusal.
        try c.send([UInt8](repeating: 0, count: 5 << 20))
        let response = try c.read()
        #expect(try response.status == 507 && (try response.json()["code"] as? String) == "insufficient_storage")
        #expect(s.stagingIsEmpty && !FileManager.default.fileExists(atPath: s.root + "/toy"))
    }

    @Test("without a token an upload is refused before its body (401) and nothing is written")
    func unauthenticated() throws {
        let s = try DatasetServer(token: "sesame")
        defer { s.stop() }
        let r = try s.client().request("PUT", "/v1/datasets/toy", body: toy)
        #expect(r.status == 401)
        #expect(s.stagingIsEmpty && !FileManager.default.fileExists(atPath: s.root + "/toy"))
        let ok = try s.client().request("PUT", "/v1/datasets/toy", headers: [("Authorization", "Bearer sesame")], body: toy)
        #expect(ok.status == 201)
        #expect(try s.client().request("GET", "/v1/datasets").status == 401)
    }

    @Test("without the body policy (a buffered body) uploads take the same path")
    func bufferedBody() throws {
        let s = try DatasetServer(streaming: false)
        defer { s.stop() }
        let r = try s.client().request("PUT", "/v1/datasets/toy", body: toy)
        #expect(r.status == 201, "\(r.text)")
        #expect(DatasetTestFiles.regularFiles(s.root + "/toy") == ["b.bin", "train/a.bin"])
        #expect(s.http.stats.bodyBytesBuffered == toy.count)
        let again = try s.client().request("PUT", "/v1/datasets/toy", body: toy)
        #expect(again.status == 409)
        #expect(s.stagingIsEmpty)
    }

    @Test("a restart removes unfinished uploads and puts back a version whose replacement was interrupted")
    func recovery() throws {
        let s = try DatasetServer()
        defer { s.stop() }
        #expect(try s.client().request("PUT", "/v1/datasets/toy", body: toy).status == 201)
        // The summary written at upload is reused by a new store (the validator is not run again).
        let calls = ValidatorCalls()
        let counted = try DatasetStore(root: s.root, maxBytes: 1 << 20, validator: { url in
            calls.count.add(1, ordering: .relaxed)
            return try stubValidator(url)
        })
        #expect(try counted.info("toy").summary?.splits["train"]?.count == 2)
        #expect(calls.count.load(ordering: .relaxed) == 0)
        let fm = FileManager.default
        // A kill between the two renames of a replacement, and during an upload.
        try fm.moveItem(atPath: s.root + "/toy", toPath: s.root + "/.replaced/toy")
        try Data([1]).write(to: URL(fileURLWithPath: s.root + "/.staging/upload-123"))
        try fm.createDirectory(atPath: s.root + "/.staging/abc.d/x", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: s.root + "/.deleted/def", withIntermediateDirectories: true)
        let reopened = try DatasetStore(root: s.root, maxBytes: 1 << 20, validator: stubValidator)
        #expect(DatasetTestFiles.regularFiles(reopened.root + "/toy") == ["b.bin", "train/a.bin"])
        #expect(s.stagingIsEmpty && DatasetTestFiles.all(s.root + "/.deleted").isEmpty && DatasetTestFiles.all(s.root + "/.replaced").isEmpty)
    }
}
