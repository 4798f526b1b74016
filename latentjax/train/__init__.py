"""Training: the two stages, the loop, checkpoints (``trainer.train``: config -> run directory).

``latentjax.train(config, workdir)`` calls :func:`latentjax.train.trainer.train`: this package is
also that function, so the name works both as the package (``latentjax.train.loop``) and as
the call a notebook makes (Python lets a module's class define ``__call__``:
https://docs.python.org/3/reference/datamodel.html#customizing-module-attribute-access).
"""

from __future__ import annotations

import sys
import types
from typing import Any

from latentjax.paths import Path


class _TrainModule(types.ModuleType):
    def __call__(self, config, workdir: str | Path, *, progress: bool = True) -> dict[str, Any]:
        """Trains the stage ``config`` names into ``workdir`` as ``latentjax train`` does
        (progress, resume from its checkpoints, checkpoints) -> the final metrics (the last
        record of ``metrics.jsonl``). ``config``: from ``latentjax.config.load``."""
        from latentjax.train.trainer import train

        return train(config, workdir, progress=progress)


sys.modules[__name__].__class__ = _TrainModule
