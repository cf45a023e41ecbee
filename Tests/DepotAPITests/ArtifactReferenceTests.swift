import DepotAPI
import DepotCore
import Testing

@Suite struct ArtifactReferenceTests {
    static let hex = String(repeating: "ab", count: 32)
    static let digest = "sha256:" + hex

    /// Every accepted form: text -> (registry, repository, tag, digest).
    static let accepted: [(String, String?, String, String?, String?)] = [
        ("llm:v1", nil, "llm", "v1", nil),
        ("team/llm:v2", nil, "team/llm", "v2", nil),
        ("team/sub/llm:V2.0_rc-1", nil, "team/sub/llm", "V2.0_rc-1", nil),
        ("team/llm@\(digest)", nil, "team/llm", nil, digest),
        ("team/llm:v2@\(digest)", nil, "team/llm", "v2", digest),
        ("registry.example.com/llm:v1", "registry.example.com", "llm", "v1", nil),
        ("registry.example.com:5000/team/llm:v2", "registry.example.com:5000", "team/llm", "v2", nil),
        ("localhost/team/llm:v2", "localhost", "team/llm", "v2", nil),
        ("localhost:5000/team/llm@\(digest)", "localhost:5000", "team/llm", nil, digest),
        ("127.0.0.1:5000/team/llm:v2@\(digest)", "127.0.0.1:5000", "team/llm", "v2", digest),
        ("[::1]:5000/team/llm:v2", "[::1]:5000", "team/llm", "v2", nil),
        // A dot in a later component is part of the repository, not a host.
        ("team/llm.v2:x", nil, "team/llm.v2", "x", nil),
        ("a__b/c--d:t", nil, "a__b/c--d", "t", nil),
    ]

    @Test func everyFormParsesAndPrintsBack() throws {
        for (text, registry, repository, tag, digest) in Self.accepted {
            let r = try ArtifactReference(parsing: text)
            #expect(r.registry == registry, "\(text)")
            #expect(r.repository == repository, "\(text)")
            #expect(r.tag == tag, "\(text)")
            #expect(r.digest?.description == digest, "\(text)")
            #expect(r.description == text, "canonical text of \(text)")
            #expect(r.reference == (digest ?? tag), "the digest decides: \(text)")
            #expect(try ArtifactReference(parsing: r.description) == r)
        }
    }

    @Test func aRepositoryAloneOnlyWhereNoVersionIsNeeded() throws {
        let r = try ArtifactReference(parsing: "team/llm", requireVersion: false)
        #expect(r.repository == "team/llm" && r.tag == nil && r.digest == nil)
        let h = try ArtifactReference(parsing: "models.example.com/llm", requireVersion: false)
        #expect(h.registry == "models.example.com" && h.repository == "llm")
        #expect(throws: ArtifactReference.ParseError.self) { try ArtifactReference(parsing: "team/llm") }
    }

    /// Refused forms, with the part of the message that says what was wrong.
    static let refused: [(String, String)] = [
        ("", "empty"),
        ("Team/llm:v1", "not a valid repository"),
        ("team//llm:v1", "not a valid repository"),
        ("team/llm/:v1", "not a valid repository"),
        ("/team/llm:v1", "not a valid repository"),
        ("team/llm:", "not a valid tag"),
        ("team/llm:-v1", "not a valid tag"),
        ("team/llm:" + String(repeating: "a", count: 129), "not a valid tag"),
        ("team/llm@sha256:abc", "not a sha256 digest"),
        ("team/llm@md5:" + hex, "not a sha256 digest"),
        ("team/llm@\(digest)@\(digest)", "not a sha256 digest"),
        ("team/llm:v1 ", "printable ASCII"),
        ("team/llm:v\u{e9}", "printable ASCII"),
        ("exa_mple.com/llm:v1", "HOST[:PORT]"),
        ("example.com:0/llm:v1", "HOST[:PORT]"),
        ("example.com:65536/llm:v1", "HOST[:PORT]"),
        ("example.com:80a/llm:v1", "HOST[:PORT]"),
        ("[zz]:5000/llm:v1", "HOST[:PORT]"),
        ("example.com/:v1", "names no repository"),
        ("example.com/", "names no repository"),
        (":v1", "names no repository"),
        ("@\(digest)", "names no repository"),
        (String(repeating: "a/", count: 600) + "a:v1", "longer than"),
    ]

    @Test func refusedFormsSayWhatWasExpected() {
        for (text, problem) in Self.refused {
            do throws(ArtifactReference.ParseError) {
                let r = try ArtifactReference(parsing: text)
                Issue.record("'\(text)' was accepted as \(r)")
            } catch {
                #expect(error.problem.contains(problem), "'\(text)': \(error.problem)")
                #expect(error.description.contains(ArtifactReference.grammar), "'\(text)': \(error)")
                #expect(error.description.contains("e.g."), "an example is shown")
            }
        }
    }

    @Test func hostileInputIsBoundedAndShortenedInErrors() {
        let long = String(repeating: "x", count: 100_000)
        do throws(ArtifactReference.ParseError) {
            _ = try ArtifactReference(parsing: long)
            Issue.record("accepted")
        } catch {
            #expect(error.text.count <= 200)
        }
        // Many separators: still one linear pass and a clear error.
        let colons = String(repeating: ":", count: ArtifactReference.maxLength)
        #expect(throws: ArtifactReference.ParseError.self) { try ArtifactReference(parsing: colons) }
    }

    @Test func localDropsTheRegistry() throws {
        let r = try ArtifactReference(parsing: "localhost:5000/team/llm:v2@\(Self.digest)")
        #expect(r.local.description == "team/llm:v2@\(Self.digest)")
    }
}
