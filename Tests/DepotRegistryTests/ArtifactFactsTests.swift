import DepotAPI
import DepotCatalog
import DepotCore
import DepotRegistry
import DepotTestSupport
import Testing

/// The web UI's search: facts written with each manifest, found by index, removed with it,
/// backfilled for manifests pushed before they existed.
@Suite struct ArtifactFactsTests {
    func model(_ r: TestRegistry, _ repo: String, _ tag: String, dtype: String, run: String, extra: [String: String] = [:]) throws -> Digest
    {
        let weights = makeSafetensors([("w", dtype, [4], [UInt8](repeating: 1, count: dtype == "F32" ? 16 : 8))])
        return try r.pushManifest(
            repo, tag, layers: [weights], annotations: [Annotation.Lineage.run: run].merging(extra) { a, _ in a },
            layerAnnotations: [["org.opencontainers.image.title": "model.safetensors"]])
    }

    func search(_ r: TestRegistry, _ text: String) throws -> [String] {
        let q = try ArtifactFacts.parseQuery(text)
        return try r.registry.searchArtifacts(q).map { "\($0.repository)@\($0.digest)" }
    }

    @Test func searchFindsByRunFormatDtypeAnnotationAndName() throws {
        let r = try TestRegistry()
        let a = try model(r, "team/llm", "v1", dtype: "F32", run: "exp-41", extra: ["org.example.Owner": "Ana"])
        let b = try model(r, "team/llm", "v2", dtype: "F16", run: "exp-42")
        let c = try model(r, "other/vision", "v1", dtype: "F16", run: "exp-42")
        #expect(try search(r, "run:exp-42").sorted() == ["other/vision@\(c)", "team/llm@\(b)"].sorted())
        #expect(try search(r, "run:exp-42 llm") == ["team/llm@\(b)"])
        #expect(try search(r, "format:safetensors dtype:F32") == ["team/llm@\(a)"])
        // Annotation keys keep their case; values match exactly.
        #expect(try search(r, "annotation.org.example.Owner:Ana") == ["team/llm@\(a)"])
        #expect(try search(r, "annotation.org.example.owner:Ana").isEmpty)
        #expect(try search(r, "run:exp-4").isEmpty)
        // Newest first, without filters.
        #expect(try search(r, "vision") == ["other/vision@\(c)"])
    }

    @Test func theSameManifestInASecondRepositoryGetsItsFormatFacts() throws {
        let r = try TestRegistry()
        let first = try model(r, "a/m", "v1", dtype: "BF16", run: "r1")
        // Same bytes pushed to another repository: metadata is not extracted again, facts are.
        let second = try model(r, "b/m", "v1", dtype: "BF16", run: "r1")
        #expect(first == second)
        #expect(try search(r, "dtype:BF16").sorted() == ["a/m@\(first)", "b/m@\(first)"])
    }

    @Test func deletingAManifestRemovesItsFacts() throws {
        let r = try TestRegistry()
        let d = try model(r, "team/llm", "v1", dtype: "F32", run: "gone")
        try r.registry.deleteManifest(try RepositoryName("team/llm"), .digest(d))
        #expect(try search(r, "run:gone").isEmpty)
        let left = try r.registry.store.catalog.read { c in
            try c.first("SELECT COUNT(*) FROM artifact_facts") { $0.int(0) }
        }
        #expect(left == 0)
    }

    @Test func manifestsWithoutFactsAreBackfilled() throws {
        let r = try TestRegistry()
        let d = try model(r, "team/llm", "v1", dtype: "F32", run: "old")
        // As a catalog migrated to 13 looks: manifests, no facts.
        try r.registry.store.catalog.write { try $0.run("DELETE FROM artifact_facts") }
        #expect(try search(r, "run:old").isEmpty)
        #expect(try r.registry.indexArtifactFacts(batch: 10) == 1)
        #expect(try r.registry.indexArtifactFacts(batch: 10) == 0, "every manifest has facts now (at least its media type)")
        #expect(try search(r, "run:old format:safetensors") == ["team/llm@\(d)"])
    }

    @Test func factsAreBoundedWhateverTheAnnotations() {
        var annotations: [String: String] = [:]
        for i in 0..<1000 { annotations["k\(i)"] = String(repeating: "v", count: i) }
        annotations[String(repeating: "x", count: 500)] = "long key"
        let facts = ArtifactFacts.of(mediaType: MediaType.ociManifest, artifactType: nil, annotations: annotations, metadataJSON: nil)
        #expect(facts.count <= ArtifactFacts.maxAnnotations + 8)
        #expect(facts.allSatisfy { $0.value.utf8.count <= ArtifactFacts.maxValueBytes && $0.key.utf8.count <= ArtifactFacts.maxKeyBytes })
        // A metadata document that is not JSON contributes nothing (and does not throw).
        #expect(ArtifactFacts.of(mediaType: "m", artifactType: "t", annotations: nil, metadataJSON: "{not json").count == 2)
    }

    @Test func onnxOpsetsOfTheDefaultDomainAreFacts() {
        let metadata = """
            {"files":[{"format":"onnx","opsets":[{"domain":"","version":17},{"domain":"com.microsoft","version":1}]}],
             "triton":{"backend":"onnxruntime"}}
            """
        let facts = Set(ArtifactFacts.of(mediaType: "m", artifactType: nil, annotations: nil, metadataJSON: metadata))
        #expect(facts.contains(ArtifactFact("opset", "17")))
        #expect(!facts.contains(ArtifactFact("opset", "1")))
        #expect(facts.contains(ArtifactFact("format", "onnx")))
        #expect(facts.contains(ArtifactFact("backend", "onnxruntime")))
    }

    @Test func theSearchBoxSyntax() throws {
        let q = try ArtifactFacts.parseQuery("llm run:\"exp 42\" annotation.Org.Key:V format:onnx")
        #expect(q.facts == [ArtifactFact("run", "exp 42"), ArtifactFact("annotation.Org.Key", "V"), ArtifactFact("format", "onnx")])
        #expect(q.names == ["llm"])
        #expect(registryErrorCode { try ArtifactFacts.parseQuery("colour:red") } == "INVALID_REQUEST")
        #expect(registryErrorCode { try ArtifactFacts.parseQuery(String(repeating: "a ", count: 20)) } == "INVALID_REQUEST")
        #expect(registryErrorCode { try ArtifactFacts.parseQuery(String(repeating: "a", count: 2000)) } == "INVALID_REQUEST")
        #expect(registryErrorCode { try ArtifactFacts.parseQuery("annotation.:x") } == "INVALID_REQUEST")
    }
}
