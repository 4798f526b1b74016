"""latentjax: two-stage latent generative models in JAX/Flax.

An autoencoder learns a latent space; a diffusion transformer learns to generate in it.
"""

__version__ = "0.1.0"
