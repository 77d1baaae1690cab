public import ReflowHTTP
import Foundation

/// The dataset routes of the v1 API (docs/API.md, "Datasets"):
///
/// - `GET /v1/datasets`, `GET /v1/datasets/{name}`: uploaded, configured and built-in datasets.
/// - `PUT /v1/datasets/{name}`: the whole dataset as one uncompressed tar (`?replace=true` to
///   replace an existing one).
/// - `PUT /v1/datasets/{name}/files/{file}`: one file into the dataset, creating it
///   (`?replace=true` to replace a file it already has).
/// - `DELETE /v1/datasets/{name}`: uploaded datasets only.
///
/// Upload bodies are streamed to a file by ``bodyPolicy(_:_:)`` (wired as the HTTP server's
/// ``HTTPServerConfig/bodyPolicy``): everything that can be refused from the head (auth, names,
/// 409s, 413 from `Content-Length`, 507) is refused before a body byte is read, the size cap is
/// enforced again while the bytes arrive, and the body never sits in memory. Without the policy
/// (a server that did not wire it) the body arrives buffered, bounded by `http.maxBodyBytes`, and
/// takes the same path from there.
extension API {
    /// The HTTP server's body policy: streams dataset uploads to the store, buffers everything else.
    @Sendable public func bodyPolicy(_ head: HTTPRequestHead, _ contentLength: Int?) -> HTTPBodyPolicy {
        guard head.method == "PUT", let store = datasets, let target = Self.uploadTarget(head.path) else { return .buffer }
        let route = target.file == nil ? "/v1/datasets/{name}" : "/v1/datasets/{name}/files/{file}"
        if let p = authorizationProblem(head.headers) { return .refuse(refusal(p, head, route: route)) }
        do throws(Problem) {
            let replace = try Self.replaceParameter(head.query)
            let upload: DatasetUpload
            do throws(DatasetError) {
                upload = try store.beginUpload(name: target.name, file: target.file, replace: replace, contentLength: contentLength)
            } catch {
                throw Self.problem(error)
            }
            return .stream(DatasetBodySink(upload: upload) { [self] error in refusal(Self.problem(error), head, route: route) })
        } catch {
            return .refuse(refusal(error, head, route: route))
        }
    }

    /// A problem answered before the request reaches ``handle(_:_:)`` (from its head or part-way
    /// through its body): same headers and metrics as a routed response.
    func refusal(_ p: Problem, _ head: HTTPRequestHead, route: String) -> HTTPResponse {
        let requestID = "req_" + String(requestCounter.add(1, ordering: .relaxed).newValue, radix: 36)
        var r = problem(p, instance: String(head.path.prefix(200)))
        r.headers.add("X-Request-Id", requestID)
        metrics.record(method: head.method, route: route, code: p.status, seconds: 0)
        return r
    }

    /// Writes a buffered body to an upload.
    static func write(_ body: [UInt8], to upload: DatasetUpload) throws(DatasetError) {
        var failure: DatasetError?
        body.withUnsafeBytes { b in
            do throws(DatasetError) { try upload.write(b) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    /// `(name, file)` of an upload path, percent-decoded; nil for other paths.
    static func uploadTarget(_ path: Substring) -> (name: String, file: String?)? {
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count >= 4, parts[0] == "", parts[1] == "v1", parts[2] == "datasets" else { return nil }
        if parts.count == 4 { return (decode(parts[3]), nil) }
        if parts.count == 6, parts[4] == "files" { return (decode(parts[3]), decode(parts[5])) }
        return nil
    }

    static func decode(_ segment: Substring) -> String { String(segment).removingPercentEncoding ?? String(segment) }

    /// `replace=true|false` (also 1/0); any other parameter is a 400.
    static func replaceParameter(_ query: Substring) throws(Problem) -> Bool {
        var replace = false
        for (k, v) in queryItems(query) {
            guard k == "replace" else {
                throw Problem(status: 400, code: "bad_query", title: "Bad query", detail: "unknown parameter '\(k.prefix(40))' (the only one is replace=true)")
            }
            switch v {
            case "true", "1": replace = true
            case "false", "0": replace = false
            default: throw Problem(status: 400, code: "bad_query", title: "Bad query", detail: "replace: must be true or false")
            }
        }
        return replace
    }

    /// The problem for a refused dataset operation.
    static func problem(_ e: DatasetError) -> Problem {
        let detail = e.description
        switch e.kind {
        case .invalidName: return Problem(status: 400, code: "invalid_name", title: "Invalid dataset name", detail: detail)
        case .badRequest: return Problem(status: 400, code: "bad_request", title: "Bad request", detail: detail)
        case .notFound: return Problem(status: 404, code: "dataset_not_found", title: "Dataset not found", detail: detail)
        case .exists: return Problem(status: 409, code: "dataset_exists", title: "Dataset exists", detail: detail)
        case .readOnly: return Problem(status: 409, code: "dataset_read_only", title: "Dataset is read-only", detail: detail)
        case .inUse: return Problem(status: 409, code: "dataset_in_use", title: "Dataset in use", detail: detail)
        case .busy: return Problem(status: 409, code: "dataset_busy", title: "Dataset busy", detail: detail)
        case .tooLarge: return Problem(status: 413, code: "dataset_too_large", title: "Dataset too large", detail: detail)
        case .invalid: return Problem(status: 422, code: "invalid_dataset", title: "Invalid dataset", detail: detail)
        case .unavailable: return Problem(status: 503, code: "dataset_unavailable", title: "Dataset unavailable", detail: detail)
        case .storage: return Problem(status: 503, code: "storage_unavailable", title: "Storage unavailable", detail: detail)
        case .insufficientStorage: return Problem(status: 507, code: "insufficient_storage", title: "Insufficient storage", detail: detail)
        }
    }

    // MARK: routes

    /// `/v1/datasets…` (`rest` is the path after `/v1/`, split at `/`).
    func datasetRoute(_ req: HTTPRequest, _ rest: [String], _ route: inout String) throws(Problem) -> Routed {
        let streamed = req.bodySink as? DatasetBodySink
        do {
            return try datasetRequest(req, rest, streamed, &route)
        } catch {
            streamed?.abort()  // refused after the body arrived: nothing of it stays
            throw error
        }
    }

    private func datasetRequest(_ req: HTTPRequest, _ rest: [String], _ streamed: DatasetBodySink?, _ route: inout String) throws(Problem) -> Routed {
        let m = req.method == "HEAD" ? "GET" : req.method
        func allow(_ methods: String...) throws(Problem) {
            guard methods.contains(m) else {
                throw Problem(status: 405, code: "method_not_allowed", title: "Method not allowed",
                              detail: "\(req.method) is not allowed here; allowed: \(methods.joined(separator: ", "))")
            }
        }
        switch rest.count {
        case 1: route = "/v1/datasets"
        case 2: route = "/v1/datasets/{name}"
        case 4 where rest[2] == "files": route = "/v1/datasets/{name}/files/{file}"
        default: throw Problem(status: 404, code: "not_found", title: "Not found", detail: "no route for \(req.head.path.prefix(200))")
        }
        guard let store = datasets else {
            throw Problem(status: 503, code: "datasets_unavailable", title: "Datasets unavailable", detail: "this server was started without a dataset store")
        }
        if rest.count == 1 {
            try allow("GET")
            return .later { [self] send in
                DispatchQueue.global().async {
                    struct List: Encodable { let items: [DatasetInfo] }
                    send(self.json(200, List(items: store.list())))
                }
            }
        }
        let name = Self.decode(rest[1][...])
        if rest.count == 4 {
            try allow("PUT")
            return try upload(req, store, name: name, file: Self.decode(rest[3][...]), streamed)
        }
        try allow("GET", "PUT", "DELETE")
        switch m {
        case "PUT":
            return try upload(req, store, name: name, file: nil, streamed)
        case "DELETE":
            do throws(DatasetError) { try store.delete(name) } catch { throw Self.problem(error) }
            return .now(HTTPResponse(status: 204))
        default:
            let instance = String(req.head.path.prefix(200))
            return .later { [self] send in
                DispatchQueue.global().async {
                    do throws(DatasetError) { send(self.json(200, try store.info(name))) } catch {
                        send(self.problem(Self.problem(error), instance: instance))
                    }
                }
            }
        }
    }

    /// Commits an upload (201 created, 200 replaced or changed) off the connection queue.
    private func upload(_ req: HTTPRequest, _ store: DatasetStore, name: String, file: String?,
                        _ streamed: DatasetBodySink?) throws(Problem) -> Routed {
        let upload: DatasetUpload
        if let streamed {
            upload = streamed.upload
        } else {
            // The body was buffered (no body policy, or an empty body): same checks, same path.
            let replace = try Self.replaceParameter(req.head.query)
            do throws(DatasetError) {
                upload = try store.beginUpload(name: name, file: file, replace: replace, contentLength: req.body.count)
            } catch { throw Self.problem(error) }
            do throws(DatasetError) { try Self.write(req.body, to: upload) } catch {
                upload.abort()
                throw Self.problem(error)
            }
        }
        let instance = String(req.head.path.prefix(200))
        return .later { [self] send in
            DispatchQueue.global().async {
                do throws(DatasetError) {
                    let (info, created) = try store.commit(upload)
                    var r = self.json(created ? 201 : 200, info)
                    r.headers.add("Location", info.url)
                    send(r)
                } catch {
                    send(self.problem(Self.problem(error), instance: instance))
                }
            }
        }
    }
}

/// Streams a dataset upload's body into its ``DatasetUpload``; a refusal (too large, out of
/// space) becomes the API's problem response.
final class DatasetBodySink: HTTPBodySink {
    let upload: DatasetUpload
    let refuse: @Sendable (DatasetError) -> HTTPResponse

    init(upload: DatasetUpload, refuse: @escaping @Sendable (DatasetError) -> HTTPResponse) {
        self.upload = upload
        self.refuse = refuse
    }

    func write(_ bytes: UnsafeRawBufferPointer) -> HTTPResponse? {
        do {
            try upload.write(bytes)
            return nil
        } catch {
            return refuse(error)
        }
    }

    func abort() { upload.abort() }
}
