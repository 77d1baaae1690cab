public import ReflowNN

/// Where a job reads a model, a pairs file or a point set: another job's artifact or a file path.
///
/// Wire JSON: `{"job": "<id>"}` (optionally `"artifact": "model" | "pairs" | "samples" | "latents" | "classifier"`)
/// or `{"path": "file"}`. The server resolves `job` ids to finished jobs and refuses paths (no
/// user string becomes a path there); `reflowd run` accepts both.
public enum ArtifactRef: Codable, Sendable, Equatable, Validatable {
    case job(id: String, artifact: String?)
    case path(String)

    /// Artifact names a reference may select (besides the default of its use).
    public static let artifactNames = ["model", "pairs", "samples", "latents", "reconstruction", "classifier"]

    enum CodingKeys: String, CodingKey { case job, artifact, path }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        if let id = try c.decodeIfPresent(String.self, forKey: .job) {
            if c.contains(.path) {
                throw DecodingError.dataCorruptedError(forKey: .path, in: c, debugDescription: "give either job or path, not both")
            }
            self = .job(id: id, artifact: try c.decodeIfPresent(String.self, forKey: .artifact))
        } else if let p = try c.decodeIfPresent(String.self, forKey: .path) {
            self = .path(p)
        } else {
            throw DecodingError.keyNotFound(CodingKeys.job, .init(codingPath: c.codingPath, debugDescription: "needs \"job\" (a job id) or \"path\""))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        switch self {
        case .job(let id, let a): try c.encode(id, forKey: .job); try c.encodeIfPresent(a, forKey: .artifact)
        case .path(let p): try c.encode(p, forKey: .path)
        }
    }

    public func validationError() -> FieldError? {
        switch self {
        case .job(let id, let artifact):
            if !JobID.isValid(id) { return ("/job", "is not a job id (1–64 characters of [A-Za-z0-9_-]), got \"\(id.prefix(80))\"") }
            if let a = artifact, !ArtifactRef.artifactNames.contains(a) {
                return ("/artifact", "must be one of \(ArtifactRef.artifactNames.joined(separator: ", ")), got \"\(a.prefix(40))\"")
            }
        case .path(let p):
            if p.isEmpty || p.utf8.count > 4096 || p.contains("\0") { return ("/path", "must be a non-empty file path") }
        }
        return nil
    }
}

/// Job identifiers: 1–64 characters of `[A-Za-z0-9_-]` (safe as a directory name and in a URL).
public enum JobID {
    public static func isValid(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.count <= 64 && s.utf8.allSatisfy { c in
            (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c == 45 || c == 95
        }
    }
}
