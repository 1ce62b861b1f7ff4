"""Pixel-space against wavelet-latent diffusion priors of matched network size: time, peak memory and quality.

    pip install -e ".[bench,data]"
    python benchmarks/wavelet_latent.py                # the "wavelet" and "wavelet-hsi" sections of benchmarks/RESULTS.md
    python benchmarks/wavelet_latent.py --parts hsi    # only the cube prior

2D: single-coil 4x MRI (fastMRI equispaced mask, 8% centre, complex noise 0.01 in data units) of the held-out dipy
T1 slice at 64x64 (the priors' training size) and at 256x256 (the priors applied convolutionally; the 256 slice is
dipy's original, preprocessed like the training data), reconstructed by RED-Diff (200 steps) with the shipped
``brain-mri`` prior (pixels, 1 x 64 x 64) and ``brain-mri-wavelet`` (one-level Haar latent, 4 x 32 x 32). Both
networks are MONAI DiffusionModelUNets with channels [32, 64, 64] (1.06 M parameters; only the in/out channels
differ). RED-Diff's SNR weighting and lambda are chosen for each prior on 2 MNI validation slices at 64x64.

3D, trained: 8x Poisson-disc 3D MRI (two phase-encode axes, 8^2 calibration block) of nibabel's ``anatomical.nii``
(a real T1 of another subject, 2 mm, 33 x 41 x 25, zero-padded to 40 x 48 x 32; not skull-stripped, so out of
distribution for MNI-trained priors) with 3D priors trained for the same CPU wall time on 2 mm MNI patches:
``examples/train_brain_prior_3d.yaml`` (voxels, 1 x 32^3) and ``examples/train_wavelet_brain_prior_3d.yaml`` (Haar
latent, 8 x 16^3), both U-Nets [16, 32, 32]. Train them first (``python -m invdiff.training --config ...``); the
3D rows are skipped when ``runs/brain3d_*/prior`` is missing. RED-Diff 100 steps with the weighting and lambda
chosen in 2D for the same kind of prior.

Hyperspectral (``--parts hsi``): a cube prior in a spectral-PCA + Haar latent (``examples/train_hsi_wavelet_prior.yaml``,
train it first) with RED-Diff on the denoising and 50 % completion tasks of ``benchmarks/hsi_restoration.py``
(same cubes and measurements).

3D, cost only: randomly initialised 3D networks of the shipped 2D configuration, a 1 x 64^3 volume against its
8 x 32^3 Haar latent; RED-Diff 20 steps on single-coil 3D Cartesian MRI. Quality is not reported there.

Peak memory: CUDA allocator peak on GPU; on CPU the growth of the resident set during the run (see harness.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mri_reconstruction as mri  # noqa: E402
from harness import PeakMemory  # noqa: E402
from results_file import hardware, update_section  # noqa: E402

from invdiff import metrics  # noqa: E402
from invdiff.data import data_path  # noqa: E402
from invdiff.operators import (  # noqa: E402
    GaussianNoise,
    RealAsComplexChannels,
    SinglecoilMRI,
    WaveletTransform,
    equispaced_column_mask,
    poisson_disc_mask,
)
from invdiff.pipelines.reconstruct import (  # noqa: E402
    image_from_prior,
    image_to_prior,
    measurement_to_prior,
    prepare_problem,
    starting_estimate,
)
from invdiff.pipelines.report import Panel, write_report  # noqa: E402
from invdiff.priors import NetworkPrior, WaveletLatentPrior, load_prior  # noqa: E402
from invdiff.priors.network import build_unet  # noqa: E402
from invdiff.samplers import red_diff, sampler_for_prior  # noqa: E402
from invdiff.schedule import VPSchedule  # noqa: E402

SIGMA = 0.01
# RED-Diff's prior weight w_t = lam * g(s_t): "linear" (the paper's g(s) = s) puts most weight on the noisiest
# steps, where a latent network's epsilon is least accurate; "trunc_linear" (min(s, 1)) and "sqrt" do not.
SETTINGS = tuple((weighting, lam) for weighting in ("linear", "trunc_linear", "sqrt") for lam in (10.0, 100.0, 1000.0))
PRIORS_3D = {"pixel": Path("runs/brain3d_pixel/prior"), "wavelet latent": Path("runs/brain3d_wavelet/prior")}


def dipy_slice(size: int) -> np.ndarray:
    """The held-out dipy slice at ``size`` (64 ships in invdiff/data; other sizes from dipy, preprocessed alike)."""
    if size in (64, 128):
        return np.load(data_path(f"dipy_t1_coronal_{size}.npy")).astype(np.float32)
    from invdiff.training.brain_data import heldout_slices

    return heldout_slices(size)["dipy_t1_coronal"].astype(np.float32)


def measure(image: np.ndarray, seed: int) -> tuple:
    g = torch.Generator().manual_seed(seed)
    spatial = image.shape
    mask = equispaced_column_mask(spatial, 4, 0.08, generator=g)
    op = SinglecoilMRI(mask.expand(spatial), complex_channels=True) @ RealAsComplexChannels(spatial)
    y = GaussianNoise(SIGMA).sample(op(torch.from_numpy(image)[None, None]), generator=g)
    return op, y


def reconstruct(prior, op, y, *, steps: int, lam: float, device: torch.device, weighting: str = "linear",
                sigma: float = SIGMA) -> tuple[np.ndarray, float, float]:
    """RED-Diff with ``prior`` (pixel or wavelet latent): estimate ``(C, *spatial)`` in data units, seconds, peak MB."""
    problem = prepare_problem(prior, op.to(device), sigma)
    y = y.to(device)
    y_p = measurement_to_prior(problem, y)
    init = image_to_prior(problem, starting_estimate(problem.op, y, sigma))
    g = torch.Generator(device).manual_seed(0)
    with PeakMemory(device) as memory:
        start = time.perf_counter()
        result = sampler_for_prior(red_diff, problem.prior)(problem.prior, problem.op, y_p, noise=problem.noise,
                                                            steps=steps, lam=lam, weighting=weighting, lr=0.1,
                                                            init=init, generator=g)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    return image_from_prior(problem, result.x)[0].cpu().numpy(), seconds, memory.peak_mb


def tune(prior, device: torch.device) -> tuple[str, float]:
    """RED-Diff's (weighting, lambda) with the best mean PSNR on 2 MNI validation slices."""
    slices = mri.tuning_slices(2).astype(np.float32)

    def evaluate(setting: tuple[str, float]) -> float:
        weighting, lam = setting
        return float(np.mean([metrics.psnr(s, reconstruct(prior, *measure(s, 10 + i), steps=200, lam=lam,
                                                          weighting=weighting, device=device)[0][0])
                              for i, s in enumerate(slices)]))

    return mri.tune(list(SETTINGS), evaluate)[0]


def heldout_volume() -> np.ndarray:
    """nibabel's anatomical.nii (RAS, 2 mm), scaled like the 3D training data, zero-padded to 40 x 48 x 32."""
    from monai.transforms import SpatialPad

    from invdiff.training.brain_data import NIBABEL_ANATOMICAL, locate_package_file, percentile_scale
    from invdiff.training.data import load_image

    volume, _ = load_image(locate_package_file("nibabel", NIBABEL_ANATOMICAL))
    volume = percentile_scale(torch.as_tensor(volume).clamp(min=0))
    return np.asarray(SpatialPad((40, 48, 32))(volume))[0].astype(np.float32)


def measure_3d(volume: np.ndarray, seed: int) -> tuple:
    g = torch.Generator().manual_seed(seed)
    shape = volume.shape
    mask = poisson_disc_mask(shape, 8, 8, generator=g)
    op = SinglecoilMRI(mask, complex_channels=True) @ RealAsComplexChannels(shape)
    y = GaussianNoise(SIGMA).sample(op(torch.from_numpy(volume)[None, None]), generator=g)
    return op, y


def write_mid_slices(volumes: dict[str, np.ndarray], path: Path) -> None:
    """The three orthogonal mid-slices of each volume, one row of panels per axis, stacked in one PNG."""
    from PIL import Image

    window = (0.0, float(volumes["truth"].max()))
    rows = []
    for axis in range(3):
        panels = [Panel(f"{name}, axis {axis}", np.take(v, v.shape[axis] // 2, axis=axis).T[::-1], window)
                  for name, v in volumes.items()]
        row_path = path.with_name(f"{path.stem}_axis{axis}.png")
        write_report(panels, row_path, panel_size=160, overwrite=True)
        rows.append(Image.open(row_path))
        row_path.unlink()
    sheet = Image.new("RGB", (rows[0].width, sum(r.height for r in rows)))
    for i, row in enumerate(rows):
        sheet.paste(row, (0, i * rows[0].height))
    sheet.save(path)


def matched_3d_priors(size: int) -> dict[str, object]:
    """Randomly initialised 3D priors of the shipped configuration: pixels (1 x size^3) and Haar latent."""
    config = {"spatial_dims": 3, "channels": [32, 64, 64], "attention_levels": [False, False, False],
              "num_res_blocks": 1, "norm_num_groups": 32, "num_head_channels": 32}
    image = (1, size, size, size)
    w = WaveletTransform(image, "haar")
    torch.manual_seed(0)
    pixel = NetworkPrior(build_unet({**config, "in_channels": 1, "out_channels": 1}), VPSchedule(), x_shape=image)
    latent = NetworkPrior(build_unet({**config, "in_channels": w.y_shape[0], "out_channels": w.y_shape[0]}),
                          VPSchedule(), x_shape=w.y_shape)
    return {"pixel": pixel, "wavelet latent": WaveletLatentPrior(latent, w)}


HSI_PRIOR = Path("runs/hsi_wavelet/prior")
HSI_SETTINGS = tuple((weighting, lam) for weighting in ("trunc_linear", "sqrt") for lam in (1.0, 10.0, 100.0))


def hsi_section(device: torch.device) -> str:
    """A cube prior in a spectral-PCA + Haar latent (examples/train_hsi_wavelet_prior.yaml) with RED-Diff on the
    denoising and completion tasks of benchmarks/hsi_restoration.py: the same 128 x 128 x 31 cubes, seeds and
    measurements, so its numbers sit beside that benchmark's tables; RED-Diff's weighting and lambda are chosen
    on the tuning scene."""
    import hsi_restoration as hsi

    prior = load_prior(HSI_PRIOR).to(device)
    trained = prior.provenance
    start = time.perf_counter()
    lines = [
        "## A hyperspectral cube prior in a spectral + wavelet latent",
        "",
        f"Generated by `python benchmarks/wavelet_latent.py --parts hsi` on {time.strftime('%Y-%m-%d')}; hardware: "
        f"{hardware()}; device {device.type}.",
        "",
        f"Prior: `{HSI_PRIOR}` from `examples/train_hsi_wavelet_prior.yaml` (rank-{prior.transform.inner.y_shape[0]} "
        f"spectral PCA then one-level Haar: latent {prior.x_shape} of a {prior.image_shape} crop; trained "
        f"{trained['steps']} steps in {trained['wall_time_s'] / 60:.0f} min on `hsi-training` scenes, disjoint from these), "
        "applied "
        "convolutionally to 128 x 128 x 31 cubes. RED-Diff 200 steps, weighting and lambda chosen on `rocket`. The "
        "measurements are those of `benchmarks/hsi_restoration.py` (same seeds), so compare with its tables above "
        "(DDS2M, low-rank, TV). MPSNR/MSSIM with data range 1, SAM in degrees; means over coffee, astronaut, chelsea.",
        "",
        "| task | MPSNR | MSSIM | SAM | s/cube | peak MB | MPSNR per scene | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for task in (t for t in hsi.TASKS if t.name in ("denoise σ=0.1", "complete 50% voxels, σ=0.05")):
        ti = hsi.TASKS.index(task)
        rocket = hsi.make_scene(hsi.TUNE_SCENE, 128, 31)
        op, y = hsi.build(task, rocket, seed=999)

        def evaluate(setting: tuple[str, float], op=op, y=y, truth=rocket, sigma=task.sigma) -> float:
            weighting, lam = setting
            est = reconstruct(prior, op, y, steps=200, lam=lam, weighting=weighting, device=device, sigma=sigma)[0]
            return hsi.metrics(truth.double().numpy(), est.astype(np.float64))["mpsnr"]

        weighting, lam = mri.tune(list(HSI_SETTINGS), evaluate)[0]
        scores, seconds, peaks = [], [], []
        for si, scene in enumerate(hsi.EVAL_SCENES):
            x = hsi.make_scene(scene, 128, 31)
            op, y = hsi.build(task, x, seed=1000 * ti + si)
            est, secs, peak = reconstruct(prior, op, y, steps=200, lam=lam, weighting=weighting, device=device,
                                          sigma=task.sigma)
            scores.append(hsi.metrics(x.double().numpy(), est.astype(np.float64)))
            seconds.append(secs)
            peaks.append(peak)
            print(task.name, scene, scores[-1], f"{secs:.1f} s", flush=True)
        mean = {k: float(np.mean([sc[k] for sc in scores])) for k in scores[0]}
        per = " / ".join(f"{sc['mpsnr']:.2f}" for sc in scores)
        lines.append(f"| {task.name} | {mean['mpsnr']:.2f} | {mean['mssim']:.3f} | {mean['sam']:.2f} | "
                     f"{np.mean(seconds):.1f} | {max(peaks):.0f} | {per} | {weighting}, lam {lam:g} |")
    lines += ["", f"Total {(time.perf_counter() - start) / 60:.1f} min.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size-3d", type=int, default=64)
    parser.add_argument("--results", type=Path, default=Path(__file__).with_name("RESULTS.md"))
    parser.add_argument("--parts", nargs="+", choices=("images", "hsi"), default=["images", "hsi"],
                        help="images: 2D and 3D (the 'wavelet' section); hsi: the cube prior ('wavelet-hsi' section; "
                             f"skipped when {HSI_PRIOR} is missing)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    device = torch.device(args.device)
    if "hsi" in args.parts and HSI_PRIOR.with_suffix(".json").exists():
        text = hsi_section(device)
        update_section(args.results, "wavelet-hsi", text)
        print(text)
    if "images" not in args.parts:
        return 0
    start_all = time.perf_counter()
    priors = {"pixel": load_prior("brain-mri").to(device), "wavelet latent": load_prior("brain-mri-wavelet").to(device)}
    settings = {name: tune(prior, device) for name, prior in priors.items()}
    print(f"(weighting, lambda) chosen on MNI validation slices: {settings}", flush=True)

    def note(name: str) -> str:
        weighting, lam = settings[name]
        return f"{weighting}, lam {lam:g}"

    rows = []
    for size in (64, 256):
        truth = dipy_slice(size)
        op, y = measure(truth, seed=2)
        zf = op.adjoint(y)[0, 0].numpy()
        rows.append((f"2D {size}x{size}", "zero-filled", metrics.psnr(truth, zf), metrics.ssim(truth, zf), 0.0, 0.0, "–"))
        for name, prior in priors.items():
            weighting, lam = settings[name]
            est, seconds, peak = reconstruct(prior, op, y, steps=200, lam=lam, weighting=weighting, device=device)
            est = est[0]
            rows.append((f"2D {size}x{size}", name, metrics.psnr(truth, est), metrics.ssim(truth, est), seconds, peak,
                         note(name)))
            print(rows[-1], flush=True)

    trained_3d = {name: path for name, path in PRIORS_3D.items() if path.with_suffix(".json").exists()}
    if trained_3d:
        volume = heldout_volume()
        op3, y3 = measure_3d(volume, seed=4)
        problem = f"3D {'x'.join(map(str, volume.shape))} (trained 3D priors)"
        zf = op3.adjoint(y3)[0, 0].numpy()
        rows.append((problem, "zero-filled", metrics.psnr(volume, zf), metrics.ssim(volume, zf), 0.0, 0.0, "–"))
        volumes = {"truth": volume, "zero-filled": zf}
        for name, path in trained_3d.items():
            prior = load_prior(path).to(device)
            weighting, lam = settings[name]
            est, seconds, peak = reconstruct(prior, op3, y3, steps=100, lam=lam, weighting=weighting, device=device)
            est, trained = est[0], prior.provenance
            rows.append((problem, name, metrics.psnr(volume, est), metrics.ssim(volume, est), seconds, peak,
                         f"{note(name)}; trained {trained['steps']} steps in {trained['wall_time_s'] / 60:.0f} min"))
            print(rows[-1], flush=True)
            volumes[name] = est
        write_mid_slices(volumes, Path(__file__).with_name("figures") / "wavelet_3d.png")

    size = args.size_3d
    g = torch.Generator().manual_seed(3)
    volume = torch.rand(size, size, size, generator=g).numpy().astype(np.float32)  # cost only: content is irrelevant
    mask = equispaced_column_mask((size, size, size), 4, 0.08, generator=g)
    op3 = SinglecoilMRI(mask.expand(size, size, size), complex_channels=True) @ RealAsComplexChannels((size,) * 3)
    y3 = GaussianNoise(SIGMA).sample(op3(torch.from_numpy(volume)[None, None]), generator=g)
    for name, prior in matched_3d_priors(size).items():
        _, seconds, peak = reconstruct(prior.to(device), op3, y3, steps=20, lam=300.0, device=device)
        rows.append((f"3D {size}^3 (untrained nets)", name, float("nan"), float("nan"), seconds, peak, "20 steps"))
        print(rows[-1], flush=True)

    lines = [
        "## Wavelet-latent against pixel-space priors of matched size",
        "",
        f"Generated by `python benchmarks/wavelet_latent.py` on {time.strftime('%Y-%m-%d')} in "
        f"{(time.perf_counter() - start_all) / 60:.1f} min; hardware: {hardware()}; device {device.type}; load average "
        f"at the end {os.getloadavg()[0]:.1f}.",
        "",
        "Single-coil 4x MRI (equispaced, 8% centre, noise 0.01) of the held-out dipy T1 slice; RED-Diff 200 steps "
        "with the shipped `brain-mri` (pixels) and `brain-mri-wavelet` (Haar latent) priors, both MONAI U-Nets "
        "[32, 64, 64] of 1.06 M parameters trained on the same MNI slices (the wavelet prior for 2500 steps in 22 "
        "min, the pixel prior for 1500 in 67 min); RED-Diff's SNR weighting and lambda chosen per prior on MNI "
        "validation slices. Trained 3D rows: 8x Poisson-disc 3D MRI of nibabel's anatomical.nii (another subject, "
        "2 mm, not skull-stripped) with 3D U-Nets [16, 32, 32] trained on 2 mm MNI patches for the same CPU time "
        "(voxels 1 x 32^3, latent 8 x 16^3), RED-Diff 100 steps. Untrained 3D rows: cost of 20 RED-Diff steps with "
        "randomly initialised 3D networks of the 2D priors' configuration, so no quality. Peak memory: "
        + ("CUDA allocator peak." if device.type == "cuda" else "resident-set growth on CPU."),
        "",
        "| problem | prior | PSNR (dB) | SSIM | seconds | peak MB | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for problem, name, psnr, ssim, seconds, peak, note in rows:
        quality = "– | –" if np.isnan(psnr) else f"{psnr:.2f} | {ssim:.3f}"
        lines.append(f"| {problem} | {name} | {quality} | {seconds:.1f} | {peak:.0f} | {note} |")
    update_section(args.results, "wavelet", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
