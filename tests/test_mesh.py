"""Mesh construction from config and logical-axis shardings."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest
from jax.sharding import PartitionSpec as P

from latentjax.errors import ConfigError
from latentjax.parallel import mesh as mesh_lib


def test_mesh_shape_resolves_minus_one():
    assert mesh_lib.mesh_shape({"data": -1, "fsdp": 2, "tensor": 1}, 8) == (4, 2, 1)
    assert mesh_lib.mesh_shape({"data": 2, "fsdp": -1}, 8) == (2, 4, 1)
    assert mesh_lib.mesh_shape({"data": -1}, 1) == (1, 1, 1)


@pytest.mark.parametrize(
    "shape, match",
    [
        ({"data": -1, "fsdp": -1}, "at most one"),
        ({"data": 3, "fsdp": 1}, "does not fit"),
        ({"data": 2, "fsdp": 2}, "uses 4 devices but 8"),
        ({"data": -1, "model": 2}, "unknown mesh axes"),
    ],
)
def test_bad_mesh_shapes(shape, match):
    with pytest.raises(ConfigError, match=match):
        mesh_lib.mesh_shape(shape, 8)


def test_bad_rules():
    with pytest.raises(ConfigError, match="unknown logical axis"):
        mesh_lib.check_rules((("channels", "fsdp"),))
    with pytest.raises(ConfigError, match="unknown mesh axis"):
        mesh_lib.check_rules((("embed", "model"),))


class _Tiny(nn.Module):
    @nn.compact
    def __call__(self, x):
        k = nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("embed", "mlp"))
        return nn.Dense(6, kernel_init=k, use_bias=False)(x)


def test_logical_shardings_map_and_fall_back_when_not_divisible():
    mesh = mesh_lib.make_mesh({"data": -1})  # whatever devices this process has
    boxed = jax.eval_shape(_Tiny().init, jax.random.key(0), jnp.zeros((1, 4)))
    rules = (("embed", "fsdp"), ("mlp", "tensor"))
    shardings = mesh_lib.logical_shardings(boxed, mesh, rules)
    spec = shardings["params"]["Dense_0"]["kernel"].spec
    assert spec == P("fsdp", "tensor")  # axes of size 1 divide anything


def test_fit_replicates_indivisible_dims():
    # _fit only reads mesh.shape: a stand-in with 4 x 2 devices needs no real devices.
    fake = type("M", (), {"shape": {"data": 1, "fsdp": 4, "tensor": 2}})()
    assert mesh_lib._fit(P("fsdp", "tensor"), (8, 3), fake) == P("fsdp", None)
    assert mesh_lib._fit(
        P(
            ("fsdp", "tensor"),
        ),
        (8,),
        fake,
    ) == P(("fsdp", "tensor"))
    assert mesh_lib._fit(
        P(
            ("fsdp", "tensor"),
        ),
        (4,),
        fake,
    ) == P(None)
