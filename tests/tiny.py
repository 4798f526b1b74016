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
