"""REPA (Yu et al. 2025) in the real stage-2 step: what the jitted step APPLIES.

A tiny DiT (3 blocks, REPA on the output of block 2) on the latents of a tiny deterministic
autoencoder, aligned with a tiny random DINOv2 (weights do not matter for the wiring). A spy
records the inputs of the step's one network call; from them the loss follows here from its
definition: the rectified-flow eps loss plus weight * (minus the mean cosine between the
projector's output on block 2's hidden state -- taken from the network's intermediates, not
from the model's REPA path -- and the encoder's patch features of the clean images). The
optimiser is SGD(1), so the update is minus the applied gradient.
"""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from latentjax.config import load_config
from latentjax.errors import ConfigError
from latentjax.losses.representation import repa_loss
from latentjax.models import representation
from latentjax.models.dinov2 import DINOv2
from latentjax.models.dit import DiTBlock
from latentjax.parallel import mesh as mesh_lib
from latentjax.train import autoencoder as ae_train
from latentjax.train import dit as dit_train
from latentjax.train import state as state_lib
from latentjax.train.frozen_encoder import FrozenEncoder

WEIGHT, DEPTH, BATCH = 0.5, 2, 4
AE = ["data.image_size=8", "model.ch=4", "model.ch_mult=(1,)", "model.num_groups=2",
      "model.bottleneck=ae"]  # fmt: skip
DIT = [
    "data.image_size=8", "model.hidden_size=16", "model.depth=3", "model.num_heads=2",
    "model.patch_size=4", "model.num_classes=10", "model.learn_sigma=False",
    "diffusion.path=linear", "diffusion.prediction=eps", "diffusion.label_drop=0.0",
    f"train.batch_size={BATCH}", f"repa.weight={WEIGHT}", f"repa.depth={DEPTH}",
    "repa.projector_dim=8", "repa.encoder_size=28",
]  # fmt: skip


def key(seed: int) -> jax.Array:
    return jax.random.key(seed, impl="rbg")  # compiles faster on CPU (test_autoencoder.py)


def images() -> np.ndarray:
    return np.tanh(np.random.default_rng(4).normal(size=(BATCH, 8, 8, 1))).astype(np.float32)


def tiny_dinov2() -> FrozenEncoder:
    model = DINOv2(hidden_size=12, depth=1, num_heads=2, image_size=28)
    variables = model.init(jax.random.key(5), jnp.zeros((1, 28, 28, 3)))
    variables = jax.tree.map(lambda a: a + 0.1, nn.meta.unbox(variables))  # no zero tables

    def features(v, im):
        return representation.dinov2_features(model, v, im, 28)

    return FrozenEncoder(features, variables, 12)


@pytest.fixture(scope="module")
def repa_step():
    ae_config = load_config("ae/digits.py", AE)
    ae = ae_train.AutoencoderStage(ae_config).ae
    ae_params = ae.init({"params": key(1), "sample": key(2)}, jnp.zeros((1, 8, 8, 1)))
    config = load_config("dit/digits.py", DIT)
    mesh = mesh_lib.make_mesh(config.mesh.shape)
    encoder = tiny_dinov2()
    stage = dit_train.DiTStage(config, ae, (8, 8, 4), repa_encoder=encoder)
    stage.tx = optax.sgd(1.0)
    calls, network = [], stage.apply

    def spy(params, x, t, y, **kwargs):
        out = network(params, x, t, y, **kwargs)
        jax.debug.callback(lambda *a: calls.append([np.asarray(v) for v in a]), x, t, y)
        return out

    stage.apply = spy
    task = dit_train.make_task(stage, ae_params, {"shift": 0.0, "scale": 1.0}, mesh)
    rules = tuple(tuple(r) for r in config.mesh.rules)
    abstract, shardings, _ = state_lib.build_state(task.init_state, mesh, rules, key(0))
    leaves, tree = jax.tree.flatten(abstract["params"])
    rng = np.random.default_rng(1)
    params = tree.unflatten([0.3 * rng.normal(size=a.shape).astype(a.dtype) for a in leaves])
    state = {"step": np.int32(0), "params": params, "opt_state": stage.tx.init(params),
             "ema_params": params}  # fmt: skip
    step_fn = state_lib.jit_steps(task, shardings, mesh)["diffusion"]
    batch = {"image": images(), "label": np.arange(BATCH, dtype=np.int32)}
    with mesh_lib.activation_rules(mesh, rules):
        new, metrics = step_fn(state, task.frozen, batch, key(7))
    ((x_t, t1000, labels),) = calls
    z = ae.apply(ae_params, images(), method=ae.encode).mode()  # shift 0, scale 1
    return stage, encoder, params, jax.device_get(new["params"]), metrics, (x_t, t1000, labels, z)


def reference_losses(stage, encoder, recorded):
    """p -> (eps loss, REPA loss on each block's hidden state [per block]) from definitions."""
    x_t, t1000, labels, z = recorded
    t = (t1000 / 1000.0)[:, None, None, None]
    eps = (x_t - (1 - t) * z) / t  # the linear path: x_t = (1 - t) z + t eps
    feats = encoder.features(encoder.variables, images()).reshape(BATCH, 4, 12)

    def project(p, h):
        w = p["params"]["repa_projector"]
        h = jax.nn.silu(h @ w["fc1"]["kernel"] + w["fc1"]["bias"])
        h = jax.nn.silu(h @ w["fc2"]["kernel"] + w["fc2"]["bias"])
        return h @ w["fc3"]["kernel"] + w["fc3"]["bias"]

    def losses(p):
        out, inter = stage.dit.apply(
            p, x_t, t1000, labels, mutable=["intermediates"],
            capture_intermediates=lambda m, _: isinstance(m, DiTBlock),
        )  # fmt: skip
        hidden = [inter["intermediates"][f"block_{i}"]["__call__"][0] for i in range(3)]
        cos = [jnp.sum(unit(project(p, h)) * unit(feats), -1)
               for h in hidden]  # fmt: skip
        return jnp.mean((out - eps) ** 2), [-jnp.mean(c) for c in cos]

    return losses


def unit(x):
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def test_repa_aligns_the_intended_block_and_its_gradient_reaches_the_dit(repa_step):
    stage, encoder, params, new_params, metrics, recorded = repa_step
    losses = reference_losses(stage, encoder, recorded)

    def total(p):
        mse, per_block = losses(p)
        return mse + WEIGHT * per_block[DEPTH - 1]

    @jax.jit
    def reference(p):
        """The losses, the gradient of the total and that of the alignment alone (one
        compile)."""
        return losses(p), jax.grad(total)(p), jax.grad(lambda p: losses(p)[1][DEPTH - 1])(p)

    (mse, per_block), want, g = jax.device_get(reference(params))
    np.testing.assert_allclose(float(metrics["loss"]), mse, rtol=1e-5)
    # The step's REPA term is block 2's (index 1); the other blocks give other values, so a
    # projector on the wrong block would fail here.
    np.testing.assert_allclose(float(metrics["repa"]), per_block[DEPTH - 1], rtol=1e-5)
    for i in (0, 2):
        assert abs(per_block[i] - per_block[DEPTH - 1]) > 1e-2
    applied = jax.tree.map(lambda a, b: a.astype(np.float64) - b, params, new_params)
    scale = max(float(np.abs(g).max()) for g in jax.tree.leaves(want))
    chex.assert_trees_all_close(applied, want, rtol=1e-4, atol=1e-4 * scale)

    # The alignment's own gradient reaches the DiT below the aligned block, not above it.
    g = g["params"]
    norm = lambda tree: float(optax.tree.norm(tree))  # noqa: E731
    for name in ("x_embedder", "t_embedder", "y_embedder", "block_0", "block_1", "repa_projector"):
        assert norm(g[name]) > 1e-4, name
    assert norm(g["block_2"]) == 0.0 and norm(g["final_layer"]) == 0.0


def test_repa_loss_is_minus_the_mean_cosine():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 5, 3)), rng.normal(size=(2, 5, 3))
    cos = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
    np.testing.assert_allclose(float(repa_loss(a, b)), -cos.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(repa_loss(a, 3.0 * a)), -1.0, rtol=1e-6)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["repa.depth=4"], "repa.depth=4; use 1 .. model.depth=3"),
        (["repa.encoder=clip"], "repa.encoder='clip'"),
        (["data.latent_cache=/tmp/cache"], "needs the images"),
        ([], "repa.weight > 0 needs repa.encoder_weights"),
    ],
)
def test_bad_repa_settings_are_config_errors(overrides, message):
    config = load_config("dit/digits.py", [*DIT, *overrides])
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        dit_train.DiTStage(config, None, (8, 8, 4))
