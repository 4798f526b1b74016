"""Which space will a generator like? The cheap modelability proxies checked against the truth,
on every latent space of the digits (or of the photo crops) this project can train.

    python -m benchmarks.modelability [--data digits] [--workdir runs/modelability]
        [--steps 1000] [--probe-steps 1000] [--seeds 0,1,2] [--num 500] [--only kl,vq]
        [--vgg DIR] [--out benchmarks/modelability]
    python -m benchmarks.modelability --data photos --vgg DIR \
        --workdir runs/modelability_photos --out benchmarks/modelability_photos

Each space is a stage-1 run of the digits (16 px, ``ae/digits.py``'s schedule unless named):

- ``kl`` (the baseline: KL, beta 1e-6, f = 4, 4 channels), ``beta_1e-4``, ``beta_1e-2`` (the
  beta sweep's), ``ae``, ``vq``, ``fsq`` (the four bottlenecks);
- ``f2_c1``, ``f8_c16``: the other factor/channel pairs at the same tensor size reduction (4);
- ``eq`` (EQ-VAE, ``ae/digits_eq.py``); with ``--vgg DIR`` (LPIPS's VGG16 in latentjax's format,
  see ``benchmarks/alignment.py``) also ``vf`` (VA-VAE's VF loss) and ``eq_vf`` (both), and
  ``kl_repa``: the baseline's space probed by a DiT with REPA (the generator-side regulariser;
  a row of its own, left out of the correlations, which rank spaces).

For each: the stage-1 report card with its proxies (``latentjax eval``; reconstruction PSNR and
SSIM, LPIPS where the study has VGG16 as its judge (the photos), the reconstructions' Fréchet
distance, the latents' high-frequency energy and spectral centroid, the linear probe, the
interpolation score), and the truth (``latentjax probe``:
``dit/digits.py`` for ``--probe-steps`` steps per seed, judged at guidance 1 on ``--num``
samples). Then the Spearman rank correlation between each proxy and the probe's mean Fréchet
distance (as a multiple of real-vs-real), over the spaces measured.

``--data photos``: the same kinds of space on the photo crops (32 px, ``ae/photos_f4.py``'s
600-step schedule; ``PHOTO_SPACES``; the other factor/channel pairs keep its size reduction of
12), probed by ``dit/photos.py``. The photos have no feature space of their own, so ``--vgg`` is
required: the probe's samples and the interpolation score are judged in VGG16's pooled features
(``latentjax/eval/vgg_features.py``), and both against the ``val`` crops (further crops of the
training photographs), on which the stage-1 proxies are measured too (the ``test`` split's
scenes are classes no training crop has).

Everything resumes: runs from their directories, probes from ``probe.json``, and each space's
figures are added to ``WORKDIR/results.json`` as it is done, so the study can run in parts
(``--only``; two processes may share a workdir). It writes ``results.json``, ``table.md`` and
``correlations.json``, then the plots ``spectra.png`` and ``proxies.png``, into ``--out``
(default ``WORKDIR``; the committed figures beside this script are replaced only when ``--out``
names ``benchmarks/modelability``). Plotting needs matplotlib (the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from latentjax.config import load_config
from latentjax.eval.autoencoder import evaluate
from latentjax.parallel.mesh import make_mesh
from latentjax.probe import probe
from latentjax.run import Run
from latentjax.train.autoencoder import load_autoencoder
from latentjax.train.trainer import check_finished, train

VF = ["loss.vf_weight=0.1", "loss.vf_encoder=vgg16", "loss.vf_encoder_size=32", "loss.vf_vgg_tap=3"]
F2_C1 = ["model.ch_mult=(1, 2)", "model.z_channels=1", "model.embed_dim=1"]  # one fewer down
SPACES: dict[str, tuple[str, list[str]]] = {
    "kl": ("ae/digits.py", []),
    "beta_1e-4": ("ae/digits.py", ["loss.kl_weight=1e-4"]),
    "beta_1e-2": ("ae/digits.py", ["loss.kl_weight=1e-2"]),
    "ae": ("ae/digits_ae.py", []),
    "vq": ("ae/digits_vq.py", []),
    "fsq": ("ae/digits_fsq.py", []),
    "f2_c1": ("ae/digits.py", F2_C1),
    "f8_c16": (
        "ae/digits.py",
        ["model.ch_mult=(1, 2, 2, 2)", "model.z_channels=16", "model.embed_dim=16"],
    ),
    "eq": ("ae/digits_eq.py", []),
    "vf": ("ae/digits.py", VF),
    "eq_vf": ("ae/digits_eq.py", VF),
}
# The photo crops (``--data photos``; 32 px, ``ae/photos_f4.py``'s 600-step schedule unless
# named): the same kinds of space. f2_c1 and f8_c16 keep the size reduction of 12.
VF_PHOTOS = [*VF[:2], "loss.vf_encoder_size=64", VF[3]]  # 64 px: relu4_3 is the 8 x 8 latent grid
PHOTO_SPACES: dict[str, tuple[str, list[str]]] = {
    "kl": ("ae/photos_f4.py", []),
    "beta_1e-4": ("ae/photos_f4.py", ["loss.kl_weight=1e-4"]),
    "beta_1e-2": ("ae/photos_f4.py", ["loss.kl_weight=1e-2"]),
    "ae": ("ae/photos_f4.py", ["model.bottleneck=ae"]),
    "vq": ("ae/photos_f4.py", ["model.bottleneck=vq", "model.codebook_size=256"]),
    "fsq": ("ae/photos_f4.py", ["model.bottleneck=fsq", "model.fsq_levels=(8, 5, 5, 5)"]),
    "f2_c1": ("ae/photos_f4.py", F2_C1),
    "f8_c16": ("ae/photos_f8.py", ["model.z_channels=16", "model.embed_dim=16"]),
    "eq": ("ae/photos_eq.py", []),
    "vf": ("ae/photos_f4.py", VF_PHOTOS),
    "eq_vf": ("ae/photos_eq.py", VF_PHOTOS),
}
REPA = ["repa.weight=0.5", "repa.depth=2", "repa.projector_dim=256", "repa.encoder=vgg16",
        "repa.encoder_size=32", "repa.vgg_tap=3"]  # fmt: skip
# Generator-side rows: a space's own autoencoder, probed by a DiT with a regulariser of its
# own (REPA, as benchmarks/alignment.py runs it). They answer "what did REPA buy on this
# space", not "which space is easier", so the correlations leave them out.
GENERATOR_SIDE = {"kl_repa": ("kl", REPA)}
NEEDS_VGG = ("vf", "eq_vf", "kl_repa")


class Data(NamedTuple):
    """What a study of one dataset needs: its spaces, the probe's DiT config, the split the
    stage-1 proxies are measured on (None: the run's ``data.eval_split``), whether its samples
    need VGG16 to be judged in (no feature space of their own), the default stage-1 steps."""

    spaces: dict[str, tuple[str, list[str]]]
    probe_config: str
    proxy_split: str | None
    judged_in_vgg: bool
    steps: int


DATASETS = {
    "digits": Data(SPACES, "dit/digits.py", None, False, 1000),
    # The photo DiT is judged against the val crops (further crops of the training photographs),
    # and the proxies are measured on them too: the test split's scenes are classes no training
    # crop has, so a linear probe could not read them.
    "photos": Data(PHOTO_SPACES, "dit/photos.py", "val", True, 600),
}
# Proxy -> the sign of the correlation with the probe's Fréchet ratio that would make it a good
# proxy (lower Fréchet is better): more high-frequency energy should hurt (+), a better linear
# probe or reconstruction should help (-), a worse interpolation score should hurt (+), and so
# should reconstructions that sit further from the real distribution (+): the baseline the
# interpolation score has to beat, since it is measured on decoded latents too.
PROXIES = {
    "psnr": -1,
    "lpips": +1,
    "recon_frechet_ratio": +1,
    "latent_high_frequency": +1,
    "latent_centroid": +1,
    "linear_probe": -1,
    "interpolation_frechet_ratio": +1,
    "interpolation_excess": +1,
}


def measure_space(
    root: Path,
    name: str,
    config_name: str,
    overrides: Sequence[str],
    *,
    ae_name: str | None = None,
    probe_config: str = "dit/digits.py",
    probe_overrides: Sequence[str] = (),
    probe_steps: int,
    seeds: Sequence[int],
    num: int,
    proxy_split: str | None = None,
    vgg16: str | None = None,
) -> dict:
    """Trains (or resumes) space ``name`` (the autoencoder of space ``ae_name``, default its
    own), reports it (its proxies on ``proxy_split``) and probes it; with ``vgg16`` (a
    ``latentjax convert lpips`` directory) the interpolation score and the probe's samples are
    judged in VGG16's features and the reconstructions get an LPIPS. -> its row."""
    config = load_config(config_name, overrides)
    workdir = root / (ae_name or name) / "ae"
    began = time.time()
    check_finished(train(config, workdir, progress=False), config, workdir)
    train_s = round(time.time() - began, 1)
    run = Run.open(workdir)
    stage, params = load_autoencoder(run, make_mesh(config.mesh.shape))
    space_fn = lpips_fn = None
    if vgg16 is not None:
        from latentjax.convert.lpips import load_lpips
        from latentjax.eval.vgg_features import unit_images, vgg16_features

        space_fn = unit_images(vgg16_features(vgg16))
        lpips_fn = load_lpips(vgg16)  # the same VGG16, with LPIPS's heads
    card = evaluate(
        run, stage.ae, params, split=proxy_split, space_fn=space_fn, space_name="vgg16",
        lpips_fn=lpips_fn, write=True,
    )  # fmt: skip
    m = card["modelability"]
    began = time.time()
    truth = probe(
        workdir,
        root / name / "probe",
        config_name=probe_config,
        overrides=probe_overrides,
        steps=probe_steps,
        seeds=seeds,
        num=num,
        vgg16=vgg16,
    )
    summary = truth["summary"]
    return {
        "config": config_name,
        "overrides": list(overrides),
        "proxy_split": card["split"],
        "size_reduction": card["size_reduction"],
        "latent_shape": card["latent_shape"],
        "psnr": card["psnr"],
        "ssim": card["ssim"],
        "lpips": card["lpips"],
        "latent_high_frequency": m["latent_high_frequency"],
        "pixel_high_frequency": m["pixel_high_frequency"],
        "latent_centroid": m["latent_centroid"],
        "pixel_centroid": m["pixel_centroid"],
        "linear_probe": m["linear_probe"],
        "interpolation_frechet_ratio": m["interpolation"]["frechet_ratio"],
        "interpolation_excess": m["interpolation"]["excess"],
        "recon_frechet_ratio": m["interpolation"]["recon_frechet_ratio"],
        "spectrum": m["spectrum"],
        "probe": summary,
        "probe_seeds": {s: f["frechet_ratio"] for s, f in truth["seeds"].items()},
        "probe_recon_frechet_ratio": truth["recon"]["frechet_ratio"],
        "train_s": train_s,
        "probe_s": round(time.time() - began, 1),
    }


def correlations(results: dict[str, dict]) -> dict[str, dict]:
    """Spearman's rank correlation of each proxy with the probe's mean Fréchet ratio over the
    spaces that have the proxy, with its two-sided p-value (scipy; no correction for the number
    of proxies), and whether its sign is the one a good proxy would have."""
    from scipy.stats import spearmanr

    out = {}
    for proxy, sign in PROXIES.items():
        rows = [r for r in results.values() if r.get(proxy) is not None]  # None: no figure
        values = np.array([r[proxy] for r in rows], float)
        truth = np.array([r["probe"]["frechet_ratio"]["mean"] for r in rows])
        if len(values) < 3 or np.ptp(values) == 0 or np.ptp(truth) == 0:
            out[proxy] = {"rho": None, "p": None, "spaces": len(values)}
            continue
        rho, p = spearmanr(values, truth)
        out[proxy] = {
            "rho": float(rho),
            "p": float(p),
            "spaces": len(values),
            "right_sign": bool(np.sign(rho) == sign),
        }
    return out


def resolution(results: dict[str, dict]) -> dict:
    """How finely the probe separates spaces: the largest seed spread (standard deviation of the
    Fréchet ratio), and how many pairs of spaces differ by more than twice the larger spread of
    the two."""
    rows = [r["probe"]["frechet_ratio"] for r in results.values()]
    names = list(results)
    pairs = separated = 0
    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            pairs += 1
            gap = abs(rows[i]["mean"] - rows[j]["mean"])
            separated += gap > 2 * max(rows[i]["std"], rows[j]["std"])
    stds = [r["std"] for r in rows]
    return {
        "max_seed_std": float(max(stds)) if stds else None,
        "median_seed_std": float(np.median(stds)) if stds else None,
        "range_of_means": float(np.ptp([r["mean"] for r in rows])) if rows else None,
        "pairs": pairs,
        "pairs_separated": separated,
        "spaces": names,
    }


def _fmt(value, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def table(results: dict[str, dict]) -> str:
    lines = [
        "| space | latent | PSNR | SSIM | LPIPS | recon Fréchet / real | high-freq. energy (latent "
        "/ pixels) | centroid | linear probe | interp. Fréchet / real | interp. / recon "
        "| probe Fréchet / real (mean ± sd) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        f = r["probe"]["frechet_ratio"]
        shape = "x".join(str(s) for s in r["latent_shape"])
        if r.get("generator_side"):
            name += " (REPA in the probe)"
        lines.append(
            f"| {name} | {shape} | {r['psnr']:.2f} | {_fmt(r.get('ssim'), 3)} | "
            f"{_fmt(r.get('lpips'), 3)} | "
            f"{r['recon_frechet_ratio']:.2f} | "
            f"{_fmt(r['latent_high_frequency'], 2)} / "
            f"{r['pixel_high_frequency']:.2f} | {_fmt(r['latent_centroid'], 3)} | "
            f"{r['linear_probe']:.3f} | {r['interpolation_frechet_ratio']:.2f} | "
            f"{r['interpolation_excess']:.2f} | {f['mean']:.2f} ± {f['std']:.2f} |"
        )
    return "\n".join(lines)


def correlation_table(corr: dict[str, dict]) -> str:
    lines = [
        "| proxy | Spearman rho with the probe | p | sign a good proxy has |",
        "|---|---|---|---|",
    ]
    for proxy, c in corr.items():
        if c["rho"] is None:
            lines.append(f"| {proxy} | n/a | | |")
            continue
        want = "+" if PROXIES[proxy] > 0 else "-"
        ok = "yes" if c["right_sign"] else "no"
        lines.append(f"| {proxy} | {c['rho']:+.2f} | {c['p']:.2f} | {want} ({ok}) |")
    return "\n".join(lines)


def plot(results: dict[str, dict], corr: dict[str, dict], out: Path) -> None:
    """``spectra.png`` (each space's latent spectrum and the pixels') and ``proxies.png`` (each
    proxy against the probe, with the seeds' spread)."""
    from latentjax.eval.images import pyplot

    plt = pyplot()
    if plt is None:
        print("matplotlib is not installed: no plots (pip install -e '.[bench]')")
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    first = next(iter(results.values()))
    ax.semilogy(first["spectrum"]["pixel_frequency"], first["spectrum"]["pixel_power"], "k--",
                label="pixels")  # fmt: skip
    for name, r in results.items():
        if r.get("generator_side"):
            continue  # the same space as the row it probes
        ax.semilogy(r["spectrum"]["latent_frequency"], r["spectrum"]["latent_power"], "o-",
                    ms=3, label=name)  # fmt: skip
    ax.set_xlabel("frequency (cycles per sample of each grid; 0.5 = Nyquist)")
    ax.set_ylabel("power (channel mean, sums to 1)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "spectra.png", dpi=110)
    plt.close(fig)

    shown = [p for p in PROXIES if any(r.get(p) is not None for r in results.values())]
    cols = (len(shown) + 1) // 2
    fig, axes = plt.subplots(2, cols, figsize=(4 * cols, 7))
    for ax in axes.ravel()[len(shown) :]:
        ax.axis("off")
    for ax, proxy in zip(axes.ravel(), shown, strict=False):
        for name, r in results.items():
            if r.get(proxy) is None or r.get("generator_side"):
                continue  # no figure for this space; a generator-side row is not a space
            f = r["probe"]["frechet_ratio"]
            ax.errorbar(r[proxy], f["mean"], yerr=f["std"], fmt="o", capsize=3)
            ax.annotate(name, (r[proxy], f["mean"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")  # fmt: skip
        c = corr[proxy]
        rho = "n/a" if c["rho"] is None else f"{c['rho']:+.2f} (p {c['p']:.2f})"
        ax.set_title(f"{proxy}: Spearman {rho}", fontsize=9)
        ax.set_xlabel(proxy, fontsize=8)
        ax.set_ylabel("probe Fréchet / real-vs-real", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "proxies.png", dpi=110)
    plt.close(fig)


def study(
    root: Path,
    names: Sequence[str],
    *,
    steps: int,
    probe_steps: int,
    seeds: Sequence[int],
    num: int,
    vgg: str | None = None,
    ae_overrides: Sequence[str] = (),
    probe_overrides: Sequence[str] = (),
    out: Path | None = None,
    data: str = "digits",
) -> dict:
    """Measures the spaces ``names`` of dataset ``data`` (resuming), then writes the study's
    files (module docstring) from every space in ``root/results.json``."""
    d = DATASETS[data]
    if d.judged_in_vgg and vgg is None:
        raise SystemExit(f"the {data} study judges samples in VGG16's features: give --vgg DIR")
    judge_vgg = str(Path(vgg).absolute()) if d.judged_in_vgg else None
    root.mkdir(parents=True, exist_ok=True)
    results_path = root / "results.json"
    for name in names:
        ae_name, extra_probe = GENERATOR_SIDE.get(name, (name, []))
        config_name, overrides = d.spaces[ae_name]
        overrides = [f"train.num_steps={steps}", f"loss.disc_start={int(0.85 * steps)}",
                     *overrides, *ae_overrides]  # fmt: skip
        name_probe = [*probe_overrides, *extra_probe]
        saved = json.loads(results_path.read_text()) if results_path.exists() else {}
        previous = saved.get(name)
        probed = previous is not None and len(previous["probe_seeds"]) >= len(seeds)
        if probed and (judge_vgg is None or previous.get("lpips") is not None):
            continue  # measured (seeds are added by a later call with more of them)
        # A row measured before the study took LPIPS is measured again: its runs and probe
        # resume from disk, so only the report card is computed anew; its timings are kept.
        if name in NEEDS_VGG:
            if vgg is None:
                print(f"{name}: skipped (needs --vgg)")
                continue
            weights = Path(vgg).absolute()
            if ae_name in NEEDS_VGG:
                overrides.append(f"loss.vf_encoder_weights={weights}")
            if extra_probe:
                name_probe.append(f"repa.encoder_weights={weights}")
        row = measure_space(
            root, name, config_name, overrides, ae_name=ae_name, probe_config=d.probe_config,
            probe_overrides=name_probe, probe_steps=probe_steps, seeds=seeds, num=num,
            proxy_split=d.proxy_split, vgg16=judge_vgg,
        )  # fmt: skip
        row["generator_side"] = name in GENERATOR_SIDE
        if probed:
            row |= {"train_s": previous["train_s"], "probe_s": previous["probe_s"]}
        saved = json.loads(results_path.read_text()) if results_path.exists() else {}
        results_path.write_text(json.dumps({**saved, name: row}, indent=2))
        print(name, json.dumps({k: v for k, v in row.items() if k != "spectrum"}), flush=True)
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    order = [*d.spaces, *GENERATOR_SIDE]
    results = {n: results[n] for n in order if n in results}  # one order for every output
    out = out or root
    out.mkdir(parents=True, exist_ok=True)
    spaces = {n: r for n, r in results.items() if not r.get("generator_side")}
    corr = correlations(spaces)
    summary = {"correlations": corr, "resolution": resolution(spaces)}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "correlations.json").write_text(json.dumps(summary, indent=2))
    text = f"{table(results)}\n\n{correlation_table(corr)}\n"
    (out / "table.md").write_text(text)
    print(text)
    plot(results, corr, out)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/modelability")
    parser.add_argument("--data", choices=sorted(DATASETS), default="digits")
    parser.add_argument(
        "--steps", type=int, default=None, help="stage-1 steps per space (digits 1000, photos 600)"
    )
    parser.add_argument("--probe-steps", type=int, default=1000, help="DiT steps per seed")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--num", type=int, default=500, help="samples judged per seed")
    parser.add_argument("--only", default=None, help="comma-separated spaces")
    parser.add_argument(
        "--vgg", default=None, help="LPIPS VGG16 directory (the VF spaces; every photo space)"
    )
    parser.add_argument("--out", default=None, help="where the tables and plots go")
    args = parser.parse_args()
    known = [*DATASETS[args.data].spaces, *GENERATOR_SIDE]
    names = args.only.split(",") if args.only else known
    unknown = [n for n in names if n not in known]
    if unknown:
        parser.error(f"unknown space {unknown[0]!r}; one of {', '.join(known)}")
    study(
        Path(args.workdir).absolute(),
        names,
        steps=args.steps or DATASETS[args.data].steps,
        probe_steps=args.probe_steps,
        seeds=[int(s) for s in args.seeds.split(",")],
        num=args.num,
        vgg=args.vgg,
        out=Path(args.out).absolute() if args.out else None,
        data=args.data,
    )


if __name__ == "__main__":
    main()
