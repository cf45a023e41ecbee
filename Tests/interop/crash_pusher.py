#!/usr/bin/env python3
"""A pushing client for the server crash test (plain OCI API, Python requests).
push BASE_URL SEED: pushes artifacts forever, alternating monolithic and chunked blob uploads,
  and prints `ACK <tag> <manifest digest> <layer digest> <size> <seed>` only after the manifest
  PUT returned 201. Exits when the server goes away.
verify BASE_URL ACKFILE: every acknowledged tag must resolve to its manifest digest and the
  layer must read back with its digest. Prints how many were checked; exits 1 on any failure."""
import hashlib
import json
import random
import sys

import requests

REPO = "crash/model"


def blob_bytes(seed, size):
    return random.Random(seed).randbytes(size)


def push(base, seed0):
    s = requests.Session()
    config = b"{}"
    cd = "sha256:" + hashlib.sha256(config).hexdigest()
    i = 0
    while True:
        seed = seed0 * 1_000_000 + i
        size = random.Random(seed).randrange(1, 3_000_000)
        data = blob_bytes(seed, size)
        d = "sha256:" + hashlib.sha256(data).hexdigest()
        try:
            s.post(f"{base}/v2/{REPO}/blobs/uploads/?digest={cd}", data=config).raise_for_status()
            if i % 2 == 0:
                r = s.post(f"{base}/v2/{REPO}/blobs/uploads/?digest={d}", data=data)
            else:
                loc = s.post(f"{base}/v2/{REPO}/blobs/uploads/").headers["Location"]
                half = size // 2
                loc = s.patch(base + loc, data=data[:half], headers={"Content-Range": f"0-{half - 1}"} if half else {}).headers["Location"]
                r = s.put(f"{base}{loc}?digest={d}", data=data[half:])
            r.raise_for_status()
            manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                                   "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": cd, "size": 2},
                                   "layers": [{"mediaType": "application/octet-stream", "digest": d, "size": size}]}).encode()
            tag = f"t{seed}"
            r = s.put(f"{base}/v2/{REPO}/manifests/{tag}", data=manifest,
                      headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
            if r.status_code != 201:
                print(f"manifest PUT answered {r.status_code}: {r.text}", file=sys.stderr)
                sys.exit(2)
            print(f"ACK {tag} sha256:{hashlib.sha256(manifest).hexdigest()} {d} {size} {seed}", flush=True)
        except requests.exceptions.RequestException:
            return
        i += 1


def verify(base, ackfile):
    s = requests.Session()
    checked = 0
    for line in open(ackfile):
        _, tag, md, ld, size, seed = line.split()
        r = s.get(f"{base}/v2/{REPO}/manifests/{tag}")
        assert r.status_code == 200, f"{tag}: {r.status_code} {r.text}"
        assert "sha256:" + hashlib.sha256(r.content).hexdigest() == md, f"{tag}: manifest changed"
        r = s.get(f"{base}/v2/{REPO}/blobs/{ld}")
        assert r.status_code == 200, f"{ld}: {r.status_code}"
        assert "sha256:" + hashlib.sha256(r.content).hexdigest() == ld and len(r.content) == int(size), f"{ld}: wrong bytes"
        checked += 1
    print(f"verified {checked} acknowledged manifests and their blobs")


if __name__ == "__main__":
    if sys.argv[1] == "push":
        push(sys.argv[2], int(sys.argv[3]))
    else:
        verify(sys.argv[2], sys.argv[3])
