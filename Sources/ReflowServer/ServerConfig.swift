public import ReflowHTTP
import Foundation

/// The server's configuration (docs/CONFIG.md). Precedence: built-in defaults < the JSON file
/// (`--config`) < `REFLOWD_*` environment variables < command-line flags.
public struct ServerConfig: Codable, Sendable, Equatable {
    public var host = "127.0.0.1"
    public var port = 8080
    public var dataDir = "var/reflowd"
    public var workers = 1
    public var computeThreads = 2
    public var computeNice = 5
    public var queueLimit = 64
    public var maxAttempts = 3
    public var shutdownTimeoutSeconds = 30.0
    /// Free-space floor of the data directory's file system, in bytes (0 disables it): below it
    /// `/readyz` is 503, submissions and uploads get 507 and queued jobs wait.
    public var minFreeBytes = 100 << 20
    /// Peak memory one job may plan to use (bytes), checked against its estimate at submit
    /// (422 `memory_budget` above it). Null: 75 % of the smaller of the cgroup limit and the
    /// physical memory, divided by `workers`.
    public var memoryBudgetBytes: Int?
    /// File holding the bearer token (first line); null disables auth. `REFLOWD_TOKEN` sets the token directly.
    public var authTokenFile: String?
    public var tls: TLSConfig?
    public var http = HTTPSettings()
    /// Dataset names mapped to read-only directories on the server (docs/CONFIG.md, "Datasets").
    /// A missing directory is logged at startup; the dataset is unavailable until it exists.
    public var datasets: [String: String] = ServerConfig.defaultDatasets
    /// Largest dataset upload (and largest dataset built from single-file uploads), in bytes.
    public var maxDatasetBytes = 512 << 20
    /// The Debian package dataset-fashion-mnist's directory (`make deps` installs it); a missing
    /// directory only logs a warning and makes the name unavailable.
    public static let defaultDatasets = ["fashion-mnist": "/usr/share/datasets/fashion-mnist"]

    /// HTTPS: PEM certificate chain (leaf first) and PEM private key, loaded at startup.
    public struct TLSConfig: Codable, Sendable, Equatable {
        public var certificateFile: String
        public var privateKeyFile: String
        public var handshakeTimeoutSeconds = 10.0

        public init(certificateFile: String, privateKeyFile: String, handshakeTimeoutSeconds: Double = 10) {
            self.certificateFile = certificateFile
            self.privateKeyFile = privateKeyFile
            self.handshakeTimeoutSeconds = handshakeTimeoutSeconds
        }

        enum CodingKeys: String, CodingKey { case certificateFile, privateKeyFile, handshakeTimeoutSeconds }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            certificateFile = try c.decode(String.self, forKey: .certificateFile)
            privateKeyFile = try c.decode(String.self, forKey: .privateKeyFile)
            handshakeTimeoutSeconds = try c.decodeIfPresent(Double.self, forKey: .handshakeTimeoutSeconds) ?? 10
        }
    }

    public struct HTTPSettings: Codable, Sendable, Equatable {
        public var backlog = 512
        public var maxConnections = 4096
        public var maxBodyBytes = 64 << 20
        public var maxHeaderBytes = 32 << 10
        public var maxHeaderCount = 100
        public var maxRequestLine = 8192
        public var headerTimeoutSeconds = 10.0
        public var bodyIdleTimeoutSeconds = 30.0
        public var keepAliveTimeoutSeconds = 60.0

        public init() {}

        enum CodingKeys: String, CodingKey {
            case backlog, maxConnections, maxBodyBytes, maxHeaderBytes, maxHeaderCount, maxRequestLine
            case headerTimeoutSeconds, bodyIdleTimeoutSeconds, keepAliveTimeoutSeconds
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            let d = HTTPSettings()
            backlog = try c.decodeIfPresent(Int.self, forKey: .backlog) ?? d.backlog
            maxConnections = try c.decodeIfPresent(Int.self, forKey: .maxConnections) ?? d.maxConnections
            maxBodyBytes = try c.decodeIfPresent(Int.self, forKey: .maxBodyBytes) ?? d.maxBodyBytes
            maxHeaderBytes = try c.decodeIfPresent(Int.self, forKey: .maxHeaderBytes) ?? d.maxHeaderBytes
            maxHeaderCount = try c.decodeIfPresent(Int.self, forKey: .maxHeaderCount) ?? d.maxHeaderCount
            maxRequestLine = try c.decodeIfPresent(Int.self, forKey: .maxRequestLine) ?? d.maxRequestLine
            headerTimeoutSeconds = try c.decodeIfPresent(Double.self, forKey: .headerTimeoutSeconds) ?? d.headerTimeoutSeconds
            bodyIdleTimeoutSeconds = try c.decodeIfPresent(Double.self, forKey: .bodyIdleTimeoutSeconds) ?? d.bodyIdleTimeoutSeconds
            keepAliveTimeoutSeconds = try c.decodeIfPresent(Double.self, forKey: .keepAliveTimeoutSeconds) ?? d.keepAliveTimeoutSeconds
        }
    }

    public init() {}

    enum CodingKeys: String, CodingKey {
        case host, port, dataDir, workers, computeThreads, computeNice, queueLimit, maxAttempts, shutdownTimeoutSeconds, minFreeBytes
        case memoryBudgetBytes
        case authTokenFile, tls, http
        case datasets, maxDatasetBytes
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = ServerConfig()
        host = try c.decodeIfPresent(String.self, forKey: .host) ?? d.host
        port = try c.decodeIfPresent(Int.self, forKey: .port) ?? d.port
        dataDir = try c.decodeIfPresent(String.self, forKey: .dataDir) ?? d.dataDir
        workers = try c.decodeIfPresent(Int.self, forKey: .workers) ?? d.workers
        computeThreads = try c.decodeIfPresent(Int.self, forKey: .computeThreads) ?? d.computeThreads
        computeNice = try c.decodeIfPresent(Int.self, forKey: .computeNice) ?? d.computeNice
        queueLimit = try c.decodeIfPresent(Int.self, forKey: .queueLimit) ?? d.queueLimit
        maxAttempts = try c.decodeIfPresent(Int.self, forKey: .maxAttempts) ?? d.maxAttempts
        shutdownTimeoutSeconds = try c.decodeIfPresent(Double.self, forKey: .shutdownTimeoutSeconds) ?? d.shutdownTimeoutSeconds
        minFreeBytes = try c.decodeIfPresent(Int.self, forKey: .minFreeBytes) ?? d.minFreeBytes
        memoryBudgetBytes = try c.decodeIfPresent(Int.self, forKey: .memoryBudgetBytes)
        authTokenFile = try c.decodeIfPresent(String.self, forKey: .authTokenFile)
        tls = try c.decodeIfPresent(TLSConfig.self, forKey: .tls)
        http = try c.decodeIfPresent(HTTPSettings.self, forKey: .http) ?? d.http
        datasets = try c.decodeIfPresent([String: String].self, forKey: .datasets) ?? d.datasets
        maxDatasetBytes = try c.decodeIfPresent(Int.self, forKey: .maxDatasetBytes) ?? d.maxDatasetBytes
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(host, forKey: .host); try c.encode(port, forKey: .port); try c.encode(dataDir, forKey: .dataDir)
        try c.encode(workers, forKey: .workers); try c.encode(computeThreads, forKey: .computeThreads)
        try c.encode(computeNice, forKey: .computeNice); try c.encode(queueLimit, forKey: .queueLimit)
        try c.encode(maxAttempts, forKey: .maxAttempts); try c.encode(shutdownTimeoutSeconds, forKey: .shutdownTimeoutSeconds)
        try c.encode(minFreeBytes, forKey: .minFreeBytes)
        try c.encode(memoryBudgetBytes, forKey: .memoryBudgetBytes)
        try c.encode(authTokenFile, forKey: .authTokenFile); try c.encode(tls, forKey: .tls); try c.encode(http, forKey: .http)
        try c.encode(datasets, forKey: .datasets); try c.encode(maxDatasetBytes, forKey: .maxDatasetBytes)
    }

    /// The first invalid setting as (JSON pointer, message).
    public func validationError() -> (pointer: String, message: String)? {
        if host.isEmpty { return ("/host", "must not be empty") }
        if port < 0 || port > 65535 { return ("/port", "must be in [0, 65535], got \(port)") }
        if dataDir.isEmpty { return ("/dataDir", "must not be empty") }
        if workers < 1 || workers > 64 { return ("/workers", "must be in [1, 64], got \(workers)") }
        if computeThreads < 1 || computeThreads > 256 { return ("/computeThreads", "must be in [1, 256], got \(computeThreads)") }
        if computeNice < 0 || computeNice > 19 { return ("/computeNice", "must be in [0, 19], got \(computeNice)") }
        if queueLimit < 1 || queueLimit > 100_000 { return ("/queueLimit", "must be in [1, 100000], got \(queueLimit)") }
        if maxAttempts < 1 || maxAttempts > 100 { return ("/maxAttempts", "must be in [1, 100], got \(maxAttempts)") }
        if !(shutdownTimeoutSeconds >= 0 && shutdownTimeoutSeconds <= 3600) { return ("/shutdownTimeoutSeconds", "must be in [0, 3600]") }
        if let m = memoryBudgetBytes, m < 1 << 20 || m > 1 << 50 { return ("/memoryBudgetBytes", "must be in [2^20, 2^50] or null, got \(m)") }
        if minFreeBytes < 0 || minFreeBytes > 1 << 50 { return ("/minFreeBytes", "must be in [0, 2^50], got \(minFreeBytes)") }
        if let t = tls, !(t.handshakeTimeoutSeconds > 0 && t.handshakeTimeoutSeconds <= 300) { return ("/tls/handshakeTimeoutSeconds", "must be in (0, 300]") }
        for (name, dir) in datasets.sorted(by: { $0.key < $1.key }) {
            if !DatasetStore.isValidName(name) { return ("/datasets/" + name, "dataset names must match \(DatasetStore.namePattern)") }
            if dir.isEmpty { return ("/datasets/" + name, "must be a directory path") }
        }
        if maxDatasetBytes < 1024 || maxDatasetBytes > 1 << 40 { return ("/maxDatasetBytes", "must be in [1024, 2^40], got \(maxDatasetBytes)") }
        let h = http
        if h.backlog < 128 || h.backlog > 65535 { return ("/http/backlog", "must be in [128, 65535], got \(h.backlog)") }
        if h.maxConnections < 1 || h.maxConnections > 1_000_000 { return ("/http/maxConnections", "must be in [1, 1000000]") }
        if h.maxBodyBytes < 1024 || h.maxBodyBytes > 1 << 34 { return ("/http/maxBodyBytes", "must be in [1024, 2^34]") }
        if h.maxHeaderBytes < 1024 || h.maxHeaderBytes > 1 << 20 { return ("/http/maxHeaderBytes", "must be in [1024, 1048576]") }
        if h.maxHeaderCount < 8 || h.maxHeaderCount > 10_000 { return ("/http/maxHeaderCount", "must be in [8, 10000]") }
        if h.maxRequestLine < 8000 || h.maxRequestLine > 1 << 20 { return ("/http/maxRequestLine", "must be in [8000, 1048576] (RFC 9112 recommends ≥ 8000)") }
        for (p, v) in [("headerTimeoutSeconds", h.headerTimeoutSeconds), ("bodyIdleTimeoutSeconds", h.bodyIdleTimeoutSeconds),
                       ("keepAliveTimeoutSeconds", h.keepAliveTimeoutSeconds)] where !(v > 0 && v <= 3600) {
            return ("/http/" + p, "must be in (0, 3600]")
        }
        return nil
    }

    /// Applies `REFLOWD_*` variables; returns an error message for a malformed one.
    public mutating func applyEnvironment(_ env: [String: String]) throws(ServerStartError) {
        func int(_ k: String) throws(ServerStartError) -> Int? {
            guard let v = env[k] else { return nil }
            guard let n = Int(v) else { throw ServerStartError("\(k)=\(v.prefix(40)): not an integer") }
            return n
        }
        if let v = env["REFLOWD_HOST"] { host = v }
        if let v = try int("REFLOWD_PORT") { port = v }
        if let v = env["REFLOWD_DATA_DIR"] { dataDir = v }
        if let v = try int("REFLOWD_WORKERS") { workers = v }
        if let v = try int("REFLOWD_COMPUTE_THREADS") { computeThreads = v }
        if let v = try int("REFLOWD_QUEUE_LIMIT") { queueLimit = v }
        if let v = try int("REFLOWD_MEMORY_BUDGET_BYTES") { memoryBudgetBytes = v }
        if let v = env["REFLOWD_TOKEN_FILE"] { authTokenFile = v }
    }

    /// The HTTP server settings derived from this config.
    public var httpConfig: HTTPServerConfig {
        var c = HTTPServerConfig()
        c.host = host
        c.port = port
        c.backlog = http.backlog
        c.maxConnections = http.maxConnections
        c.limits.maxBodyBytes = http.maxBodyBytes
        c.limits.maxHeaderBytes = http.maxHeaderBytes
        c.limits.maxHeaderCount = http.maxHeaderCount
        c.limits.maxRequestLine = http.maxRequestLine
        c.headerTimeout = http.headerTimeoutSeconds
        c.bodyIdleTimeout = http.bodyIdleTimeoutSeconds
        c.keepAliveTimeout = http.keepAliveTimeoutSeconds
        return c
    }
}
