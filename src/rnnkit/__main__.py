"""``python -m rnnkit``: the same as the ``rnnkit`` command (and what torchrun runs:
``torchrun --nproc-per-node N -m rnnkit train ...``; see docs/distributed.md)."""

import os
import sys

from rnnkit import distributed
from rnnkit.cli import main

if not distributed.world().is_main:
    # under torchrun rank 0 reports (its stdout); the other ranks' errors still reach stderr
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)
try:
    status = main()
finally:
    distributed.cleanup()
sys.exit(status)
