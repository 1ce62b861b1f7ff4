"""Single- and multi-coil MRI at 4x and 8x on held-out real brain slices: invdiff samplers against compressed sensing.

    pip install -e ".[bench,data]"
    python benchmarks/mri_reconstruction.py            # writes the "mri" section of benchmarks/RESULTS.md
    python benchmarks/mri_reconstruction.py --quick    # small grids, 2 tuning slices, short SMC: a smoke run

Data. Evaluation: the held-out slices shipped in ``invdiff/data`` (64x64; dipy's T1 coronal slice and
three axial slices of nibabel's ``anatomical.nii``: subjects other than the training template).
Tuning: slices of the MNI template from the prior's *validation* split (never trained on), so no
hyperparameter is chosen on an evaluation slice. Every method sees the same measurement of a slice.

Tasks. A real image u in data units (99.5th foreground percentile = 1) is measured as
``y = M F (S u) + n`` with fastMRI equispaced column masks (4x: 8% centre, 8x: 4% centre), ``S`` the
identity (single-coil) or 8 simulated birdcage coil maps normalised to ``sum_c |S_c|^2 = 1``, and complex
Gaussian noise of 0.01 per component and coil. Metrics follow fastMRI (data range = the slice's maximum).

Methods: zero-filled (``A^H y``: with normalised maps the coil-combined zero-filled image, the real part),
sigpy L1-wavelet compressed sensing (lambda chosen on the tuning slices; real part of its complex image),
RED-Diff and the SMC ensemble sampler with the shipped ``brain-mri`` prior (RED-Diff's lambda chosen on the
tuning slices; SMC at fixed settings). For SMC also: Spearman correlation of the per-pixel std with the
absolute error, and the empirical coverage of the central 90% intervals (mean +- 1.645 std), over all pixels.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from invdiff import metrics
from invdiff.data import data_path
from invdiff.operators import (
    GaussianNoise,
    LinearOperator,
    MulticoilMRI,
    RealAsComplexChannels,
    SinglecoilMRI,
    birdcage_maps,
    equispaced_column_mask,
)
from invdiff.pipelines.reconstruct import (
    image_from_prior,
    image_to_prior,
    measurement_to_prior,
    prepare_problem,
    std_from_prior,
)
from invdiff.pipelines.report import Panel, write_report
from invdiff.priors import load_prior
from invdiff.samplers import red_diff, smc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_file import hardware, update_section  # noqa: E402

EVAL_SLICES = ("dipy_t1_coronal_64", "nibabel_anatomical_ax10_64", "nibabel_anatomical_ax13_64",
               "nibabel_anatomical_ax16_64")
SIGMA = 0.01
SIZE = 64


@dataclass(frozen=True)
class Task:
    name: str
    coils: int
    acceleration: int
    center_fraction: float


TASKS = (Task("single-coil 4x", 1, 4, 0.08), Task("single-coil 8x", 1, 8, 0.04),
         Task("8-coil 4x", 8, 4, 0.08), Task("8-coil 8x", 8, 8, 0.04))


def tuning_slices(count: int) -> np.ndarray:
    """MNI template slices from the prior's validation split (as in invdiff.training.data)."""
    from invdiff.training.brain_data import mni_training_slices

    slices = mni_training_slices(SIZE)
    order = torch.randperm(len(slices), generator=torch.Generator().manual_seed(0)).tolist()
    val = sorted(order[: int(round(0.1 * len(slices)))])
    return slices[val[:: max(1, len(val) // count)][:count], 0]


def measure(task: Task, images: np.ndarray, seed: int) -> tuple[list[LinearOperator], torch.Tensor]:
    """One operator (its own mask offset) and one noisy measurement per image."""
    maps = birdcage_maps((SIZE, SIZE), task.coils) if task.coils > 1 else None
    ops, ys = [], []
    for i, image in enumerate(images):
        g = torch.Generator().manual_seed(1000 * seed + i)
        mask = equispaced_column_mask((SIZE, SIZE), task.acceleration, task.center_fraction, generator=g)
        physics = (MulticoilMRI(mask, maps, complex_channels=True) if maps is not None
                   else SinglecoilMRI(mask, complex_channels=True))
        op = physics @ RealAsComplexChannels((SIZE, SIZE))
        ys.append(GaussianNoise(SIGMA).sample(op(torch.from_numpy(image).float()[None, None]), generator=g))
        ops.append(op)
    return ops, torch.cat(ys)


def zero_filled(ops: list, ys: torch.Tensor) -> np.ndarray:
    return np.stack([op.adjoint(y[None])[0, 0].numpy() for op, y in zip(ops, ys, strict=True)])


def l1_wavelet(ops: list, ys: torch.Tensor, lamda: float) -> np.ndarray:
    import sigpy.mri.app as app

    out = []
    for op, y in zip(ops, ys, strict=True):
        physics = op.outer
        mask = physics.mask.numpy()
        maps = physics.coil_maps.numpy() if isinstance(physics, MulticoilMRI) else np.ones((1, SIZE, SIZE), complex)
        kspace = y.numpy().reshape(maps.shape)
        recon = app.L1WaveletRecon(kspace, maps, lamda, weights=mask, max_iter=100, show_pbar=False).run()
        out.append(np.real(recon))
    return np.stack(out)


def run_sampler(prior, ops: list, ys: torch.Tensor, method: str, options: dict, seed: int):
    """One slice at a time (each has its own mask); returns data-unit means (and stds for SMC), NFE, s/slice.

    The prior works on ``x = scale * u + offset``; the pipeline's helpers move the measurement, the start (the
    zero-filled image) and the results between the two spaces.
    """
    means, stds, nfe, wall = [], [], 0.0, 0.0
    for i, (op, y) in enumerate(zip(ops, ys, strict=True)):
        g = torch.Generator().manual_seed(seed * 7919 + i)
        problem = prepare_problem(prior, op, SIGMA)
        y_x = measurement_to_prior(problem, y[None])
        if method == "red-diff":
            init = image_to_prior(problem, op.adjoint(y[None]))
            result = red_diff(problem.prior, op, y_x, noise=problem.noise, init=init, generator=g, **options)
        else:
            result = smc(problem.prior, op, y_x, noise=problem.noise, generator=g, **options)
        means.append(image_from_prior(problem, result.x)[0, 0].numpy())
        if result.std is not None:
            stds.append(std_from_prior(problem, result.std)[0, 0].numpy())
        nfe += float(result.diagnostics["nfe"])
        wall += float(result.diagnostics["wall_s"])
    return np.stack(means), (np.stack(stds) if stds else None), nfe / len(ops), wall / len(ops)


def per_slice_scores(truth: np.ndarray, est: np.ndarray) -> list[dict[str, float]]:
    return [{"psnr": metrics.psnr(t, e), "ssim": metrics.ssim(t, e), "nmse": metrics.nmse(t, e)}
            for t, e in zip(truth, est, strict=True)]


def mean_psnr(truth: np.ndarray, est: np.ndarray) -> float:
    return float(np.mean([s["psnr"] for s in per_slice_scores(truth, est)]))


def calibration(truth: np.ndarray, mean: np.ndarray, std: np.ndarray) -> tuple[float, float]:
    from scipy.stats import spearmanr

    err = np.abs(mean - truth)
    rho = float(spearmanr(std.ravel(), err.ravel()).statistic)
    coverage = float(np.mean(err <= 1.645 * std))
    return rho, coverage


def grid(axes: dict[str, list]) -> list[dict]:
    """Every combination of the values of ``axes``: ``{"a": [1, 2]}`` -> ``[{"a": 1}, {"a": 2}]``."""
    return [dict(zip(axes, values, strict=True)) for values in itertools.product(*axes.values())]


def tune(candidates: list[dict], evaluate) -> tuple[dict, float]:
    """The candidate option set with the highest ``evaluate(options)`` (mean PSNR on tuning slices), and that PSNR."""
    best, best_psnr = candidates[0], -np.inf
    for options in candidates:
        psnr = evaluate(options)
        print(f"    tune {options}: {psnr:.2f} dB", flush=True)
        if psnr > best_psnr:
            best, best_psnr = options, psnr
    return best, best_psnr


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower())


def write_panels(task: Task, truth: np.ndarray, estimates: dict[str, np.ndarray], smc_std: np.ndarray | None,
                 fig_dir: Path) -> list[Path]:
    """Per slice: truth, each method, SMC std, and |error| of each method on one shared scale."""
    paths = []
    for i, name in enumerate(EVAL_SLICES):
        window = (0.0, float(truth[i].max()))
        errors = {m: np.abs(e[i] - truth[i]) for m, e in estimates.items()}
        err_window = (0.0, max(float(np.percentile(err, 99.5)) for err in errors.values()) or 1.0)
        panels = [Panel("truth", truth[i], window)]
        panels += [Panel(m, e[i], window) for m, e in estimates.items()]
        if smc_std is not None:
            panels.append(Panel("SMC std", smc_std[i], err_window, "hot"))
        panels += [Panel(f"|err| {m}", err, err_window, "hot") for m, err in errors.items()]
        path = fig_dir / f"mri_{slug(task.name)}_{name}.png"
        write_report(panels, path, caption=f"{task.name}, {name}: error maps share one scale", panel_size=160,
                     overwrite=True)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small grids, 2 tuning slices, short SMC")
    parser.add_argument("--tasks", nargs="+", default=[t.name for t in TASKS], choices=[t.name for t in TASKS])
    parser.add_argument("--methods", nargs="+", default=["red-diff", "smc"], choices=["red-diff", "smc"],
                        help="diffusion samplers to run (zero-filled and L1-wavelet always run)")
    parser.add_argument("--results", type=Path, default=Path(__file__).with_name("RESULTS.md"))
    args = parser.parse_args(argv)
    fig_dir = args.results.parent / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    start_all = time.perf_counter()

    prior = load_prior("brain-mri")
    truth = np.stack([np.load(data_path(f"{name}.npy")) for name in EVAL_SLICES]).astype(np.float64)
    tune_images = tuning_slices(2 if args.quick else 4).astype(np.float64)
    # invdiff's RED-Diff data term is the true likelihood (1/sigma^2 = 2500 here), hence lam in the hundreds.
    red_grid = {"lam": [300.0] if args.quick else [100.0, 300.0, 1000.0], "lr": [0.1], "steps": [200]}
    smc_options = {"particles": 8, "steps": 30} if args.quick else {"particles": 16, "steps": 100}
    l1_grid = {"lamda": [1e-3, 1e-2] if args.quick else [3e-4, 1e-3, 3e-3, 1e-2]}

    rows = []
    for task in (t for t in TASKS if t.name in args.tasks):
        print(f"task {task.name}", flush=True)
        t_ops, t_ys = measure(task, tune_images, seed=1)
        e_ops, e_ys = measure(task, truth, seed=2)
        estimates: dict[str, np.ndarray] = {}
        smc_std = None

        start = time.perf_counter()
        estimates["zero-filled"] = zero_filled(e_ops, e_ys)
        rows.append((task, "zero-filled", {}, estimates["zero-filled"], 0, (time.perf_counter() - start) / len(truth),
                     None))

        l1_opts, _ = tune(grid(l1_grid), lambda o, ops=t_ops, ys=t_ys: mean_psnr(tune_images, l1_wavelet(ops, ys, **o)))
        start = time.perf_counter()
        estimates["L1-wavelet"] = l1_wavelet(e_ops, e_ys, **l1_opts)
        rows.append((task, "sigpy L1-wavelet", l1_opts, estimates["L1-wavelet"], 0,
                     (time.perf_counter() - start) / len(truth), None))

        if "red-diff" in args.methods:
            opts, _ = tune(grid(red_grid), lambda o, ops=t_ops, ys=t_ys: mean_psnr(
                tune_images, run_sampler(prior, ops, ys, "red-diff", o, seed=1)[0]))
            mean, _, nfe, wall = run_sampler(prior, e_ops, e_ys, "red-diff", opts, seed=2)
            estimates["RED-Diff"] = mean
            rows.append((task, "RED-Diff", opts, mean, nfe, wall, None))
        if "smc" in args.methods:
            mean, smc_std, nfe, wall = run_sampler(prior, e_ops, e_ys, "smc", smc_options, seed=2)
            estimates["SMC"] = mean
            rows.append((task, "SMC", smc_options, mean, nfe, wall, calibration(truth, mean, smc_std)))
        write_panels(task, truth, estimates, smc_std, fig_dir)
        for row in [r for r in rows if r[0] is task]:
            per = per_slice_scores(truth, row[3])
            print(f"  {row[1]:18s} " + " ".join(f"{s['psnr']:6.2f}" for s in per) +
                  f"  mean {np.mean([s['psnr'] for s in per]):6.2f} dB  {row[5]:.2f} s/slice", flush=True)

    total = time.perf_counter() - start_all
    command = f"python benchmarks/mri_reconstruction.py{' --quick' if args.quick else ''}"
    lines = [
        "## MRI reconstruction: invdiff samplers vs compressed sensing",
        "",
        f"Generated by `{command}` on {time.strftime('%Y-%m-%d')} in {total / 60:.1f} min; hardware: {hardware()}; "
        f"load average at the end {os.getloadavg()[0]:.1f}; Python {platform.python_version()}.",
        "",
        "Cartesian MRI of real 64x64 brain slices (data units, complex noise 0.01 per component and coil), fastMRI "
        "equispaced column masks (4x: 8% centre, 8x: 4% centre); multi-coil: 8 normalised birdcage maps. Evaluation: "
        f"{len(truth)} held-out slices of other subjects (`invdiff/data`: {', '.join(EVAL_SLICES)}; PSNR per slice "
        f"in that order); hyperparameters chosen on {len(tune_images)} MNI validation slices. Metrics: fastMRI "
        "definitions, mean over slices. s/slice is wall time of the reconstruction; NFE network evaluations per slice.",
        "",
        "| task | method | chosen hyperparameters | PSNR (dB) | PSNR per slice | SSIM | NMSE | NFE | s/slice | "
        "SMC std-error Spearman | 90% coverage |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for task, method, opts, est, nfe, wall, calib in rows:
        per = per_slice_scores(truth, est)
        mean = {k: float(np.mean([s[k] for s in per])) for k in per[0]}
        cal = f"{calib[0]:.2f} | {calib[1]:.2f}" if calib else "– | –"
        per_psnr = " / ".join(f"{s['psnr']:.1f}" for s in per)
        lines.append(f"| {task.name} | {method} | {opts or '–'} | {mean['psnr']:.2f} | "
                     f"{per_psnr} | {mean['ssim']:.3f} | {mean['nmse']:.4f} | "
                     f"{nfe:.0f} | {wall:.2f} | {cal} |")
    lines += ["", "Panels (truth, each method, SMC std, error maps): `figures/mri_<task>_<slice>.png`.", ""]
    update_section(args.results, "mri", "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
