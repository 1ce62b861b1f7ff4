"""What the CLI commands do, as importable functions: reconstruct, simulate, evaluate, demo.

Each job checks every output path before any expensive work, computes everything, then writes
each file atomically; inputs are never modified. Beside the main output it writes the standard
deviation (when the sampler gives one), a PNG report and a provenance JSON.

Scans (``reconstruct_scan``) are stacks of 2D slices reconstructed with a trained prior; hyperspectral
cubes (``reconstruct_cube``, the ``hsi-*`` operators) are one image each, with the bands as channels,
restored by a prior-free sampler (DDS2M).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from invdiff import metrics
from invdiff.operators import GaussianNoise

from .atomic import atomic_path, check_writable, refuse_inputs
from .options import check_options
from .provenance import file_sha256, write_provenance
from .reconstruct import (
    IntensityWindow,
    build_operator,
    check_pairing,
    generator_for,
    load_prior_for,
    prepare_problem,
    prior_spatial_dims,
    reconstruct_slices,
    resolve_device,
    simulate_slices,
    starting_estimate,
)
from .registry import CUBE_OPERATORS, SAMPLERS, sampler_arguments, with_preset
from .report import Panel, false_colour, false_colour_bands, intensity_window, write_report

__all__ = ["CubeResult", "JobResult", "derived_path", "reconstruct_cube", "reconstruct_scan", "restore_cube"]

_SCAN_SUFFIXES = (".nii.gz", ".nii", ".npy", ".h5", ".hdf5")


def derived_path(output: Path, tag: str, suffix: str | None = None) -> Path:
    """``recon.nii.gz`` + ``std`` -> ``recon_std.nii.gz``; a DICOM folder ``out`` -> ``out_std`` (or ``out_std.png``)."""
    name = output.name
    for known in _SCAN_SUFFIXES:
        if name.lower().endswith(known):
            stem, ext = name[: -len(known)], known
            break
    else:
        stem, ext = name, ""
    return output.with_name(f"{stem}_{tag}{ext if suffix is None else suffix}")


def is_folder_output(output: Path) -> bool:
    """Outputs without a file suffix are folders for a derived DICOM series."""
    return not output.name.lower().endswith(_SCAN_SUFFIXES)


@dataclass
class JobResult:
    outputs: dict[str, list[Path]]
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0


def evaluate_arrays(truth: np.ndarray, estimate: np.ndarray) -> dict[str, float]:
    """PSNR, SSIM and NMSE with fastMRI conventions (data range = the truth's maximum)."""
    return {"psnr": metrics.psnr(truth, estimate), "ssim": metrics.ssim(truth, estimate), "nmse": metrics.nmse(truth, estimate)}


def reconstruct_scan(
    input_path: str | Path,
    output: str | Path,
    *,
    operator: str = "mri",
    operator_options: Mapping[str, Any] | None = None,
    sampler: str = "red-diff",
    sampler_options: Mapping[str, Any] | None = None,
    prior: str = "brain-mri",
    noise_sigma: float = 0.01,
    seed: int = 0,
    device: str = "auto",
    batch_size: int = 8,
    overwrite: bool = False,
    volume_index: int | None = None,
    devices: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> JobResult:
    """Retrospective reconstruction of a scan (DICOM series/file, NIfTI, PNG, NPY).

    Simulates measurements of each slice with the named operator and Gaussian noise
    (``noise_sigma`` in data units), reconstructs with the sampler and the prior, evaluates against
    the scan, and writes the reconstruction in the output's format (``.nii``/``.nii.gz``, ``.npy``,
    or a folder for a derived DICOM series) plus ``*_std``, ``*_report.png`` and ``*_provenance.json``.
    """
    from .io import load_scan, save_scan

    start = time.perf_counter()
    input_path, output = Path(input_path), Path(output)
    operator_options, sampler_options = dict(operator_options or {}), dict(sampler_options or {})
    _check_scan_pairing(operator, sampler)
    torch_device = resolve_device(device)
    scan = load_scan(input_path, volume_index=volume_index)
    paths = _planned_outputs(output, with_std=True)
    for key, path in paths.items():
        check_writable(path, overwrite=overwrite, folder=key in ("reconstruction", "std") and is_folder_output(output))
        refuse_inputs(path, scan.source_files)

    volume = reconstruct_volume(
        scan.array, operator=operator, operator_options=operator_options, sampler=sampler,
        sampler_options=sampler_options, prior=prior, noise_sigma=noise_sigma, seed=seed, device=torch_device,
        batch_size=batch_size, devices=devices, progress=progress,
    )
    recon, std, zero_filled, scores = volume.reconstruction, volume.std, volume.pseudo_inverse, volume.metrics
    truth = scan.array.astype(np.float64)

    written: dict[str, list[Path]] = {}
    written["reconstruction"] = save_scan(recon, scan, paths["reconstruction"], overwrite=overwrite,
                                          series_description=f"invdiff {sampler} {operator}")
    if std is not None:
        written["std"] = save_scan(std, scan, paths["std"], overwrite=overwrite,
                                   series_description=f"invdiff {sampler} posterior std")
    middle = scan.array.shape[0] // 2
    written["report"] = [_write_report(paths["report"], truth[middle], zero_filled[middle], recon[middle],
                                       None if std is None else std[middle], scores, operator, sampler, overwrite)]
    record = {
        "command": "reconstruct",
        "mode": "retrospective",
        "input": {"path": str(input_path), "kind": scan.kind, "sha256": scan.source_hash, "shape": list(scan.array.shape)},
        "operator": {"name": operator, "options": operator_options, "type": volume.operator_type},
        "noise": {"model": "gaussian", "sigma_data_units": noise_sigma},
        "sampler": {"name": sampler, "options": volume.sampler_options, "diagnostics": volume.diagnostics},
        "prior": {"name": prior, "provenance": volume.prior_provenance},
        "intensity_window": {"low": volume.window.low, "high": volume.window.high},
        "seed": seed,
        "batch_size": batch_size,
        "devices": devices or 1,
        "metrics": scores,
        "outputs": {k: [str(p) for p in v] for k, v in written.items()},
        "seconds": time.perf_counter() - start,
    }
    written["provenance"] = [write_provenance(paths["provenance"], record, device=torch_device, overwrite=overwrite)]
    return JobResult(written, scores, time.perf_counter() - start)


@dataclass
class VolumeResult:
    """A reconstructed volume ``(S, H, W)`` in the input's intensity units, with what produced it."""

    reconstruction: np.ndarray
    std: np.ndarray | None
    pseudo_inverse: np.ndarray
    metrics: dict[str, dict[str, float]]
    window: IntensityWindow
    diagnostics: dict[str, Any]
    operator_type: str
    prior_provenance: dict[str, Any]
    sampler_options: dict[str, Any]


def reconstruct_volume(
    array: np.ndarray,
    *,
    operator: str = "mri",
    operator_options: Mapping[str, Any] | None = None,
    sampler: str = "red-diff",
    sampler_options: Mapping[str, Any] | None = None,
    prior: Any = "brain-mri",
    noise_sigma: float = 0.01,
    seed: int = 0,
    device: torch.device | str = "cpu",
    batch_size: int = 8,
    devices: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> VolumeResult:
    """Simulate measurements of every slice of ``array`` (``(S, H, W)``, scan units), reconstruct them
    and evaluate against ``array``. The array-level core of ``reconstruct_scan`` and the MONAI transforms.
    ``prior`` is a shipped name, a checkpoint path, or a loaded prior. A 3D prior (trained on volumes or volume
    patches) reconstructs the whole volume at once from a 3D measurement (e.g. 3D Cartesian MRI: a mask over two
    phase-encode axes with ``mask=poisson``); ``batch_size`` and ``devices`` then have nothing to split."""

    _check_scan_pairing(operator, sampler)
    array = np.asarray(array)
    if array.ndim != 3 or min(array.shape) < 1:
        raise ValueError(f"array must be a stack of 2D slices (S, H, W), got shape {array.shape}")
    torch_device = torch.device(device)
    window = IntensityWindow.of(array)
    network_prior = load_prior_for(prior, sampler, torch_device)
    volumetric = prior_spatial_dims(network_prior) == 3
    data_units = torch.from_numpy(window.to_data(array.astype(np.float64))).float()
    images = data_units[None, None] if volumetric else data_units[:, None]  # (1, 1, S, H, W) or (S, 1, H, W)
    op = build_operator(operator, dict(operator_options or {}), tuple(images.shape[1:]), seed=seed)
    problem = prepare_problem(network_prior, op, noise_sigma)
    y = simulate_slices(op, images, noise_sigma, seed=seed)
    # A volume is one item: when it is done, so are all its slices.
    slice_progress = progress if progress is None or not volumetric else (
        lambda done, total: progress(array.shape[0], array.shape[0]))
    result = reconstruct_slices(
        problem, y, sampler=sampler, sampler_options=dict(sampler_options or {}), seed=seed, batch_size=batch_size,
        device=torch_device, devices=None if volumetric else devices, progress=slice_progress,
    )

    def as_volume(a: np.ndarray) -> np.ndarray:  # (S, H, W) from either layout
        return a[0, 0] if volumetric else a[:, 0]

    recon = window.to_scan(as_volume(result.estimate)).astype(np.float32)
    pinv = window.to_scan(as_volume(result.pinv)).astype(np.float32)
    std = None if result.std is None else (as_volume(result.std) * window.width).astype(np.float32)
    truth = array.astype(np.float64)
    scores = {"reconstruction": evaluate_arrays(truth, recon), "pseudo_inverse": evaluate_arrays(truth, pinv)}
    return VolumeResult(recon, std, pinv, scores, window, result.diagnostics, type(op).__name__,
                        dict(getattr(network_prior, "provenance", {})), result.sampler_options)


def _check_scan_pairing(operator: str, sampler: str) -> None:
    check_pairing(operator, sampler)
    if operator in CUBE_OPERATORS:
        raise ValueError(f"operator {operator!r} works on hyperspectral cubes; use reconstruct_cube (or restore_cube) for them")


def _planned_outputs(output: Path, *, with_std: bool) -> dict[str, Path]:
    paths = {"reconstruction": output}
    if with_std:
        paths["std"] = derived_path(output, "std")
    paths["report"] = derived_path(output, "report", ".png")
    paths["provenance"] = derived_path(output, "provenance", ".json")
    return paths


def _write_report(
    path: Path,
    truth: np.ndarray | None,
    zero_filled: np.ndarray,
    recon: np.ndarray,
    std: np.ndarray | None,
    scores: Mapping[str, Mapping[str, float]],
    operator: str,
    sampler: str,
    overwrite: bool,
) -> Path:
    window = intensity_window(truth if truth is not None else recon)
    panels = []
    if truth is not None:
        panels.append(Panel("truth", truth, window))
    panels.append(Panel(f"pseudo-inverse ({operator})", zero_filled, window))
    panels.append(Panel(f"reconstruction ({sampler})", recon, window))
    if std is not None:
        panels.append(Panel("posterior std", std, colormap="hot"))
    if truth is not None:
        error = np.abs(recon - truth)
        panels.append(Panel("|error|", error, (0.0, max(float(np.percentile(error, 99.5)), 1e-12)), colormap="hot"))
    caption = ""
    if scores:
        rec, base = scores.get("reconstruction", {}), scores.get("pseudo_inverse", {})
        if rec and base:
            caption = (f"PSNR {rec['psnr']:.2f} dB (pseudo-inverse {base['psnr']:.2f})   "
                       f"SSIM {rec['ssim']:.3f} ({base['ssim']:.3f})   NMSE {rec['nmse']:.4f} ({base['nmse']:.4f})")
    return write_report(panels, path, caption=caption, overwrite=overwrite)


def save_array(array: np.ndarray, path: Path, *, overwrite: bool) -> Path:
    with atomic_path(path, overwrite=overwrite) as tmp, tmp.open("wb") as handle:
        np.save(handle, array)
    return path



def evaluate_files(target: str | Path, estimate: str | Path, *, cube: bool = False) -> dict[str, float]:
    """Metrics of ``estimate`` against ``target`` (any format ``load_scan`` reads; with ``cube`` any format
    ``invdiff.cube_io`` reads, each in its own convention: NPY/TIFF (bands, H, W), MAT/ENVI (H, W, bands))."""
    from .io import load_scan

    if cube:
        from invdiff.cube_io import load_cube

        truth, est = (load_cube(Path(p), check_layout=False).numpy() for p in (target, estimate))
    else:
        truth, est = load_scan(Path(target)).array, load_scan(Path(estimate)).array
    if truth.shape != est.shape:
        raise ValueError(f"estimate has shape {est.shape}; the target has shape {truth.shape}")
    scores = evaluate_arrays(truth.astype(np.float64), est.astype(np.float64))
    if cube:
        scores.update({"mpsnr": metrics.mpsnr(truth, est), "mssim": metrics.mssim(truth, est), "sam": metrics.sam(truth, est)})
    return scores


DEMO_SLICE = "dipy_t1_coronal_64.npy"


def demo_settings() -> dict[str, Any]:
    """The demo's reconstruction: 4x random-column single-coil k-space of a held-out brain slice."""
    return {
        "operator": "mri",
        "operator_options": {"acceleration": 4, "center_fraction": 0.08, "mask": "random"},
        "sampler": "red-diff",
        "sampler_options": {},
        "prior": "brain-mri",
        "noise_sigma": 0.01,
        "seed": 0,
        "device": "cpu",
    }


def run_demo(output_dir: str | Path, *, overwrite: bool = False, progress: Callable[[int, int], None] | None = None) -> JobResult:
    """``invdiff demo``: reconstruct the held-out dipy T1 slice shipped in ``invdiff/data``."""
    from invdiff.data import data_path

    output_dir = Path(output_dir)
    check_writable(output_dir, overwrite=overwrite, folder=True)
    output_dir.mkdir(exist_ok=True)
    return reconstruct_scan(data_path(DEMO_SLICE), output_dir / "reconstruction.npy", overwrite=overwrite,
                            progress=progress, **demo_settings())


def simulate_scan(
    input_path: str | Path,
    output: str | Path,
    *,
    operator: str = "mri",
    operator_options: Mapping[str, Any] | None = None,
    noise_sigma: float = 0.01,
    seed: int = 0,
    overwrite: bool = False,
    volume_index: int | None = None,
) -> JobResult:
    """Simulate measurements of a scan's slices (in data units, see ``pipelines.reconstruct``).

    MRI operators write fastMRI-style HDF5 (``kspace`` with the coil axis for multi-coil, ``mask``),
    which ``invdiff reconstruct --kspace`` reads back; other operators write the measurement as NPY.
    """
    from .io import load_scan
    from .kspace_io import save_kspace_h5

    start = time.perf_counter()
    input_path, output = Path(input_path), Path(output)
    operator_options = dict(operator_options or {})
    scan = load_scan(input_path, volume_index=volume_index)
    is_mri = operator.startswith("mri")
    if is_mri != output.name.lower().endswith((".h5", ".hdf5")):
        raise ValueError(f"output {output.name!r}: MRI operators write .h5 (fastMRI layout), others .npy")
    if not is_mri and not output.name.lower().endswith(".npy"):
        raise ValueError(f"output {output.name!r} must end with .npy for operator {operator!r}")
    provenance_path = derived_path(output, "provenance", ".json")
    for path in (output, provenance_path):
        check_writable(path, overwrite=overwrite)
        refuse_inputs(path, scan.source_files)
    window = IntensityWindow.of(scan.array)
    images = torch.from_numpy(window.to_data(scan.array.astype(np.float64))).float()[:, None]
    op = build_operator(operator, operator_options, tuple(images.shape[1:]), seed=seed)
    y = simulate_slices(op, images, noise_sigma, seed=seed)
    if is_mri:
        mask = _kspace_mask_of(op).expand(y.shape[0], *y.shape[-2:])
        attrs = {"acquisition": f"invdiff-simulated {operator}", "max": float(images.max()),
                 "intensity_low": window.low, "intensity_high": window.high, "noise_sigma": noise_sigma}
        written = [save_kspace_h5(y.numpy(), output, mask=mask.numpy(), attrs=attrs, multicoil=operator == "mri-multicoil",
                                  overwrite=overwrite, inputs=scan.source_files)]
    else:
        written = [save_array(y.numpy(), output, overwrite=overwrite)]
    record = {
        "command": "simulate",
        "input": {"path": str(input_path), "kind": scan.kind, "sha256": scan.source_hash, "shape": list(scan.array.shape)},
        "operator": {"name": operator, "options": operator_options, "type": type(op).__name__},
        "noise": {"model": "gaussian", "sigma_data_units": noise_sigma},
        "intensity_window": {"low": window.low, "high": window.high},
        "seed": seed,
        "outputs": [str(p) for p in written],
    }
    provenance = write_provenance(provenance_path, record, overwrite=overwrite)
    return JobResult({"measurement": written, "provenance": [provenance]}, {}, time.perf_counter() - start)


def _kspace_mask_of(op: Any) -> torch.Tensor:
    """The sampling mask of an MRI operator (possibly composed with the real-image embedding)."""
    inner = getattr(op, "outer", op)
    return inner.mask.bool()


def reconstruct_kspace(
    kspace_path: str | Path,
    output: str | Path,
    *,
    mask_path: str | Path | None = None,
    sampler: str = "red-diff",
    sampler_options: Mapping[str, Any] | None = None,
    prior: str = "brain-mri",
    noise_sigma: float = 0.01,
    seed: int = 0,
    device: str = "auto",
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> JobResult:
    """Prospective reconstruction of measured k-space (fastMRI HDF5, or NPY/NIfTI plus a mask).

    Single-coil data use ``SinglecoilMRI``; multi-coil data use SENSE with coil maps estimated by
    ESPIRiT from the calibration region (sigpy, the ``mri`` extra). The prior is a magnitude prior,
    so the image is modelled as real (phase-corrected data). Intensities are set by the zero-filled
    (coil-combined) image's 99.5th foreground percentile; ``noise_sigma`` is in those data units.
    Writes ``.npy`` or ``.nii``/``.nii.gz`` (identity affine: k-space files carry no geometry).
    """
    from invdiff.operators import MulticoilMRI, RealAsComplexChannels, SinglecoilMRI, espirit_maps

    from .kspace_io import load_kspace

    start = time.perf_counter()
    kspace_path, output = Path(kspace_path), Path(output)
    if not output.name.lower().endswith((".npy", ".nii", ".nii.gz")):
        raise ValueError(f"output {output.name!r} must end with .npy, .nii or .nii.gz for k-space input")
    check_pairing("mri", sampler)
    torch_device = resolve_device(device)
    data = load_kspace(kspace_path, mask_path)
    if data.mask is None:
        raise ValueError(f"{kspace_path} has no sampling mask; pass --mask MASK.npy")
    paths = _planned_outputs(output, with_std=True)
    for path in paths.values():
        check_writable(path, overwrite=overwrite)
        refuse_inputs(path, data.source_files)
    network_prior = load_prior_for(prior, sampler, torch_device)
    if prior_spatial_dims(network_prior) != 2:
        raise ValueError(f"prior {prior!r} is a 3D prior; k-space input is reconstructed slice by slice and needs a 2D prior")
    kspace = torch.from_numpy(data.kspace)  # (S, C, H, W)
    slices, coils, height, width = kspace.shape
    estimates, stds, pinvs, diagnostics = [], [], [], []
    for s in range(slices):
        mask = torch.from_numpy(data.mask[s]).bool()
        if coils == 1:
            physics = SinglecoilMRI(mask, complex_channels=True)
        else:
            maps = espirit_maps(kspace[s])
            physics = MulticoilMRI(mask, maps, complex_channels=True)
        op = physics @ RealAsComplexChannels((height, width))
        zero_filled = op.adjoint(kspace[s : s + 1])[0, 0].numpy()
        window = IntensityWindow(0.0, IntensityWindow.of(np.abs(zero_filled)).high)
        problem = prepare_problem(network_prior, op, noise_sigma)
        result = reconstruct_slices(problem, kspace[s : s + 1] / window.width, sampler=sampler,
                                    sampler_options=dict(sampler_options or {}), seed=seed, batch_size=1,
                                    device=torch_device)
        estimates.append(window.to_scan(result.estimate[0, 0]))
        pinvs.append(window.to_scan(result.pinv[0, 0]))
        if result.std is not None:
            stds.append(result.std[0, 0] * window.width)
        diagnostics.append(result.diagnostics)
        if progress is not None:
            progress(s + 1, slices)
    recon = np.stack(estimates).astype(np.float32)
    std = np.stack(stds).astype(np.float32) if stds else None
    zero_filled_volume = np.stack(pinvs)

    written: dict[str, list[Path]] = {"reconstruction": [_save_plain(recon, paths["reconstruction"], overwrite)]}
    if std is not None:
        written["std"] = [_save_plain(std, paths["std"], overwrite)]
    middle = slices // 2
    written["report"] = [_write_report(paths["report"], None, zero_filled_volume[middle], recon[middle],
                                       None if std is None else std[middle], {}, "measured k-space", sampler, overwrite)]
    record = {
        "command": "reconstruct",
        "mode": "prospective",
        "input": {"path": str(kspace_path), "kind": data.kind, "sha256": data.source_hash, "shape": list(data.kspace.shape),
                  "mask": str(mask_path) if mask_path else "in file"},
        "operator": {"name": "mri-multicoil (ESPIRiT maps)" if coils > 1 else "mri", "coils": coils},
        "noise": {"model": "gaussian", "sigma_data_units": noise_sigma},
        "sampler": {"name": sampler, "options": result.sampler_options, "diagnostics": diagnostics},
        "prior": {"name": prior, "provenance": dict(getattr(network_prior, "provenance", {}))},
        "seed": seed,
        "outputs": {k: [str(p) for p in v] for k, v in written.items()},
        "seconds": time.perf_counter() - start,
    }
    written["provenance"] = [write_provenance(paths["provenance"], record, device=torch_device, overwrite=overwrite)]
    return JobResult(written, {}, time.perf_counter() - start)


def _save_plain(array: np.ndarray, path: Path, overwrite: bool) -> Path:
    """NPY, or NIfTI with an identity affine (k-space inputs carry no patient geometry)."""
    if path.name.lower().endswith(".npy"):
        return save_array(array, path, overwrite=overwrite)
    import nibabel as nib

    image = nib.Nifti1Image(np.ascontiguousarray(np.moveaxis(array, 0, -1).transpose(1, 0, 2)), np.eye(4))
    with atomic_path(path, overwrite=overwrite) as tmp:
        nib.save(image, str(tmp))
    return path


# ---- hyperspectral cubes -------------------------------------------------------------------------------
CUBE_SUFFIXES = (".npy", ".mat", ".tif", ".tiff", ".hdr")
_HWC_FORMATS = (".mat", ".hdr")  # stored (H, W, bands) by convention (invdiff.cube_io); the others (bands, H, W)
_LAYOUT_NAMES = {"chw": "(bands, H, W)", "hwc": "(H, W, bands)"}
# Options the pipeline passes to samplers itself (as in pipelines.reconstruct); users cannot set them.
_RESERVED_CUBE_OPTIONS = ("noise", "generator", "callback", "progress")


@dataclass
class CubeResult:
    """A restored cube ``(bands, H, W)`` in the input's units, with what produced it."""

    restored: np.ndarray
    measurement: np.ndarray  # y in the input's units (the cube's shape for denoising/completion, smaller for SR)
    pseudo_inverse: np.ndarray
    metrics: dict[str, dict[str, float]]
    window: IntensityWindow
    sampler_options: dict[str, Any]
    diagnostics: dict[str, Any]
    operator_type: str


def evaluate_cube(truth: np.ndarray, estimate: np.ndarray, *, scale: float = 1.0) -> dict[str, float]:
    """MPSNR, MSSIM (data range = the truth's maximum), SAM in degrees, and ERGAS where every band's mean is non-zero."""
    scores = {"mpsnr": metrics.mpsnr(truth, estimate), "mssim": metrics.mssim(truth, estimate),
              "sam": metrics.sam(truth, estimate)}
    if np.all(truth.mean(axis=(1, 2)) != 0):
        scores["ergas"] = metrics.ergas(truth, estimate, scale=scale)
    return scores


def restore_cube(
    cube: np.ndarray,
    *,
    operator: str = "hsi-denoising",
    operator_options: Mapping[str, Any] | None = None,
    sampler: str = "dds2m",
    sampler_options: Mapping[str, Any] | None = None,
    noise_sigma: float = 0.01,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> CubeResult:
    """Simulate ``operator`` measurements of a cube ``(bands, H, W)`` and restore it with a prior-free sampler.

    The cube is one image with the bands as channels. Units: ``u = (v - low) / (high - low)`` with
    ``low = min(0, min v)`` and ``high`` the maximum (``IntensityWindow.of_cube``), so ``noise_sigma`` is a fraction
    of the cube's maximum. Random streams as in ``pipelines.reconstruct``: the operator's parameters from stream
    ``0``, the noise from ``(1, 0)``, the sampler from ``(2, 0)``. ``progress(step, steps)`` follows the sampler.
    """
    check_pairing(operator, sampler)
    if operator not in CUBE_OPERATORS:
        raise ValueError(f"restore_cube needs an hsi operator ({', '.join(sorted(CUBE_OPERATORS))}), got {operator!r}")
    cube = np.asarray(cube)
    if cube.ndim != 3:
        raise ValueError(f"cube must be (bands, H, W), got shape {cube.shape}")
    if not np.isfinite(cube).all():
        raise ValueError("the cube contains NaN or Inf")
    operator_options, sampler_options = dict(operator_options or {}), dict(sampler_options or {})
    sampler_fn = SAMPLERS[sampler]
    check_options(sampler_fn, sampler_options, owner=f"sampler {sampler!r}", reserved=_RESERVED_CUBE_OPTIONS)
    effective = with_preset(sampler, sampler_options, operator=operator)
    arguments = sampler_arguments(sampler, effective)
    torch_device = torch.device(device)
    window = IntensityWindow.of_cube(cube)
    truth = cube.astype(np.float64)
    u = torch.from_numpy(window.to_data(truth)).float()[None]  # (1, bands, H, W)
    op = build_operator(operator, operator_options, tuple(u.shape[1:]), seed=seed)
    y = simulate_slices(op, u, noise_sigma, seed=seed)
    pinv = starting_estimate(op, y, noise_sigma)

    def step_callback(info: Mapping[str, Any]) -> None:
        if progress is not None and info.get("item", 0) == 0:
            progress(int(info["step"]) + 1, int(info["steps"]))

    result = sampler_fn(
        None, op.to(torch_device), y.to(torch_device), noise=GaussianNoise(float(noise_sigma)),
        generator=generator_for(seed, 2, 0, device=torch_device), callback=step_callback, **arguments,
    )
    restored = window.to_scan(result.x[0].detach().cpu().double().numpy()).astype(np.float32)
    pseudo_inverse = window.to_scan(pinv[0].double().numpy()).astype(np.float32)
    measurement = window.to_scan(y[0].double().numpy()).astype(np.float32)
    scale = float(getattr(op, "factor", (1,))[0])
    scores = {"reconstruction": evaluate_cube(truth, restored.astype(np.float64), scale=scale),
              "pseudo_inverse": evaluate_cube(truth, pseudo_inverse.astype(np.float64), scale=scale)}
    diagnostics = {"nfe": float(result.diagnostics.get("nfe", 0)), "sampler_wall_s": float(result.diagnostics.get("wall_s", 0.0))}
    if "misfit" in result.diagnostics:
        diagnostics["final_misfit_data_units"] = float(result.diagnostics["misfit"][-1, 0])
    return CubeResult(restored, measurement, pseudo_inverse, scores, window, effective, diagnostics, type(op).__name__)


def _cube_suffix(path: Path) -> str:
    return path.suffix.lower()


def _cube_sources(path: Path) -> list[Path]:
    """The files a cube is read from: the file itself, and for ENVI the data file beside the header."""
    if _cube_suffix(path) != ".hdr":
        return [path]
    data = [path.with_suffix(ext) for ext in ("", ".img", ".dat", ".raw", ".bsq", ".bil", ".bip")]
    return [path, *(p for p in data if p.is_file())]


def load_input_cube(path: Path, *, operator: str, layout: str | None, variable: str | None) -> np.ndarray:
    """Read INPUT as a cube ``(bands, H, W)`` for ``operator``; every failure is a one-line ``ValueError``.

    Without an explicit ``layout`` a cube with more bands than pixels per side is refused as probably transposed
    (the check of ``invdiff.cube_io``); an explicit layout is trusted.
    """
    from invdiff.cube_io import load_cube

    suffix = _cube_suffix(path)
    if path.is_dir() or suffix not in CUBE_SUFFIXES:
        raise ValueError(
            f"operator {operator!r} restores hyperspectral cubes: INPUT must be a cube file (.npy (bands, H, W), .mat, "
            f".tif/.tiff or ENVI .hdr), got {path.name!r}"
        )
    if not path.is_file():
        raise FileNotFoundError(f"input {path} does not exist")
    try:
        cube = load_cube(path, layout=layout, variable=variable, check_layout=False).numpy()  # type: ignore[arg-type]
    except ValueError as err:
        message = str(err).replace("pass variable= to choose one", "pass --cube-variable NAME (variable=) to choose one")
        raise ValueError(f"operator {operator!r} needs a hyperspectral cube (bands, H, W): {message}") from None
    if layout is None and cube.shape[0] > min(cube.shape[1:]):
        stored = "hwc" if suffix in _HWC_FORMATS else "chw"
        other = "chw" if stored == "hwc" else "hwc"
        raise ValueError(
            f"cube {path.name!r} read as (bands, H, W) = {cube.shape} has more bands than pixels per side; its axes "
            f"look like {_LAYOUT_NAMES[other]}, not {_LAYOUT_NAMES[stored]}: pass --cube-layout {other} "
            f"(layout={other!r}), or --cube-layout {stored} if {cube.shape} is right"
        )
    return cube


def reconstruct_cube(
    input_path: str | Path,
    output: str | Path,
    *,
    operator: str = "hsi-denoising",
    operator_options: Mapping[str, Any] | None = None,
    sampler: str = "dds2m",
    sampler_options: Mapping[str, Any] | None = None,
    noise_sigma: float = 0.01,
    seed: int = 0,
    device: str = "auto",
    layout: str | None = None,
    variable: str | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> JobResult:
    """Retrospective restoration of a hyperspectral cube file (``invdiff reconstruct`` with an ``hsi-*`` operator).

    Reads INPUT with ``invdiff.cube_io`` (``.npy`` (bands, H, W), ``.mat``, ``.tif``/``.tiff``, ENVI ``.hdr``) as one
    image with the bands as channels, simulates the measurement, restores it with ``sampler`` (see ``restore_cube``),
    evaluates against the cube and writes the restored cube (float32, the input's units) in the format of the output's
    suffix, plus ``*_report.png`` (false colour) and ``*_provenance.json``. ``layout`` (``"chw"``/``"hwc"``) is the axis
    order of the input and output files (default: each format's convention); ``variable`` the MATLAB variable to read
    (and the one written; default ``cube``).
    """
    from invdiff.cube_io import save_cube

    start = time.perf_counter()
    input_path, output = Path(input_path), Path(output)
    check_pairing(operator, sampler)
    if operator not in CUBE_OPERATORS:
        raise ValueError(f"reconstruct_cube needs an hsi operator ({', '.join(sorted(CUBE_OPERATORS))}), got {operator!r}")
    if layout not in (None, "chw", "hwc"):
        raise ValueError(f"layout must be 'chw' (bands, H, W) or 'hwc' (H, W, bands), got {layout!r}")
    if _cube_suffix(output) not in CUBE_SUFFIXES:
        raise ValueError(
            f"output {output.name!r}: restored cubes are written as .npy (bands, H, W), .mat, .tif/.tiff or ENVI .hdr"
        )
    torch_device = resolve_device(device)
    cube = load_input_cube(input_path, operator=operator, layout=layout, variable=variable)
    sources = _cube_sources(input_path)
    stem = output.name[: -len(output.suffix)]
    cube_files = [output] + ([output.with_suffix(".img")] if _cube_suffix(output) == ".hdr" else [])  # ENVI: + data
    paths = {"report": output.with_name(f"{stem}_report.png"), "provenance": output.with_name(f"{stem}_provenance.json")}
    for path in [*cube_files, *paths.values()]:
        check_writable(path, overwrite=overwrite)
        refuse_inputs(path, sources)

    restored = restore_cube(
        cube, operator=operator, operator_options=operator_options, sampler=sampler, sampler_options=sampler_options,
        noise_sigma=noise_sigma, seed=seed, device=torch_device, progress=progress,
    )
    written: dict[str, list[Path]] = {}
    save_cube(restored.restored, output, overwrite=overwrite, layout=layout, variable=variable or "cube",  # type: ignore[arg-type]
              check_layout=False)
    written["reconstruction"] = cube_files
    written["report"] = [_write_cube_report(paths["report"], cube, restored, operator, sampler, overwrite)]
    record = {
        "command": "reconstruct",
        "mode": "retrospective",
        "input": {"path": str(input_path), "kind": f"cube-{_cube_suffix(input_path).lstrip('.')}", "sha256": file_sha256(sources),
                  "shape": list(cube.shape), "layout": layout or ("hwc" if _cube_suffix(input_path) in _HWC_FORMATS else "chw"),
                  "variable": variable},
        "operator": {"name": operator, "options": dict(operator_options or {}), "type": restored.operator_type},
        "noise": {"model": "gaussian", "sigma_data_units": noise_sigma},
        "sampler": {"name": sampler, "options": restored.sampler_options, "diagnostics": restored.diagnostics},
        "prior": {"name": None, "reason": f"{sampler} needs no trained prior (it fits untrained networks to the cube)"},
        "intensity_window": {"low": restored.window.low, "high": restored.window.high},
        "seed": seed,
        "metrics": restored.metrics,
        "outputs": {k: [str(p) for p in v] for k, v in written.items()},
        "seconds": time.perf_counter() - start,
    }
    written["provenance"] = [write_provenance(paths["provenance"], record, device=torch_device, overwrite=overwrite)]
    return JobResult(written, restored.metrics, time.perf_counter() - start)


def _write_cube_report(path: Path, truth: np.ndarray, result: CubeResult, operator: str, sampler: str,
                       overwrite: bool) -> Path:
    """False-colour panels (truth, measurement, restored; one band triple, one window) and the mean |error| map."""
    bands = false_colour_bands(truth.shape[0])
    truth_rgb = false_colour(truth, bands)
    window = intensity_window(truth_rgb)
    y = result.measurement
    if y.shape[0] == truth.shape[0]:  # denoising, completion, super-resolution: the same bands, maybe fewer pixels
        degraded = Panel(f"degraded ({operator})", false_colour(y, bands), window, colormap="rgb")
    elif y.shape[0] == 3:  # spectral response: the three channels as they are
        degraded = Panel(f"degraded ({operator})", np.moveaxis(y, 0, -1), None, colormap="rgb")
    else:
        degraded = Panel(f"degraded ({operator}, mean)", y.mean(axis=0))
    error = np.abs(result.restored.astype(np.float64) - truth).mean(axis=0)
    panels = [
        Panel(f"truth (bands {bands[0]}/{bands[1]}/{bands[2]} as RGB)", truth_rgb, window, colormap="rgb"),
        degraded,
        Panel(f"restored ({sampler})", false_colour(result.restored, bands), window, colormap="rgb"),
        Panel("|error|, mean over bands", error, (0.0, max(float(np.percentile(error, 99.5)), 1e-12)), colormap="hot"),
    ]
    rec, base = result.metrics["reconstruction"], result.metrics["pseudo_inverse"]
    caption = (f"MPSNR {rec['mpsnr']:.2f} dB (pseudo-inverse {base['mpsnr']:.2f})   MSSIM {rec['mssim']:.3f} "
               f"({base['mssim']:.3f})   SAM {rec['sam']:.2f} deg ({base['sam']:.2f})")
    return write_report(panels, path, caption=caption, overwrite=overwrite)
