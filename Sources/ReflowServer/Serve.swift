import ReflowHTTP
import ReflowEngine
import ReflowJobs
import Foundation
import Synchronization

/// `reflowd serve`: the HTTP job server.
public enum Serve {
    public static let usage = "usage: reflowd serve [--config FILE] [--host H] [--port P] [--data-dir DIR] [--workers N] [--compute-threads N] [--token-file FILE]"

    /// Builds the configuration from defaults, `--config`, the environment and flags.
    public static func configuration(_ args: [String], environment: [String: String]) throws(ServerStartError) -> ServerConfig {
        var flags = [String: String]()
        var i = 0
        while i < args.count {
            let a = args[i]
            guard a.hasPrefix("--"), i + 1 < args.count else { throw ServerStartError("unexpected argument '\(a)'\n" + usage) }
            let name = String(a.dropFirst(2))
            guard ["config", "host", "port", "data-dir", "workers", "compute-threads", "token-file"].contains(name) else {
                throw ServerStartError("unknown option '\(a)'\n" + usage)
            }
            flags[name] = args[i + 1]
            i += 2
        }
        var config = ServerConfig()
        if let path = flags["config"] {
            guard let data = FileManager.default.contents(atPath: path) else { throw ServerStartError("cannot read config file '\(path)'") }
            do { config = try JSONDecoder().decode(ServerConfig.self, from: data) } catch {
                throw ServerStartError("config '\(path)': \(error)")
            }
        }
        try config.applyEnvironment(environment)
        func int(_ k: String) throws(ServerStartError) -> Int? {
            guard let v = flags[k] else { return nil }
            guard let n = Int(v) else { throw ServerStartError("--\(k) must be an integer, got '\(v)'") }
            return n
        }
        if let v = flags["host"] { config.host = v }
        if let v = try int("port") { config.port = v }
        if let v = flags["data-dir"] { config.dataDir = v }
        if let v = try int("workers") { config.workers = v }
        if let v = try int("compute-threads") { config.computeThreads = v }
        if let v = flags["token-file"] { config.authTokenFile = v }
        if let (p, m) = config.validationError() { throw ServerStartError("config \(p): \(m)") }
        return config
    }

    static func log(_ message: String) {
        FileHandle.standardError.write(Data("reflowd: \(message)\n".utf8))
    }

    /// Runs the server until SIGTERM or SIGINT; never returns.
    public static func run(_ args: [String]) -> Never {
        let config: ServerConfig
        do { config = try configuration(args, environment: ProcessInfo.processInfo.environment) } catch {
            log(error.description)
            exit(2)
        }
        var token: String?
        if let env = ProcessInfo.processInfo.environment["REFLOWD_TOKEN"], !env.isEmpty { token = env }
        if let file = config.authTokenFile {
            guard let text = try? String(contentsOfFile: file, encoding: .utf8),
                  let first = text.split(separator: "\n").first.map({ $0.trimmingCharacters(in: .whitespaces) }), !first.isEmpty else {
                log("cannot read a token from authTokenFile '\(file)'")
                exit(2)
            }
            token = first
        }
        var httpConfig = config.httpConfig
        if let t = config.tls {
            // Unloadable certificate or key: refuse to start (RELIABILITY.md S5).
            do {
                let context = try TLSContext(certificateFile: t.certificateFile, privateKeyFile: t.privateKeyFile)
                for w in context.warnings { log("warning: \(w)") }
                httpConfig.tls = context
                httpConfig.tlsHandshakeTimeout = t.handshakeTimeoutSeconds
            } catch {
                log("cannot set up TLS: \(error)")
                exit(2)
            }
        }
        BLAS.setLibraryThreads(1)
        var settings = JobSettings(dataDir: config.dataDir)
        settings.workers = config.workers
        settings.computeThreads = config.computeThreads
        settings.queueLimit = config.queueLimit
        settings.maxAttempts = config.maxAttempts
        settings.computeNice = Int32(config.computeNice)
        settings.minFreeBytes = config.minFreeBytes
        settings.memoryBudgetBytes = config.memoryBudgetBytes ?? MemoryBudget.defaultBytes(workers: config.workers)
        // The dataset store exists before the job service (jobs resolve dataset names through
        // it); it asks the service, once running, whether a job still uses a dataset.
        let jobsBox = Mutex<JobService?>(nil)
        do {
            settings.datasets = try DatasetStore(config: config, storage: StorageGuard(dataDir: config.dataDir, minFreeBytes: config.minFreeBytes, reserveBytes: settings.reserveBytes),
                                                 validator: DatasetStore.imageValidator,
                                                 isInUse: { name in jobsBox.withLock { $0?.usesDataset(name) ?? true } })
        } catch {
            log("cannot open the dataset store in \(config.dataDir)/datasets: \(error)")
            _exit(1)
        }
        for w in settings.datasets?.warnings ?? [] { log("warning: \(w)") }
        let jobs: JobService
        do { jobs = try JobService(settings: settings) } catch {
            // An unreadable store stops the server loudly (RELIABILITY.md D7).
            log("cannot open the job store in \(config.dataDir): \(error)")
            _exit(1)
        }
        let serverBox = Mutex<HTTPServer?>(nil)
        jobsBox.withLock { $0 = jobs }
        let api = API(jobs: jobs, token: token, datasets: settings.datasets,
                      openConnections: { serverBox.withLock { $0?.openConnections ?? 0 } })
        // Dataset uploads stream to disk instead of being buffered (DatasetRoutes).
        httpConfig.bodyPolicy = api.bodyPolicy
        // Authentication from the head: an unauthenticated request is answered 401 and closed
        // before its body is read (a large upload without a token costs nothing).
        httpConfig.headGate = api.headGate
        let server: HTTPServer
        do { server = try HTTPServer(config: httpConfig) { req, responder in api.handle(req, responder) } } catch {
            log("cannot listen on \(config.host):\(config.port): \(error)")
            exit(1)
        }
        serverBox.withLock { $0 = server }
        // Signal handling is active before READY=1 is sent. A Dispatch signal source registers
        // asynchronously, and with SIG_IGN set a SIGTERM arriving before the registration is lost
        // (measured: a signal 0 ms after resume() was dropped every time), so wait for it.
        var keep: [any DispatchSourceProtocol] = []
        let stopping = Atomic<Bool>(false)
        for sig in [SIGTERM, SIGINT] {
            signal(sig, SIG_IGN)
            let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            s.setEventHandler {
                guard !stopping.exchange(true, ordering: .acquiringAndReleasing) else { return }
                log("signal \(sig): stopping (jobs checkpoint and resume on the next start)")
                SystemdNotify.stopping()
                server.stopAccepting()
                server.drain()
                let clean = jobs.shutdown(timeout: config.shutdownTimeoutSeconds)
                // Jobs still inside a long solve go back to the queue on disk (attempt given back).
                if !clean { jobs.requeueRunningForExit() }
                log(clean ? "jobs stopped" : "jobs did not stop within \(config.shutdownTimeoutSeconds) s; exiting anyway (they resume from their last checkpoint)")
                // Let in-flight responses go out, then exit.
                let deadline = monotonicSeconds() + 2
                while server.openConnections > 0 && monotonicSeconds() < deadline { usleep(20_000) }
                // Every record is durable now. _exit, not exit: exit() runs atexit handlers and
                // static destructors (OpenBLAS frees its buffers) while a compute thread may still
                // be inside a GEMM, which crashed with SIGSEGV (exit 139) in 2 of 4 tries.
                _exit(0)
            }
            let registered = DispatchSemaphore(value: 0)
            s.setRegistrationHandler { registered.signal() }
            s.resume()
            registered.wait()
            keep.append(s)
        }
        jobs.start()
        let queued = jobs.queueLength
        log("listening on \(httpConfig.tls == nil ? "http" : "https")://\(config.host.contains(":") ? "[\(config.host)]" : config.host):\(server.port) (data \(config.dataDir), \(config.workers) worker(s) × \(config.computeThreads) compute threads, \(queued) job(s) queued, auth \(token == nil ? "off" : "on"))")
        SystemdNotify.ready(status: "listening on port \(server.port)")
        if let interval = SystemdNotify.watchdogInterval() {
            let t = DispatchSource.makeTimerSource(queue: .global())
            t.schedule(deadline: .now() + interval / 2, repeating: interval / 2)
            t.setEventHandler { SystemdNotify.watchdog() }
            t.resume()
            keep.append(t)
        }
        withExtendedLifetime(keep) { dispatchMain() }
    }
}
