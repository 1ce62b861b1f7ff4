"""Training data: folders of NIfTI / DICOM series / PNG / NPY read through MONAI, as a LightningDataModule.

Reading (MONAI ``LoadImage``): NIfTI (``.nii``, ``.nii.gz``) and DICOM series folders are volumes, reoriented to
RAS; PNG/JPEG are 2D images (RGB averaged to grey); NPY arrays are 2D images or 3D volumes (complex arrays give
real/imaginary channels when ``channels=2``).

2D training (``spatial_dims=2``): volumes are sliced along ``slice_axes``; slices whose foreground (pixels above
5 % of the volume maximum) covers less than ``min_foreground`` are dropped; each slice is transposed and flipped
(superior or anterior up for RAS volumes), zero-padded square, resampled to ``image_size`` (area averaging when
shrinking) and divided by the ``percentile`` of its foreground, then clipped to [0, 1]
(``invdiff.training.brain_data.preprocess_slice``). 3D training: each volume is resampled by ``zoom`` (MONAI
``Zoom``), scaled the same way as a whole, and ``patches_per_volume`` random ``image_size``³ patches are cropped
from it per epoch (zero padding where smaller).

Augmentation per draw (MONAI random transforms with their own seeded random state): left-right flips, optional
small affine (±10° rotation, ±10 % scale) and 2D elastic deformation. Items are then mapped to the prior space by
the normalisation ([0, 1] -> [-1, 1] for one channel; scale only for two channels).

Everything is preprocessed once in ``setup`` and cached in memory (small priors, small data).
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch import Tensor

from ..priors.network import Normalisation
from .brain_data import (
    FOREGROUND_FRACTION,
    MNI_T1,
    _resize,
    locate_package_file,
    pad_square,
    percentile_scale,
    preprocess_slice,
    slice_volume,
)
from .config import TrainConfig

# Side of the built-in hyperspectral training scenes; crops of ``image_size`` are drawn from them.
HSI_SCENE_SIZE = 128

__all__ = ["DiffusionDataModule", "discover", "load_image", "normalisation_for", "prepare_items"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
VOLUME_SUFFIXES = (".nii", ".nii.gz")
ARRAY_SUFFIXES = (".npy",)
BUILTIN = {"mni152-t1": ("nilearn", MNI_T1)}


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _is_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def discover(data: str) -> list[Path]:
    """Training items: files (NIfTI, PNG/JPEG, NPY, single DICOM files outside series) and DICOM series folders.

    A folder holding DICOM files (with or without the ``.dcm`` suffix) is one series item.

    Raises:
        FileNotFoundError: nothing readable found.
    """
    if data in BUILTIN:
        return [locate_package_file(*BUILTIN[data])]
    root = Path(data)
    if root.is_file():
        candidates = [root]
    elif root.is_dir():
        candidates = sorted(p for p in root.rglob("*") if p.is_file())
    else:
        candidates = sorted(Path(p) for p in glob.glob(data, recursive=True) if Path(p).is_file())
    items: list[Path] = []
    series: set[Path] = set()
    for p in candidates:
        suffix = _suffix(p)
        if suffix in IMAGE_SUFFIXES + VOLUME_SUFFIXES + ARRAY_SUFFIXES:
            items.append(p)
        elif suffix == ".dcm" or (suffix == "" and _is_dicom(p)):
            if root.is_file():
                items.append(p)
            else:
                series.add(p.parent)
    items += sorted(series)
    if not items:
        raise FileNotFoundError(
            f"data={data!r}: no NIfTI, PNG/JPEG, NPY or DICOM files found (or use the built-in 'mni152-t1')"
        )
    return items


def load_image(path: Path, channels: int = 1) -> tuple[np.ndarray, bool]:
    """Read one item with MONAI.

    Returns:
        ``(array, is_volume)``: (C, H, W) image or (C, X, Y, Z) volume, float32, C = ``channels``.
    """
    from monai.transforms import LoadImage, Orientation

    suffix = _suffix(path)
    if suffix in ARRAY_SUFFIXES:
        arr = np.load(path)
        if np.iscomplexobj(arr):
            if channels != 2:
                arr = np.abs(arr)
            else:
                arr = np.stack([arr.real, arr.imag])
        if arr.ndim == (2 if channels == 1 else 3):
            arr = arr[None] if channels == 1 else arr
        if arr.ndim not in (3, 4) or arr.shape[0] != channels:
            raise ValueError(f"{path}: NPY array of shape {arr.shape} is neither an image nor a volume with "
                             f"{channels} channel(s)")
        return arr.astype(np.float32), arr.ndim == 4
    if channels != 1:
        raise ValueError(f"{path}: channels=2 needs complex NPY data; {suffix or 'DICOM'} files are real")
    if suffix in IMAGE_SUFFIXES:
        from monai.data import PILReader

        img = LoadImage(image_only=True, reader=PILReader(reverse_indexing=False))(str(path))
        arr = np.asarray(img, dtype=np.float32)
        if arr.ndim == 3:  # (H, W, RGB[A])
            arr = arr[..., :3].mean(-1)
        return arr[None], False
    reader = "PydicomReader" if path.is_dir() or suffix in ("", ".dcm") else None
    img = LoadImage(image_only=True, reader=reader, ensure_channel_first=True)(str(path))
    if img.ndim == 5:  # 4D NIfTI: the first volume
        img = img[..., 0]
    if img.ndim == 4:
        img = Orientation(axcodes="RAS", labels=None)(img)
        return np.asarray(img, dtype=np.float32), True
    return np.asarray(img, dtype=np.float32), False


def prepare_items(paths: Sequence[Path], config: TrainConfig) -> list[np.ndarray]:
    """Preprocess every item into training arrays in [0, 1] (two channels: scaled by magnitude, unclipped).

    Returns:
        2D: list of (C, S, S) slices; 3D: list of (C, X, Y, Z) volumes; S = ``config.image_size``.
    """
    out: list[np.ndarray] = []
    for path in paths:
        arr, is_volume = load_image(Path(path), config.channels)
        if config.spatial_dims == 3:
            if not is_volume:
                raise ValueError(f"{path}: spatial_dims=3 needs volumes, got a 2D image")
            out.append(_scale_volume(arr, config))
            continue
        if is_volume:
            mag = np.sqrt((arr**2).sum(0))
            kept = slice_volume(mag, config.slice_axes, config.min_foreground)
            for axis, index, _ in kept:
                sl = np.stack([np.flipud(np.take(c, index, axis=axis).T) for c in arr])
                out.append(_scale_slice(sl, config))
        else:
            out.append(_scale_slice(arr, config))
    if not out:
        raise ValueError(f"data={config.data!r}: every slice was dropped by min_foreground={config.min_foreground}")
    return out


def _scale_slice(sl: np.ndarray, config: TrainConfig) -> np.ndarray:
    if config.channels == 1:
        return preprocess_slice(sl[0], config.image_size, config.percentile)[None]
    parts = torch.stack([_resize(pad_square(torch.as_tensor(np.ascontiguousarray(c))), config.image_size) for c in sl])
    return _complex_scale(parts, config.percentile).numpy()


def _complex_scale(parts: Tensor, percentile: float) -> Tensor:
    mag = parts.pow(2).sum(0).sqrt()
    top = float(mag.max())
    if top <= 0:
        return parts
    ref = float(torch.quantile(mag[mag > FOREGROUND_FRACTION * top].double(), percentile / 100.0))
    return parts / ref


def _scale_volume(vol: np.ndarray, config: TrainConfig) -> np.ndarray:
    t = torch.as_tensor(vol)
    if config.zoom != 1:
        from monai.transforms import Zoom

        mode = "area" if config.zoom < 1 else "trilinear"
        t = torch.as_tensor(Zoom(config.zoom, mode=mode, keep_size=False)(t)).float()
    if config.channels == 1:
        t = percentile_scale(t.clamp(min=0), config.percentile)
    else:
        t = _complex_scale(t, config.percentile)
    return t.numpy().astype(np.float32)


def cube_training_items(config: TrainConfig) -> list[np.ndarray]:
    """The built-in hyperspectral training cubes ``(bands, 128, 128)`` in [0, 1] (``invdiff.hsi_data``)."""
    from ..hsi_data import TRAINING_SCENES, make_scene

    if config.image_size > HSI_SCENE_SIZE:
        raise ValueError(f"config: image_size must be <= {HSI_SCENE_SIZE} for data {config.data!r} (crops of its "
                         f"{HSI_SCENE_SIZE}x{HSI_SCENE_SIZE} scenes), got {config.image_size}")
    return [make_scene(name, HSI_SCENE_SIZE, config.channels).numpy() for name in TRAINING_SCENES]


def normalisation_for(config: TrainConfig) -> Normalisation:
    """The map from the preprocessed data to the prior space."""
    if config.is_cube_data:
        return Normalisation(2.0, -1.0, "hyperspectral cubes with values in [0, 1] (reflectance over the scene's "
                             "maximum), each band mapped by 2u - 1")
    if config.channels == 1:
        return Normalisation(2.0, -1.0, f"each image divided by the {config.percentile}th percentile of its "
                             "foreground (pixels > 5% of the max) and clipped to [0, 1]; then 2u - 1")
    return Normalisation(1.0, 0.0, f"complex images (real, imaginary channels) divided by the {config.percentile}th "
                         "percentile of the foreground magnitude")


class DiffusionDataModule(L.LightningDataModule):
    """Cached, augmented training/validation images in the prior space.

    Args:
        config: the training config (data options).
    """

    def __init__(self, config: TrainConfig) -> None:
        super().__init__()
        self.config = config
        self.normalisation = normalisation_for(config)
        self.train_items: list[np.ndarray] = []
        self.val_items: list[np.ndarray] = []

    def setup(self, stage: str | None = None) -> None:
        if self.train_items:
            return
        cfg = self.config
        items = cube_training_items(cfg) if cfg.is_cube_data else prepare_items(discover(cfg.data), cfg)
        order = torch.randperm(len(items), generator=torch.Generator().manual_seed(cfg.seed)).tolist()
        n_val = int(round(cfg.val_fraction * len(items))) if len(items) > 1 else 0
        self.val_items = [items[i] for i in order[:n_val]]
        # Repeated references, not copies: each repeat gets its own random crop.
        self.train_items = [items[i] for i in order[n_val:]] * cfg.patches_per_volume

    def _transforms(self, train: bool):  # noqa: ANN202 (a MONAI Compose)
        from monai.transforms import Compose, Rand2DElastic, RandAffine, RandFlip, RandSpatialCrop, SpatialPad

        cfg = self.config
        ops: list = []
        if cfg.spatial_dims == 3 or cfg.is_cube_data:  # patches of volumes, crops of cubes
            size = (cfg.image_size,) * cfg.spatial_dims
            ops += [SpatialPad(size), RandSpatialCrop(size, random_size=False) if train else _CentreCrop(size)]
        if train:
            if cfg.flips:
                ops.append(RandFlip(prob=0.5, spatial_axis=cfg.spatial_dims - 1))
            if cfg.affine:
                rot = 0.1745 if cfg.spatial_dims == 2 else (0.1745, 0.1745, 0.1745)
                ops.append(RandAffine(prob=0.5, rotate_range=rot, scale_range=0.1, padding_mode="zeros"))
            if cfg.elastic and cfg.spatial_dims == 2:
                ops.append(Rand2DElastic(spacing=(16, 16), magnitude_range=(0, 1), prob=0.3, padding_mode="zeros"))
        ops.append(_ToPrior(self.normalisation, clip=cfg.channels == 1 or cfg.is_cube_data))
        compose = Compose(ops)
        compose.set_random_state(seed=self.config.seed + (0 if train else 1))
        return compose

    def _loader(self, items: list[np.ndarray], train: bool) -> torch.utils.data.DataLoader:
        from monai.data import DataLoader, Dataset

        cfg = self.config
        return DataLoader(
            Dataset(items, transform=self._transforms(train)),
            batch_size=cfg.batch_size,
            shuffle=train,
            drop_last=train and len(items) >= cfg.batch_size,
            num_workers=cfg.num_workers,
            generator=torch.Generator().manual_seed(cfg.seed),
            persistent_workers=cfg.num_workers > 0,
        )

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return self._loader(self.train_items, True)

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        return self._loader(self.val_items, False)


class _CentreCrop:
    def __init__(self, size: Sequence[int]) -> None:
        from monai.transforms import CenterSpatialCrop

        self._crop = CenterSpatialCrop(size)

    def __call__(self, x: Tensor) -> Tensor:
        return self._crop(x)


class _ToPrior:
    """Plain float32 tensor (no MONAI metadata), clipped to [0, 1] for one channel and cubes, mapped to the prior
    space."""

    def __init__(self, normalisation: Normalisation, clip: bool) -> None:
        self.normalisation, self.clip = normalisation, clip

    def __call__(self, x: Tensor) -> Tensor:
        x = torch.as_tensor(x, dtype=torch.float32)
        x = x.as_tensor() if hasattr(x, "as_tensor") else x
        return self.normalisation.forward(x.clamp(0, 1) if self.clip else x)
