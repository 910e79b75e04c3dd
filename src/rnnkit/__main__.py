"""``python -m rnnkit``: the same as the ``rnnkit`` command."""

import sys

from rnnkit.cli import main

sys.exit(main())
