"""The default command against the best recipe we know, per corpus, in the same budget.

For each case: ``rnnkit train TRAIN --valid VALID --level L --max-time BUDGET`` with no other
flag (what `rnnkit train` chose is read back from config.json's plan), or a named recipe with
its flags, then ``rnnkit eval`` of the run on the validation and test files. Runs go one at a
time, pinned to one core (``--core``) with one thread, so two cases never share a core.
Prints a table (valid / test perplexity, steps, tokens/s, the wall time of training) and
writes one JSON line per case to benchmarks/results/defaults.jsonl.

    python benchmarks/defaults.py --cases ptb-word,ptb-word-recipe --core 0
    python benchmarks/defaults.py --reuse            # the table from runs already made
    python benchmarks/defaults.py --cases synthetic  # the plan on 100M synthetic tokens

Corpora: tiny Shakespeare (split by lines 90/5/5 into --runs/data), Penn Treebank, and
gutenberg (8M words of raw book text) from ../shared/data; ``synthetic`` is 100M Zipf-
distributed words over 30,000 types, made here, on which only the plan and its measured
speed are shown (a 10-minute run sees a tenth of it; its perplexity says nothing).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, data_dir, emit_json, print_machine

# recipes: the best we know in ten minutes on one thread (docs/word_lm.md, docs/speed.md)
CLASS_RECIPE = ["--hidden", "300", "--dropout", "0.2", "--output", "class", "--batch-size", "64",
                "--lr", "3e-3", "--clip", "0.25", "--validate-every", "200"]  # fmt: skip
CHAR_RECIPE = ["--cell", "rnn", "--hidden", "512", "--batch-size", "64"]  # the README's
CASES: dict[str, tuple[str, str, list[str] | None]] = {
    # name: (corpus, level, flags; None: the default command)
    "shakespeare-char": ("shakespeare", "char", None),
    "shakespeare-char-recipe": ("shakespeare", "char", CHAR_RECIPE),
    "shakespeare-word": ("shakespeare", "word", None),
    "ptb-word": ("ptb", "word", None),
    "ptb-word-recipe": ("ptb", "word", CLASS_RECIPE),
    "ptb-char": ("ptb", "char", None),
    "gutenberg-word": ("gutenberg", "word", None),
    "gutenberg-word-recipe": (
        "gutenberg", "word", [*CLASS_RECIPE, "--tokenizer", "words", "--vocab-size", "50000"]
    ),
    "gutenberg-char": ("gutenberg", "char", None),
    "synthetic": ("synthetic", "word", None),
}  # fmt: skip


def corpus_files(name: str, runs: Path) -> tuple[Path, Path, Path]:
    """(train, valid, test) of a corpus."""
    d = data_dir()
    if name == "ptb":
        return tuple(d / "ptb" / f"ptb.{s}.txt" for s in ("train", "valid", "test"))  # type: ignore[return-value]
    if name == "gutenberg":
        return tuple(d / "gutenberg" / f"{s}.txt" for s in ("train", "valid", "test"))  # type: ignore[return-value]
    out = runs / "data" / name
    files = tuple(out / f"{s}.txt" for s in ("train", "valid", "test"))
    if all(f.is_file() for f in files):
        return files  # type: ignore[return-value]
    out.mkdir(parents=True, exist_ok=True)
    if name == "shakespeare":
        lines = (d / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8").splitlines(True)
        a, b = int(len(lines) * 0.9), int(len(lines) * 0.95)
        parts = [lines[:a], lines[a:b], lines[b:]]
        for f, part in zip(files, parts, strict=True):
            f.write_text("".join(part), encoding="utf-8")
    else:  # synthetic: Zipf words, 20 a line
        rng = np.random.default_rng(0)
        types = np.array([f"w{i}" for i in range(30_000)])
        for f, n in zip(files, (100_000_000, 200_000, 200_000), strict=True):
            with open(f, "w", encoding="utf-8") as fh:
                for start in range(0, n, 1_000_000):
                    ids = np.minimum(rng.zipf(1.1, size=min(1_000_000, n - start)), 30_000) - 1
                    words = types[ids].reshape(-1, 20)
                    fh.write("\n".join(" ".join(row) for row in words) + "\n")
    return files  # type: ignore[return-value]


def run_case(name: str, runs: Path, budget: float, core: int) -> dict[str, Any]:
    corpus, level, flags = CASES[name]
    train, valid, test = corpus_files(corpus, runs)
    out = runs / name
    pin = ["taskset", "-c", str(core)]
    cmd = [*pin, sys.executable, "-m", "rnnkit", "train", str(train), "--valid", str(valid),
           "--level", level, "--max-time", str(budget), "--out", str(out), "--overwrite",
           "--threads", "1", "--no-progress", *(flags or [])]  # fmt: skip
    if corpus == "synthetic":
        cmd += ["--max-steps", "50"]  # the plan and the speed; a tenth of the corpus says little
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    (runs / f"{name}.log").write_text(proc.stdout + proc.stderr, encoding="utf-8")
    if proc.returncode != 0:
        raise SystemExit(f"{name}: rnnkit train failed:\n{proc.stderr[-2000:]}")
    record = {"case": name, "command": " ".join(cmd[3:]), "train_wall_s": round(wall, 1)}
    if corpus != "synthetic":
        for split, path in (("valid", valid), ("test", test)):
            ev = subprocess.run(
                [*pin, sys.executable, "-m", "rnnkit", "eval", str(out), str(path),
                 "--format", "json", "--device", "cpu", "--no-progress"],
                capture_output=True, text=True, cwd=ROOT, check=True,
            )  # fmt: skip
            figures = json.loads(ev.stdout)
            record[f"{split}_ppl"] = figures["perplexity"]
            record[f"{split}_bits"] = figures.get("bits_per_char", figures.get("bits_per_word"))
    return {**record, **read_run(out)}


def read_run(out: Path) -> dict[str, Any]:
    config = json.loads((out / "config.json").read_text())
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    return {
        "plan": config.get("plan", {}).get("settings", {}),
        "tokens_per_second_probe": config.get("plan", {}).get("tokens_per_second", {}),
        "model": {k: config["model"][k] for k in ("cell", "hidden_size", "output", "dropout")},
        "vocab": config["model"]["vocab_size"],
        "train_tokens": config["stats"]["train_tokens"],
        "steps": train[-1]["step"] if train else 0,
        "epochs": round(train[-1]["epoch"], 2) if train else 0,
        "tokens_per_second": train[-1]["tokens_per_second"] if train else 0,
        "validations": sum(r["kind"] == "valid" for r in records),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default=",".join(c for c in CASES if c != "synthetic"))
    ap.add_argument("--runs", default="/tmp/rnnkit-defaults", help="where runs are kept")
    ap.add_argument("--budget", type=float, default=600.0, help="--max-time of each run (600)")
    ap.add_argument("--core", type=int, default=0, help="the CPU core every run is pinned to")
    ap.add_argument("--reuse", action="store_true", help="read runs already made")
    args = ap.parse_args()
    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    info = print_machine()
    rows = []
    for name in args.cases.split(","):
        saved = runs / f"{name}.json"
        if args.reuse and saved.is_file():
            row = json.loads(saved.read_text())
        elif args.reuse:
            continue
        else:
            row = run_case(name, runs, args.budget, args.core)
            saved.write_text(json.dumps(row))
        rows.append(row)
        print(
            f"{name:26s} valid {row.get('valid_ppl', float('nan')):9.2f} "
            f"test {row.get('test_ppl', float('nan')):9.2f}  {row['model']['cell']} "
            f"{row['model']['hidden_size']} {row['model']['output']} "
            f"dropout {row['model']['dropout']}, V {row['vocab']:,}, {row['epochs']} epochs, "
            f"{row['tokens_per_second']:,.0f} tokens/s, train wall {row['train_wall_s']:.0f} s",
            flush=True,
        )
    emit_json("defaults", {"machine": info, "budget": args.budget, "cases": rows})


if __name__ == "__main__":
    main()
