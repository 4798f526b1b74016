"""What the real stage-2 step (``DiTStage.train_step``, jitted by ``jit_steps`` as the loop does)
APPLIES: the labels its loss sees, the loss and gradient it takes, the EMA update.

The step's network is the real tiny DiT, watched by a spy that records what each call gets and
returns (``x_t``, ``1000 t``, the labels, the output). From a recorded call, the loss follows in
float64 from its definition here: the batch's latents are known (a latent-cache batch with zero
std, so z = (mean - shift) * scale), so eps = (x_t - alpha z) / sigma, and the target and the
weight are closed forms of the path. The optimiser is SGD(1), so the update is minus the applied
gradient (the configured AdamW is checked on its own).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from latentjax.config import load_config
from latentjax.parallel import mesh as mesh_lib
from latentjax.train import dit as dit_train
from latentjax.train import state as state_lib

LATENT = (4, 4, 3)
BATCH = 16
NUM_CLASSES = 10
SHIFT, SCALE = 0.3, 2.0
TINY = [
    "model.hidden_size=16",
    "model.depth=1",
    "model.num_heads=2",
    "model.patch_size=2",
    f"model.num_classes={NUM_CLASSES}",
    "model.learn_sigma=True",  # the loss must ignore the variance half
    f"train.batch_size={BATCH}",
    # A variance-preserving path with a weighting and a gamma that differ from the defaults.
    "diffusion.path=cosine",
    "diffusion.prediction=v",
    "diffusion.loss_weighting=min_snr",
    "diffusion.min_snr_gamma=2.0",
    "diffusion.t_sampling=uniform",
    "optim.ema_decay=0.999",
]


def key(seed: int) -> jax.Array:
    return jax.random.key(seed, impl="rbg")  # compiles faster on CPU (test_autoencoder.py)


def batch() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "mean": rng.normal(size=(BATCH, *LATENT)).astype(np.float32),
        "std": np.zeros((BATCH, *LATENT), np.float32),  # z = mean: known latents
        "label": rng.integers(0, NUM_CLASSES, BATCH).astype(np.int32),
    }


def compiled_step(label_drop: float, overrides: tuple[str, ...] = ()):
    """(stage, a state with perturbed weights and an EMA apart from them, step(state, n),
    the spy's records)."""
    config = load_config("dit/digits.py", [*TINY, f"diffusion.label_drop={label_drop}", *overrides])
    mesh = mesh_lib.make_mesh(config.mesh.shape)
    stage = dit_train.DiTStage(config, None, LATENT)
    stage.tx = optax.sgd(1.0)
    calls = []
    network = stage.apply

    def spy(params, x, t, y):
        out = network(params, x, t, y)
        jax.debug.callback(lambda *a: calls.append([np.asarray(v) for v in a]), x, t, y, out)
        return out

    stage.apply = spy
    task = dit_train.make_task(stage, {}, {"shift": SHIFT, "scale": SCALE}, mesh)
    rules = tuple(tuple(r) for r in config.mesh.rules)
    abstract, shardings, _ = state_lib.build_state(task.init_state, mesh, rules, key(0))
    # Random weights (the DiT's zero-initialised head would hide the labels and most
    # gradients) and an EMA that differs from them.
    leaves, tree = jax.tree.flatten(abstract["params"])
    rng = np.random.default_rng(1)
    params = tree.unflatten([0.3 * rng.normal(size=a.shape).astype(a.dtype) for a in leaves])
    ema = jax.tree.map(lambda p: p + 0.1 * rng.normal(size=p.shape).astype(p.dtype), params)
    state = {"step": np.int32(0), "params": params, "opt_state": stage.tx.init(params),
             "ema_params": ema}  # fmt: skip
    step_fn = state_lib.jit_steps(task, shardings, mesh)["diffusion"]

    def step(state, n: int):
        with mesh_lib.activation_rules(mesh, rules):
            return step_fn({**state, "step": np.int32(n)}, task.frozen, batch(), key(7))

    return stage, state, step, calls


def cosine_v_loss_terms(x_t, t1000):
    """Target and weight of the cosine path with v prediction and min-SNR-2, in float64:
    alpha = cos(pi t / 2), sigma = sin(pi t / 2), v = alpha eps - sigma x0; min(SNR, gamma) on
    x0's error is min(SNR, gamma) / (SNR + 1) on v's (Hang et al. 2023, eq. 7-8)."""
    t = np.asarray(t1000, np.float64) / 1000.0
    alpha, sigma = np.cos(np.pi * t / 2), np.sin(np.pi * t / 2)
    a, s = alpha[:, None, None, None], sigma[:, None, None, None]
    z = (batch()["mean"].astype(np.float64) - SHIFT) * SCALE
    eps = (np.asarray(x_t, np.float64) - a * z) / s
    snr = alpha**2 / sigma**2
    weight = np.minimum(snr, 2.0) / (snr + 1.0)
    return a * eps - s * z, weight[:, None, None, None]


@pytest.fixture(scope="module")
def no_drop():
    return compiled_step(label_drop=0.0)


def test_loss_gradient_and_ema_the_step_applies(no_drop):
    stage, state, step, calls = no_drop
    params, ema = state["params"], state["ema_params"]

    @jax.jit
    def loss_grad(p, x_t, t1000, labels, target, weight):
        def loss(p):
            out = stage.dit.apply(p, x_t, t1000, labels)[..., : LATENT[2]]
            return jnp.mean(weight * (out - target) ** 2)

        return jax.grad(loss)(p)

    times = []
    for n, decay in ((0, 0.1), (5, 6 / 15), (20_000, 0.999)):  # min(0.999, (1 + n) / (10 + n))
        calls.clear()
        new, metrics = step(state, n)
        ((x_t, t1000, labels, out),) = calls  # one network call per step
        chex.assert_shape(out, (BATCH, *LATENT[:2], 2 * LATENT[2]))  # learned variance
        np.testing.assert_array_equal(labels, batch()["label"])  # label_drop 0: as given
        t = t1000 / 1000.0
        assert (t > 0).all() and (t < 1).all() and t.std() > 0.1
        times.append(t)
        target, weight = cosine_v_loss_terms(x_t, t1000)
        want = np.mean(weight * (out[..., : LATENT[2]] - target) ** 2)
        np.testing.assert_allclose(float(metrics["loss"]), want, rtol=1e-5)

        # The gradient of that loss, by the network alone, on the recorded inputs.
        grads = loss_grad(params, x_t, t1000, labels, target, weight)
        new_params = jax.device_get(new["params"])
        applied = jax.tree.map(lambda a, b: a.astype(np.float64) - b, params, new_params)
        scale = max(float(np.abs(g).max()) for g in jax.tree.leaves(grads))
        chex.assert_trees_all_close(applied, grads, rtol=1e-4, atol=1e-4 * scale)

        # EMA: decay * ema + (1 - decay) * the *updated* parameters, decay warmed up.
        np.testing.assert_allclose(float(metrics["ema_decay"]), decay, rtol=1e-6)
        want_ema = jax.tree.map(
            lambda e, p, d=decay: d * e.astype(np.float64) + (1 - d) * p.astype(np.float64),
            ema,
            new_params,
        )
        chex.assert_trees_all_close(jax.device_get(new["ema_params"]), want_ema, rtol=1e-5,
                                    atol=1e-6)  # fmt: skip
        assert int(new["step"]) == n + 1
    # Each step draws its own times (and noise): the step's key folds in the step number.
    assert not np.allclose(times[0], times[1]) and not np.allclose(times[1], times[2])


def test_the_step_draws_its_times_with_the_configured_shift(no_drop):
    """``diffusion.time_shift`` reaches the step: under the same key the network sees the
    unshifted step's times, shifted (SD3's t -> s t / (1 + (s - 1) t))."""
    _, state, step, calls = no_drop
    calls.clear()
    step(state, 3)
    ((_, plain, _, _),) = calls
    _, state, shifted_step, shifted_calls = compiled_step(0.0, ("diffusion.time_shift=3.0",))
    shifted_step(state, 3)
    ((_, shifted, _, _),) = shifted_calls
    t = plain.astype(np.float64) / 1000.0
    np.testing.assert_allclose(shifted / 1000.0, 3 * t / (1 + 2 * t), rtol=1e-5)
    assert np.mean(shifted > plain) == 1.0


def test_latents_of_a_cache_batch_are_posterior_samples(no_drop):
    """A latent-cache batch (posterior mean and std) gives (mean + std eps - shift) * scale
    with fresh standard normal eps, as encoding the images would."""
    stage = no_drop[0]
    rng = np.random.default_rng(2)
    mean = rng.normal(size=(256, *LATENT)).astype(np.float32)
    std = rng.uniform(0.5, 2.0, size=mean.shape).astype(np.float32)
    frozen = {"latent_shift": np.float32(SHIFT), "latent_scale": np.float32(SCALE)}
    cache = {"mean": mean, "std": std, "label": np.zeros(256, np.int32)}
    z = np.asarray(jax.jit(stage.latents)(frozen, cache, key(3)), np.float64)
    eps = (z / SCALE + SHIFT - mean) / std
    assert abs(eps.mean()) < 0.02 and abs(eps.std() - 1.0) < 0.02  # 12k draws


def test_dropped_labels_are_the_null_class():
    """label_drop = 1: every label the loss sees is the null class, index num_classes."""
    _, state, step, calls = compiled_step(label_drop=1.0)
    step(state, 0)
    ((_, _, labels, _),) = calls
    np.testing.assert_array_equal(labels, np.full(BATCH, NUM_CLASSES))


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_the_configured_optimiser_is_adamw_with_warmup(schedule):
    """AdamW(0.9, 0.999, weight_decay) on a linear warm-up from 0 to optim.lr, after global-norm
    clipping; then the rate held, or (cosine) brought down to 0 at train.num_steps along
    lr (1 + cos(pi (n - warm-up) / (num_steps - warm-up))) / 2."""
    config = load_config(
        "dit/digits.py",
        [*TINY, "optim.lr=0.01", "optim.weight_decay=0.1", "optim.warmup_steps=3",
         "optim.grad_clip=2.0", f"optim.schedule='{schedule}'", "train.num_steps=7"],
    )  # fmt: skip
    tx = dit_train.DiTStage(config, None, LATENT).tx
    rng = np.random.default_rng(0)
    p = rng.normal(size=(3, 2))
    state, m, v = tx.init({"a": jnp.asarray(p, jnp.float32)}), 0.0, 0.0
    rates = []
    for n in range(8):
        g = 5 * rng.normal(size=(3, 2))
        updates, state = tx.update(
            {"a": jnp.asarray(g, jnp.float32)}, state, {"a": jnp.asarray(p, jnp.float32)}
        )
        g = g * min(1.0, 2.0 / np.linalg.norm(g))  # clip_by_global_norm(2)
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g**2
        lr = 0.01 * min(n / 3, 1.0)
        if schedule == "cosine" and n > 3:
            lr = 0.01 * (1 + np.cos(np.pi * (n - 3) / (7 - 3))) / 2
        rates.append(lr)
        m_hat, v_hat = m / (1 - 0.9 ** (n + 1)), v / (1 - 0.999 ** (n + 1))
        want = -lr * (m_hat / (np.sqrt(v_hat) + 1e-8) + 0.1 * p)
        np.testing.assert_allclose(updates["a"], want, rtol=1e-4, atol=1e-7)
        p = p + want
    assert rates[-1] == (0.0 if schedule == "cosine" else 0.01)  # the schedules differ
