import DepotClient
import Testing

@Suite struct PathPatternTests {
    @Test func patternsSelectAsHuggingFaceAllowPatternsDo() throws {
        let cases: [(String, String, Bool)] = [
            ("*.safetensors", "model.safetensors", true),
            ("*.safetensors", "shards/model-00001.safetensors", true), // * crosses /
            ("*.safetensors", "model.safetensors.index.json", false),
            ("tokenizer*", "tokenizer.json", true),
            ("tokenizer*", "sub/tokenizer.json", false),
            ("*/tokenizer*", "sub/tokenizer.json", true),
            ("config.json", "config.json", true),
            ("config.json", "configXjson", false),
            ("config?json", "config.json", true),
            ("model-0000?.bin", "model-00001.bin", true),
            ("model-0000?.bin", "model-000012.bin", false),
            ("*", "anything/at/all", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("**", "", true),
        ]
        for (pattern, path, expected) in cases {
            #expect(try PathPattern(pattern).matches(path) == expected, "\(pattern) vs \(path)")
        }
    }

    @Test func worstCaseInputsStayBounded() throws {
        // Many stars against a long near-miss: the single-backtrack algorithm is O(n·m), here
        // 1024 × 4096 steps at most, not exponential.
        let pattern = try PathPattern(String(repeating: "*a", count: 512))
        let path = String(repeating: "a", count: 4000) + "b"
        #expect(pattern.matches(path) == false)
        #expect(throws: (any Error).self) { try PathPattern("") }
        #expect(throws: (any Error).self) { try PathPattern(String(repeating: "x", count: 1025)) }
    }
}
