import Testing
import ReflowHTTP

@Suite("HTTPHeaders")
struct HTTPHeadersTests {
    @Test func caseInsensitiveLookup() {
        var h = HTTPHeaders([("Content-Type", "a"), ("X-A", "1"), ("x-a", "2")])
        #expect(h["content-type"] == "a" && h.values("X-a") == ["1", "2"])
        #expect(!HTTPHeaders.same("a", "A ") && HTTPHeaders.same("Host", "hOST") && !HTTPHeaders.same("[", "{"))
        h.set("X-A", "3")
        #expect(h.values("x-a") == ["3"] && h.count == 2)
    }
}
