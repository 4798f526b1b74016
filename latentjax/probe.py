"""``latentjax probe``: the truth the modelability proxies stand in for.

A fixed small generator is trained on a stage-1 run's latents for a fixed budget, once per seed,
and its samples are judged by the stage-2 report card (``latentjax/eval/generation.py``). The
protocol is the same for every space, so two spaces can be compared by their figures, and the
spread over seeds says how large a difference must be to mean anything:

- the DiT config (default ``dit/digits.py``) with the autoencoder run's own data section (name,
  data_dir, size, crop, training split; the held-out split is the DiT config's own),
  ``train.num_steps`` = the budget, ``seed`` = each seed; the
  latents are normalised as every stage-2 run normalises them (shift and scale to unit variance
  from the frozen encoder, ``latent_stats.json``), so spaces of different scale start equal;
- samples at guidance scale 1 (no guidance: guidance trades diversity for fidelity and would
  judge the sampler, not the space), ``num`` of them with the held-out split's classes in turn,
  sampling seed 0;
- per seed the samples' figures (Fréchet distance as a multiple of real-vs-real, precision,
  recall, recognised, within-class variance), and over seeds their mean and standard deviation.

Each seed's run lives in ``OUT/seed_S`` and resumes from it; ``OUT/probe.json`` keeps each
judged seed, so an interrupted probe (or one given more seeds later) trains and judges only what
is missing. A ``probe.json`` of another protocol (config, by name or by contents, overrides,
budget, ``num``, or the autoencoder at another step: trained on since) is refused rather than
mixed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from latentjax.config import base_config, flat_config, load_config, to_json
from latentjax.errors import ConfigError
from latentjax.eval import distribution
from latentjax.factory import is_video
from latentjax.paths import Path, absolute
from latentjax.run import Run, read_json, write_json

PROBE_FILE = "probe.json"
# The autoencoder run's data; the held-out split judged against is the DiT config's own (the photo
# crops' autoencoders hold out other scenes, their DiTs further crops of the training scenes).
DATA_KEYS = ("name", "data_dir", "image_size", "crop", "train_split")
FIGURES = (
    "frechet_ratio",
    "recognised",
    "precision",
    "recall",
    "class_variance_ratio",
    "sfid_ratio",
)


def probe_config(ae_run: Run, config_name: str, overrides: Sequence[str], steps: int, seed: int):
    """The stage-2 config of one probe run: ``config_name`` with ``overrides``, on ``ae_run``'s
    latents and data, for ``steps`` steps from ``seed``."""
    config = load_config(config_name, overrides)
    if config.stage != "dit":
        raise ConfigError(f"--config {config_name} is a '{config.stage}' config; a probe is a DiT")
    config.ae_workdir = str(absolute(ae_run.path))
    for key in DATA_KEYS:
        config.data[key] = ae_run.config.data[key]
    config.data.latent_cache = ""
    config.seed = seed
    config.train.num_steps = steps
    config.train.eval_every = steps  # the run's own evaluation once, at the end
    config.train.checkpoint_every = min(config.train.checkpoint_every, steps)
    return config


def protocol(
    ae_run: Run, config_name: str, overrides, steps: int, num: int, space: str, config
) -> dict:
    """What must match for two probes' figures to be pooled or compared: besides the names,
    ``config_digest``, the contents of the probe's config (``config``, any seed's), so a config
    file edited between two calls is another protocol, not the same name."""
    return {
        "ae_workdir": str(absolute(ae_run.path)),
        "ae_step": ae_run.weights_step,
        "config": config_name,
        "overrides": list(overrides),
        "steps": steps,
        "num": num,
        "cfg_scale": 1.0,
        "sample_seed": 0,
        "feature_space": space,
        # What the ratios are multiples of: probes judged against the test split (before
        # 2026-12-03, no such key) are not comparable with these.
        "reference": distribution.REFERENCE,
        "config_digest": config_digest(config),
    }


# Keys the DiT's base config gained after probes began recording digests of whole configs
# (2026-12-02 to 03), with the value that reproduces the behaviour from before them. Digests are
# now taken of what a config sets beyond its stage's defaults, so a new key at its default no
# longer changes them; this list only lets the probes of those two days resume.
KEYS_ADDED_TO_WHOLE_DIGESTS = {"optim.schedule": "constant"}


def config_digest(config) -> str:
    """A digest of what a probe config sets beyond the DiT's defaults (``configs/dit/base.py``),
    but for its seed (the one thing seeds differ in): an edited config file or override is a
    new digest; a key added to the defaults later, at its default, is not."""
    base, mine = flat_config(base_config("dit")), flat_config(config)
    contents = {k: v for k, v in mine.items() if k != "seed" and (k not in base or base[k] != v)}
    return _digest(contents)


def _whole_config_digest(config) -> str | None:
    """The digest probes wrote on 2026-12-02 and 03, of the whole config without the keys added
    since; None if one of those keys is not at its old behaviour (no such probe can match)."""
    contents = json.loads(to_json(config))
    contents.pop("seed", None)
    for key, old in KEYS_ADDED_TO_WHOLE_DIGESTS.items():
        section, name = key.split(".")
        if contents.get(section, {}).pop(name, old) != old:
            return None
    return _digest(contents)


def _digest(contents: dict) -> str:
    return hashlib.sha256(json.dumps(contents, sort_keys=True).encode()).hexdigest()[:16]


def summarise(per_seed: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation (ddof 1; 0 for one seed) over seeds of each figure."""
    out: dict[str, dict[str, float]] = {}
    for figure in FIGURES:
        values = [s[figure] for s in per_seed.values() if s.get(figure) is not None]
        if values:
            out[figure] = {
                "mean": float(np.mean(values)),
                "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                "seeds": len(values),
            }
    return out


def probe(
    ae_workdir: str | Path,
    out: str | Path,
    *,
    config_name: str = "dit/digits.py",
    overrides: Sequence[str] = (),
    steps: int = 1000,
    seeds: Sequence[int] = (0, 1, 2),
    num: int = 500,
    inception: str | None = None,
    vgg16: str | None = None,
    progress: bool = False,
    on_seed=None,
) -> dict[str, Any]:
    """Probes the stage-1 run in ``ae_workdir`` (see the module docstring); -> the report
    written to ``OUT/probe.json``. Everything that can be checked is checked before anything is
    trained; ``on_seed(seed, figures)`` is called as each seed is judged."""
    from latentjax.eval import generation
    from latentjax.eval.generation import judging_space, references
    from latentjax.generate import collect_samples, load_generator, spec_from_config
    from latentjax.parallel.mesh import make_mesh
    from latentjax.train.trainer import check_finished, train

    if steps <= 0 or num <= 0 or not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError("--steps and --num must be positive, --seeds distinct and not empty")
    ae_run = Run.open(ae_workdir, stage="ae")
    if is_video(ae_run.config.model):
        raise ConfigError(f"{ae_workdir} is a video autoencoder run; the probe is an image DiT")
    configs = {s: probe_config(ae_run, config_name, overrides, steps, s) for s in seeds}
    first = configs[seeds[0]]
    space = judging_space(first.data.name, inception, vgg16)
    out = absolute(out)
    want = protocol(ae_run, config_name, overrides, steps, num, space.name, first)
    report: dict[str, Any] = {"protocol": want, "seeds": {}}
    if (out / PROBE_FILE).exists():
        report = read_json(out / PROBE_FILE)
        there = dict(report.get("protocol") or {})
        stored = there.get("config_digest")
        if stored is not None and stored == _whole_config_digest(first):
            there["config_digest"] = want["config_digest"]  # the same contents, digested whole
        if "config_digest" not in there:  # written before probes recorded their config's contents
            there["config_digest"] = want["config_digest"]
            if there == want and jax.process_index() == 0:
                print(
                    f"latentjax: {out / PROBE_FILE} does not record its config's contents (an "
                    f"older probe): its seeds are taken as trained with {config_name} as it is now"
                )
        if there != want:
            raise ConfigError(
                f"{out / PROBE_FILE} holds a probe of another protocol "
                f"({_difference(report.get('protocol') or {}, want)}); give another --out"
            )
        report["protocol"] = want
    real = labels = None
    for seed, config in configs.items():
        if str(seed) in report["seeds"]:
            continue
        workdir = out / f"seed_{seed}"
        check_finished(train(config, workdir, progress=progress), config, workdir)
        generator = load_generator(workdir, make_mesh(config.mesh.shape))
        batch = config.sample.batch_size
        if real is None:
            real, recon = references(config.data, generator, batch)
            labels = generation.judged_labels(real, num, config.model.num_classes)
        spec = spec_from_config(config, cfg_scale=1.0)
        images = collect_samples(generator, labels, spec, batch, seed=0)
        judged = generation.judge(
            real, images, labels, recon, space.features, space.classifier,
            spatial_features=space.spatial,
        )  # fmt: skip
        report["seeds"][str(seed)] = judged["samples"]
        for name in ("real_heldout", "real_test", "recon"):
            report[name] = judged[name]
        report["summary"] = summarise(report["seeds"])
        if jax.process_index() == 0:
            write_json(out / PROBE_FILE, report)
        if on_seed is not None:
            on_seed(seed, judged["samples"])
    report["summary"] = summarise(report["seeds"])
    return report


def _difference(have: dict, want: dict) -> str:
    key = next((k for k in want if have.get(k) != want[k]), "protocol")
    what = f"{json.dumps(have.get(key))} there, {json.dumps(want.get(key))} asked"
    if key == "config_digest":
        return f"the contents of {want['config']} differ: digest {what}"
    return f"{key}: {what}"
