import Glibc
import Testing

/// Gates deploy/reflowd.service on `systemd-analyze security --offline=yes` (RELIABILITY S7).
@Suite("systemd unit")
struct SystemdUnitTests {
    static let analyzer = "/usr/bin/systemd-analyze"

    /// <repo>/deploy/reflowd.service, found from this file's path (<repo>/Tests/ReflowHTTPTests/…).
    static var unitPath: String {
        var parts = "\(#filePath)".split(separator: "/", omittingEmptySubsequences: false)
        parts.removeLast(3)
        return parts.joined(separator: "/") + "/deploy/reflowd.service"
    }

    @Test("unit declares Type=notify and a watchdog")
    func unitContents() throws {
        let text = try #require(Self.readFile(Self.unitPath), "cannot read \(Self.unitPath)")
        let lines = text.split(separator: "\n").map { $0.trimmingCharacters() }
        #expect(lines.contains("Type=notify"))
        #expect(lines.contains { $0.hasPrefix("WatchdogSec=") })
        #expect(lines.contains("NotifyAccess=main"))
    }

    @Test("computeNice works under the unit: setpriority is allowed after @resources is denied; the comment admits setrlimit")
    func niceAllowed() throws {
        let text = try #require(Self.readFile(Self.unitPath), "cannot read \(Self.unitPath)")
        let lines = text.split(separator: "\n").map { $0.trimmingCharacters() }
        let filters = lines.filter { $0.hasPrefix("SystemCallFilter=") }.map { String($0.dropFirst("SystemCallFilter=".count)) }
        // systemd merges the settings in order: a later allow entry takes a call back out of a deny.
        let deny = try #require(filters.lastIndex { $0.hasPrefix("~") && $0.contains("@resources") }, "no ~@resources")
        let allow = try #require(filters.lastIndex { !$0.hasPrefix("~") && $0.split(separator: " ").contains("setpriority") },
                                 "setpriority is not allowed: computeNice would be ignored")
        #expect(allow > deny)
        #expect(!filters[(allow + 1)...].contains { $0.hasPrefix("~") && ($0.contains("setpriority") || $0.contains("@resources")) })
        // The old comment claimed reflowd calls nothing in @resources.
        #expect(!text.contains("reflowd itself calls nothing in @resources"))
        #expect(text.contains("setrlimit"))
        if access(Self.analyzer, X_OK) == 0, let (_, output) = Self.run([Self.analyzer, "security", "--offline=yes", Self.unitPath]) {
            #expect(output.contains("setpriority is allowed") || output.contains("@resources is included"), "systemd-analyze does not see setpriority allowed")
        }
    }

    @Test("systemd-analyze security exposure <= 2.0")
    func exposure() throws {
        guard access(Self.analyzer, X_OK) == 0 else { return }   // tool absent: skip
        let (status, output) = try #require(Self.run([Self.analyzer, "security", "--offline=yes", Self.unitPath]))
        let score = Self.exposure(in: output)
        #expect(score != nil, "no exposure line (exit \(status)):\n\(output)")
        if let score {
            #expect(score <= 2.0, "exposure \(score) > 2.0:\n\(output)")
        }
    }

    @Test("exposure parser")
    func parser() {
        #expect(Self.exposure(in: "x\n→ Overall exposure level for reflowd.service: 1.1 OK 🙂\n") == 1.1)
        #expect(Self.exposure(in: "Overall exposure level for a.service: 9.6 UNSAFE 😨") == 9.6)
        #expect(Self.exposure(in: "-> Overall exposure level for reflowd.service: 1.4 OK :-)\n") == 1.4)
        #expect(Self.exposure(in: "nothing here") == nil)
    }

    // MARK: - Helpers

    /// The number in "→ Overall exposure level for <unit>: 1.1 OK 🙂" (the emoji is ":-)" when the
    /// output is not a UTF-8 terminal, so do not split on the last colon).
    static func exposure(in output: String) -> Double? {
        for line in output.split(separator: "\n") {
            guard let marker = line.firstRange(of: "Overall exposure level") else { continue }
            for token in line[marker.upperBound...].split(separator: " ") {
                if let value = Double(token) { return value }
            }
        }
        return nil
    }

    static func readFile(_ path: String) -> String? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, file) }
            if n == 0 { break }
            bytes += chunk[0 ..< n]
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Runs argv (no shell) with stdout+stderr captured; returns (exit status, output).
    static func run(_ argv: [String]) -> (Int32, String)? {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { return nil }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addclose(&actions, fds[0])
        posix_spawn_file_actions_adddup2(&actions, fds[1], 1)
        posix_spawn_file_actions_adddup2(&actions, fds[1], 2)
        posix_spawn_file_actions_addclose(&actions, fds[1])

        var cArgs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        defer { for p in cArgs { free(p) } }
        // No pager, no colours, plain output.
        let environment: [String] = ["SYSTEMD_PAGER=cat", "SYSTEMD_COLORS=0", "PATH=/usr/bin:/bin", "LANG=C.UTF-8"]
        var cEnv: [UnsafeMutablePointer<CChar>?] = environment.map { strdup($0) } + [nil]
        defer { for p in cEnv { free(p) } }

        var pid: pid_t = 0
        let rc = posix_spawn(&pid, argv[0], &actions, nil, &cArgs, &cEnv)
        close(fds[1])
        guard rc == 0 else { close(fds[0]); return nil }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fds[0], $0.baseAddress, $0.count) }
            if n > 0 { bytes += chunk[0 ..< n]; continue }
            if n < 0 && errno == EINTR { continue }
            break
        }
        close(fds[0])
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return ((status >> 8) & 0xff, String(decoding: bytes, as: UTF8.self))
    }
}

private extension Substring {
    func trimmingCharacters() -> String {
        String(drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" || $0 == "\r" }.reversed())
    }
}
