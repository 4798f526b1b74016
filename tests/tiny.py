"""The tiny models the command-line tests train, written once: the same flags give the same
compiled programs, which the suite's persistent compilation cache then shares between test files.
Each test file adds its own schedule (steps, evaluation, checkpoints)."""

AE = [
    "--config.model.ch=8",
    "--config.model.num_groups=4",
    "--config.model.ch_mult=(1, 2)",
    "--config.data.image_size=8",
    "--config.loss.disc_ndf=8",
    "--config.loss.disc_layers=1",
    "--config.train.batch_size=8",
    "--config.train.log_every=1",
]
DIT = [
    "--config.model.hidden_size=16",
    "--config.model.depth=1",
    "--config.model.num_heads=2",
    "--config.data.image_size=8",
    "--config.data.latent_stats_batches=2",
    "--config.train.batch_size=8",
    "--config.train.log_every=1",
]
# The schedule of the stage-1 run the suite trains once (conftest.py's ``tiny_ae_run``): the
# PatchGAN joins at step 2, evaluation and checkpoints every 2 steps.
AE_RUN = [
    *AE,
    "--config.loss.disc_start=2",
    "--config.train.eval_every=2",
    "--config.train.checkpoint_every=2",
]
