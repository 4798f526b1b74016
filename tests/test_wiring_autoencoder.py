"""How the stage-1 steps combine their losses: what the real jitted steps APPLY, against updates
computed here from separately differentiated losses.

The steps run as the loop runs them (``make_task`` -> ``build_state`` -> ``jit_steps``), with
one change: both optimisers are plain SGD with learning rate 1, so a step's parameter update is
minus the gradient it applied, and that gradient can be compared with one computed here. (The
configured Adam optimisers are checked on their own, last.) Each loss term is written out below
from its definition (the formulas themselves are tested in ``test_ae_losses.py`` and
``test_bottleneck.py``); the model is only used for its forward pass.
"""

from __future__ import annotations

import functools

import chex
import flax.linen
import jax
import jax.numpy as jnp
import numpy as np
import optax

from latentjax.config import load_config
from latentjax.losses import perceptual
from latentjax.parallel import mesh as mesh_lib
from latentjax.train import autoencoder as ae_train
from latentjax.train import state as state_lib

# The smallest stage-1 model with every part (f = 1, one res block, a 1-layer PatchGAN).
TINY = [
    "data.image_size=8",
    "model.ch=4",
    "model.ch_mult=(1,)",
    "model.num_groups=2",
    "model.codebook_size=16",
    "loss.disc_ndf=8",
    "loss.disc_layers=1",
    "train.batch_size=4",
]


def key(seed: int) -> jax.Array:
    # The "rbg" PRNG compiles in a fraction of the time of the default one on CPU (see
    # test_autoencoder.py); the steps work with any key type.
    return jax.random.key(seed, impl="rbg")


RNG = key(3)  # the loop's step key; each step folds in its step number


def images() -> jax.Array:
    return jnp.tanh(jax.random.normal(key(1), (4, 8, 8, 1)))


def random_like(abstract, seed: int):
    """Random values for an abstract state: kernels N(0, 1/fan_in), norm scales near 1,
    biases near 0, integers 0. (Any point will do for checking how the step combines its
    gradients; random biases keep every parameter's gradient non-trivial.)"""
    rng = np.random.default_rng(seed)

    def fill(path, a):
        if not jnp.issubdtype(a.dtype, jnp.floating):
            return np.zeros(a.shape, a.dtype)
        name = jax.tree_util.keystr(path[-1:])
        noise = rng.normal(size=a.shape)
        if "scale" in name:
            return (1.0 + 0.1 * noise).astype(a.dtype)
        if "bias" in name:
            return (0.1 * noise).astype(a.dtype)
        return (noise / np.sqrt(max(np.prod(a.shape[:-1]), 1))).astype(a.dtype)

    return jax.tree_util.tree_map_with_path(fill, abstract)


def compiled_steps(*overrides: str, vf_encoder=None):
    """(stage, a state, run) for the tiny config, the steps built as the loop builds them, with
    SGD(1) in place of both Adam optimisers; ``run(state, n)`` runs the step of step n's phase
    at step counter n. ``vf_encoder``: the frozen network of the VF loss."""
    config = load_config("ae/digits.py", [*TINY, *overrides])
    mesh = mesh_lib.make_mesh(config.mesh.shape)
    stage = ae_train.AutoencoderStage(config, vf_encoder=vf_encoder)
    task = ae_train.make_task(config, mesh, stage=stage)
    stage = task.train_steps["reconstruction"].__self__  # the stage make_task built
    stage.tx = stage.disc_tx = optax.sgd(1.0)
    rules = tuple(tuple(r) for r in config.mesh.rules)
    abstract, shardings, _ = state_lib.build_state(task.init_state, mesh, rules, key(0))
    steps = state_lib.jit_steps(task, shardings, mesh)

    def run(state, step: int):
        """-> (the state before, as host arrays; the state after; metrics)."""
        state = {**state, "step": np.int32(step)}
        with mesh_lib.activation_rules(mesh, rules):
            new, metrics = steps[task.step_for(step)](state, task.frozen, {"image": images()}, RNG)
        return state, jax.device_get(new), metrics

    return stage, random_like(abstract, 0), run


def applied_gradient(before, after, part: str):
    """With SGD(1): the gradient the step applied to ``params[part]``."""
    return jax.tree.map(
        lambda a, b: np.asarray(a, np.float64) - np.asarray(b, np.float64),
        before["params"][part],
        after["params"][part],
    )


def per_example_sum(x):
    return x.reshape(x.shape[0], -1).sum(axis=1)


def last_layer(g) -> np.ndarray:
    """The decoder's output conv kernel: where the adaptive weight compares gradients."""
    return np.asarray(g["params"]["decoder"]["conv_out"]["kernel"], np.float64)


def tree_dot(a, b) -> float:
    return float(
        sum(np.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))
    )


def combine(*terms):
    """sum_i w_i g_i over (w_i, g_i) pairs of gradient trees, in float64."""
    return jax.tree.map(
        lambda *gs: sum(w * np.asarray(g, np.float64) for (w, _), g in zip(terms, gs, strict=True)),
        *[g for _, g in terms],
    )


def assert_trees_close(got, want, rtol=2e-4):
    """Leaf by leaf, to ``rtol`` of the leaf's largest entry (float32 steps against float64
    sums), but at least of 1% of the tree's: some leaves, biases before a norm, have gradients
    that are 0 up to rounding."""
    chex.assert_trees_all_equal_structs(got, want)
    floor = 1e-2 * max(float(np.abs(w).max()) for w in jax.tree.leaves(want))
    for (path, g), w in zip(
        jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want), strict=True
    ):
        atol = rtol * max(float(np.abs(w).max()), floor)
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=jax.tree_util.keystr(path))


def kl_elements(q):
    """KL(N(mean, exp(logvar)) || N(0, 1)) per latent element (Kingma & Welling 2014)."""
    return 0.5 * (q.mean**2 + jnp.exp(q.logvar) - 1.0 - q.logvar)


KL_WEIGHT, KL_WARMUP, FREE_BITS, DISC_WEIGHT = 0.5, 4, 0.36, 0.3
R1_WEIGHT, LECAM_WEIGHT, LECAM_DECAY = 0.8, 0.2, 0.9


def kl_gan_reference(stage, ae_params, disc_params, lecam_ema, n):
    """The stage-1 loss terms at step ``n`` and the gradient of each alone: L1 (summed over
    pixels, batch mean), the free-bits KL h w sum_j max(mean KL of channel j, free bits), the
    hinge generator loss -mean D(x_hat), and the discriminator's loss on real images and
    detached reconstructions (hinge, R1 and LeCam). The forward pass samples with
    fold_in(RNG, n), the key every step draws from."""
    x = images()
    rng = jax.random.fold_in(RNG, n)

    def terms(p):
        x_hat, q = stage.ae.apply(p, x, sample=True, rngs={"sample": rng})
        rec = jnp.mean(per_example_sum(jnp.abs(x_hat - x)))
        k = kl_elements(q)  # [B, h, w, z]
        per_channel = k.mean(axis=(0, 1, 2))
        kl = k.shape[1] * k.shape[2] * jnp.sum(jnp.maximum(per_channel, FREE_BITS))
        adv = -jnp.mean(stage.disc.apply(disc_params, x_hat))
        return (rec, kl, adv), (x_hat, per_channel)

    values, pull, (x_hat, per_channel) = jax.vjp(terms, ae_params, has_aux=True)
    one_hot = lambda i: tuple(jnp.float32(i == j) for j in range(3))  # noqa: E731
    grads = [pull(one_hot(i))[0] for i in range(3)]
    fake = jax.lax.stop_gradient(x_hat)

    def disc(d):
        """Hinge + gamma / 2 R1 + LeCam (Tseng et al. 2021, eq. 3, anchors held constant)."""
        real, fake_logits = stage.disc.apply(d, x), stage.disc.apply(d, fake)
        hinge = 0.5 * (jnp.mean(jax.nn.relu(1.0 - real)) + jnp.mean(jax.nn.relu(1.0 + fake_logits)))
        grad_x = jax.grad(lambda im: jnp.sum(stage.disc.apply(d, im)))(x)
        r1 = jnp.mean(per_example_sum(grad_x**2))
        lecam = jnp.mean((real - lecam_ema["fake"]) ** 2) + jnp.mean(
            (fake_logits - lecam_ema["real"]) ** 2
        )
        loss = hinge + 0.5 * R1_WEIGHT * r1 + LECAM_WEIGHT * lecam
        return loss, {"real": jnp.mean(real), "fake": jnp.mean(fake_logits)}

    out = dict(zip(("rec", "kl", "adv"), zip(values, grads, strict=True), strict=True))
    (d_loss, logit_means), g_disc = jax.value_and_grad(disc, has_aux=True)(disc_params)
    return {**out, "disc": (d_loss, g_disc), "logit_means": logit_means,
            "kl_per_channel": per_channel}  # fmt: skip


def test_kl_and_gan_step_applies_the_weighted_sum_of_its_losses():
    """At steps before, at and after the KL warm-up, the applied gradient is
    g_rec + beta(n) g_kl + w g_adv, where

    - beta(n) = kl_weight * min(1, n / kl_warmup_steps) (n: updates done);
    - w = disc_weight ||g_nll|| / (||g_adv|| + 1e-4) at the decoder's last layer, clipped to
      [0, 1e4] (Esser et al. 2021, eq. 7), g_nll = g_rec + beta(n) g_kl;

    and the discriminator moves by the gradient of its hinge loss + gamma / 2 R1 + LeCam."""
    stage, state, run = compiled_steps(
        "model.bottleneck=kl",
        f"loss.kl_weight={KL_WEIGHT}",
        f"loss.kl_warmup_steps={KL_WARMUP}",
        f"loss.kl_free_bits={FREE_BITS}",
        "loss.perceptual=none",
        "loss.gan_loss=hinge",
        f"loss.disc_weight={DISC_WEIGHT}",
        "loss.disc_start=0",
        f"loss.r1_weight={R1_WEIGHT}",
        f"loss.lecam_weight={LECAM_WEIGHT}",
        f"loss.lecam_decay={LECAM_DECAY}",
    )
    reference = jax.jit(functools.partial(kl_gan_reference, stage))
    for n in (0, 1, 2, 4, 9):
        assert stage.phase(n) == "adversarial"
        before, after, metrics = run(state, n)
        ref = jax.device_get(
            reference(state["params"]["ae"], state["params"]["disc"], state["lecam"], n)
        )
        (rec, g_rec), (kl, g_kl), (adv, g_adv) = ref["rec"], ref["kl"], ref["adv"]
        if n == 0:  # free bits bind on some channels and not on others
            per_channel = ref["kl_per_channel"]
            assert (per_channel > FREE_BITS).any() and (per_channel < FREE_BITS).any()
        beta = KL_WEIGHT * min(1.0, n / KL_WARMUP)
        g_nll = combine((1.0, g_rec), (beta, g_kl))
        ratio = np.linalg.norm(last_layer(g_nll)) / (np.linalg.norm(last_layer(g_adv)) + 1e-4)
        w = DISC_WEIGHT * min(ratio, 1e4)
        # Both terms matter, so a weight on the wrong gradient (or none) shows.
        assert 0.05 < w * np.linalg.norm(last_layer(g_adv)) / np.linalg.norm(
            last_layer(g_nll)) < 20  # fmt: skip
        got = applied_gradient(before, after, "ae")
        # The KL scale the step applied: the part of the update beyond the reconstruction and
        # adversarial gradients, projected on the KL gradient.
        residual = jax.tree.map(lambda a, b: a - b, got, combine((1.0, g_rec), (w, g_adv)))
        applied_beta = tree_dot(residual, g_kl) / tree_dot(g_kl, g_kl)
        np.testing.assert_allclose(applied_beta, beta, atol=2e-3, err_msg=f"step {n}")
        assert_trees_close(got, combine((1.0, g_nll), (w, g_adv)))
        np.testing.assert_allclose(float(metrics["kl_scale"]), beta, rtol=1e-6)
        np.testing.assert_allclose(float(metrics["nll"]), rec + beta * kl, rtol=1e-5)
        np.testing.assert_allclose(float(metrics["adaptive_weight"]), w, rtol=1e-4)
        np.testing.assert_allclose(float(metrics["g_adv"]), adv, rtol=1e-5)
        d_loss, g_disc = ref["disc"]
        np.testing.assert_allclose(float(metrics["d_loss"]), d_loss, rtol=1e-5)
        assert_trees_close(applied_gradient(before, after, "disc"), combine((1.0, g_disc)))
        for k in ("real", "fake"):  # the LeCam anchors: EMAs of the mean logits
            want = LECAM_DECAY * state["lecam"][k] + (1 - LECAM_DECAY) * ref["logit_means"][k]
            np.testing.assert_allclose(after["lecam"][k], want, rtol=1e-5)
        assert int(after["step"]) == n + 1


def test_vq_step_applies_the_regulariser_and_passes_the_decoder_gradient():
    """The reconstruction phase's step: codebook_weight (|sg(z_e) - e|^2 + beta |z_e - sg(e)|^2)
    plus the reconstruction (L1 + perceptual_weight Haar), with the decoder's gradient reaching
    the encoder through the quantiser (straight-through: as if z_q were z_e), never the
    codebook."""
    cw, beta, pw = 0.7, 0.4, 0.5
    stage, state, run = compiled_steps(
        "model.bottleneck=vq",
        "model.vq_estimator=ste",
        f"loss.codebook_weight={cw}",
        f"loss.commitment_weight={beta}",
        "loss.vq_restart_threshold=0.0",
        "loss.perceptual=haar",
        f"loss.perceptual_weight={pw}",
    )
    ae = stage.ae
    assert stage.phase(0) == "reconstruction"
    before, after, metrics = run(state, 0)
    got = applied_gradient(before, after, "ae")

    @jax.jit
    def reference(p):
        """z_e, its nearest codes, and the gradient of the reconstruction (L1 + pw Haar)
        through the straight-through latent plus cw * beta * commitment."""

        def encoder_out(p):
            return ae.apply(p, images(), method=lambda m, x: m.quant_conv(m.encoder(x)))

        codebook = jax.lax.stop_gradient(p["params"]["quantize"]["embedding"])  # [K, D]
        z_e = encoder_out(p)  # [B, h, w, D]
        idx = jnp.argmin(jnp.sum((z_e[..., None, :] - codebook) ** 2, axis=-1), axis=-1)
        q = jax.lax.stop_gradient(codebook[idx])

        def rec_and_commitment(p):
            z = encoder_out(p)
            z_q = z + jax.lax.stop_gradient(q - z)  # value q, gradient the identity
            x_hat = ae.apply(p, z_q, method=lambda m, z: m._decode(z))
            rec = jnp.mean(per_example_sum(jnp.abs(x_hat - images())))
            haar = jnp.mean(perceptual.haar_loss(images(), x_hat))  # tested in test_ae_losses
            commitment = jnp.mean(per_example_sum((z - q) ** 2))
            return rec + pw * haar + cw * beta * commitment

        return z_e, idx, jax.grad(rec_and_commitment)(p)

    z_e, idx, want = jax.device_get(reference(before["params"]["ae"]))
    z_e = z_e.astype(np.float64)  # [B, h, w, D]
    codebook = before["params"]["ae"]["params"]["quantize"]["embedding"].astype(np.float64)
    np.testing.assert_array_equal(idx, ((z_e[..., None, :] - codebook) ** 2).sum(-1).argmin(-1))
    q = codebook[idx]

    # The codebook moves only by the codebook term: cw * d/de mean_b sum |sg(z_e) - e|^2
    # = cw * 2 / B * sum over the vectors assigned to e of (e - z_e). No decoder gradient.
    want_codes = np.zeros_like(codebook)
    flat = 2.0 * cw / z_e.shape[0] * (q - z_e).reshape(-1, q.shape[-1])
    np.add.at(want_codes, idx.reshape(-1), flat)
    assert len(np.unique(idx)) > 3  # several codes in use
    np.testing.assert_allclose(got["params"]["quantize"]["embedding"], want_codes, atol=2e-5)

    # Everything else: reconstruction through the quantised latent + cw * beta * commitment.
    assert float(np.abs(want["params"]["quantize"]["embedding"]).max()) == 0.0
    want["params"]["quantize"]["embedding"] = want_codes
    assert_trees_close(got, want)
    sq = per_example_sum((z_e - q) ** 2).mean()
    np.testing.assert_allclose(float(metrics["codebook"]), sq, rtol=1e-4)
    np.testing.assert_allclose(float(metrics["commitment"]), sq, rtol=1e-4)

    # Before disc_start the discriminator is untouched.
    chex.assert_trees_all_equal(before["params"]["disc"], after["params"]["disc"])
    assert float(metrics["d_loss"]) == 0.0 and float(metrics["adaptive_weight"]) == 0.0


def test_the_configured_optimisers_are_adam_with_warmup():
    """The stage's own optimisers: Adam(b1, b2) on a linear warm-up from 0 to lr (optim.lr for
    the autoencoder, optim.disc_lr for the discriminator), after global-norm clipping."""
    config = load_config(
        "ae/digits.py",
        [*TINY, "optim.lr=0.01", "optim.disc_lr=0.002", "optim.b1=0.3", "optim.b2=0.7",
         "optim.warmup_steps=4", "optim.grad_clip=2.0"],
    )  # fmt: skip
    stage = ae_train.AutoencoderStage(config)
    rng = np.random.default_rng(0)
    params = {"a": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32)}
    grads = [{"a": jnp.asarray(5 * rng.normal(size=(3, 2)), jnp.float32)} for _ in range(6)]
    for tx, lr in ((stage.tx, 0.01), (stage.disc_tx, 0.002)):
        state, m, v = tx.init(params), np.zeros((3, 2)), np.zeros((3, 2))
        for n, g in enumerate(grads):
            updates, state = tx.update(g, state, params)
            gn = np.asarray(g["a"], np.float64)
            gn = gn * min(1.0, 2.0 / np.linalg.norm(gn))  # clip_by_global_norm(2)
            m, v = 0.3 * m + 0.7 * gn, 0.7 * v + 0.3 * gn**2
            m_hat, v_hat = m / (1 - 0.3 ** (n + 1)), v / (1 - 0.7 ** (n + 1))
            step = lr * min(n / 4, 1.0)  # linear warm-up from 0
            want = -step * m_hat / (np.sqrt(v_hat) + 1e-8)
            np.testing.assert_allclose(updates["a"], want, rtol=1e-4, atol=1e-7)


def test_eq_step_applies_the_transformed_reconstruction():
    """An EQ batch (eq_prob 1, one factor, one rotation): the step the loop picks decodes the
    rotated, down-scaled latent and its loss is L1 against the image transformed alike --
    nothing of the untransformed reconstruction. The host's draw picks EQ batches at about
    eq_prob and the same ones on every call (a resumed run repeats them)."""
    stage, state, run = compiled_steps(
        "model.bottleneck=ae", "loss.perceptual=none", "loss.eq_prob=1.0",
        "loss.eq_scales=(0.5,)", "loss.eq_rotations=(1,)",
        "loss.disc_start=100000",  # 4 px EQ images are too small for the PatchGAN
    )  # fmt: skip
    assert stage.phase(0) == "reconstruction@eq0.5"
    before, after, metrics = run(state, 0)
    ae = stage.ae

    @jax.jit
    def reference(p):
        def loss(p):
            z = ae.apply(p, images(), method=ae.encode).mode()  # [4, 8, 8, 4]
            z = jnp.rot90(jax.image.resize(z, (4, 4, 4, z.shape[-1]), "linear"), 1, axes=(1, 2))
            x_hat = ae.apply(p, z, method=lambda m, z: m._decode(z))  # [4, 4, 4, 1]
            target = jnp.rot90(jax.image.resize(images(), (4, 4, 4, 1), "linear"), 1, (1, 2))
            return jnp.mean(per_example_sum(jnp.abs(x_hat - target)))

        return jax.value_and_grad(loss)(p)

    rec, want = jax.device_get(reference(before["params"]["ae"]))
    np.testing.assert_allclose(float(metrics["rec"]), rec, rtol=1e-5)
    assert_trees_close(applied_gradient(before, after, "ae"), want)

    config = load_config(
        "ae/digits.py",
        [*TINY, "loss.eq_prob=0.3", "loss.eq_scales=(1.0,0.5)", "loss.disc_start=100000"],
    )
    draws = [ae_train.AutoencoderStage(config).phase(n) for n in range(400)]
    assert draws == [ae_train.AutoencoderStage(config).phase(n) for n in range(400)]
    counts = {name: draws.count(name) for name in set(draws)}
    assert set(counts) == {"reconstruction", "reconstruction@eq1.0", "reconstruction@eq0.5"}
    assert 0.22 < 1 - counts["reconstruction"] / 400 < 0.38


VF_WEIGHT, COS_MARGIN, DISTMAT_MARGIN = 0.3, 0.95, 0.25


def tiny_dinov2():
    """A random DINOv2 whose 14 px patches tile the 8 x 8 latent grid at 112 px."""
    from latentjax.models import representation
    from latentjax.models.dinov2 import DINOv2
    from latentjax.train.frozen_encoder import FrozenEncoder

    model = DINOv2(hidden_size=12, depth=1, num_heads=2, image_size=112)
    variables = model.init(jax.random.key(5), jnp.zeros((1, 112, 112, 3)))
    variables = jax.tree.map(lambda a: a + 0.1, flax.linen.meta.unbox(variables))

    def features(v, im):
        return representation.dinov2_features(model, v, im, 112)

    return FrozenEncoder(features, variables, 12)


def test_vf_step_applies_the_adaptively_weighted_alignment():
    """VA-VAE's VF loss in the reconstruction phase: the applied gradient is
    g_rec + w g_vf, with L_vf the margin cosine + margin distance-matrix loss of the 1x1
    projection of z against the frozen features, and w = vf_weight ||g_rec|| / (||g_vf|| +
    1e-4) at the *encoder's* last layer (VA-VAE eq. 4), not the decoder's."""
    encoder = tiny_dinov2()
    stage, state, run = compiled_steps(
        "model.bottleneck=ae", "loss.perceptual=none", f"loss.vf_weight={VF_WEIGHT}",
        f"loss.vf_cos_margin={COS_MARGIN}", f"loss.vf_distmat_margin={DISTMAT_MARGIN}",
        vf_encoder=encoder,
    )  # fmt: skip
    before, after, metrics = run(state, 0)
    ae = stage.ae
    feats = encoder.features(encoder.variables, images()).reshape(4, 64, 12)

    @jax.jit
    def reference(p):
        def terms(p):
            z = ae.apply(p, images(), method=ae.encode).mode()  # [4, 8, 8, 4]
            x_hat = ae.apply(p, z, method=lambda m, z: m._decode(z))
            rec = jnp.mean(per_example_sum(jnp.abs(x_hat - images())))
            w = p["params"]["vf_proj"]
            proj = (z @ w["kernel"] + w["bias"]).reshape(4, 64, 12)
            zn = proj / jnp.linalg.norm(proj, axis=-1, keepdims=True)
            fn = feats / jnp.linalg.norm(feats, axis=-1, keepdims=True)
            cos = jnp.sum(zn * fn, -1)
            gram = jnp.abs(zn @ zn.transpose(0, 2, 1) - fn @ fn.transpose(0, 2, 1))
            mcos = jnp.mean(jax.nn.relu(1 - COS_MARGIN - cos))
            mdms = jnp.mean(jax.nn.relu(gram - DISTMAT_MARGIN))
            return (rec, mcos + mdms), (cos, gram)

        (rec, vf), pull, (cos, gram) = jax.vjp(terms, p, has_aux=True)
        g_rec = pull((jnp.float32(1), jnp.float32(0)))[0]
        g_vf = pull((jnp.float32(0), jnp.float32(1)))[0]
        return rec, vf, g_rec, g_vf, cos, gram

    rec, vf, g_rec, g_vf, cos, gram = jax.device_get(reference(before["params"]["ae"]))
    # Both margins bind somewhere and not elsewhere.
    assert 0 < np.mean(cos > 1 - COS_MARGIN) < 1 and 0 < np.mean(gram > DISTMAT_MARGIN) < 1
    enc = lambda g: np.asarray(g["params"]["encoder"]["conv_out"]["kernel"], np.float64)  # noqa: E731
    w = VF_WEIGHT * np.linalg.norm(enc(g_rec)) / (np.linalg.norm(enc(g_vf)) + 1e-4)
    # Weighting at the decoder's last layer instead would give another w.
    dec = VF_WEIGHT * np.linalg.norm(last_layer(g_rec)) / (np.linalg.norm(last_layer(g_vf)) + 1e-4)
    assert abs(dec - w) > 0.1 * w
    np.testing.assert_allclose(float(metrics["vf_adaptive_weight"]), w, rtol=1e-4)
    np.testing.assert_allclose(float(metrics["vf"]), vf, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["nll"]), rec, rtol=1e-5)
    assert_trees_close(applied_gradient(before, after, "ae"), combine((1.0, g_rec), (w, g_vf)))
