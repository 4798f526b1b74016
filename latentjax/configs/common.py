"""Pieces of the stages' base configs: the training-loop section and the mesh with its
logical-axis rules table."""

import ml_collections


def train_config(**values) -> ml_collections.ConfigDict:
    """The ``train`` section (the loop's keys, the same for both stages); ``values`` set some."""
    c = ml_collections.ConfigDict()
    c.batch_size = 256  # global: over every device and process
    c.num_steps = 400_000  # optimiser steps of the whole run
    c.log_every = 100  # metrics to metrics.jsonl and the progress line
    c.eval_every = 5_000  # the stage's evaluation (stage 1: held-out PSNR)
    c.checkpoint_every = 5_000  # steps between checkpoints (the last step is always saved)
    c.keep_checkpoints = 2  # the last N checkpoints are kept
    c.keep_best = 0  # also keep this many best checkpoints by best_metric
    c.best_metric = "loss"  # a logged metric (stage 1: test_psnr, computed on eval steps)
    c.best_mode = "min"  # "min" | "max"
    # "auto": on accelerators a save first copies the state into pinned host memory on the
    # device's stream and writes it from there, so the next (donating) step starts at once;
    # on CPU, or with "off", Orbax copies the state on the loop's thread.
    c.checkpoint_snapshot = "auto"
    c.on_nonfinite = "stop"  # NaN/Inf loss or gradient: "stop" | "skip" the update
    # Resume from this checkpointed step instead of the latest (0): to go back past a damaged
    # checkpoint. Later checkpoints are moved aside (checkpoints/discarded-STEP), not deleted.
    c.resume_step = 0
    # TensorBoard event files in WORKDIR/tensorboard (process 0): every logged scalar (the
    # step's metrics, evaluation, throughput and MFU) and, with eval_images, images.
    c.tensorboard = True
    # Images in TensorBoard at each evaluation step (0: none). Stage 1: that many held-out
    # originals, their reconstructions and the latents' first 3 principal components; stage 2:
    # samples of fixed noise and labels (the same every time), with the config's sampler.
    c.eval_images = 0
    # Weights & Biases (optional: pip install 'latentjax[wandb]'): the same scalars and images
    # as TensorBoard, logged by process 0 to this project ("": off). The W&B run id is the run
    # directory's, so a resumed run continues it; WANDB_MODE=offline keeps it in WORKDIR/wandb.
    c.wandb_project = ""
    c.wandb_entity = ""  # the W&B team or user ("": the logged-in default)
    c.wandb_name = ""  # the run's display name ("": the run directory's name)
    # A jax.profiler trace (`latentjax train --profile START:STEPS`) into
    # WORKDIR/tensorboard/plugins/profile, for TensorBoard's profile plugin or Perfetto:
    c.profile_start = 0  # the first step traced (1-based)
    c.profile_steps = 0  # how many steps are traced (0: no trace)
    for key, value in values.items():
        c[key] = value
    return c


def mesh_config(data: int = -1, fsdp: int = 1, tensor: int = 1) -> ml_collections.ConfigDict:
    """Mesh sizes (one may be -1: "the rest of the devices") and the logical -> mesh rules.

    Parameters are sharded over ``fsdp`` along their output-channel / width dimension (FSDP,
    ZeRO-3 style); activations' batch dimension goes over ``data`` and ``fsdp`` together;
    ``tensor`` splits attention heads and MLP width (Megatron-style). A dimension that the mesh
    does not divide is replicated.
    """
    c = ml_collections.ConfigDict()
    c.shape = ml_collections.ConfigDict()
    c.shape.data = data  # data-parallel devices (-1: the devices the other axes leave)
    c.shape.fsdp = fsdp  # devices parameters and optimiser state are sharded over (FSDP)
    c.shape.tensor = tensor  # devices attention heads and MLP widths are split over
    # Logical axis -> mesh axes, read in order: a logical axis takes the first of its rules
    # whose mesh axes are still free in that array (flax's logical_to_mesh). So a [embed, mlp]
    # kernel gets (fsdp, tensor), while a [mlp] bias or a [None, mlp] kernel, whose embed rule
    # did not apply, gets (tensor, fsdp): every parameter is split over fsdp somewhere.
    c.rules = (
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
        # A video autoencoder's activations [B, T, H, W, C] split by rows over `tensor` (its
        # convolutions then exchange the rows at the borders): large frames fit in parts.
        ("height", "tensor"),
    )
    return c
