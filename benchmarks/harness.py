"""Every task, every applicable method, one command: invdiff, deepinv and sigpy on the same measurements and prior.

    python benchmarks/harness.py                    # "small": one slice, 100 steps; tasks spread over the CPU cores
    python benchmarks/harness.py --config full      # all held-out slices, more steps; meant for a GPU
    python benchmarks/harness.py --tasks "MRI 1-coil 4x" --methods RED-Diff DPS

deepinv's DPS, DiffPIR and DDRM run through ``invdiff.interop.deepinv`` on the same shipped prior; they need
deepinv, which needs torchvision (see the README, "Benchmarks"). Without it they are skipped and the table says so.

Image tasks use the held-out brain slices of ``invdiff/data`` (64x64, data units; noise sigma 0.01, complex for
k-space); cubes use the synthetic scenes of ``invdiff.hsi_data``. Hyperparameters: RED-Diff's SNR weighting and
lambda per task on MNI validation slices, and so are DPS's guidance and DiffPIR's lambda (``GRIDS``); the L1-wavelet lambda comes from
``benchmarks/mri_reconstruction.py``'s tuning on them; the hyperspectral baselines are tuned on their held-out scene
as in ``benchmarks/hsi_restoration.py``. Every diffusion method gets the same number of steps.

Reported per task and method: PSNR, SSIM, NMSE (MPSNR, MSSIM, SAM for cubes), wall time, network evaluations
(NFE), peak memory (GPU: allocated tensors; CPU: resident set growth), and the floor ``NFE x t_forward(batch)``
with the method's overhead over it as a ratio. Writes the "harness" section of ``benchmarks/RESULTS.md`` and
``benchmarks/figures/harness_<device>.png`` (quality against time).

On CPU the tasks run in ``--jobs`` worker processes (default: one per core), each on one torch thread, so every
method of a task is timed on one core; on a GPU they run one after another.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import gc
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hsi_restoration as hsi  # noqa: E402
import mri_reconstruction as mri  # noqa: E402
from results_file import hardware, update_section  # noqa: E402

from invdiff import metrics  # noqa: E402
from invdiff.data import data_path  # noqa: E402
from invdiff.operators import DecomposableOperator, GaussianNoise, LinearOperator  # noqa: E402
from invdiff.pipelines.reconstruct import (  # noqa: E402
    image_from_prior,
    image_to_prior,
    load_prior_for,
    measurement_to_prior,
    prepare_problem,
    starting_estimate,
)
from invdiff.pipelines.registry import OPERATORS, SAMPLER_PRESETS  # noqa: E402
from invdiff.priors import load_prior  # noqa: E402
from invdiff.samplers import dds2m, red_diff, sampler_for_prior, smc  # noqa: E402

SIGMA = 0.01
# Chosen by benchmarks/mri_reconstruction.py on MNI validation slices (the value it picked most often).
L1_LAMBDA = 1e-3

CONFIGS = {
    "small": {"slices": ("dipy_t1_coronal_64",), "steps": 100, "particles": 4, "smc_steps": 40, "cube": (32, 16),
              "dds2m_scale": 1.0, "tune_slices": 1},
    "full": {"slices": mri.EVAL_SLICES, "steps": 200, "particles": 16, "smc_steps": 100, "cube": (128, 31),
             "dds2m_scale": 1.0, "tune_slices": 4},
}


# ---- tasks -------------------------------------------------------------------------------------------
@dataclass
class Instance:
    """One measured image: the truth (data units, (1, C, *spatial)), the operator and the noisy measurement."""

    truth: torch.Tensor
    op: LinearOperator
    y: torch.Tensor
    sigma: float
    name: str
    kind: str


@dataclass(frozen=True)
class ImageTask:
    name: str
    build: Callable[[np.ndarray, int], tuple[LinearOperator, torch.Tensor]]
    kind: str  # "mri" | "image"
    coils: int = 1

    def instances(self, images: dict[str, np.ndarray], device: torch.device) -> list[Instance]:
        out = []
        for i, (name, image) in enumerate(images.items()):
            op, y = self.build(image, i)
            out.append(Instance(torch.from_numpy(image).float()[None, None].to(device), op.to(device), y.to(device),
                                SIGMA, name, self.kind))
        return out


def mri_task(task: mri.Task) -> ImageTask:
    def build(image: np.ndarray, index: int):
        ops, ys = mri.measure(task, image[None], seed=2 + index)
        return ops[0], ys
    return ImageTask(f"MRI {task.coils}-coil {task.acceleration}x", build, "mri", task.coils)


def registry_task(name: str, operator: str, **options) -> ImageTask:
    def build(image: np.ndarray, index: int):
        g = torch.Generator().manual_seed(100 + index)
        op = OPERATORS[operator]((1, *image.shape), generator=g, **options)
        x = torch.from_numpy(image).float()[None, None]
        return op, GaussianNoise(SIGMA).sample(op(x), generator=g)
    return ImageTask(name, build, "image")


IMAGE_TASKS = [mri_task(t) for t in mri.TASKS] + [
    registry_task("inpainting 70% missing", "inpainting", mask="random", keep_fraction=0.3),
    registry_task("super-resolution x4", "super-resolution", factor=4, method="box"),
    registry_task("Gaussian deblur sigma 2", "blur", kernel="gaussian", sigma=2.0),
]
CUBE_TASKS = [t for t in hsi.TASKS if t.name in ("denoise σ=0.1", "complete 50% voxels, σ=0.05", "SR ×2, σ=0.01")]


# ---- measurement helpers -----------------------------------------------------------------------------
class PeakMemory:
    """Peak memory of the block: CUDA allocator peak on GPU; on CPU the growth of the resident set (sampled every
    5 ms) over its size at the start, after glibc has handed freed memory back (malloc_trim), so that memory freed
    by an earlier method and reused does not hide this one's."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak_mb = device, 0.0

    @staticmethod
    def _rss_mb() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
        else:
            with contextlib.suppress(OSError, AttributeError):
                ctypes.CDLL("libc.so.6").malloc_trim(0)
            self._base, self._max, self._stop = self._rss_mb(), 0.0, threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._max = max(self._max, self._rss_mb())
            time.sleep(0.005)

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak_mb = (torch.cuda.max_memory_allocated() - self._base) / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self.peak_mb = max(0.0, max(self._max, self._rss_mb()) - self._base)


def forward_time(prior, batch: int, device: torch.device, repeats: int = 10) -> float:
    """Seconds of one ``denoise`` call at this batch size (median of ``repeats``), the unit of the floor."""
    x = torch.randn((batch, *prior.x_shape), device=device)
    t = torch.full((batch,), 0.5, device=device)
    times = []
    with torch.no_grad():
        for i in range(repeats + 2):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            prior.denoise(x, t)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= 2:  # warm-up
                times.append(time.perf_counter() - start)
    prior.nfe -= repeats + 2
    return float(np.median(times))


@dataclass
class Outcome:
    estimate: np.ndarray  # data units, (C, *spatial)
    nfe: float = 0.0
    batch: int = 1  # images per network call
    note: str = ""
    prior: object = None  # the prior whose network was called, when not the shared one (for the floor)


@dataclass
class Row:
    task: str
    method: str
    scores: dict[str, float]
    wall: float
    nfe: float
    peak_mb: float
    floor: float | None
    note: str = ""
    per_image: list[float] = field(default_factory=list)


# ---- image methods ----------------------------------------------------------------------------------
def zero_filled(prior, inst: Instance, cfg: dict, generator: torch.Generator) -> Outcome:
    # MRI: A^H y is the (coil-combined) zero-filled image; otherwise the pseudo-inverse, truncated at the noise
    # level where an operator has tiny singular values (blur; see pipelines.reconstruct.starting_estimate).
    x = inst.op.adjoint(inst.y) if inst.kind == "mri" else starting_estimate(inst.op, inst.y, inst.sigma)
    return Outcome(x[0].cpu().numpy())


def l1_wavelet(prior, inst: Instance, cfg: dict, generator: torch.Generator) -> Outcome:
    return Outcome(mri.l1_wavelet([inst.op.cpu()], inst.y.cpu(), L1_LAMBDA)[0][None])


def sense(prior, inst: Instance, cfg: dict, generator: torch.Generator) -> Outcome:
    import sigpy.mri.app as app

    physics = inst.op.cpu().outer
    maps = physics.coil_maps.numpy()
    kspace = inst.y.cpu().numpy().reshape(maps.shape)
    recon = app.SenseRecon(kspace, maps, lamda=1e-3, weights=physics.mask.numpy(), max_iter=100, show_pbar=False).run()
    return Outcome(np.real(recon)[None])


def invdiff_sampler(name: str, prior_name: str | None = None) -> Callable[..., Outcome]:
    """An invdiff sampler on the shared prior, or on the shipped prior ``prior_name`` loaded as the CLI loads it."""

    def run(prior, inst: Instance, cfg: dict, generator: torch.Generator) -> Outcome:
        if prior_name is not None:
            prior = shipped_prior(prior_name, inst.truth.device, name.lower())
        problem = prepare_problem(prior, inst.op, inst.sigma)
        y_p = measurement_to_prior(problem, inst.y)
        if name == "RED-Diff":
            options = {**SAMPLER_PRESETS["red-diff"], "steps": cfg["steps"], **cfg.get("options", {})}
            init = image_to_prior(problem, starting_estimate(inst.op, inst.y, inst.sigma))
            result = sampler_for_prior(red_diff, problem.prior)(problem.prior, problem.op, y_p, noise=problem.noise,
                                                                init=init, generator=generator, **options)
            batch = 1
        else:
            options = {"particles": cfg["particles"], "steps": cfg["smc_steps"], **cfg.get("options", {})}
            result = sampler_for_prior(smc, problem.prior)(problem.prior, problem.op, y_p, noise=problem.noise,
                                                           generator=generator, **options)
            batch = cfg["particles"]
        return Outcome(image_from_prior(problem, result.x)[0].cpu().numpy(), float(result.diagnostics["nfe"]), batch,
                       prior=problem.prior)
    return run


@functools.cache
def shipped_prior(name: str, device: torch.device, sampler: str):
    """A shipped prior as the CLI loads it for ``sampler`` (SMC gets the clamp it needs, see SAMPLER_PRIOR_CLIP)."""
    return load_prior_for(name, sampler, device)


def deepinv_sampler(name: str) -> Callable[..., Outcome]:
    def run(prior, inst: Instance, cfg: dict, generator: torch.Generator) -> Outcome:
        from invdiff.interop.deepinv import run_deepinv_sampler

        before = prior.nfe
        x = run_deepinv_sampler(name, prior, inst.op, inst.y, sigma=inst.sigma, steps=cfg["steps"],
                                generator=generator, options=cfg.get("options"))
        return Outcome(x[0].cpu().numpy(), float(prior.nfe - before), 1)
    return run


def deepinv_available() -> str:
    try:
        import deepinv  # noqa: F401

        import invdiff.interop.deepinv  # noqa: F401
    except ImportError as err:
        return f"skipped: {err}"
    return ""


IMAGE_METHODS: dict[str, Callable[..., Outcome]] = {
    "zero-filled / pinv": zero_filled,
    "sigpy L1-wavelet": l1_wavelet,
    "sigpy SENSE": sense,
    "RED-Diff": invdiff_sampler("RED-Diff"),
    "SMC": invdiff_sampler("SMC", "brain-mri"),
    "wavelet-latent RED-Diff": invdiff_sampler("RED-Diff", "brain-mri-wavelet"),
    "deepinv DPS": deepinv_sampler("DPS"),
    "deepinv DiffPIR": deepinv_sampler("DiffPIR"),
    "deepinv DDRM": deepinv_sampler("DDRM"),
}


# Option grids searched per task on the tuning slices; a method with no entry runs at its defaults (deepinv's
# DDRM at eta 0.85, etab 1; SMC with the likelihood drift 0.5 of invdiff's default).
# RED-Diff's SNR weighting is searched too: the paper's "linear" g(s) = s weighs the noisiest steps most, where
# the networks are least accurate; with the latent prior "trunc_linear" was 10 dB better on MRI
# (benchmarks/wavelet_latent.py).
RED_DIFF_GRID = [{"weighting": "linear", "lam": lam} for lam in (30.0, 100.0, 300.0)] + [
    {"weighting": w, "lam": lam} for w in ("trunc_linear", "sqrt") for lam in (10.0, 30.0, 300.0)]
GRIDS: dict[str, list[dict]] = {
    "RED-Diff": RED_DIFF_GRID,
    "wavelet-latent RED-Diff": RED_DIFF_GRID,
    "deepinv DPS": [{"guidance": "annealed"}, {"weight": 100.0}],
    "deepinv DiffPIR": [{"lambda_": 1.0}, {"lambda_": 7.0}],
}


def applies(method: str, task: ImageTask, op: LinearOperator) -> bool:
    if method == "sigpy L1-wavelet":
        return task.kind == "mri"
    if method == "sigpy SENSE":
        return task.kind == "mri" and task.coils > 1
    if method == "deepinv DDRM":  # needs a closed-form SVD
        return isinstance(getattr(op, "outer", op), DecomposableOperator)
    return True


def image_scores(truth: np.ndarray, est: np.ndarray) -> dict[str, float]:
    return {"psnr": metrics.psnr(truth, est), "ssim": metrics.ssim(truth, est), "nmse": metrics.nmse(truth, est)}


def tune(method: str, task: ImageTask, prior, cfg: dict, device: torch.device) -> dict:
    """The option set of ``GRIDS[method]`` with the best mean PSNR on MNI validation slices (never an evaluation
    slice). RED-Diff's prior weight depends on how many measurements its data term sums over, and deepinv's DPS
    and DiffPIR weights are documented as problem-dependent, so each is chosen per task."""
    grid = GRIDS.get(method, [{}])
    if len(grid) == 1:
        return grid[0]
    images = {f"mni-val-{i}": s.astype(np.float32) for i, s in enumerate(mri.tuning_slices(cfg["tune_slices"]))}
    instances = task.instances(images, device)

    def mean_psnr(options: dict) -> float:
        return float(np.mean([image_scores(inst.truth[0, 0].cpu().double().numpy(), IMAGE_METHODS[method](
            prior, inst, {**cfg, "options": options}, torch.Generator(device).manual_seed(1)).estimate[0].astype(
                np.float64))["psnr"] for inst in instances]))

    best, best_psnr = mri.tune(grid, mean_psnr)
    print(f"  {method}: {best} ({best_psnr:.2f} dB on {len(instances)} tuning slices)", flush=True)
    return best


def run_image_task(task: ImageTask, methods: list[str], prior, cfg: dict, device: torch.device, floors: dict,
                   deepinv_note: str) -> list[Row]:
    images = {name: np.load(data_path(f"{name}.npy")).astype(np.float32) for name in cfg["slices"]}
    instances = task.instances(images, device)
    rows = []
    for method in methods:
        if not applies(method, task, instances[0].op):
            continue
        if method.startswith("deepinv") and deepinv_note:
            rows.append(Row(task.name, method, {}, 0.0, 0.0, 0.0, None, deepinv_note))
            continue
        options = tune(method, task, prior, cfg, device)
        method_cfg = {**cfg, "options": options}
        per, wall, nfe, peak, batch, network_prior = [], 0.0, 0.0, 0.0, 1, prior
        for i, inst in enumerate(instances):
            generator = torch.Generator(device).manual_seed(7919 + i)
            with PeakMemory(device) as memory:
                start = time.perf_counter()
                outcome = IMAGE_METHODS[method](prior, inst, method_cfg, generator)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                wall += time.perf_counter() - start
            per.append(image_scores(inst.truth[0, 0].cpu().double().numpy(), outcome.estimate[0].astype(np.float64)))
            nfe, batch, peak = nfe + outcome.nfe, outcome.batch, max(peak, memory.peak_mb)
            network_prior = outcome.prior or prior
        n = len(instances)
        floor = None
        if nfe:
            key = (id(network_prior), tuple(network_prior.x_shape), batch)
            if key not in floors:
                floors[key] = forward_time(network_prior, batch, device)
            floor = nfe / n / batch * floors[key]  # NFE counts single-image evaluations
        mean = {k: float(np.mean([p[k] for p in per])) for k in per[0]}
        note = ", ".join(f"{k} {v}" for k, v in options.items())
        rows.append(Row(task.name, method, mean, wall / n, nfe / n, peak, floor, note, [p["psnr"] for p in per]))
        print(f"  {method:20s} PSNR {mean['psnr']:6.2f}  SSIM {mean['ssim']:.3f}  {wall / n:7.2f} s  NFE {nfe / n:5.0f}"
              f"  peak {peak:7.1f} MB" + (f"  overhead {wall / n / floor:.2f}" if floor else ""), flush=True)
    return rows


# ---- cube tasks ----------------------------------------------------------------------------------------
def run_cube_task(task: hsi.Task, cfg: dict, device: torch.device) -> list[Row]:
    size, bands = cfg["cube"]
    x = hsi.make_scene(hsi.EVAL_SCENES[0], size, bands)
    op, y = hsi.build(task, x, seed=0)
    xn, yn = x.numpy().astype(np.float64), y[0].numpy().astype(np.float64)
    rank, weight = hsi.tune(task, size, bands)
    rows = []
    for name, (est, secs) in hsi.run_classical(task, xn, op, yn, rank, weight).items():
        label = {"input": "degraded input / bicubic"}.get(name, name)
        rows.append(Row(f"HSI {task.name}", label, cube_scores(xn, est), secs, 0.0, 0.0, None))
    preset = dict(hsi.DDS2M_PRESETS[task.kind])
    preset["steps"] = max(4, int(round(preset["steps"] * cfg["dds2m_scale"])))
    with PeakMemory(device) as memory:
        rec = dds2m(None, op.to(device), y.to(device), noise=GaussianNoise(task.sigma),
                    generator=torch.Generator(device).manual_seed(0), **preset)
    rows.append(Row(f"HSI {task.name}", "DDS2M", cube_scores(xn, rec.x[0].double().cpu().numpy()),
                    float(rec.diagnostics["wall_s"]), 0.0, memory.peak_mb, None, f"{preset['steps']} steps"))
    for row in rows:
        print(f"  {row.method:24s} MPSNR {row.scores['psnr']:6.2f}  SAM {row.scores['sam']:6.2f}  {row.wall:7.2f} s",
              flush=True)
    return rows


def cube_scores(truth: np.ndarray, est: np.ndarray) -> dict[str, float]:
    m = hsi.metrics(truth, est)
    return {"psnr": m["mpsnr"], "ssim": m["mssim"], "sam": m["sam"]}


# ---- report ----------------------------------------------------------------------------------------------
def plot(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r.task for r in rows))
    cols = min(4, len(tasks))
    fig, axes = plt.subplots((len(tasks) + cols - 1) // cols, cols, figsize=(4 * cols, 3.2 * ((len(tasks) + cols - 1)
                                                                                            // cols)), squeeze=False)
    for ax, task in zip(axes.ravel(), tasks, strict=False):
        for r in (r for r in rows if r.task == task and r.scores):
            ax.scatter(max(r.wall, 1e-3), r.scores["psnr"], s=25)
            ax.annotate(r.method.replace("deepinv ", "").replace("sigpy ", ""), (max(r.wall, 1e-3), r.scores["psnr"]),
                        fontsize=7)
        ax.set_xscale("log")
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("seconds per image")
        ax.set_ylabel("(M)PSNR dB")
    for ax in axes.ravel()[len(tasks):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(rows: list[Row], args: argparse.Namespace, device: torch.device, total: float, figure: Path,
           workers: int) -> str:
    lines = [
        f"## Harness: every task and method on one prior ({args.config} configuration, {device.type})",
        "",
        f"Generated by `python benchmarks/harness.py --config {args.config}` on {time.strftime('%Y-%m-%d')} in "
        f"{total / 60:.1f} min ({workers} task(s) at a time, one torch thread each); hardware: {hardware()}; load "
        f"average at the end {os.getloadavg()[0]:.1f}.",
        "",
        "Same measurement, same shipped `brain-mri` prior for every diffusion method (deepinv's through "
        "`invdiff.interop.deepinv`; the wavelet-latent row uses `brain-mri-wavelet`, the same network size in a Haar "
        "latent). PSNR/SSIM/NMSE per fastMRI (cubes: MPSNR/MSSIM, SAM in degrees in the NMSE "
        "column's place). Time and NFE per image; floor = NFE x one network forward at the method's batch size; "
        "overhead = time / floor. Peak memory: "
        + ("CUDA allocator peak." if device.type == "cuda" else "resident-set growth on CPU (0 when nothing new "
           "was allocated)."),
        "",
        "| task | method | PSNR | SSIM | NMSE / SAM | s/image | NFE | peak MB | floor s | overhead | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if not r.scores:
            lines.append(f"| {r.task} | {r.method} | – | – | – | – | – | – | – | – | {r.note} |")
            continue
        third = r.scores.get("nmse", r.scores.get("sam"))
        floor = f"{r.floor:.2f} | {r.wall / r.floor:.2f}" if r.floor else "– | –"
        lines.append(f"| {r.task} | {r.method} | {r.scores['psnr']:.2f} | {r.scores['ssim']:.3f} | {third:.4g} | "
                     f"{r.wall:.2f} | {r.nfe:.0f} | {r.peak_mb:.0f} | {floor} | {r.note} |")
    lines += ["", f"Quality against time: `figures/{figure.name}`.", ""]
    return "\n".join(lines)


@functools.cache
def _shipped_prior(device: str):
    return load_prior("brain-mri").to(torch.device(device))


_FLOORS: dict[tuple, float] = {}  # per process: one forward-time measurement per (prior, shape, batch)


def run_job(job: tuple[str, str], *, methods: list[str], config: str, device: str) -> list[Row]:
    """One task in this process (a pool worker or the main process), on one torch thread."""
    torch.set_num_threads(1)
    kind, name = job
    cfg = CONFIGS[config]
    print(f"task {name}", flush=True)
    if kind == "cube":
        return run_cube_task(next(t for t in CUBE_TASKS if t.name == name), cfg, torch.device(device))
    task = next(t for t in IMAGE_TASKS if t.name == name)
    return run_image_task(task, methods, _shipped_prior(device), cfg, torch.device(device), _FLOORS,
                          deepinv_available())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", choices=list(CONFIGS), default="small")
    parser.add_argument("--tasks", nargs="+", default=None,
                        help="task names (default: all); " + ", ".join(t.name for t in IMAGE_TASKS))
    parser.add_argument("--methods", nargs="+", default=list(IMAGE_METHODS), choices=list(IMAGE_METHODS))
    parser.add_argument("--no-cubes", action="store_true", help="skip the hyperspectral tasks")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--jobs", type=int, default=None, help="worker processes on CPU (default: one per core)")
    parser.add_argument("--results", type=Path, default=Path(__file__).with_name("RESULTS.md"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    device = torch.device(args.device)
    start = time.perf_counter()
    print(f"# {hardware()}; config {args.config}", flush=True)

    deepinv_note = deepinv_available()
    if deepinv_note:
        print(f"# deepinv methods {deepinv_note}", flush=True)
    jobs = [("image", t.name) for t in IMAGE_TASKS if not args.tasks or t.name in args.tasks]
    if not args.no_cubes:
        jobs += [("cube", t.name) for t in CUBE_TASKS if not args.tasks or f"HSI {t.name}" in args.tasks]
    workers = 1 if device.type == "cuda" else max(1, min(args.jobs or os.cpu_count() or 1, len(jobs)))
    print(f"# {len(jobs)} tasks in {workers} worker process(es)", flush=True)
    run = functools.partial(run_job, methods=args.methods, config=args.config, device=args.device)
    if workers == 1:
        results = [run(job) for job in jobs]
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: a forked child inherits the parent's OpenMP state, which can deadlock.
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(run, jobs))
    rows = [row for task_rows in results for row in task_rows]

    figure = args.results.parent / "figures" / f"harness_{device.type}.png"
    figure.parent.mkdir(parents=True, exist_ok=True)
    plot(rows, figure)
    text = report(rows, args, device, time.perf_counter() - start, figure, workers)
    update_section(args.results, f"harness-{device.type}", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
