import Foundation
import Testing
import ReflowJobs
import ReflowFlow
@testable import ReflowServer

/// Drift tests between docs/openapi.json and the routes the server actually serves.
@Suite("OpenAPI document")
struct OpenAPITests {
    /// This file is Tests/ReflowServerTests/OpenAPITests.swift; the repository root is three levels up.
    static let documentPath = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("docs/openapi.json").path

    static let httpMethods: Set<String> = ["get", "put", "post", "delete", "options", "head", "patch", "trace"]

    func document() throws -> [String: Any] {
        let data = try Data(contentsOf: URL(fileURLWithPath: Self.documentPath))
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any], "docs/openapi.json is not a JSON object")
    }

    @Test("the document is OpenAPI 3.1")
    func version() throws {
        let doc = try document()
        let v = try #require(doc["openapi"] as? String)
        #expect(v.hasPrefix("3.1"), "openapi is \(v)")
    }

    @Test("paths and methods match API.routes exactly (HEAD is implicit for GET)")
    func routesMatch() throws {
        let doc = try document()
        let paths = try #require(doc["paths"] as? [String: Any])
        var documented = Set<String>()
        for (path, item) in paths {
            let operations = try #require(item as? [String: Any], "path item \(path) is not an object")
            for key in operations.keys where Self.httpMethods.contains(key) { documented.insert("\(key) \(path)") }
        }
        let served = Set(API.routes.map { "\($0.method.lowercased()) \($0.template)" })
        #expect(served.count == API.routes.count, "API.routes lists a route twice")
        let undocumented = served.subtracting(documented).sorted()
        let stale = documented.subtracting(served).sorted()
        #expect(undocumented.isEmpty, "routes missing from docs/openapi.json: \(undocumented)")
        #expect(stale.isEmpty, "docs/openapi.json documents routes the server does not serve: \(stale)")
        #expect(!documented.contains { $0.hasPrefix("head ") }, "HEAD is implicit for GET; do not list it")
    }

    @Test("every path template parameter is declared as a path parameter")
    func pathParameters() throws {
        let doc = try document()
        let paths = try #require(doc["paths"] as? [String: Any])
        for (path, item) in paths {
            let ops = try #require(item as? [String: Any])
            let names = path.split(separator: "/").filter { $0.hasPrefix("{") && $0.hasSuffix("}") }.map { String($0.dropFirst().dropLast()) }
            func declared(_ params: Any?) -> Set<String> {
                Set(((params as? [[String: Any]]) ?? []).filter { $0["in"] as? String == "path" }.compactMap { $0["name"] as? String })
            }
            let common = declared(ops["parameters"])
            for (method, op) in ops where Self.httpMethods.contains(method) {
                let all = common.union(declared((op as? [String: Any])?["parameters"]))
                #expect(all == Set(names), "\(method) \(path): path parameters \(all.sorted()), template has \(names)")
            }
        }
    }

    @Test("every $ref (and discriminator mapping) resolves to a components.schemas entry")
    func refsResolve() throws {
        let doc = try document()
        let components = try #require(doc["components"] as? [String: Any])
        let schemas = try #require(components["schemas"] as? [String: Any])
        var refs = [(where: String, target: String)]()
        func walk(_ node: Any, _ pointer: String) {
            if let object = node as? [String: Any] {
                for (key, value) in object {
                    if key == "$ref", let target = value as? String { refs.append((pointer, target)) }
                    if key == "discriminator", let d = value as? [String: Any], let mapping = d["mapping"] as? [String: String] {
                        for (name, target) in mapping { refs.append((pointer + "/discriminator/mapping/" + name, target)) }
                    }
                    walk(value, pointer + "/" + key)
                }
            } else if let array = node as? [Any] {
                for (i, value) in array.enumerated() { walk(value, pointer + "/\(i)") }
            }
        }
        walk(doc, "")
        #expect(!refs.isEmpty)
        let prefix = "#/components/schemas/"
        for ref in refs {
            #expect(ref.target.hasPrefix(prefix), "\(ref.where): $ref \(ref.target) does not point into components.schemas")
            let name = String(ref.target.dropFirst(prefix.count))
            #expect(schemas[name] != nil, "\(ref.where): $ref \(ref.target) names no schema")
        }
        for required in ["Problem", "Job", "JobState", "Progress", "Transition", "JobPage", "Checkpoint", "CheckpointList",
                         "ArtifactList", "ImageList", "JobSpec"] {
            #expect(schemas[required] != nil, "components.schemas.\(required) is missing")
        }
    }

    /// Whether `python3 -m openapi_spec_validator` can run here (nothing is installed for it).
    static let validatorAvailable: Bool = (try? python(["-c", "import openapi_spec_validator"]).status) == 0

    static func python(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3"] + arguments
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: output, as: UTF8.self))
    }

    @Test("openapi-spec-validator accepts the document (skipped when it is not installed)",
          .enabled(if: OpenAPITests.validatorAvailable, "python3 -m openapi_spec_validator is not importable"))
    func validates() throws {
        let r = try Self.python(["-m", "openapi_spec_validator", Self.documentPath])
        #expect(r.status == 0, "\(r.output)")
    }
}

/// The registry is the one source of job kinds: the OpenAPI enumerations and docs/JOBS.md's
/// generated block must say what it says.
@Suite("Docs against the job-kind registry")
struct RegistryDocsTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    func openAPI() throws -> [String: Any] {
        let data = try Data(contentsOf: Self.root.appendingPathComponent("docs/openapi.json"))
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    func value(_ doc: Any, _ path: [Any]) -> Any? {
        var v: Any? = doc
        for p in path {
            if let k = p as? String { v = (v as? [String: Any])?[k] } else if let i = p as? Int { v = (v as? [Any]).flatMap { i < $0.count ? $0[i] : nil } }
        }
        return v
    }

    @Test("OpenAPI enumerations of types, images and artifacts equal the registry's")
    func openAPIEnumerations() throws {
        let doc = try openAPI()
        let names = JobKinds.names
        #expect(value(doc, ["components", "schemas", "JobType", "enum"]) as? [String] == names)
        #expect(value(doc, ["components", "schemas", "Job", "properties", "type", "enum"]) as? [String] == names + ["upload"])
        #expect(value(doc, ["paths", "/", "get", "responses", "200", "content", "application/json", "example", "jobTypes"]) as? [String] == names)
        let images = Set(API.imageNames)
        // Image names: the registry's manifest as an enum, plus the evaluation grids' pattern.
        #expect(Set(value(doc, ["components", "schemas", "ImageList", "properties", "items", "items", "properties", "name", "anyOf", 0, "enum"]) as? [String] ?? []) == images)
        #expect(Set(value(doc, ["paths", "/v1/jobs/{id}/images/{name}", "parameters", 1, "schema", "anyOf", 0, "enum"]) as? [String] ?? []) == images.union(["grid.png"]))
        #expect(value(doc, ["paths", "/v1/jobs/{id}/images/{name}", "parameters", 1, "schema", "anyOf", 1, "pattern"]) as? String == "^samples_[A-Za-z0-9_-]+\\.png$")
        #expect(API.isSolverGrid("samples_euler-1.png") && API.isSolverGrid("samples_rfSolver2-50.png"))
        #expect(!API.isSolverGrid("samples_../x.png") && !API.isSolverGrid("samples_.png") && !API.isSolverGrid("samples_a/b.png"))
        #expect(Set(value(doc, ["paths", "/v1/jobs/{id}/artifacts/{name}", "parameters", 1, "schema", "enum"]) as? [String] ?? []) == Set(API.artifactNames))
        #expect(value(doc, ["components", "schemas", "ArtifactRef", "oneOf", 0, "properties", "artifact", "enum"]) as? [String] == ArtifactRef.artifactNames)
    }

    @Test("docs/JOBS.md's registry block is what `reflowd docs jobs` prints, and every kind has its own section")
    func jobsMarkdown() throws {
        let text = try String(contentsOf: Self.root.appendingPathComponent("docs/JOBS.md"), encoding: .utf8)
        let begin = try #require(text.range(of: "<!-- registry:begin -->\n"))
        let end = try #require(text.range(of: "<!-- registry:end -->"))
        #expect(String(text[begin.upperBound..<end.lowerBound]) == JobKinds.referenceMarkdown,
                "regenerate the block with `reflowd docs jobs`")
        for name in JobKinds.names { #expect(text.contains("`\(name)`"), "docs/JOBS.md does not describe \(name)") }
    }
}
