"""Provenance JSON written beside every output: what went in, what ran, on what, with which seed."""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import time
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_path

__all__ = ["file_sha256", "hardware", "versions", "write_provenance"]

_PACKAGES = ("invdiff", "torch", "monai", "numpy", "lightning", "nibabel", "pydicom", "scikit-image")


def file_sha256(paths: Path | Iterable[Path]) -> str:
    """SHA-256 over the bytes of one file or of several files in sorted path order."""
    files = [Path(paths)] if isinstance(paths, (str, Path)) else sorted(Path(p) for p in paths)
    digest = hashlib.sha256()
    for path in files:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def versions() -> dict[str, str]:
    found = {"python": sys.version.split()[0]}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def hardware(device: torch.device | str = "cpu") -> dict[str, Any]:
    device = torch.device(device)
    info: dict[str, Any] = {
        "device": str(device),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.Tensor):
        return value.tolist() if value.numel() <= 64 else f"tensor{tuple(value.shape)}"
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def write_provenance(path: Path, record: Mapping[str, Any], *, device: torch.device | str = "cpu", overwrite: bool = False) -> Path:
    """Write ``record`` plus versions, hardware and the time as indented JSON (atomically)."""
    payload = dict(record)
    payload.setdefault("versions", versions())
    payload.setdefault("hardware", hardware(device))
    payload.setdefault("written_at", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    path = Path(path)
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(_jsonable(payload), indent=2) + "\n")
    return path
