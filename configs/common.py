"""Pieces shared by config files: the mesh and its logical-axis rules table."""

import ml_collections


def mesh_config(data: int = -1, fsdp: int = 1, tensor: int = 1) -> ml_collections.ConfigDict:
    """Mesh sizes (one may be -1: "the rest of the devices") and the logical -> mesh rules.

    Parameters are sharded over ``fsdp`` along their output-channel / width dimension (FSDP,
    ZeRO-3 style); activations' batch dimension goes over ``data`` and ``fsdp`` together;
    ``tensor`` splits attention heads and MLP width (Megatron-style). A dimension that the mesh
    does not divide is replicated.
    """
    return ml_collections.ConfigDict(
        {
            "shape": {"data": data, "fsdp": fsdp, "tensor": tensor},
            # Read in order: a logical axis takes the first of its rules whose mesh axes are
            # still free in that array (flax's logical_to_mesh). So a [embed, mlp] kernel gets
            # (fsdp, tensor), while a [mlp] bias or a [None, mlp] kernel, whose embed rule did
            # not apply, gets (tensor, fsdp): every parameter is split over fsdp somewhere.
            "rules": (
                ("batch", ("data", "fsdp")),
                ("embed", "fsdp"),
                ("mlp", ("tensor", "fsdp")),
                ("mlp", "tensor"),
                ("heads", ("tensor", "fsdp")),
                ("heads", "tensor"),
                ("vocab", None),
                ("conv_in", None),
                ("conv_out", "fsdp"),
                ("norm", "fsdp"),
            ),
        }
    )
