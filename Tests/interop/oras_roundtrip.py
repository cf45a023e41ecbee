#!/usr/bin/env python3
"""Pushes a multi-file model artifact to Depot with oras-py (monolithic and chunked uploads),
lists tags, reads the manifest and pulls both tags back, checking every file byte for byte.
Usage: oras_roundtrip.py HOST:PORT WORKDIR. Prints what it checked; exits non-zero on failure."""
import filecmp
import os
import sys

import oras.client

registry, work = sys.argv[1], sys.argv[2]
os.makedirs(work, exist_ok=True)
os.chdir(work)  # oras-py wants relative paths
with open("model.bin", "wb") as f:
    f.write(os.urandom(3 * 1024 * 1024 + 123))
with open("params.json", "w") as f:
    f.write('{"layers": 6, "hidden": 1024}')

c = oras.client.OrasClient(hostname=registry, insecure=True)
repo = f"{registry}/interop/oras-model"
c.push(target=f"{repo}:v1", files=["model.bin:application/octet-stream", "params.json:application/json"])
c.push(target=f"{repo}:chunked", files=["model.bin"], do_chunked=True, chunk_size=512 * 1024)

tags = c.get_tags(repo)
assert sorted(tags) == ["chunked", "v1"], tags
manifest = c.get_manifest(f"{repo}:v1")
titles = sorted(l["annotations"]["org.opencontainers.image.title"] for l in manifest["layers"])
assert titles == ["model.bin", "params.json"], titles

for tag, names in (("v1", ["model.bin", "params.json"]), ("chunked", ["model.bin"])):
    out = f"out-{tag}"
    c.pull(target=f"{repo}:{tag}", outdir=out)
    for n in names:
        assert filecmp.cmp(n, os.path.join(out, n), shallow=False), f"{tag}/{n} differs"

c.delete_tag(repo, "chunked")
assert c.get_tags(repo) == ["v1"], c.get_tags(repo)
print("oras: pushed monolithic and chunked, listed tags, read manifest, pulled both byte-identical, deleted a tag")
