"""Synthetic-but-realistic hyperspectral cubes from real reflectance spectra and real photographs; no download.

Each scene is a **linear-mixing** cube: at every pixel a convex combination of real material spectra, scaled by a
shading term,

    cube[:, i, j] = shading[i, j] * sum_p abundance[p, i, j] * spectrum_p(i, j),
    spectrum_p(i, j) = (1 - w[i, j]) * e_p + w[i, j] * e'_p,

* spectra: two real reflectance spectra per material (``e_p``: the class medoid, ``e'_p``: the class member at the
  75th percentile of distance to the class median, for within-class variability) from the **earthlib** spectral
  library (7,261 field/lab spectra, 400-2450 nm at 10 nm, water-vapour bands removed; MIT; ships in the wheel),
  linearly interpolated to ``bands`` evenly spaced wavelengths over 400-2450 nm;
* abundances: a soft assignment (Gaussian kernel, then a 0.7 px Gaussian blur) of the pixels of a real photograph
  shipped with scikit-image (centre-cropped, resized) to ``P = 6`` colour centroids found by k-means in CIELAB
  (lightness down-weighted by 0.5); non-negative and summing to one at every pixel;
* ``w``: the image's CIELAB ``b*`` channel, blurred (sigma = size / 32) and rescaled to [0, 1];
* shading: ``0.3 + 0.7 * L`` with ``L`` the image's CIELAB lightness in [0, 1].

Each cube is divided by its maximum, so values fill [0, 1] with a maximum of exactly 1 (as benchmark cubes such
as CAVE are normalised; shaded reflectances themselves stay below ~0.5). **These cubes are low-rank by construction** (the
``HW × bands`` unfolding has rank <= 2P = 12, numerically ~P): they favour low-rank methods (spectral truncation,
DDS2M's rank-10 VS2M) more than real scenes would, and their noise-free spatial structure is that of a photograph,
not of a remote-sensing or microscopy scene. Use them for relative comparisons and tests, not absolute claims.

Requires the optional extra ``hsi`` (``pip install 'invdiff[hsi]'``: earthlib). The library is located by path
(``importlib.util.find_spec``; the earthlib package itself is never imported) and read with NumPy; nothing is
cached on disk; the parsed library is kept in memory after the first call.
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import pathlib
import re
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["SCENES", "TRAINING_SCENES", "Scene", "earthlib_library", "make_scene", "scene_parts", "wavelengths"]

# scene -> (scikit-image photograph, six earthlib LEVEL_3 classes, dark-to-bright cluster order)
_SCENES: dict[str, tuple[str, tuple[str, ...]]] = {
    "coffee": ("coffee", ("char", "wood", "bark", "paint", "concrete_tile", "sand")),
    "astronaut": ("astronaut", ("asphalt", "metal", "canopy", "paint", "comp_shingle", "concrete_tile")),
    "chelsea": ("chelsea", ("char", "litter", "soil", "bark", "canopy", "sand")),
    "rocket": ("rocket", ("asphalt", "road", "canopy", "gravel", "metal", "sidewalk")),
}
SCENES: tuple[str, ...] = tuple(_SCENES)
# Training scenes for cube priors (``data: hsi-training``): other photographs and other material sets, so a prior
# trained on them never sees the evaluation (coffee, astronaut, chelsea) or tuning (rocket) scenes.
_TRAINING_SCENES: dict[str, tuple[str, tuple[str, ...]]] = {
    "ihc": ("immunohistochemistry", ("char", "dirt", "wood_shingle", "parking_lot", "tile", "sidewalk")),
    "retina": ("retina", ("asphalt", "npv", "soil", "wood", "paint", "concrete_tile")),
    "hubble": ("hubble_deep_field", ("char", "parking_lot", "gravel", "litter", "comp_shingle", "sand")),
    "colorwheel": ("colorwheel", ("metal", "canopy", "bark", "road", "tile", "sidewalk")),
}
TRAINING_SCENES: tuple[str, ...] = tuple(_TRAINING_SCENES)
_WL_RANGE = (400.0, 2450.0)  # nm, earthlib's range
_MAX_BANDS = 180


@dataclass(frozen=True)
class Scene:
    """The parts of a scene (float64 NumPy arrays).

    Attributes:
        abundances: ``(P, H, W)``, non-negative, summing to one over ``P``.
        spectra: ``(P, 2, bands)`` the two spectra per material (medoid, variant), reflectance.
        blend: ``(H, W)`` in [0, 1], the weight of the variant spectrum.
        shading: ``(H, W)`` in [0.3, 1].
        wavelengths: ``(bands,)`` in nm.
        materials: earthlib class of each material.
    """

    abundances: np.ndarray
    spectra: np.ndarray
    blend: np.ndarray
    shading: np.ndarray
    wavelengths: np.ndarray
    materials: tuple[str, ...]

    def reflectance(self) -> np.ndarray:
        """``(bands, H, W)`` float64: shaded reflectance before normalisation."""
        a, w = self.abundances, self.blend
        mix = np.einsum("phw,pb->bhw", a * (1 - w), self.spectra[:, 0]) + np.einsum("phw,pb->bhw", a * w, self.spectra[:, 1])
        return self.shading * mix

    def cube(self) -> np.ndarray:
        """``(bands, H, W)`` float64 in [0, 1]: ``reflectance() / reflectance().max()`` (maximum exactly 1)."""
        r = self.reflectance()
        return np.clip(r / r.max(), 0.0, 1.0)


def wavelengths(bands: int = 31) -> np.ndarray:
    """``bands`` evenly spaced band centres (nm) over 400-2450 nm."""
    _check_bands(bands)
    return np.linspace(*_WL_RANGE, bands)


@functools.lru_cache(maxsize=1)
def earthlib_library() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """The earthlib spectral library: spectra ``(7261, 180)`` float32, wavelengths ``(180,)`` nm, class per spectrum.

    Raises:
        ModuleNotFoundError: earthlib is not installed (``pip install 'invdiff[hsi]'``).
        ValueError: the library files do not have the expected layout.
    """
    spec = importlib.util.find_spec("earthlib")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "invdiff.hsi_data needs the earthlib spectral library; install the extra: pip install 'invdiff[hsi]'"
        )
    root = pathlib.Path(next(iter(spec.submodule_search_locations))) / "data"
    header = (root / "spectra.sli.hdr").read_text()
    samples = int(_header_field(header, "samples"))
    lines = int(_header_field(header, "lines"))
    if _header_field(header, "data type") != "4" or _header_field(header, "byte order") != "0":
        raise ValueError("earthlib spectra.sli: expected little-endian float32 (ENVI data type 4, byte order 0)")
    wl = np.array([float(v) for v in _header_field(header, "wavelength").strip("{} ").split(",")]) * 1000.0
    data = np.fromfile(root / "spectra.sli", dtype="<f4")
    if data.size != samples * lines or wl.size != samples:
        raise ValueError(f"earthlib spectra.sli: {data.size} values for {lines} spectra x {samples} bands")
    with open(root / "spectra.csv", newline="") as f:
        classes = tuple(row["LEVEL_3"] for row in csv.DictReader(f))
    if len(classes) != lines:
        raise ValueError(f"earthlib spectra.csv lists {len(classes)} spectra, spectra.sli holds {lines}")
    return data.reshape(lines, samples), wl, classes


def scene_parts(name: str, size: int = 128, bands: int = 31) -> Scene:
    """Build the parts of scene ``name`` deterministically (see the module docstring).

    Args:
        name: one of ``SCENES`` (evaluation and tuning) or ``TRAINING_SCENES``.
        size: output height and width in pixels (16-512).
        bands: number of bands (2-180) evenly spaced over 400-2450 nm.

    Raises:
        ValueError: unknown scene, bad size or band count.
        ModuleNotFoundError: earthlib is not installed.
    """
    scenes = {**_SCENES, **_TRAINING_SCENES}
    if name not in scenes:
        raise ValueError(f"unknown scene {name!r}; choose from: {', '.join(scenes)}")
    if isinstance(size, bool) or not isinstance(size, int) or not 16 <= size <= 512:
        raise ValueError(f"size must be an integer in [16, 512], got {size!r}")
    _check_bands(bands)
    image_name, materials = scenes[name]
    lab = _lab_image(image_name, size)  # (H, W, 3): L in [0, 100], a, b
    abundances = _soft_assign(lab, len(materials))
    library, lib_wl, classes = earthlib_library()
    wl = wavelengths(bands)
    spectra = np.stack([_class_spectra(library, classes, m) for m in materials])  # (P, 2, 180)
    spectra = np.stack([[np.interp(wl, lib_wl, e) for e in pair] for pair in spectra])
    from scipy.ndimage import gaussian_filter

    blend = gaussian_filter(lab[..., 2], sigma=size / 32, mode="reflect")
    blend = (blend - blend.min()) / max(float(np.ptp(blend)), 1e-12)
    shading = 0.3 + 0.7 * lab[..., 0] / 100.0
    return Scene(abundances, spectra, blend, shading, wl, materials)


def make_scene(name: str, size: int = 128, bands: int = 31) -> Tensor:
    """A hyperspectral cube ``(bands, H, W)`` float32 in [0, 1] (``H = W = size``), deterministic.

    Examples:
        >>> make_scene("coffee", size=32, bands=16).shape  # doctest: +SKIP
        torch.Size([16, 32, 32])
    """
    return torch.from_numpy(scene_parts(name, size, bands).cube().astype(np.float32))


# ---- helpers ----------------------------------------------------------------------------------------
def _check_bands(bands: object) -> None:
    if isinstance(bands, bool) or not isinstance(bands, int) or not 2 <= bands <= _MAX_BANDS:
        raise ValueError(f"bands must be an integer in [2, {_MAX_BANDS}], got {bands!r}")


def _header_field(header: str, key: str) -> str:
    match = re.search(rf"^\s*{re.escape(key)}\s*=\s*(\{{[^}}]*\}}|[^\n]*)", header, flags=re.MULTILINE)
    if match is None:
        raise ValueError(f"earthlib spectra.sli.hdr has no {key!r} field")
    return match.group(1).strip()


def _lab_image(image_name: str, size: int) -> np.ndarray:
    import skimage.data
    from skimage.color import rgb2lab
    from skimage.transform import resize

    rgb = getattr(skimage.data, image_name)()[..., :3]
    h, w = rgb.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = rgb[top : top + side, left : left + side].astype(np.float64) / 255.0
    return rgb2lab(resize(crop, (size, size), order=1, anti_aliasing=True))


def _soft_assign(lab: np.ndarray, k: int) -> np.ndarray:
    """``(k, H, W)`` soft memberships of the pixels to k-means centroids in weighted CIELAB."""
    from scipy.ndimage import gaussian_filter

    feats = lab.reshape(-1, 3) * np.array([0.5, 1.0, 1.0])
    rng = np.random.default_rng(0)
    # k-means++ seeding, then Lloyd iterations: deterministic for a fixed image.
    centres = [feats[rng.integers(len(feats))]]
    for _ in range(1, k):
        d2 = np.min([np.sum((feats - c) ** 2, axis=1) for c in centres], axis=0)
        centres.append(feats[rng.choice(len(feats), p=d2 / d2.sum())])
    c = np.array(centres)
    for _ in range(30):
        label = np.argmin(((feats[:, None, :] - c[None]) ** 2).sum(-1), axis=1)
        c = np.array([feats[label == j].mean(0) if np.any(label == j) else c[j] for j in range(k)])
    c = c[np.argsort(c[:, 0])]  # dark to bright, to match the material order
    d2 = ((feats[:, None, :] - c[None]) ** 2).sum(-1)
    pair = np.sqrt(((c[:, None] - c[None]) ** 2).sum(-1))
    tau = 0.35 * float(np.median(pair[np.triu_indices(k, 1)]))
    logits = -d2 / (2 * tau**2)
    w = np.exp(logits - logits.max(1, keepdims=True))
    w = (w / w.sum(1, keepdims=True)).T.reshape(k, *lab.shape[:2])
    w = np.stack([gaussian_filter(m, 0.7, mode="reflect") for m in w])
    return w / w.sum(0, keepdims=True)


def _class_spectra(library: np.ndarray, classes: tuple[str, ...], cls: str) -> np.ndarray:
    """The class medoid and the member at the 75th percentile of distance to the class median, ``(2, 180)``."""
    members = library[np.array([c == cls for c in classes])].astype(np.float64)
    if len(members) < 2:
        raise ValueError(f"earthlib class {cls!r} has {len(members)} spectra; need >= 2")
    dist = np.linalg.norm(members - np.median(members, axis=0), axis=1)
    order = np.argsort(dist, kind="stable")
    return np.stack([members[order[0]], members[order[int(0.75 * (len(order) - 1))]]])
