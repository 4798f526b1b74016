"""The report card of a trained stage-1 run (``latentjax eval --workdir DIR``).

Runs the autoencoder over a held-out split and writes ``DIR/eval/``:

- ``report.json``: reconstruction quality (PSNR, SSIM, MS-SSIM where the images are large
  enough, LPIPS and rFID when their networks are supplied) and the latent report
  (``latentjax/eval/latent_report.py``): per-channel mean/std, the shift and scale to unit
  variance, KL per channel (KL bottleneck), active units, the tensor size reduction, PCA;
- ``reconstructions.png``: rows of originals, reconstructions and the latents' first three
  principal components as RGB (enlarged to the image size);
- ``interpolation_linear.png`` (and ``interpolation_slerp.png`` for the Gaussian bottleneck):
  decoded latents on the path between the encodings of two held-out images, per pair a row;
- the cheap modelability proxies (``latentjax/eval/modelability.py``) in the report's
  ``modelability`` section: the latents' power spectrum beside the pixels' (``spectrum.png``),
  a linear probe of the latents (where the data has labels) and the interpolation score (where
  there is a feature space: the digits' own, or Inception's with ``--inception``). The truth
  they stand in for is ``latentjax probe``.

Only the autoencoder's ``encode``/``decode`` and the posterior's ``mode()`` are used, so every
bottleneck works; the KL-only numbers (KL per channel, slerp) appear when the posterior has a
``logvar``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from latentjax.data import digits
from latentjax.data.normalization import denormalize, normalize
from latentjax.data.pipeline import split_arrays
from latentjax.errors import LatentjaxError
from latentjax.eval import distribution, fid, metrics, modelability, video
from latentjax.eval import latent_report as lr
from latentjax.eval.digits_features import NAME as DIGITS_SPACE
from latentjax.eval.digits_features import digits_features
from latentjax.eval.images import image_grid, pyplot, save_png, to_uint8
from latentjax.factory import is_video
from latentjax.paths import Path
from latentjax.run import Run, write_json

ImageMetric = Callable[[Any, Any], Any]  # (x [B,H,W,C], y [B,H,W,C]) in [-1, 1] -> [B]


def _batched(fn, x: np.ndarray, batch_size: int) -> list:
    """fn over fixed-size batches (the last one padded by repetition, so one compile), results
    cut back to ``len(x)`` and concatenated per output leaf."""
    outs = []
    for i in range(0, len(x), batch_size):
        chunk = x[i : i + batch_size]
        n = len(chunk)
        if n < batch_size and len(x) > batch_size:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - n, axis=0)])
        outs.append(jax.tree.map(lambda a, n=n: np.asarray(a)[:n], fn(chunk)))
    return jax.tree.map(lambda *a: np.concatenate(a), *outs)


def reconstruct(ae, params, images: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """The autoencoder's reconstructions ``decode(mode(encode(x)))`` of ``images`` [N, H, W, C]
    in [-1, 1], clipped to [-1, 1]; one jitted program over fixed-size batches."""

    @jax.jit
    def encode_decode(batch):
        z = ae.apply(params, batch, method=ae.encode).mode()
        return jnp.clip(ae.apply(params, z, method=ae.decode), -1.0, 1.0)

    return _batched(encode_decode, np.asarray(images, np.float32), batch_size)


def ms_ssim_scales(size: int, win_size: int = 11, most: int = 5) -> int:
    """How many MS-SSIM scales fit an image side: the coarsest must still hold the window."""
    return max(0, min(most, int(math.floor(math.log2(size / win_size))) + 1)) if size >= 11 else 0


def check_options(max_images: int, batch_size: int, num_show: int) -> None:
    if max_images <= 0 or batch_size <= 0 or num_show < 2:
        raise LatentjaxError("--max-images and --batch-size must be positive, --num-show >= 2")


def evaluate(
    run: Run,
    ae,
    params,
    *,
    split: str | None = None,
    max_images: int = 1024,
    batch_size: int = 128,
    num_show: int = 8,
    lpips_fn: ImageMetric | None = None,
    feature_fn: Callable[[Any], Any] | None = None,
    space_fn: Callable[[Any], Any] | None = None,
    space_name: str = "given",
    write: bool = True,
    data=None,
) -> dict[str, Any]:
    """The report of the stage-1 ``run`` whose autoencoder ``ae`` (an ``AutoencoderKL``) has
    ``params`` (see the module docstring); written to ``RUN/eval`` when ``write``.
    ``lpips_fn(x, y) -> [B]`` adds LPIPS; ``feature_fn(x) -> [B, D]`` (e.g. Inception pool
    features) adds rFID; the interpolation score is taken in ``space_fn(x) -> [B, D]`` when
    given (e.g. VGG16's, ``eval/vgg_features.py``; ``space_name`` names it in the report), else
    in ``feature_fn``'s space ("inception"), else, for the digits, in their own; the report's
    ``modelability.feature_space`` says which (None: no space, no interpolation score);
    ``data`` (a config ``data`` section) evaluates on another dataset than the run's."""
    check_options(max_images, batch_size, num_show)
    workdir, config = run.path, run.config
    data = config.data if data is None else data
    split = split or data.eval_split
    video = is_video(config.model)
    arrays = split_arrays(data, split, limit=max_images)  # not the whole split: it may be large
    x = np.asarray(arrays["video" if video else "image"], np.float32)
    report: dict[str, Any] = {"workdir": str(workdir), "split": split}
    if video:
        figures, x_hat = _video_report(ae, params, x, batch_size, lpips_fn, feature_fn)
        report |= figures
        if write and jax.process_index() == 0:
            _write_video(workdir / "eval", report, x, x_hat, num_show)
        return report

    @jax.jit
    def encode_decode(batch):
        posterior = ae.apply(params, batch, method=ae.encode)
        z = posterior.mode()
        x_hat = jnp.clip(ae.apply(params, z, method=ae.decode), -1.0, 1.0)
        out = {"z": z, "x_hat": x_hat, "psnr": metrics.psnr(batch, x_hat)}
        if min(batch.shape[1:3]) >= 11:
            out["ssim"] = metrics.ssim(batch, x_hat)
        scales = ms_ssim_scales(min(batch.shape[1:3]))
        if scales >= 2:
            out["ms_ssim"] = metrics.ms_ssim(batch, x_hat, weights=metrics.MS_SSIM_WEIGHTS[:scales])
        if hasattr(posterior, "logvar"):
            out["logvar"] = posterior.logvar
        return out

    res = _batched(encode_decode, x, batch_size)
    z = res["z"]
    report |= {
        "num_images": len(x),
        "bottleneck": getattr(ae, "bottleneck", "kl"),
        "image_shape": list(x.shape[1:]),
        "latent_shape": list(z.shape[1:]),
        "size_reduction": lr.size_reduction(x.shape[1:], z.shape[1:]),
        "psnr": float(res["psnr"].mean()),
        "ssim": float(res["ssim"].mean()) if "ssim" in res else None,
        "ms_ssim": float(res["ms_ssim"].mean()) if "ms_ssim" in res else None,
        "ms_ssim_scales": ms_ssim_scales(min(x.shape[1:3])),
    }
    report |= _perceptual(x, res["x_hat"], batch_size, lpips_fn, feature_fn)
    pca = lr.principal_components(z, 3)
    report |= _latent(z, res.get("logvar"), pca)
    if "logvar" in res:
        report["latent"]["kl_per_image"] = float(
            np.sum(report["latent"]["kl_per_channel"]) * z.shape[1] * z.shape[2]
        )
    labels = np.asarray(arrays["label"]) if "label" in arrays else None
    features, space = space_fn, space_name
    if features is None:
        features, space = feature_fn, "inception"
    if features is None and data.name == digits.NAME:
        features, space = _digits_features, DIGITS_SPACE
    if features is None:
        space = None
    encode = jax.jit(lambda batch: ae.apply(params, batch, method=ae.encode).mode())
    decode = jax.jit(lambda z: jnp.clip(ae.apply(params, z, method=ae.decode), -1.0, 1.0))
    train = split_arrays(data, data.train_split, max_images) if split != data.train_split else None
    report["modelability"] = proxies(x, labels, res, train, batch_size, encode, decode, features)
    report["modelability"]["feature_space"] = space
    if write and jax.process_index() == 0:
        _write(workdir / "eval", report, x, res, pca, ae, params, num_show)
    return report


def _digits_features(images) -> np.ndarray:
    """The digits' feature space for images in [-1, 1]."""
    return digits_features(to_uint8(np.asarray(images)))


def _channel_mean(values) -> float | None:
    """The mean over channels that have a figure (a constant channel has none: NaN), or None."""
    values = np.atleast_1d(np.asarray(values, np.float64))
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else None


def proxies(x, labels, res, train, batch_size, encode, decode, features) -> dict:
    """The report's ``modelability`` section: held-out images ``x`` [N, H, W, C] in [-1, 1] with
    their ``labels`` (or None), their latents and reconstructions ``res["z"]``, ``res["x_hat"]``;
    the ``train`` split's arrays (capped as the held-out ones are; None: evaluating on the
    training split itself, so no probe and no interpolation score); the jitted ``encode`` (to
    the posterior mode) and ``decode``; ``features`` (images in [-1, 1] -> [N, D], or None).

    - ``spectrum``: :func:`modelability.radial_spectrum` of the latents and of the pixels, each
      channel-averaged and scaled to sum 1, frequencies in cycles per sample of each grid;
      ``latent_high_frequency`` and ``pixel_high_frequency``, the share of energy above half of
      each grid's Nyquist frequency (means over the channels that vary; per channel for the
      latents, None for a constant one), and ``latent_centroid`` and ``pixel_centroid``, the
      energy-weighted mean frequency;
    - ``linear_probe``: test accuracy of a logistic regression fitted on the training latents,
      beside ``chance`` (the most frequent test class's share);
    - ``interpolation``: the Fréchet distance, in ``features``, of the decoded midpoints between
      each held-out latent and its nearest neighbour to the training images, beside the same
      distance of the reconstructions and of the held-out images (real-vs-real), all at N
      points; ``frechet_ratio`` and ``recon_frechet_ratio`` are to real-vs-real, and
      ``excess`` = midpoints / reconstructions (what interpolating adds to reconstructing)."""
    z, x_hat = res["z"], res["x_hat"]
    zs, xs = modelability.radial_spectrum(z), modelability.radial_spectrum(x)
    out: dict[str, Any] = {
        "spectrum": {
            "latent_frequency": zs["frequency"].tolist(),
            "latent_power": modelability.normalised(zs).tolist(),
            "pixel_frequency": xs["frequency"].tolist(),
            "pixel_power": modelability.normalised(xs).tolist(),
        },
        "latent_high_frequency": _channel_mean(zs["high"]),
        "latent_high_frequency_per_channel": [_channel_mean(v) for v in zs["high"]],
        "pixel_high_frequency": _channel_mean(xs["high"]),
        "latent_centroid": _channel_mean(zs["centroid"]),
        "pixel_centroid": _channel_mean(xs["centroid"]),
        "linear_probe": None,
        "interpolation": None,
    }
    if train is None:
        return out
    train_x = np.asarray(train["image"], np.float32)
    if labels is not None and len(np.unique(labels)) > 1:
        train_z = _batched(encode, train_x, batch_size)
        train_y = np.asarray(train["label"])
        out["linear_probe"] = modelability.linear_probe(train_z, train_y, z, labels)
        out["chance"] = float(np.bincount(labels).max() / len(labels))
    if features is not None and len(x) >= 2:
        stats = fid.statistics(_batched(features, train_x, batch_size))
        middle = _batched(
            decode, modelability.midpoints(z, modelability.nearest_pairs(z)), batch_size
        )
        value, recon, reference = (
            fid.frechet_distance_to_features(np.asarray(_batched(features, a, batch_size)), *stats)
            for a in (middle, x_hat, x)
        )
        out["interpolation"] = {
            "frechet": value,
            "recon_frechet": recon,
            "reference": reference,
            "frechet_ratio": distribution.ratio(value, reference),
            "recon_frechet_ratio": distribution.ratio(recon, reference),
            "excess": distribution.ratio(value, recon),
            "num_points": len(x),
        }
    return out


def reconstruction_sheet(x, x_hat, z, pca: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """Three rows: images ``x`` and reconstructions ``x_hat`` ([N, H, W, C] in [-1, 1]), and the
    latents ``z`` [N, h, w, c] as their first three principal components in RGB (``pca``:
    fitted elsewhere, or on ``z``), enlarged to the images' size. -> uint8 [rows, cols, 3]."""

    def rgb(images):  # [-1, 1] -> uint8 RGB
        images = to_uint8(np.asarray(images))
        return np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images[..., :3]

    n, size = len(x), np.shape(x)[1]
    pictures = lr.pca_rgb(np.asarray(z), pca)  # [n, h, w, 3] in [0, 1]
    factor = size // pictures.shape[1]
    pictures = np.repeat(np.repeat(pictures, factor, axis=1), factor, axis=2)
    pictures = np.round(pictures * 255).astype(np.uint8)
    return image_grid(np.concatenate([rgb(x), rgb(x_hat), pictures]), ncol=n)


def _perceptual(x, x_hat, batch_size: int, lpips_fn, feature_fn) -> dict[str, Any]:
    """LPIPS (``lpips_fn``, ``batch_size`` images a call) and rFID (``feature_fn``) of images
    ``x`` and their reconstructions ``x_hat`` [N, H, W, C]; None where no network is given."""
    lpips = None
    if lpips_fn is not None:
        values = [
            np.asarray(lpips_fn(x[i : i + batch_size], x_hat[i : i + batch_size]))
            for i in range(0, len(x), batch_size)
        ]
        lpips = float(np.mean(np.concatenate(values)))
    return {
        "lpips": lpips,
        "rfid": metrics.rfid(x, x_hat, feature_fn) if feature_fn else None,
    }


def _latent(z, logvar, pca) -> dict[str, Any]:
    """The report's ``latent`` and ``active_units`` sections of latents ``z`` [N, h, w, c] (and
    the posterior's ``logvar``, or None), with their ``pca``."""
    stats, units = lr.channel_stats(z), lr.active_units(z)
    kl = None if logvar is None else lr.gaussian_kl_per_channel(z, logvar).tolist()
    return {
        "latent": {
            "channel_mean": stats["mean"].tolist(),
            "channel_std": stats["std"].tolist(),
            **lr.scale_factor(z),
            "kl_per_channel": kl,
            "pca_explained_variance_ratio": pca["ratio"].tolist(),
        },
        "active_units": {
            "threshold": lr.ACTIVE_UNIT_THRESHOLD,
            "count": units["count"],
            "total": units["total"],
            "per_channel": units["per_channel"].tolist(),
            "channel_variance": units["channel_variance"].tolist(),
        },
    }


def _video_report(ae, params, x, batch_size: int, lpips_fn, feature_fn) -> tuple[dict, Any]:
    """The report card of a video autoencoder (a ``VideoAutoencoderKL``) on clips ``x``
    [N, T, H, W, C] in [-1, 1], encoded (causally, in chunks, as the model does) and decoded
    through the posterior mean; ``batch_size`` counts clips.

    The figures are the video ones of ``latentjax/eval/video.py``: per-frame PSNR and SSIM
    (means over every frame of every clip, and PSNR by frame index, which shows the first frame,
    encoded alone, and any decay along a chunk), flicker (the error of the frame differences),
    the tensor size reduction counting time (T H W C / (t h w c)); LPIPS and rFID on the frames
    when their networks are given; and the latent report of the latent frames (each latent
    frame one "image" of h x w positions). -> (figures, reconstructions)."""
    ssim_ok = min(x.shape[2:4]) >= 11

    @jax.jit
    def encode_decode(batch):
        posterior = ae.apply(params, batch, method=ae.encode)
        z = posterior.mode()
        x_hat = jnp.clip(ae.apply(params, z, method=ae.decode), -1.0, 1.0)
        out = {
            "z": z,
            "x_hat": x_hat,
            "logvar": posterior.logvar,
            "psnr": video.per_frame(metrics.psnr, batch, x_hat),  # [B, T]
            "flicker": video.flicker(batch, x_hat),  # [B]
        }
        if ssim_ok:
            out["ssim"] = video.per_frame(metrics.ssim, batch, x_hat)
        return out

    res = _batched(encode_decode, x, batch_size)
    z = res["z"]  # [N, t, h, w, c]
    folded = z.reshape(-1, *z.shape[2:])  # latent frames as images
    frames = batch_size * x.shape[1]
    report = {
        "num_clips": len(x),
        "clip_shape": list(x.shape[1:]),
        "latent_shape": list(z.shape[1:]),
        "size_reduction": lr.size_reduction(x.shape[1:], z.shape[1:]),
        "psnr": float(res["psnr"].mean()),
        "psnr_per_frame": res["psnr"].mean(axis=0).tolist(),
        "ssim": float(res["ssim"].mean()) if "ssim" in res else None,
        "flicker": float(res["flicker"].mean()),
        **_perceptual(video.frames(x), video.frames(res["x_hat"]), frames, lpips_fn, feature_fn),
        **_latent(folded, res["logvar"].reshape(folded.shape), lr.principal_components(folded, 3)),
    }
    kl = np.sum(report["latent"]["kl_per_channel"])
    report["latent"]["kl_per_clip"] = float(kl * np.prod(z.shape[1:4]))
    return report, res["x_hat"]


def _write_video(out: Path, report, x, x_hat, num_show) -> None:
    """``report.json`` and ``frames.png`` (clips ``x`` over their reconstructions ``x_hat``)."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "report.json", report)
    n = min(num_show, len(x))
    save_png(out / "frames.png", video_sheet(x[:n], x_hat[:n]), scale=max(1, 64 // x.shape[2]))


def video_sheet(x, x_hat) -> np.ndarray:
    """A frame strip: per clip, a row of its frames ``x`` over a row of their reconstructions
    ``x_hat`` ([N, T, H, W, C] in [-1, 1]). -> uint8 [2N rows of tiles, T columns, 3]."""
    x, x_hat = to_uint8(np.asarray(x)), to_uint8(np.asarray(x_hat))
    n, t = x.shape[:2]
    rows = np.stack([x, x_hat], axis=1).reshape(2 * n * t, *x.shape[2:])  # clip by clip
    rows = np.repeat(rows, 3, axis=-1) if rows.shape[-1] == 1 else rows[..., :3]
    return image_grid(rows, ncol=t)


def _write(out: Path, report, x, res, pca, ae, params, num_show) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "report.json", report)
    n = min(num_show, len(x))
    size = x.shape[1]
    sheet = reconstruction_sheet(x[:n], res["x_hat"][:n], res["z"][:n], pca)
    save_png(out / "reconstructions.png", sheet, scale=max(1, 96 // size))
    plot_spectrum(report["modelability"], out / "spectrum.png")

    def rgb(images):  # [-1, 1] -> uint8 RGB
        images = to_uint8(images)
        return np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images[..., :3]

    scale = max(1, 96 // size)
    decode = jax.jit(lambda z: ae.apply(params, z, method=ae.decode))
    ts = np.linspace(0.0, 1.0, 9)
    pairs = [(i, len(x) - 1 - i) for i in range(min(3, len(x) // 2))]
    kinds = ["linear"] + (["slerp"] if "logvar" in res else [])
    shift, scale_f = report["latent"]["shift"], report["latent"]["scale"]
    for kind in kinds:
        strips = []
        for i, j in pairs:
            # Slerp where the latents are standardised (shift and scale to unit variance), the
            # space in which a Gaussian latent is near a sphere; then mapped back.
            a, b = (normalize(res["z"][k], shift, scale_f) for k in (i, j))
            path = denormalize(lr.interpolate(a, b, ts, kind), shift, scale_f)
            strips.append(np.clip(np.asarray(decode(path.astype(np.float32))), -1, 1))
        grid = image_grid(rgb(np.concatenate(strips)), ncol=len(ts))
        save_png(out / f"interpolation_{kind}.png", grid, scale=scale)


def plot_spectrum(proxies: dict[str, Any], path: Path) -> Path | None:
    """The latents' radially averaged power spectrum beside the pixels' (``proxies``: the
    report's ``modelability`` section), each against its own grid's frequency, with the
    high-frequency band shaded. -> the PNG, or None without matplotlib."""
    plt = pyplot()
    if plt is None:
        return None
    spectrum = proxies["spectrum"]
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for name, colour in (("pixel", "0.4"), ("latent", "tab:blue")):
        share = proxies[f"{name}_high_frequency"]
        ax.semilogy(spectrum[f"{name}_frequency"], spectrum[f"{name}_power"], "o-", ms=3,
                    color=colour, label=f"{name}s ({share:.0%} of energy in the band)")  # fmt: skip
    ax.axvspan(modelability.HIGH_FREQUENCY, 0.5, color="0.92", zorder=0)
    ax.set_xlabel("frequency (cycles per sample of each grid; 0.5 = Nyquist)")
    ax.set_ylabel("power (channel mean, sums to 1)")
    ax.set_xlim(0, 0.5)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
