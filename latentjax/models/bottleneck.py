"""The KL bottleneck: a diagonal Gaussian posterior q(z|x) = N(mean, diag(exp(logvar)))."""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class DiagonalGaussian:
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
