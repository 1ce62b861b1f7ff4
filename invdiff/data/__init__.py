"""Real held-out evaluation slices shipped with invdiff (see README.md in this folder)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["data_path", "list_data"]

_DIR = Path(__file__).resolve().parent


def list_data() -> list[str]:
    return sorted(p.name for p in _DIR.glob("*.npy"))


def data_path(name: str) -> Path:
    """Path of a shipped file, e.g. ``data_path("dipy_t1_coronal_64.npy")``."""
    path = _DIR / name
    if not path.is_file():
        raise ValueError(f"unknown shipped data file {name!r}; available: {', '.join(list_data())}")
    return path
