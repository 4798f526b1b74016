"""The frozen vision network of an alignment loss (REPA in stage 2, VA-VAE's VF loss in stage 1)
read from the weights a config names: a features function and its parameters, which the stage
passes to its step as a frozen, replicated input."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from latentjax.convert.dinov2 import build as build_dinov2
from latentjax.convert.dinov2 import load_dinov2
from latentjax.convert.lpips import lpips_variables
from latentjax.errors import ConfigError
from latentjax.models import representation


class FrozenEncoder:
    """``features(variables, images)``: images [B, H, W, C] in [-1, 1] -> [B, h, w, dim]."""

    def __init__(self, features: Callable[[Any, jax.Array], jax.Array], variables: Any, dim: int):
        self.features, self.variables, self.dim = features, variables, dim

    @classmethod
    def load(
        cls, encoder: str, weights: str, prefix: str, size: int, heads: int = 0, vgg_tap: int = 3
    ) -> FrozenEncoder:
        """``encoder`` ("dinov2" | "vgg16") from ``weights``; ``prefix`` begins the config keys
        named in errors ("repa." or "loss.vf_"); ``size``: the side images are resized to
        before the network."""
        if encoder not in representation.ENCODERS:
            raise ConfigError(
                f"{prefix}encoder={encoder!r}; use one of {', '.join(representation.ENCODERS)}"
            )
        if not weights:
            what = (
                "a transformers or timm DINOv2 checkpoint"
                if encoder == "dinov2"
                else "a `latentjax convert lpips` directory"
            )
            raise ConfigError(
                f"{prefix}weight > 0 needs {prefix}encoder_weights: for {encoder!r}, {what}"
            )
        if encoder == "dinov2":
            kwargs, variables = load_dinov2(weights, heads or None)
            model = build_dinov2(kwargs)

            def dinov2(v, images):
                return representation.dinov2_features(model, v, images, size)

            return cls(dinov2, variables, kwargs["hidden_size"])
        if not 0 <= vgg_tap < 5:
            raise ConfigError(f"{prefix}vgg_tap={vgg_tap}; use 0 .. 4")

        def vgg(v, images):
            return representation.vgg16_features(v, images, size, vgg_tap)

        return cls(vgg, lpips_variables(weights), representation.vgg16_width(vgg_tap))
