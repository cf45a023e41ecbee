"""Checkpoint-like files for the tests: safetensors files of random float32 tensors."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path


def write_safetensors(path: Path, tensors: dict[str, bytes]) -> dict[str, tuple[int, int]]:
    """Writes ``tensors`` (name -> raw float32 bytes) in the safetensors layout; returns each
    tensor's byte range in the file."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, data in tensors.items():
        header[name] = {"dtype": "F32", "shape": [len(data) // 4], "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    ranges: dict[str, tuple[int, int]] = {}
    start = 8 + len(text)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for name, data in tensors.items():
            ranges[name] = (start, start + len(data))
            start += len(data)
            f.write(data)
    return ranges


def base_model(directory: Path, layers: int = 12, tensor_bytes: int = 4 << 20) -> dict[str, bytes]:
    """A base checkpoint folder (model.safetensors + config.json); returns its tensors."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"layers.{i}.weight": os.urandom(tensor_bytes) for i in range(layers)}
    write_safetensors(directory / "model.safetensors", tensors)
    (directory / "config.json").write_text(json.dumps({"layers": layers, "hidden": tensor_bytes // 4}))
    return tensors


def fine_tune(directory: Path, base: dict[str, bytes], changed: list[str]) -> int:
    """A fine-tune of ``base`` in which the tensors named in ``changed`` are new; returns the
    number of bytes that differ from the base (the changed tensors' sizes)."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors = dict(base)
    for name in changed:
        tensors[name] = os.urandom(len(base[name]))
    write_safetensors(directory / "model.safetensors", tensors)
    (directory / "config.json").write_text(json.dumps({"layers": len(base), "hidden": len(next(iter(base.values()))) // 4}))
    return sum(len(base[n]) for n in changed)


def tree_bytes(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory``, by relative path."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}
