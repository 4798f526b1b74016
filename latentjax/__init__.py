"""latentjax: two-stage latent generative models in JAX/Flax.

An autoencoder learns a latent space; a diffusion transformer learns to generate in it.
``latentjax.load_autoencoder(PATH)`` and ``latentjax.load_dit(PATH)`` load either from a
latentjax run, a converted checkpoint, or the user's diffusers / DiT weights (``latentjax.api``).
"""

__version__ = "0.1.0"

_API = ("load_autoencoder", "load_dit")


def __getattr__(name: str):
    # Lazy, so that `import latentjax` (the CLI's entry) does not import JAX and the converters.
    if name in _API:
        from latentjax import api

        return getattr(api, name)
    raise AttributeError(f"module 'latentjax' has no attribute {name!r}")
