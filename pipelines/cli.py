"""The ``invdiff`` command line: a thin layer over the functions in ``pipelines.jobs``.

Every error a user can cause becomes one line on stderr and exit code 1 (click's usage errors
exit with 2); nothing is written unless the whole job succeeds.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from .options import parse_key_values

EXPECTED_ERRORS = (ValueError, TypeError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, ImportError, OSError)


def _fail(err: BaseException) -> None:
    message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    raise click.ClickException(message) from err


def _progress(label: str, unit: str = "slices"):
    """Progress on stderr (slices, or sampler steps for cubes): a live counter on a terminal, one line at the end otherwise."""
    live = sys.stderr.isatty()

    def report(done: int, total: int) -> None:
        if live:
            click.echo(f"\r{label}: {done}/{total} {unit}", nl=done == total, err=True)
        elif done == total:
            click.echo(f"{label}: {total} {unit} done", err=True)

    return report


# How each metric is printed, in this order (images: fastMRI's PSNR/SSIM/NMSE; cubes: MPSNR/MSSIM/SAM/ERGAS).
_METRIC_FORMATS = {
    "psnr": "PSNR {:6.2f} dB", "ssim": "SSIM {:.4f}", "nmse": "NMSE {:.5f}",
    "mpsnr": "MPSNR {:6.2f} dB", "mssim": "MSSIM {:.4f}", "sam": "SAM {:5.2f} deg", "ergas": "ERGAS {:.3f}",
}


def _print_metrics(scores: dict[str, dict[str, float]]) -> None:
    for name, values in scores.items():
        shown = [fmt.format(values[key]) for key, fmt in _METRIC_FORMATS.items() if key in values]
        click.echo(f"  {name:15s} " + "  ".join(shown))


def _given(ctx: click.Context, name: str) -> bool:
    """Whether the user set option ``name`` (rather than leaving its default)."""
    return ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="invdiff")
def main() -> None:
    """invdiff: reconstruct scans from incomplete or degraded measurements with diffusion priors.

    \b
    Examples:
      invdiff demo
      invdiff reconstruct brain.nii.gz -o recon.nii.gz --operator mri --param acceleration=4
      invdiff info
    """


@main.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Output: .nii/.nii.gz, .npy, or a folder name for a derived DICOM series; "
                   "for cubes .npy, .mat, .tif/.tiff or .hdr (ENVI).")
@click.option("--operator", default="mri", show_default=True,
              help="Measurement operator (see `invdiff info`); hsi-* operators restore hyperspectral cubes.")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="Operator option, repeatable, e.g. --param acceleration=8 --param mask=equispaced.")
@click.option("--sampler", default=None,
              help="Posterior sampler (see `invdiff info`).  [default: red-diff; dds2m for hsi-* operators]")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE", help="Sampler option, repeatable, e.g. --option lam=0.1.")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Sampler steps (sampler default if omitted).")
@click.option("--particles", type=click.IntRange(min=1), default=None, help="SMC particles per slice.")
@click.option("--prior", default="brain-mri", show_default=True,
              help="Shipped prior name or checkpoint path (not with dds2m, which needs no prior).")
@click.option("--noise-sigma", type=click.FloatRange(min=0, min_open=True), default=0.01, show_default=True,
              help="Measurement noise std in data units (image scaled to its 99.5th percentile = 1; a cube to its maximum = 1).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True, help="Slices per batch.")
@click.option("--volume-index", type=click.IntRange(min=0), default=None, help="Volume of a 4D NIfTI.")
@click.option("--devices", type=click.IntRange(min=1), default=None,
              help="Spread slice batches over N devices with Lightning Trainer.predict (default: this process).")
@click.option("--kspace", is_flag=True, help="Prospective mode: INPUT is measured k-space (.h5, or .npy/.nii with --mask).")
@click.option("--mask", "mask_path", type=click.Path(path_type=Path), default=None, help="Sampling mask (.npy) for k-space INPUT.")
@click.option("--cube-layout", type=click.Choice(["chw", "hwc"]), default=None,
              help="Axis order of cube files, in and out: chw = (bands, H, W), hwc = (H, W, bands).  "
                   "[default: the format's: .npy/.tif chw, .mat/.hdr hwc]")
@click.option("--cube-variable", default=None, metavar="NAME",
              help="MATLAB variable of a .mat cube to read (and the name written; default: the only one / cube).")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@click.pass_context
def reconstruct(ctx: click.Context, input_path: Path, output: Path, operator: str, params: tuple[str, ...],
                sampler: str | None, options: tuple[str, ...], steps: int | None, particles: int | None, prior: str,
                noise_sigma: float, seed: int, device: str, batch_size: int, volume_index: int | None,
                devices: int | None, kspace: bool, mask_path: Path | None, cube_layout: str | None,
                cube_variable: str | None, overwrite: bool) -> None:
    """Reconstruct a scan, or restore a hyperspectral cube.

    Retrospective mode (default): INPUT is an image (DICOM series folder or file, NIfTI, PNG, NPY);
    measurements are simulated with --operator and --noise-sigma, reconstructed and evaluated.
    Prospective mode (--kspace): INPUT is measured k-space (fastMRI-style .h5 with its mask, or
    .npy/.nii k-space with --mask); multi-coil data get ESPIRiT coil maps.

    Hyperspectral mode (chosen by the operator: any hsi-* operator): INPUT is one cube (.npy
    (bands, H, W), .mat, .tif/.tiff or ENVI .hdr; see --cube-layout) restored as a single image with
    the bands as channels, not as a stack of slices. The sampler is dds2m, which fits untrained
    networks to the cube and needs no prior (--prior is refused). The output's suffix picks the cube
    format; the report shows false colour (bands at 85/50/15 % of the band axis) with MPSNR, MSSIM, SAM.

    \b
    Examples:
      invdiff reconstruct scan.nii.gz -o recon.nii.gz --operator mri --param acceleration=4
      invdiff reconstruct dicom_series/ -o recon_series --sampler smc --particles 16 --steps 100
      invdiff reconstruct slice.npy -o out.npy --operator inpainting --param keep_fraction=0.3
      invdiff reconstruct kspace.h5 --kspace -o recon.nii.gz
      invdiff reconstruct big_volume.nii.gz -o recon.nii.gz --device cuda --devices 4 --batch-size 32
      invdiff reconstruct cube.npy -o restored.npy --operator hsi-denoising --noise-sigma 0.1
      invdiff reconstruct cube.mat -o restored.mat --operator hsi-completion --param missing_rate=0.8
    """
    from .jobs import reconstruct_cube, reconstruct_kspace, reconstruct_scan
    from .reconstruct import check_pairing
    from .registry import CUBE_OPERATORS

    try:
        sampler_options = _sampler_options(options, steps, particles)
        cube = operator in CUBE_OPERATORS
        sampler = sampler or ("dds2m" if cube else "red-diff")
        if cube:
            check_pairing(operator, sampler)
            _refuse_given(ctx, "to hyperspectral cubes", prior=f"{sampler} needs no trained prior",
                          batch_size="a cube is restored as one image", volume_index="it picks a volume of a 4D NIfTI",
                          devices="a cube is restored as one image", kspace="k-space input is MRI",
                          mask_path="it is the sampling mask of k-space input")
            result = reconstruct_cube(
                input_path, output, operator=operator, operator_options=parse_key_values(params, option="--param"),
                sampler=sampler, sampler_options=sampler_options, noise_sigma=noise_sigma, seed=seed, device=device,
                layout=cube_layout, variable=cube_variable, overwrite=overwrite,
                progress=_progress(f"{sampler} on {input_path.name}", "steps"),
            )
        elif kspace or mask_path is not None:
            if params or operator != "mri":
                raise ValueError("--operator/--param describe simulated measurements; k-space input defines its own MRI operator")
            _refuse_given(ctx, f"without an hsi-* operator (got {operator!r})", cube_layout="it describes cube files",
                          cube_variable="it describes cube files")
            result = reconstruct_kspace(
                input_path, output, mask_path=mask_path, sampler=sampler, sampler_options=sampler_options, prior=prior,
                noise_sigma=noise_sigma, seed=seed, device=device, overwrite=overwrite,
                progress=_progress(f"{sampler} on {input_path.name}"),
            )
        else:
            check_pairing(operator, sampler)
            _refuse_given(ctx, f"without an hsi-* operator (got {operator!r})", cube_layout="it describes cube files",
                          cube_variable="it describes cube files")
            result = reconstruct_scan(
                input_path, output, operator=operator, operator_options=parse_key_values(params, option="--param"),
                sampler=sampler, sampler_options=sampler_options, prior=prior, noise_sigma=noise_sigma, seed=seed,
                device=device, batch_size=batch_size, overwrite=overwrite, volume_index=volume_index, devices=devices,
                progress=_progress(f"{sampler} on {input_path.name}"),
            )
    except EXPECTED_ERRORS as err:
        _fail(err)
    _print_metrics(result.metrics)
    for kind, paths in result.outputs.items():
        click.echo(f"wrote {kind}: {paths[0]}" + (f" (+{len(paths) - 1} files)" if len(paths) > 1 else ""))


def _refuse_given(ctx: click.Context, context: str, **reasons: str) -> None:
    """One-line error for the first option in ``reasons`` that the user gave but that does not apply here."""
    for name, reason in reasons.items():
        if _given(ctx, name):
            flag = next(p.opts[0] for p in ctx.command.params if p.name == name)
            value = ctx.params[name]
            shown = flag if isinstance(value, bool) else f"{flag} {value}"
            raise ValueError(f"{shown} does not apply {context}: {reason}; drop it")


def _sampler_options(options: tuple[str, ...], steps: int | None, particles: int | None) -> dict[str, Any]:
    parsed = parse_key_values(options, option="--option")
    for key, value in (("steps", steps), ("particles", particles)):
        if value is not None:
            if key in parsed:
                raise ValueError(f"--{key} given twice (also as --option {key}=...)")
            parsed[key] = value
    return parsed


@main.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Output: .h5 (fastMRI layout) for MRI operators, .npy otherwise.")
@click.option("--operator", default="mri", show_default=True, help="Measurement operator (see `invdiff info`).")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="Operator option, repeatable.")
@click.option("--noise-sigma", type=click.FloatRange(min=0), default=0.01, show_default=True,
              help="Measurement noise std in data units.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--volume-index", type=click.IntRange(min=0), default=None, help="Volume of a 4D NIfTI.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
def simulate(input_path: Path, output: Path, operator: str, params: tuple[str, ...], noise_sigma: float, seed: int,
             volume_index: int | None, overwrite: bool) -> None:
    """Simulate measurements of a scan (k-space for MRI operators), for prospective reconstruction.

    \b
    Examples:
      invdiff simulate scan.nii.gz -o kspace.h5 --operator mri --param acceleration=8
      invdiff simulate scan.nii.gz -o kspace.h5 --operator mri-multicoil --param coils=8
      invdiff reconstruct kspace.h5 --kspace -o recon.nii.gz
      invdiff reconstruct big_volume.nii.gz -o recon.nii.gz --device cuda --devices 4 --batch-size 32
    """
    from .jobs import simulate_scan

    try:
        result = simulate_scan(input_path, output, operator=operator, operator_options=parse_key_values(params, option="--param"),
                               noise_sigma=noise_sigma, seed=seed, overwrite=overwrite, volume_index=volume_index)
    except EXPECTED_ERRORS as err:
        _fail(err)
    for kind, paths in result.outputs.items():
        click.echo(f"wrote {kind}: {paths[0]}")


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="YAML or JSON training config (see examples/train_brain_prior.yaml).")
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
def train(config_path: Path | None, overrides: tuple[str, ...]) -> None:
    """Train a diffusion prior with Lightning (a config file plus KEY=VALUE overrides).

    Data: a folder of NIfTI / DICOM series / PNG / NPY files (data=PATH), or the MNI template.
    Resumes automatically from OUTPUT_DIR/checkpoints/last.ckpt.

    \b
    Examples:
      invdiff train --config examples/train_brain_prior.yaml
      invdiff train --config examples/train_brain_prior.yaml data=/data/my_niftis steps=5000 output_dir=runs/mine
      invdiff train --config examples/train_brain_prior.yaml devices=4 precision=bf16-mixed
    """
    from invdiff.training import load_config
    from invdiff.training import train as run_training

    try:
        config = load_config(config_path, list(overrides))
        path = run_training(config)
    except EXPECTED_ERRORS as err:
        _fail(err)
    click.echo(f"wrote prior: {path}")


@main.command()
@click.argument("target", type=click.Path(path_type=Path))
@click.argument("estimate", type=click.Path(path_type=Path))
@click.option("--cube", is_flag=True, help="Treat inputs as hyperspectral cubes (bands, H, W): adds SAM, MPSNR.")
def evaluate(target: Path, estimate: Path, cube: bool) -> None:
    """Compare an estimate with a target: PSNR, SSIM, NMSE (fastMRI conventions), and SAM for cubes.

    \b
    Examples:
      invdiff evaluate truth.nii.gz recon.nii.gz
      invdiff evaluate cube.npy restored.npy --cube
    """
    from .jobs import evaluate_files

    try:
        scores = evaluate_files(target, estimate, cube=cube)
    except EXPECTED_ERRORS as err:
        _fail(err)
    for key, value in scores.items():
        click.echo(f"{key:6s} {value:.5f}")


@main.command()
def info() -> None:
    """List operators, samplers, shipped priors and devices."""
    import torch

    from invdiff.priors.checkpoint import SHIPPED

    from .options import keyword_options
    from .registry import OPERATORS, SAMPLERS

    click.echo("operators (--operator, options via --param):")
    for name, fn in OPERATORS.items():
        opts = ", ".join(f"{k}={p.default!r}" for k, p in keyword_options(fn).items() if k != "generator")
        click.echo(f"  {name:22s} {opts or '(no options)'}")
    click.echo("samplers (--sampler, options via --option):")
    for name, fn in SAMPLERS.items():
        skip = {"noise", "generator", "callback", "progress"}
        opts = ", ".join(f"{k}={p.default!r}" for k, p in keyword_options(fn).items() if k not in skip)
        click.echo(f"  {name:22s} {opts or '(no options)'}")
    click.echo("  (hsi-* operators take hyperspectral cubes and pair with dds2m, which needs no prior)")
    click.echo("priors (--prior):")
    for name, stem in SHIPPED.items():
        click.echo(f"  {name:16s} {stem}")
    devices = ["cpu"] + [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    click.echo("devices: " + ", ".join(devices))


@main.command()
@click.option("--output-dir", type=click.Path(path_type=Path), default=Path("invdiff-demo"), show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace an existing demo output.")
def demo(output_dir: Path, overwrite: bool) -> None:
    """Reconstruct a held-out real brain slice from simulated 4x k-space with the shipped prior.

    Writes the reconstruction, its uncertainty, a PNG report and a provenance JSON to OUTPUT_DIR.
    """
    from .jobs import run_demo

    try:
        result = run_demo(output_dir, overwrite=overwrite, progress=_progress("demo"))
    except EXPECTED_ERRORS as err:
        _fail(err)
    _print_metrics(result.metrics)
    for kind, paths in result.outputs.items():
        click.echo(f"wrote {kind}: {paths[0]}")
    click.echo(f"done in {result.seconds:.1f} s; open {result.outputs['report'][0]}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
