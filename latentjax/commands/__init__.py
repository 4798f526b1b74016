"""The ``latentjax`` command: one module per subcommand, each with ``register(subparsers)``.

A subcommand module adds its parser with an example in its description, sets
``parser.set_defaults(run=fn)`` (``fn(args) -> None``) and, if it takes ``--config.a.b=v``
overrides, ``config_overrides=True`` (they arrive as ``args.overrides``). Errors a user can fix
(a wrong config key, a missing run, a bad argument) are printed as one ``latentjax: error:`` line
on stderr with exit status 2, as are the machine's own refusals (``OSError``: a full disk, a
missing permission, a path that is a directory); anything else is a bug and keeps its
traceback. Modules import their
libraries inside ``fn``, so ``latentjax --help`` answers without loading JAX.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time

from latentjax.errors import LatentjaxError

# In the order ``latentjax --help`` lists them.
COMMANDS = (
    "train",
    "sample",
    "demo",
    "eval",
    "probe",
    "encode",
    "export",
    "plot",
    "convert",
    "data",
    "plan",
    "config",
    "fid",
    "fid_stats",
)

DESCRIPTION = """\
Two-stage latent generative models in JAX: train an autoencoder, then a diffusion transformer
on its latents, and sample from it in jitted batches. Start with `latentjax demo` (both stages on
the embedded digits, a few minutes on a CPU); `latentjax COMMAND --help` shows an example of each
command. From Python, the same: latentjax.config.load, latentjax.train, latentjax.load_pipeline."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="latentjax",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"latentjax.commands.{name}").register(sub)
    return p


def parse(argv: list[str]) -> argparse.Namespace:
    p = parser()
    args, rest = p.parse_known_args(argv)
    args.overrides = []
    for item in rest:
        if getattr(args, "config_overrides", False) and item.startswith("--config."):
            args.overrides.append(item[len("--config.") :])
        else:
            p.error(f"unrecognized argument: {item}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    # Grain worker processes read absl flags; outside absl.app.run they are unparsed.
    import absl.flags

    absl.flags.FLAGS.mark_as_parsed()
    from latentjax.data.local import quiet_tfds

    quiet_tfds()
    start = time.time()
    try:
        from latentjax.parallel import distributed

        distributed.initialize(
            getattr(args, "coordinator", None),
            getattr(args, "num_processes", None),
            getattr(args, "process_id", None),
            getattr(args, "distributed", False),
        )
        args.run(args)
    except LatentjaxError as e:
        print(f"latentjax: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the machine's answer (a full disk, a missing permission): not a bug
        where = f": {e.filename}" if e.filename else ""
        print(f"latentjax: error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("latentjax: interrupted", file=sys.stderr)
        return 130
    print(f"latentjax: {args.command} finished in {time.time() - start:.1f} s")
    return 0
