#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<harness>/: small valid (and a few nearly valid)
inputs of every format, so that libFuzzer starts from real structure. Deterministic; the output is
committed. Run from anywhere: python3 fuzz/make_corpus.py"""
import io, json, os, pickle, shutil, struct, subprocess, zipfile, collections

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(HERE, "corpus")


def put(harness, name, data):
    d = os.path.join(OUT, harness)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# --- protobuf wire helpers -------------------------------------------------------------------
def varint(v):
    out = bytearray()
    v &= (1 << 64) - 1
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def fint(n, v):
    return varint(n << 3) + varint(v)


def fbytes(n, b):
    if isinstance(b, str):
        b = b.encode()
    return varint(n << 3 | 2) + varint(len(b)) + b


# --- safetensors -----------------------------------------------------------------------------
def safetensors(tensors, metadata=None):
    header, data, off = {}, b"", 0
    for name, (dtype, shape, payload) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(payload)]}
        data += payload
        off += len(payload)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


put("safetensors", "two", safetensors({"a": ("F32", [2, 2], b"\0" * 16), "b": ("F16", [3], b"\1" * 6)}, {"format": "pt"}))
put("safetensors", "empty", safetensors({}))
put("safetensors", "scalar", safetensors({"s": ("I64", [], b"\2" * 8)}))
put("safetensors", "lying", struct.pack("<Q", 60) + b'{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,8]}}    ' + b"\0" * 8)

# --- ONNX ------------------------------------------------------------------------------------
def value_info(name, dims):
    dim_msgs = b"".join(fbytes(1, fint(1, d) if isinstance(d, int) else fbytes(2, d)) for d in dims)
    tensor_type = fint(1, 1) + fbytes(2, dim_msgs)
    return fbytes(1, name) + fbytes(2, fbytes(1, tensor_type))


graph = (fbytes(1, fbytes(1, "x") + fbytes(2, "y") + fbytes(4, "Relu")) + fbytes(2, "g")
         + fbytes(5, fbytes(8, "w") + fint(2, 1) + fbytes(9, b"\0" * 16))
         + fbytes(5, fbytes(8, "ext") + fint(14, 1) + fbytes(13, fbytes(1, "location") + fbytes(2, "weights.bin"))
                  + fbytes(13, fbytes(1, "offset") + fbytes(2, "0")) + fbytes(13, fbytes(1, "length") + fbytes(2, "64")))
         + fbytes(11, value_info("x", ["batch", 3])) + fbytes(12, value_info("y", ["batch", 3])))
model = (fint(1, 8) + fbytes(2, "depot") + fbytes(3, "1.0") + fint(5, 1) + fbytes(6, "doc") + fbytes(7, graph)
         + fbytes(8, fbytes(1, "") + fint(2, 17)) + fbytes(14, fbytes(1, "k") + fbytes(2, "v")))
put("onnx", "model", model)
put("onnx", "minimal", fint(1, 7))
put("onnx", "graph-only", fbytes(7, fbytes(1, fbytes(4, "Add"))))

# --- pickle ----------------------------------------------------------------------------------
class Evil:
    def __reduce__(self):
        return (os.system, ("true",))


objs = [collections.OrderedDict(a=1), {"k": [1, 2.5, "s", b"b", None, True]}, (1, 2), {1, 2}, bytearray(b"x")]
for proto in range(0, 6):
    for i, o in enumerate(objs):
        put("pickle", f"p{proto}-{i}", pickle.dumps(o, protocol=proto))
    put("pickle", f"p{proto}-evil", pickle.dumps(Evil(), protocol=proto))
put("pickle", "stack-global-memo",
    b"\x80\x04\x8c\x0asubprocess\x94\x8c\x05Popen\x94\x30\x30\x68\x00\x68\x01\x93\x29\x52\x2e")


# --- ZIP (torch.save-like) -------------------------------------------------------------------
def torch_zip(pkl, extra=(), compress=zipfile.ZIP_STORED):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compress) as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/version", "3\n")
        z.writestr("archive/data/0", b"\0" * 16)
        for name, data in extra:
            z.writestr(name, data)
    return buf.getvalue()


safe = pickle.dumps(collections.OrderedDict(w=1), protocol=2)
put("zip", "torch", torch_zip(safe))
put("zip", "torch-evil", torch_zip(pickle.dumps(Evil(), protocol=2)))
put("zip", "deflated", torch_zip(safe, compress=zipfile.ZIP_DEFLATED))
put("zip", "two-pickles", torch_zip(safe, [("archive/constants.pkl", pickle.dumps([1], protocol=2))]))
buf = io.BytesIO()
with zipfile.ZipFile(buf, "w") as z:
    z.writestr("readme.txt", "not a checkpoint")
put("zip", "not-torch", buf.getvalue())
# ZIP64 form (force_zip64 on the entry).
buf = io.BytesIO()
with zipfile.ZipFile(buf, "w") as z:
    with z.open("archive/data.pkl", "w", force_zip64=True) as f:
        f.write(safe)
put("zip", "zip64", buf.getvalue())

# --- TensorFlow ------------------------------------------------------------------------------
meta_info = fbytes(4, "serve") + fbytes(4, "gpu") + fbytes(5, "2.15.0") + fbytes(6, "v2.15.0")
put("tensorflow", "saved-model", fint(1, 1) + fbytes(2, fbytes(1, meta_info) + fbytes(2, b"\0" * 32)))
put("tensorflow", "graphdef", fbytes(1, fbytes(1, "x") + fbytes(2, "Placeholder")) + fbytes(1, fbytes(1, "y") + fbytes(2, "Identity"))
    + fbytes(4, fint(1, 1234)))

# --- TensorRT (first line: the push's platform string) --------------------------------------
put("tensorrt", "plan", b"sm_90,trt10.3\nftrt" + b"\0" * 28)
put("tensorrt", "ptrt", b"sm86;tensorrt8.6.1\nptrt" + b"\1" * 12)
put("tensorrt", "nomagic", b"\nxxxx")

# --- text proto (Triton config.pbtxt) --------------------------------------------------------
put("textproto", "config", """name: "resnet"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ { name: "x" data_type: TYPE_FP32 dims: [ 3, 224, 224 ] reshape { shape: [ 1, 3, 224, 224 ] } } ]
output { name: "y" data_type: TYPE_FP32 dims: [ 1000 ] }
instance_group [ { count: 2 kind: KIND_GPU gpus: [ 0, 1 ] } ]
version_policy: { specific: { versions: [ 1, 3 ] } }
dynamic_batching { preferred_batch_size: [ 4, 8 ] max_queue_delay_microseconds: 100 }
parameters { key: "k" value: { string_value: "v\\n\\x41\\101" } }
# comment
""")
put("textproto", "ensemble", 'platform: "ensemble"\nensemble_scheduling { step [ { model_name: "a" model_version: -1 }, '
    '{ model_name: "b" } ] }\n[ext.field]: 1.5e3 f: 0x1F g: -2 h: true i: \'single\' "cat"\n')
put("textproto", "angle", "backend: 'python' default_model_filename: 'm.py' a < b: 1 >;")

# --- OCI manifests and indexes ---------------------------------------------------------------
d = "sha256:" + "a" * 64
layer = {"mediaType": "application/octet-stream", "digest": d, "size": 3,
         "annotations": {"org.cncf.model.filepath": "model.onnx"}}
put("manifest", "image", json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": d, "size": 2},
                                    "layers": [layer], "subject": {"mediaType": "x", "digest": d, "size": 1},
                                    "annotations": {"dev.depot.platform": "sm_90"}, "artifactType": "application/x"}))
put("manifest", "index", json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                                    "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d,
                                                   "size": 10, "platform": {"os": "linux"}}]}))
put("manifest", "docker", json.dumps({"schemaVersion": 2,
                                     "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                                     "config": {"mediaType": "x", "digest": d, "size": 2},
                                     "layers": [dict(layer, urls=["https://example.com/l"],
                                                     mediaType="application/vnd.docker.image.rootfs.foreign.diff.tar.gzip")]}))

# --- chunk records: byte 0 codec, bytes 1-3 raw length, then the payload ---------------------
def zstd(data):
    return subprocess.run(["zstd", "-q", "-c", "--no-check"], input=data, capture_output=True, check=True).stdout


raw = bytes(range(256)) * 4
put("chunkrecord", "raw", bytes([0]) + struct.pack("<I", len(raw))[:3] + raw)
put("chunkrecord", "zstd", bytes([1]) + struct.pack("<I", len(raw))[:3] + zstd(raw))
put("chunkrecord", "shuffle4", bytes([2]) + struct.pack("<I", len(raw))[:3] + zstd(raw))
put("chunkrecord", "shuffle2", bytes([3]) + struct.pack("<I", len(raw))[:3] + zstd(raw))

# --- recipes: 32-byte SHA-256, 4-byte little-endian length, repeated -------------------------
put("recipe", "two", (b"\x11" * 32 + struct.pack("<I", 65536)) + (b"\x22" * 32 + struct.pack("<I", 100)))
put("recipe", "zero-length", b"\x33" * 32 + struct.pack("<I", 0) + b"\x44" * 7)

# --- Depot-Hash-States: 8-byte little-endian recipe size, then the header value ----------------
_state = "da5698be17b9b46962335799779fbeca8ce5d491c0d26243bafef9ea1837a9d8"
put("hashstates", "two", struct.pack("<q", 48 << 20) + f"16777216 {_state},{_state}".encode())
put("hashstates", "one-odd-size", struct.pack("<q", (20 << 20) + 1) + f"16777216 {_state}".encode())
put("hashstates", "wrong-count", struct.pack("<q", 100 << 20) + f"33554432 {_state}".encode())
put("hashstates", "bad-stride", struct.pack("<q", 48 << 20) + f"1000 {_state}".encode())

# --- range headers: 8-byte blob size, then the header value ----------------------------------
for i, h in enumerate(["bytes=0-99", "bytes=-100", "bytes=500-", "bytes 0-99/1000", "0-1048575", "bytes=0-1,2-3"]):
    put("range", f"r{i}", struct.pack("<q", 1000) + h.encode())

# --- pipelines and the server config: the shipped files --------------------------------------
os.makedirs(os.path.join(OUT, "pipeline"), exist_ok=True)
for f in sorted(os.listdir(os.path.join(ROOT, "config", "pipelines"))):
    shutil.copy(os.path.join(ROOT, "config", "pipelines", f), os.path.join(OUT, "pipeline", f))
os.makedirs(os.path.join(OUT, "config"), exist_ok=True)
shutil.copy(os.path.join(ROOT, "config", "depot.yaml"), os.path.join(OUT, "config", "depot.yaml"))
put("config", "small", "server:\n  listen: 0.0.0.0:5000\nstorage:\n  compression: off\nformats:\n  concurrency: 4\n")
