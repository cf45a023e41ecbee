import DepotAPI
import DepotCore
import DepotFormats
import Testing

@Suite struct PyTorchTests {
    /// PROTO 2, GLOBAL collections.OrderedDict, EMPTY_TUPLE, REDUCE, STOP.
    let safe: [UInt8] = [0x80, 0x02] + P.global("collections", "OrderedDict") + [0x29, 0x52, 0x2e]
    /// Calls os.system("ls").
    let osSystem: [UInt8] = [0x80, 0x02] + P.global("os", "system") + P.binUnicode("ls") + [0x85, 0x52, 0x2e]
    /// Protocol 4 with FRAME, STACK_GLOBAL over two memoized SHORT_BINUNICODE strings.
    let stackGlobal: [UInt8] =
        [0x80, 0x04, 0x95] + le(30, 8) + P.shortUnicode("posix") + [0x94] + P.shortUnicode("system") + [0x94, 0x93, 0x94]
        + P.shortUnicode("id") + [0x94, 0x85, 0x94, 0x52, 0x94, 0x2e]
    /// STACK_GLOBAL whose strings come back through BINGET after being popped.
    let viaMemo: [UInt8] =
        [0x80, 0x04] + P.shortUnicode("subprocess") + [0x94] + P.shortUnicode("Popen") + [
            0x94, 0x30, 0x30, 0x68, 0x00, 0x68, 0x01, 0x93, 0x29, 0x52, 0x2e,
        ]

    /// A torch.save-like data.pkl: an OrderedDict of one tensor rebuilt from a persistent storage.
    var torchData: [UInt8] {
        var p: [UInt8] = [0x80, 0x02] + P.global("collections", "OrderedDict") + [0x71, 0x00, 0x29, 0x52, 0x71, 0x01]
        p += [0x28] + P.binUnicode("layer.weight") + [0x71, 0x02] + P.global("torch._utils", "_rebuild_tensor_v2") + [0x71, 0x03]
        p += [0x28, 0x28] + P.binUnicode("storage") + P.global("torch", "FloatStorage") + P.binUnicode("0") + P.binUnicode("cpu")
        p += [0x4a] + le(4, 4) + [0x74, 0x51] // TUPLE, BINPERSID
        p += [0x4b, 0x00, 0x4b, 0x02, 0x4b, 0x02, 0x86, 0x4b, 0x02, 0x4b, 0x01, 0x86, 0x89] // offset, size, stride, requires_grad
        p += P.global("collections", "OrderedDict") + [0x29, 0x52, 0x74, 0x52, 0x71, 0x04, 0x75, 0x2e] // TUPLE REDUCE SETITEMS STOP
        return p
    }

    func torchZip(_ pickle: [UInt8], zip64: Bool = false, method: Int = 0) -> [UInt8] {
        makeZip(
            [
                ("archive/data.pkl", pickle, method), ("archive/data/0", [UInt8](repeating: 1, count: 16), 0),
                ("archive/version", Array("3\n".utf8), 0),
            ], zip64: zip64)
    }

    @Test func safeTorchArchive() throws {
        let out = try #require(try inspect("model.pt", torchZip(torchData)))
        #expect(out["format"] == "pytorch")
        #expect(out["container"] == "zip")
        let entries = try #require(out["entries"]?.array)
        #expect(entries.map { $0["name"]?.string } == ["archive/data.pkl", "archive/data/0", "archive/version"])
        #expect(entries[1]["size"] == 16 && entries[1]["method"] == 0)
        #expect(out["imports"] == ["collections.OrderedDict", "torch.FloatStorage", "torch._utils._rebuild_tensor_v2"])
        #expect(out["unsafe"] == false)
        #expect(out["unsafe_imports"] == [])
        let pickles = try #require(out["pickles"]?.array)
        #expect(pickles.count == 1 && pickles[0]["entry"] == "archive/data.pkl")
        #expect((try inspect("model.pt", torchZip(safe)))?["unsafe"] == false)
    }

    @Test func unsafeImportsAreFlagged() throws {
        let out = try #require(try inspect("model.pth", torchZip(osSystem)))
        #expect(out["unsafe"] == true)
        #expect(out["unsafe_imports"] == ["os.system"])
        #expect(out["dangerous_imports"] == ["os.system"])
        let pickles = try #require(out["pickles"]?.array)
        #expect(pickles[0]["unsafe_imports"] == ["os.system"])

        // Any ZIP with a data.pkl is recognised whatever its name.
        let stack = try #require(try inspect("weights.bin", torchZip(stackGlobal)))
        #expect(stack["dangerous_imports"] == ["posix.system"])
        let memo = try #require(try inspect("weights.bin", torchZip(viaMemo)))
        #expect(memo["dangerous_imports"] == ["subprocess.Popen"])
        // A non-dangerous but unknown callable is unsafe only.
        let odd: [UInt8] = [0x80, 0x02] + P.global("mylib.layers", "Custom") + [0x29, 0x52, 0x2e]
        let custom = try #require(try inspect("m.ckpt", torchZip(odd)))
        #expect(custom["unsafe_imports"] == ["mylib.layers.Custom"])
        #expect(custom["dangerous_imports"] == [])
        // Python 2 module names are normalised: __builtin__.eval is builtins.eval.
        let evil: [UInt8] = [0x80, 0x02] + P.global("__builtin__", "eval") + [0x29, 0x52, 0x2e]
        #expect((try inspect("m.pt", torchZip(evil)))?["dangerous_imports"] == ["builtins.eval"])
    }

    @Test func zip64AndCompressedEntries() throws {
        let out = try #require(try inspect("model.pt", torchZip(osSystem, zip64: true)))
        #expect(out["container"] == "zip")
        #expect(out["entries"]?.array?.count == 3)
        #expect(out["unsafe_imports"] == ["os.system"])
        let deflated = try #require(try inspect("model.pt", torchZip(osSystem, method: 8)))
        #expect(deflated["problems"]?.array?.contains("archive/data.pkl: unscanned (compressed)") == true)
    }

    @Test func legacyRawPickle() throws {
        let out = try #require(try inspect("old.pth", safe + osSystem + [0x10, 0x00, 0x00]))
        #expect(out["container"] == "pickle")
        #expect(out["unsafe_imports"] == ["os.system"])
        #expect(out["imports"] == ["collections.OrderedDict", "os.system"])
        // Detected by magic alone.
        #expect((try inspect("blob", safe))?["format"] == "pytorch")
    }

    @Test func malformedPicklesThrow() {
        // Truncated BINUNICODE length, unknown opcode, missing STOP, non-pickle .pt.
        #expect(errorMessage { try inspect("a.pt", [0x80, 0x02, 0x58, 0xff, 0xff, 0xff, 0x7f, 0x41]) }.contains("truncated"))
        #expect(errorMessage { try inspect("a.pt", [0x80, 0x02, 0xff, 0x2e]) }.contains("unknown pickle opcode 0xff"))
        #expect(errorMessage { try inspect("a.pt", [0x80, 0x02, 0x4e]) }.contains("without a STOP"))
        #expect(errorMessage { try inspect("a.pt", Array("hello world".utf8)) }.contains("neither a ZIP"))
        // A central directory pointing outside the file.
        var zip = torchZip(safe)
        let eocd = zip.count - 22
        zip.replaceSubrange((eocd + 16)..<(eocd + 20), with: le(0x7fff_0000, 4))
        #expect(errorMessage { try inspect("a.pt", zip) }.contains("ZIP archive"))
        // Unrecognised plain files are nil.
        let unknown = try? inspect("readme.bin", Array("hello".utf8))
        #expect(unknown == nil)
    }
}
