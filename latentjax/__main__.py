"""``python -m latentjax`` is the ``latentjax`` command."""

import sys

from latentjax.commands import main

sys.exit(main())
