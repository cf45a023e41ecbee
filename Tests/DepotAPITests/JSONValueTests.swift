import DepotAPI
import Foundation
import Testing

@Suite("JSONValue")
struct JSONValueTests {
    @Test func literalsBuildTheCases() {
        let v: JSONValue = ["name": "m", "count": 3, "ratio": 0.5, "ok": true, "tags": ["a", "b"], "none": .null]
        #expect(v["name"] == .string("m"))
        #expect(v["count"] == .int(3))
        #expect(v["ratio"] == .double(0.5))
        #expect(v["ok"] == .bool(true))
        #expect(v["tags"] == .array([.string("a"), .string("b")]))
        #expect(v["none"] == .null)
        #expect(v["missing"] == nil)
        #expect(v["count"]?.int == 3 && v["ok"]?.bool == true && v["ratio"]?.double == 0.5 && v["count"]?.double == 3)
        #expect(v["name"]?.bool == nil && v["ok"]?.int == nil)
    }

    @Test func plainValuesConvert() {
        #expect(JSONValue(7) == .int(7))
        #expect(JSONValue(Int64(1) << 40) == .int(1 << 40))
        #expect(JSONValue("x") == "x")
        #expect(JSONValue(false) == false)
        #expect(JSONValue(["a", "b"]) == ["a", "b"])
        #expect(JSONValue([1, 2]) == [1, 2])
        #expect(JSONValue(["k": "v"]) == ["k": "v"])
        #expect(JSONValue(["k": 2]) == ["k": 2])
    }

    @Test func encodesWithSortedKeysAndRoundTrips() throws {
        let v: JSONValue = ["b": [1, "two", .null], "a": ["path": "a/b"]]
        let bytes = try WireJSON.encode(v)
        #expect(String(decoding: bytes, as: UTF8.self) == #"{"a":{"path":"a/b"},"b":[1,"two",null]}"#)
        #expect(try WireJSON.decode(JSONValue.self, from: bytes, what: "test") == v)
    }
}
