import Foundation
import Synchronization

/// Prometheus counters and histograms of the HTTP side (text format 0.0.4).
public final class HTTPMetrics: Sendable {
    struct Key: Hashable { var method: String, route: String, code: Int }
    static let buckets: [Double] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
    struct Histogram {
        var counts = [Int](repeating: 0, count: HTTPMetrics.buckets.count)
        var sum = 0.0
        var count = 0
    }
    struct State {
        var requests: [Key: Int] = [:]
        var latency: [String: Histogram] = [:]
    }
    let state = Mutex(State())
    let startTime = Date()

    public init() {}

    /// Records one answered request (`route` is the route template, never the raw path).
    public func record(method: String, route: String, code: Int, seconds: Double) {
        state.withLock { s in
            s.requests[Key(method: method, route: route, code: code), default: 0] += 1
            var h = s.latency[route] ?? Histogram()
            if let i = HTTPMetrics.buckets.firstIndex(where: { seconds <= $0 }) { h.counts[i] += 1 }
            h.sum += seconds
            h.count += 1
            s.latency[route] = h
        }
    }

    /// Escapes a label value (`\`, `"` and newline).
    static func label(_ s: String) -> String {
        s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"").replacingOccurrences(of: "\n", with: "\\n")
    }

    func render(into out: inout String) {
        let s = state.withLock { $0 }
        out += "# HELP reflowd_http_requests_total HTTP requests answered, by method, route template and status.\n"
        out += "# TYPE reflowd_http_requests_total counter\n"
        for (k, v) in s.requests.sorted(by: { ($0.key.route, $0.key.method, $0.key.code) < ($1.key.route, $1.key.method, $1.key.code) }) {
            out += "reflowd_http_requests_total{method=\"\(Self.label(k.method))\",route=\"\(Self.label(k.route))\",code=\"\(k.code)\"} \(v)\n"
        }
        out += "# HELP reflowd_http_request_duration_seconds Time from a complete request to its response, by route template.\n"
        out += "# TYPE reflowd_http_request_duration_seconds histogram\n"
        for (route, h) in s.latency.sorted(by: { $0.key < $1.key }) {
            var cumulative = 0
            for (i, b) in HTTPMetrics.buckets.enumerated() {
                cumulative += h.counts[i]
                out += "reflowd_http_request_duration_seconds_bucket{route=\"\(Self.label(route))\",le=\"\(b)\"} \(cumulative)\n"
            }
            out += "reflowd_http_request_duration_seconds_bucket{route=\"\(Self.label(route))\",le=\"+Inf\"} \(h.count)\n"
            out += "reflowd_http_request_duration_seconds_sum{route=\"\(Self.label(route))\"} \(h.sum)\n"
            out += "reflowd_http_request_duration_seconds_count{route=\"\(Self.label(route))\"} \(h.count)\n"
        }
    }

    /// `process_*` metrics from /proc/self.
    func renderProcess(into out: inout String) {
        if let statm = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) {
            let f = statm.split(separator: " ")
            if f.count > 1, let pages = Double(f[1]) {
                out += "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes \(pages * Double(sysconf(Int32(_SC_PAGESIZE))))\n"
            }
        }
        if let fds = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") {
            out += "# TYPE process_open_fds gauge\nprocess_open_fds \(fds.count)\n"
        }
        if let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") {
            let f = stat[stat.index(after: close)...].split(separator: " ")
            // Fields 14 and 15 (utime, stime) are at 11 and 12 after the command name.
            if f.count > 12, let u = Double(f[11]), let k = Double(f[12]) {
                out += "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total \((u + k) / Double(sysconf(Int32(_SC_CLK_TCK))))\n"
            }
        }
        out += "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds \(startTime.timeIntervalSince1970)\n"
    }
}
