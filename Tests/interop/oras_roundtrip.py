#!/usr/bin/env python3
"""Pushes a multi-file model artifact to Depot with oras-py (monolithic and chunked uploads),
lists tags, reads the manifest and pulls both tags back, checking every file byte for byte.
Usage: oras_roundtrip.py HOST:PORT WORKDIR. With ORAS_USER and ORAS_PASSWORD set it first checks
that an anonymous push is refused, then logs in (the registry's token flow does the rest).
Prints what it checked; exits non-zero on failure."""
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
if os.environ.get("ORAS_USER"):
    try:
        c.push(target=f"{repo}:anonymous", files=["params.json"])
        sys.exit("an anonymous push was accepted")
    except Exception as e:  # oras-py raises on the 401/403
        print(f"oras: anonymous push refused ({type(e).__name__}: {str(e)[:120]})")
    c = oras.client.OrasClient(hostname=registry, insecure=True)
    # A config file of its own, so the test never touches the user's ~/.docker/config.json.
    answer = c.login(
        username=os.environ["ORAS_USER"], password=os.environ["ORAS_PASSWORD"], tls_verify=False, hostname=registry,
        config_path=os.path.join(work, "docker-config.json"))
    print(f"oras: login {answer}")
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
