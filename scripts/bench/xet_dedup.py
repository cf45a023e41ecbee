#!/usr/bin/env python3
"""Measure Hugging Face Xet chunk-level dedup of FILEs stored, in order, into one fresh CAS.

Side-by-side reference for ``depot bench dedup``. Uses hf_xet's local CAS backend
(``endpoint="local://<dir>"``) in a temporary directory -- no network, no Hub account.
Each file is its own upload commit, so file k can dedup against files 1..k-1 (and itself).

Per file, from ``XetCommitReport.dedup_metrics``:
  total_bytes          bytes chunked (= file size)
  new_bytes            bytes of chunks not already in the CAS (stored, before compression)
  deduped_bytes        bytes of chunks already present
  xorb_bytes_uploaded  bytes written as xorbs: new chunks after Xet's compression
                       (LZ4 / byte-grouping, chosen per chunk) plus xorb framing
Totals: logical_bytes = sum of file sizes, stored_bytes = sum of new_bytes,
stored_bytes_compressed = sum of xorb_bytes_uploaded, dedup_ratio = logical / stored.
Shard (metadata) bytes are reported per file but not counted as stored.
"""
import argparse
import json
import os
import sys
import tempfile

METRICS = ("total_bytes", "new_bytes", "deduped_bytes", "xorb_bytes_uploaded",
           "shard_bytes_uploaded", "total_chunks", "new_chunks", "defrag_prevented_dedup_bytes")


def ratio(num, den):
    return num / den if den else None


def measure(paths, workdir):
    # Keep hf_xet's logs/caches inside the temp dir instead of ~/.cache/huggingface/xet.
    os.environ["HF_XET_CACHE"] = os.path.join(workdir, "cache")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    import hf_xet  # imported after the environment is set

    endpoint = "local://" + os.path.join(workdir, "cas")
    session = hf_xet.XetSession()
    files = []
    for path in paths:
        commit = session.new_upload_commit(endpoint=endpoint)
        commit.start_upload_file(os.path.abspath(path))
        m = commit.wait_to_finish().dedup_metrics
        files.append({"name": os.path.basename(path), "path": path,
                      "size_bytes": os.path.getsize(path),
                      **{k: getattr(m, k) for k in METRICS}})
    return files


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", metavar="FILE")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    a = ap.parse_args()
    for p in a.files:
        if not os.path.isfile(p):
            ap.error(f"not a file: {p}")

    with tempfile.TemporaryDirectory(prefix="xet-dedup-") as tmp:
        files = measure(a.files, tmp)

    logical = sum(f["size_bytes"] for f in files)
    stored = sum(f["new_bytes"] for f in files)
    compressed = sum(f["xorb_bytes_uploaded"] for f in files)
    result = {"tool": "hf-xet", "files": files, "logical_bytes": logical,
              "stored_bytes": stored, "stored_bytes_compressed": compressed,
              "dedup_ratio": ratio(logical, stored),
              "dedup_ratio_compressed": ratio(logical, compressed)}
    if a.json:
        json.dump(result, sys.stdout, indent=2)
        print()
        return

    fmt = "{:<28} {:>12} {:>12} {:>12} {:>12} {:>14}"
    print(fmt.format("file", "total", "new", "deduped", "dedup %", "xorb uploaded"))
    for f in files:
        pct = 100 * ratio(f["deduped_bytes"], f["total_bytes"]) if f["total_bytes"] else 0.0
        print(fmt.format(f["name"][:28], f["total_bytes"], f["new_bytes"], f["deduped_bytes"],
                         f"{pct:.2f}", f["xorb_bytes_uploaded"]))
    show = lambda r: "inf" if r is None else f"{r:.3f}x"
    print(f"logical_bytes           {logical}")
    print(f"stored_bytes            {stored}  (new chunk bytes)  ratio {show(result['dedup_ratio'])}")
    print(f"stored_bytes_compressed {compressed}  (xorb bytes)   ratio {show(result['dedup_ratio_compressed'])}")


if __name__ == "__main__":
    main()
