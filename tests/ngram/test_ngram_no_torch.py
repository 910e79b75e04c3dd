"""The n-gram side never imports torch: `rnnkit ngram` and `rnnkit rescore` start instantly."""

from __future__ import annotations

import subprocess
import sys


def test_ngram_modules_do_not_import_torch() -> None:
    code = (
        "import sys\n"
        "import rnnkit.ngram, rnnkit.evaluation.interpolation, rnnkit.evaluation.rescoring\n"
        "import rnnkit.cli.ngram, rnnkit.cli.rescore\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
