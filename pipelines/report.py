"""The PNG report written beside every reconstruction: labelled panels side by side.

Pillow (a dependency of scikit-image) draws it, so the CLI needs no plotting library.
Each panel is windowed to its own 0.5-99.5 percentile range unless it shares a window with the
reference (the truth, the measurement and the reconstruction share one, so they compare fairly).
Hyperspectral cubes are shown in false colour: three of their bands as red, green and blue.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_path

__all__ = ["Panel", "false_colour", "false_colour_bands", "write_report"]


@dataclass(frozen=True)
class Panel:
    title: str
    image: np.ndarray  # 2D, or (H, W, 3) with colormap "rgb"
    window: tuple[float, float] | None = None  # (low, high); None: own percentile window
    colormap: str = "gray"  # "gray", "hot" (uncertainty/error maps) or "rgb" (false-colour cubes)


def false_colour_bands(bands: int) -> tuple[int, int, int]:
    """The band indices shown as red, green and blue: at 85 %, 50 % and 15 % of the band axis.

    A cube file carries no wavelengths in general, so the choice is by position; for the usual 400-700 nm cubes
    (CAVE, ICVL, Harvard) these are about 655, 550 and 445 nm, close to natural colour.
    """
    if bands < 1:
        raise ValueError(f"bands must be >= 1, got {bands}")
    red, green, blue = (round(f * (bands - 1)) for f in (0.85, 0.5, 0.15))
    return red, green, blue


def false_colour(cube: np.ndarray, bands: tuple[int, int, int]) -> np.ndarray:
    """``(H, W, 3)`` image of the cube ``(bands, H, W)`` with ``bands`` (red, green, blue) as its channels."""
    cube = np.asarray(cube)
    if cube.ndim != 3:
        raise ValueError(f"false_colour needs a cube (bands, H, W), got shape {cube.shape}")
    return np.stack([cube[b] for b in bands], axis=-1)


def intensity_window(image: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(image, [0.5, 99.5])
    return float(low), float(high if high > low else low + 1.0)


def _to_rgb(panel: Panel, size: int) -> np.ndarray:
    from PIL import Image

    image = np.asarray(panel.image, dtype=np.float64)
    rgb_panel = panel.colormap == "rgb"
    if (image.ndim, image.shape[2:]) != ((3, (3,)) if rgb_panel else (2, ())):
        expected = "(H, W, 3)" if rgb_panel else "2D"
        raise ValueError(f"report panel {panel.title!r} must be {expected}, got shape {image.shape}")
    low, high = panel.window or intensity_window(image)
    scaled = np.clip((image - low) / (high - low), 0, 1)
    if rgb_panel:
        rgb = scaled
    elif panel.colormap == "hot":
        rgb = np.stack([np.clip(3 * scaled, 0, 1), np.clip(3 * scaled - 1, 0, 1), np.clip(3 * scaled - 2, 0, 1)], -1)
    else:
        rgb = np.repeat(scaled[..., None], 3, axis=-1)
    pil = Image.fromarray((rgb * 255).astype(np.uint8))
    scale = size / max(image.shape[:2])
    pil = pil.resize((max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))), Image.NEAREST)
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    arr = np.asarray(pil)
    top, left = (size - arr.shape[0]) // 2, (size - arr.shape[1]) // 2
    canvas[top : top + arr.shape[0], left : left + arr.shape[1]] = arr
    return canvas


def write_report(panels: Sequence[Panel], path: Path, *, caption: str = "", panel_size: int = 256, overwrite: bool = False) -> Path:
    """Write the panels side by side with their titles (and an optional caption line) as PNG."""
    from PIL import Image, ImageDraw

    if not panels:
        raise ValueError("write_report needs at least one panel")
    title_h, caption_h, pad = 22, 22 if caption else 0, 6
    width = len(panels) * (panel_size + pad) + pad
    height = title_h + panel_size + caption_h + 2 * pad
    sheet = Image.new("RGB", (width, height), (20, 20, 20))
    draw = ImageDraw.Draw(sheet)
    for i, panel in enumerate(panels):
        left = pad + i * (panel_size + pad)
        draw.text((left + 2, pad), panel.title, fill=(235, 235, 235))
        sheet.paste(Image.fromarray(_to_rgb(panel, panel_size)), (left, pad + title_h))
    if caption:
        draw.text((pad + 2, pad + title_h + panel_size + 4), caption, fill=(200, 200, 200))
    path = Path(path)
    with atomic_path(path, overwrite=overwrite) as tmp:
        sheet.save(tmp, format="PNG")
    return path
