"""Bottlenecks between the encoder and the decoder: KL (diagonal Gaussian), plain AE, VQ, FSQ.

Each bottleneck turns the encoder's output into a *posterior* object with one interface, so the
trainer, the DiT stage and the sampler never ask which kind they hold:

- ``sample(rng)``: the latent the decoder sees in training (a Gaussian sample for KL; the
  deterministic, possibly quantised, latent otherwise);
- ``mode()`` / ``mean``: the deterministic latent (posterior mean for KL, z for AE, the quantised
  z for VQ/FSQ) -- what stage 2 models and what evaluation decodes;
- ``terms()``: per-example regularisation terms ``{name: [B]}`` that the loss weighs (``kl`` for
  KL; ``codebook`` and ``commitment`` for VQ; none for AE and FSQ);
- ``stats()``: scalar diagnostics for the training log (codebook usage and perplexity for
  VQ/FSQ, posterior std for KL).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from latentjax.parallel.axes import VOCAB

BOTTLENECKS = ("kl", "ae", "vq", "fsq")


def moment_channels(bottleneck: str, latent_channels: int) -> int:
    """How many channels the encoder emits for a latent of ``latent_channels``: KL needs a mean
    and a log-variance per channel, the others one value."""
    if bottleneck not in BOTTLENECKS:
        raise ValueError(f"unknown bottleneck {bottleneck!r}; use one of {BOTTLENECKS}")
    return 2 * latent_channels if bottleneck == "kl" else latent_channels


@flax.struct.dataclass
class DiagonalGaussian:
    """The KL bottleneck: q(z|x) = N(mean, diag(exp(logvar)))."""

    mean: jax.Array  # [B, h, w, z]
    logvar: jax.Array  # [B, h, w, z]

    @classmethod
    def from_moments(cls, moments: jax.Array) -> DiagonalGaussian:
        """Splits the encoder's 2z output channels into mean and log-variance. The log-variance
        is clipped to [-30, 20] as latent-diffusion does, which keeps exp() finite."""
        mean, logvar = jnp.split(moments, 2, axis=-1)
        return cls(mean=mean, logvar=jnp.clip(logvar, -30.0, 20.0))

    @property
    def std(self) -> jax.Array:
        return jnp.exp(0.5 * self.logvar)

    @property
    def var(self) -> jax.Array:
        return jnp.exp(self.logvar)

    def sample(self, rng: jax.Array) -> jax.Array:
        """z = mean + std * eps: the reparameterisation trick (Kingma & Welling 2014), so
        gradients reach mean and logvar."""
        eps = jax.random.normal(rng, self.mean.shape, self.mean.dtype)
        return self.mean + self.std * eps

    def mode(self) -> jax.Array:
        return self.mean

    def kl_elements(self) -> jax.Array:
        """KL(q || N(0, I)) per latent element in closed form (Kingma & Welling 2014, app. B):
        0.5 (mean^2 + var - 1 - logvar)."""
        return 0.5 * (jnp.square(self.mean) + self.var - 1.0 - self.logvar)

    def kl(self) -> jax.Array:
        """KL(q || N(0, I)) summed over the latent of each example. -> [B]"""
        kl = self.kl_elements()
        return kl.reshape(kl.shape[0], -1).sum(axis=1)

    def kl_per_channel(self) -> jax.Array:
        """KL per latent channel, averaged over batch and positions. -> [z]"""
        kl = self.kl_elements()
        return kl.reshape(-1, kl.shape[-1]).mean(axis=0)

    def terms(self) -> dict[str, jax.Array]:
        return {"kl": self.kl()}

    def stats(self) -> dict[str, jax.Array]:
        return {"posterior_std": jnp.mean(self.std)}


@flax.struct.dataclass
class Deterministic:
    """The latent of a plain autoencoder, or the output of a quantiser: one point, no noise.

    ``mean`` is what the decoder sees (for VQ/FSQ: the quantised value, carrying the encoder's
    gradient through the straight-through or rotation estimator). ``indices`` [B, h, w] are the
    code numbers for VQ/FSQ (-1 for a plain AE); ``codebook_size`` is 0 for a plain AE.
    """

    mean: jax.Array  # [B, h, w, z]
    indices: jax.Array  # [B, h, w] int32
    losses: dict[str, jax.Array]  # per-example terms, {name: [B]}
    pre_quant: jax.Array | None = None  # VQ: the encoder's output before quantisation
    codebook_size: int = flax.struct.field(pytree_node=False, default=0)

    def sample(self, rng: jax.Array | None = None) -> jax.Array:
        del rng
        return self.mean

    def mode(self) -> jax.Array:
        return self.mean

    def terms(self) -> dict[str, jax.Array]:
        return dict(self.losses)

    def stats(self) -> dict[str, jax.Array]:
        if not self.codebook_size:
            return {}
        return codebook_stats(self.indices, self.codebook_size)


def codebook_stats(indices: jax.Array, codebook_size: int) -> dict[str, jax.Array]:
    """Fraction of the codebook used in this batch and the perplexity exp(H(p)) of the batch's
    code histogram p (van den Oord et al. 2017 report it; it equals the number of codes for a
    uniform use and 1 for a collapsed codebook)."""
    counts = jnp.bincount(indices.reshape(-1), length=codebook_size)
    p = counts / jnp.maximum(counts.sum(), 1)
    entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
    return {"codebook_usage": jnp.mean(counts > 0), "perplexity": jnp.exp(entropy)}


def restart_dead_codes(
    codebook: jax.Array,
    usage: jax.Array,
    indices: jax.Array,
    candidates: jax.Array,
    rng: jax.Array,
    decay: float,
    threshold: float,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Dead-code restart (as Jukebox, Dhariwal et al. 2020, section 2.3; SoundStream, Zeghidour
    et al. 2021): a code whose moving-average assignment count per step falls below
    ``threshold`` is replaced by a random encoder output of the current batch, so no code stays
    unused. Starting ``usage`` at 0 therefore initialises the whole codebook from the first
    batch's encodings.

    codebook [K, D], usage [K] (moving average of assignments per step), indices [...] (this
    batch's codes), candidates [..., D] (this batch's encoder outputs). -> (codebook, usage,
    restarted [K] bool); restarted codes get usage 2 * threshold, a grace period of about
    log(2) / (1 - decay) steps.
    """
    k = codebook.shape[0]
    counts = jnp.bincount(indices.reshape(-1), length=k).astype(usage.dtype)
    usage = decay * usage + (1.0 - decay) * counts
    dead = usage < threshold
    flat = jax.lax.stop_gradient(candidates).reshape(-1, codebook.shape[1])
    picks = flat[jax.random.randint(rng, (k,), 0, flat.shape[0])]
    codebook = jnp.where(dead[:, None], picks.astype(codebook.dtype), codebook)
    return codebook, jnp.where(dead, 2.0 * threshold, usage), dead


def _per_example_sum(x: jax.Array) -> jax.Array:
    return x.reshape(x.shape[0], -1).sum(axis=1)


def rotate_to(e: jax.Array, q: jax.Array, eps: float = 1e-6) -> jax.Array:
    """The rotation trick (Fifty et al. 2024, eq. 3 / Alg. 1): returns a value equal to ``q`` whose
    gradient with respect to ``e`` is that of the linear map s R e, where R is the rotation
    taking e/|e| to q/|q| and s = |q|/|e|, both held constant (stop-gradient).

    R e is computed without forming R (their Householder form, section 4.2):
    R e = e - 2 r (r.e) + 2 q_hat (e_hat.e), r = (e_hat + q_hat) / |e_hat + q_hat|.
    ``e``, ``q``: [..., D], rotated along the last axis.
    """
    e_norm = jnp.linalg.norm(e, axis=-1, keepdims=True)
    q_norm = jnp.linalg.norm(q, axis=-1, keepdims=True)
    e_hat = jax.lax.stop_gradient(e / (e_norm + eps))
    q_hat = jax.lax.stop_gradient(q / (q_norm + eps))
    r = e_hat + q_hat
    r = r / (jnp.linalg.norm(r, axis=-1, keepdims=True) + eps)
    dot = lambda a, b: jnp.sum(a * b, axis=-1, keepdims=True)  # noqa: E731
    rotated = e - 2.0 * r * dot(r, e) + 2.0 * q_hat * dot(e_hat, e)
    scale = jax.lax.stop_gradient(q_norm / (e_norm + eps))
    out = scale * rotated
    # Equal to q up to rounding; add the (gradient-free) rounding error so the forward value is
    # exactly the code, as the straight-through estimator gives.
    return out + jax.lax.stop_gradient(q - out)


class VectorQuantizer(nn.Module):
    """Nearest-neighbour vector quantisation (VQ-VAE, van den Oord et al. 2017).

    The codebook parameter is ``embedding`` [codebook_size, D] (taming's ``quantize.embedding``),
    initialised uniform in +-1/K as there. Losses (eq. 3), summed over latent elements per
    example as the KL is: ``codebook`` = |sg(z_e) - e|^2 (moves codes), ``commitment`` =
    |z_e - sg(e)|^2 (keeps the encoder near its codes; weighted by beta in the loss).
    ``estimator`` passes the decoder's gradient to the encoder: "ste" copies it (eq. 3's
    straight-through), "rotation" rotates it (Fifty et al. 2024).
    """

    codebook_size: int
    dim: int
    estimator: str = "ste"  # "ste" | "rotation"

    def setup(self):
        if self.estimator not in ("ste", "rotation"):
            raise ValueError(f"unknown VQ estimator {self.estimator!r}; use 'ste' or 'rotation'")
        k = self.codebook_size

        def init(key, shape):  # uniform in [-1/K, 1/K), as taming
            return jax.random.uniform(key, shape, minval=-1.0 / k, maxval=1.0 / k)

        self.embedding = self.param(
            "embedding", nn.with_logical_partitioning(init, (VOCAB, None)), (k, self.dim)
        )

    def nearest(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
        """-> (indices [B, h, w], codes [B, h, w, D]) of the codes nearest to ``z`` in L2."""
        d = z.shape[-1]
        codebook = self.embedding
        flat = z.reshape(-1, d)
        # |z - e|^2 = |z|^2 - 2 z.e + |e|^2; |z|^2 is the same for every code.
        dist = jnp.sum(codebook**2, axis=1)[None, :] - 2.0 * flat @ codebook.T
        idx = jnp.argmin(dist, axis=1)
        return idx.reshape(z.shape[:-1]).astype(jnp.int32), codebook[idx].reshape(z.shape)

    def __call__(self, z_e: jax.Array) -> Deterministic:  # [B, h, w, D]
        idx, q = self.nearest(z_e)
        codebook = _per_example_sum(jnp.square(jax.lax.stop_gradient(z_e) - q))
        commitment = _per_example_sum(jnp.square(z_e - jax.lax.stop_gradient(q)))
        if self.estimator == "rotation":
            z_q = rotate_to(z_e, jax.lax.stop_gradient(q))
        else:
            # Straight-through: the value is exactly q (z_e - sg(z_e) is 0), the gradient with
            # respect to z_e the identity.
            z_q = jax.lax.stop_gradient(q) + (z_e - jax.lax.stop_gradient(z_e))
        return Deterministic(
            mean=z_q,
            indices=idx,
            losses={"codebook": codebook, "commitment": commitment},
            pre_quant=z_e,
            codebook_size=self.codebook_size,
        )

    def snap(self, z: jax.Array) -> jax.Array:
        """Replaces each vector by its nearest code (the sampler's decode; idempotent)."""
        return self.nearest(z)[1]


class FSQ(nn.Module):
    """Finite scalar quantisation (Mentzer et al. 2023): channel i is bounded to L_i values and
    rounded with a straight-through gradient; no codebook parameters, no auxiliary losses. The
    implicit codebook is the grid of prod(levels) points.

    Bounding (their section 3, "f(z)" with the offset that makes even L work): with
    h = (L - 1)(1 - eps)/2, o = 0.5 for even L (else 0), b = atanh(o / h):
    f(z) = h tanh(z + b) - o, whose rounding takes the L integers lo..lo+L-1, lo = -(L // 2);
    f(0) = 0 (for L = 2, where o/h > 1, b = atanh(1/2) and f(0) rounds to 0). The shift is our
    choice; the reference implementation shifts by tan(o / h), which also works. Outputs are
    those integers divided by L // 2, so they lie in [-1, 1].
    """

    levels: Sequence[int]

    def _consts(self):
        lv = np.asarray(self.levels, np.float64)
        if lv.ndim != 1 or lv.size == 0 or np.any(lv < 2) or np.any(lv != np.round(lv)):
            raise ValueError(f"FSQ levels must be integers >= 2, got {tuple(self.levels)}")
        half = (lv - 1.0) * (1.0 - 1e-3) / 2.0
        offset = np.where(lv % 2 == 0, 0.5, 0.0)
        # The shift puts f(0) on the grid point 0 (f(0) = h tanh(b) - o = 0 needs b = atanh(o/h));
        # for L = 2 (o/h > 1) any b with h tanh(b) - o in (-1/2, 1/2) does: take tanh(b) = 1/2.
        ratio = offset / half
        shift = np.arctanh(np.where(ratio < 1.0, ratio, 0.5))
        width = np.floor(lv / 2.0)
        lo = -width
        return [jnp.asarray(a, jnp.float32) for a in (half, offset, shift, width, lo, lv)]

    @property
    def codebook_size(self) -> int:
        return int(np.prod(self.levels))

    def indices(self, q: jax.Array) -> jax.Array:
        """Code numbers of grid points ``q`` (already on the levels): mixed radix over channels.
        -> [B, h, w] int32"""
        _, _, _, width, lo, lv = self._consts()
        digits = jnp.round(q * width - lo).astype(jnp.int32)  # 0 .. L-1
        basis = np.concatenate([[1], np.cumprod(np.asarray(self.levels)[:-1])]).astype(np.int32)
        return jnp.sum(digits * basis, axis=-1)

    def __call__(self, z: jax.Array) -> Deterministic:  # [B, h, w, len(levels)]
        if z.shape[-1] != len(self.levels):
            raise ValueError(
                f"FSQ with {len(self.levels)} levels needs {len(self.levels)} latent channels, "
                f"got {z.shape[-1]}"
            )
        half, offset, shift, width, _, _ = self._consts()
        bounded = half * jnp.tanh(z + shift) - offset
        rounded = bounded + jax.lax.stop_gradient(jnp.round(bounded) - bounded)  # STE
        q = rounded / width
        return Deterministic(
            mean=q,
            indices=self.indices(jax.lax.stop_gradient(q)),
            losses={},
            codebook_size=self.codebook_size,
        )

    def snap(self, z: jax.Array) -> jax.Array:
        """Nearest grid point of a normalised latent (idempotent on grid points)."""
        _, _, _, width, lo, lv = self._consts()
        return jnp.clip(jnp.round(z * width), lo, lo + lv - 1) / width
