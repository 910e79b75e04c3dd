"""Penn Treebank test perplexity against wall-clock time: rnnkit and plain PyTorch.

Each recipe of RECIPES trains on ptb.train.txt for --budget seconds of wall time, all of it
counted (reading and encoding the text, building the model, training, validation,
checkpoints) except the test evaluations made for the curve itself:

- rnnkit: ``rnnkit.train`` with the recipe's settings; the clock starts before the call. At
  each validation (every ``validate_every`` steps) the ``on_validation`` hook scores
  ptb.test.txt with rnnkit's stream evaluation (as ``rnnkit eval``) and its own time is taken
  off the clock. ``max_time`` is the budget less the time rnnkit spends off its own clock
  (reading the text, building the model, the last checkpoint: measured before by a one-step
  run), so the run ends near the budget; its last weights are scored there too.
- plain: benchmarks/plain.py's word_language_model loop (its own reading of the text, Adam,
  batch 20, bptt 35, clip 0.25), test perplexity every ``eval_every`` steps and at the
  budget, the same accounting. Validation is on the clock only when the recipe uses it
  (``anneal`` < 1 divides the rate when validation stalls, as the example does).

Printed: each curve (wall seconds, step, valid and test perplexity), and when each goal was
first met. Saved: a PNG (log time axis; the curves, the C++ toolkits' and the issue's
figures as points, the goals as corners) in benchmarks/results/time_to_perplexity.png.

    python benchmarks/time_to_perplexity.py                          # both recipes, 120 s each
    python benchmarks/time_to_perplexity.py --budget 1200 --recipes rnnkit
    python benchmarks/time_to_perplexity.py --set lr=2e-3 --set validate_every=300 \\
        --set plain.lr=2e-3                                          # tune a recipe
    python benchmarks/time_to_perplexity.py --quick                  # seconds, a slice of PTB

Marks (PTB test perplexity, hidden 100, measured on this kind of machine): Mikolov's
rnnlm-0.4b 149.4 after 128 s, yandex's faster-rnnlm 147.9 after 132 s; the plain PyTorch
recipe (Elman 200, Adam) 141.5 after 600 s. Goals: < 147.9 within 60 s, < 141.5 within
120 s, <= 124.7 (Mikolov's RNNLM) within 20 minutes.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import plain
from common import ROOT, data_dir, emit_json, print_machine

import rnnkit
from rnnkit.evaluation.stream import stream_log_probs
from rnnkit.text import Vocab, encode_file

# The recipes; a name starting with "plain" runs plain.py's loop, any other rnnkit.train.
RECIPES: dict[str, dict[str, Any]] = {
    "rnnkit": dict(
        cell="rnn", hidden_size=200, output="class", batch_size=64, bptt=35, optimizer="adam",
        lr=3e-3, lr_schedule="plateau", clip=0.25, precision="fp32", validate_every=200,
        epochs=100, patience=0,
    ),
    # the 20-minute recipe (goal: <= 124.7, Mikolov's RNNLM): wider, smaller batches, and
    # regularised (untied with dropout 0.4 it reached train perplexity 82 against valid 150).
    # The full softmax, not the class layer: the class layer runs 2x faster but caps this
    # model near 130 (test 152.8 against 141.0 after 5 epochs); bf16 makes the full one 1.7x
    # faster. With --set elman20.output="'class'" --set elman20.precision="'fp32'": the old one.
    "elman20": dict(
        cell="rnn", hidden_size=512, dropout=0.5, tie_weights=True, output="full",
        batch_size=32, bptt=35,
        optimizer="adam", lr=1e-3, lr_schedule="plateau", clip=0.25, precision="bf16",
        validate_every=0, epochs=200, patience=0,
    ),
    "plain": dict(
        cell="rnn", hidden=200, layers=1, dropout=0.0, batch_size=20, bptt=35,
        optimizer="adam", lr=1e-3, clip=0.25, eval_every=150, anneal=1.0, seed=0,
    ),
}  # fmt: skip
QUICK = {  # on the slice of PTB --quick uses
    "rnnkit": dict(validate_every=20),
    "plain": dict(eval_every=40),
}
# (label, seconds, test perplexity) measured elsewhere, marked on the plot
REFERENCES = [
    ("rnnlm-0.4b (Mikolov), H=100", 128, 149.4),
    ("faster-rnnlm (yandex), H=100", 132, 147.9),
    ("plain PyTorch, Elman H=200, Adam (issue)", 600, 141.5),
]
# (label, test perplexity, strict, seconds): reach < ppl (<= when not strict) within seconds
GOALS = [
    ("< 147.9 in < 60 s", 147.9, True, 60.0),
    ("< 141.5 in < 120 s", 141.5, True, 120.0),
    ("<= 124.7 in <= 20 min", 124.7, False, 1200.0),
]


def log(msg: str) -> None:
    print("    " + msg, file=sys.stderr, flush=True)


def stream_ppl(model: Any, ids: np.ndarray) -> float:
    """Perplexity as ``rnnkit eval`` computes it (batch 16, bptt 256, the state carried)."""
    logp = stream_log_probs(model, ids, batch_size=16, bptt=256, device="cpu")
    return math.exp(-float(logp.mean()))


def with_eos(vocab: Vocab, path: Path) -> np.ndarray:
    """A file's ids with ``</s>`` first, as context for its first line (as rnnkit.evaluate)."""
    ids = encode_file(path, vocab).ids
    return np.concatenate([np.array([vocab.eos_id], dtype=np.int32), ids])


def run_rnnkit(name: str, settings: dict, budget: float, files: dict, tmp: Path) -> dict:
    out = tmp / name
    # rnnkit.train's clock starts after reading the data and building the model and ends before
    # the last checkpoint is written: a one-step run, off the clock, measures that time, so
    # that max_time can end the timed run at the budget of wall time.
    for _ in range(2):  # the second, once every lazy import and first call is behind
        t = time.perf_counter()
        dry = rnnkit.train(
            files["train"], tmp / f"{name}-dry", valid=files["valid"], level="word", max_steps=1,
            overwrite=True, progress=False, device="cpu", **settings,
        )  # fmt: skip
        setup_s = time.perf_counter() - t - dry.elapsed
    points: list[dict] = []
    state: dict[str, Any] = {"paused": 0.0, "test": None}

    def point(wall: float, model: Any, step: int, tokens: int, epoch: float, valid: float) -> None:
        if state["test"] is None:  # the run's vocabulary is saved before training starts
            state["test"] = with_eos(Vocab.load(out / "vocab.json"), files["test"])
        p = {
            "wall_s": round(wall, 2), "step": step, "tokens": tokens, "epoch": round(epoch, 3),
            "valid_ppl": round(valid, 2), "test_ppl": round(stream_ppl(model, state["test"]), 2),
        }  # fmt: skip
        points.append(p)
        show(name, p)

    def on_validation(record: dict, model: Any) -> None:
        h0 = time.perf_counter()
        wall = h0 - t0 - state["paused"]
        valid = math.exp(record["valid_loss"])
        point(wall, model, record["step"], record["tokens"], record["epoch"], valid)
        state["paused"] += time.perf_counter() - h0

    t0 = time.perf_counter()
    result = rnnkit.train(
        files["train"], out, valid=files["valid"], level="word", max_time=max(budget - setup_s, 1.0),
        overwrite=True, progress=False, device="cpu", log=log, on_validation=on_validation,
        **settings,
    )  # fmt: skip
    wall = time.perf_counter() - t0 - state["paused"]
    if not points or points[-1]["step"] != result.step:  # the last weights, at the budget
        loaded = rnnkit.load(out, weights="last")
        valid = stream_ppl(
            loaded.model, encode_file(files["valid"], loaded.vocab).ids
        )  # as Trainer
        tokens = round(result.tokens_per_second * result.elapsed)  # the run started at 0
        n, train = loaded.config["stats"]["train_tokens"], loaded.config["training"]
        windows = math.ceil(((n - 1) // train["batch_size"]) / train["bptt"])
        point(wall, loaded.model, result.step, tokens, result.step / windows, valid)
    return {
        "setup_s": round(setup_s, 2),
        "stopped": result.stopped,
        "train_tokens_per_s": round(result.tokens_per_second, 1),
        "points": points,
    }


def run_plain(name: str, s: dict, budget: float, files: dict) -> dict:
    points: list[dict] = []
    t0, paused = time.perf_counter(), 0.0
    corpus = plain.Corpus()
    train = corpus.tokenize(files["train"])
    valid = corpus.tokenize(files["valid"], grow=False)
    setup_s = time.perf_counter() - t0
    h0 = time.perf_counter()  # the test text, for the curve only: off the clock
    test = torch.cat(
        [torch.tensor([corpus.word2idx["<eos>"]]), corpus.tokenize(files["test"], grow=False)]
    )
    paused += time.perf_counter() - h0
    torch.manual_seed(s["seed"])
    model = plain.PlainLM(len(corpus.idx2word), s["hidden"], s["layers"], s["cell"], s["dropout"])
    run = plain.PlainRun(
        model, train, s["batch_size"], s["bptt"], s["optimizer"], s["lr"], s["clip"]
    )
    steps, lr, best = 0, s["lr"], math.inf
    while True:
        run.step()
        steps += 1
        done = time.perf_counter() - t0 - paused >= budget
        if steps % s["eval_every"] and not done:
            continue
        valid_ppl = None
        if s["anneal"] < 1.0:  # validation decides the rate: on the clock
            valid_ppl, _ = plain.evaluate(model, valid)
            if valid_ppl >= best:
                lr *= s["anneal"]
                run.set_lr(lr)
            best = min(best, valid_ppl)
        h0 = time.perf_counter()
        wall = h0 - t0 - paused
        if valid_ppl is None:
            valid_ppl, _ = plain.evaluate(model, valid)
        test_ppl, _ = plain.evaluate(model, test)
        epoch = run.epoch + run.i / max(run.data.size(0) - 1, 1)
        p = {
            "wall_s": round(wall, 2), "step": steps, "tokens": run.tokens, "epoch": round(epoch, 3),
            "valid_ppl": round(valid_ppl, 2), "test_ppl": round(test_ppl, 2), "lr": lr,
        }  # fmt: skip
        points.append(p)
        show(name, p)
        paused += time.perf_counter() - h0
        if done:
            break
    train_s = points[-1]["wall_s"] - setup_s
    return {
        "setup_s": round(setup_s, 2),
        "stopped": f"budget {budget:g} s",
        "train_tokens_per_s": round(run.tokens / max(train_s, 1e-9), 1),
        "points": points,
    }


def show(name: str, p: dict) -> None:
    print(
        f"  {name:<8} {p['wall_s']:>8.1f} s  step {p['step']:>6}  epoch {p['epoch']:>6.2f}  "
        f"valid {p['valid_ppl']:>8.2f}  test {p['test_ppl']:>8.2f}",
        flush=True,
    )


def goals(points: list[dict]) -> list[dict]:
    """When the test perplexity first met each goal's level, and whether in time."""
    out = []
    for label, ppl, strict, seconds in GOALS:
        hit = next(
            (p for p in points if (p["test_ppl"] < ppl if strict else p["test_ppl"] <= ppl)), None
        )
        wall = None if hit is None else hit["wall_s"]
        met = wall is not None and (wall < seconds if strict else wall <= seconds)
        out.append({"goal": label, "first_reached_s": wall, "met": met})
    return out


def plot(results: list[dict], path: Path, budget: float, quick: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    walls = [p["wall_s"] for r in results for p in r["points"]] or [1.0]
    ppls = [p["test_ppl"] for r in results for p in r["points"]] or [150.0]
    xlo, xhi = max(0.5, min(walls) / 1.5), max(1500.0, budget * 1.3, max(walls) * 1.3)
    ylo = 0.95 * min([*ppls, *(g[1] for g in GOALS)])
    yhi = 1.05 * max(ppls) if quick else min(max(170.0, min(ppls) * 1.5), 400.0)
    for r in results:
        pts = r["points"]
        ax.plot(
            [p["wall_s"] for p in pts], [p["test_ppl"] for p in pts], marker="o", ms=3, lw=1.5,
            label=f"{r['recipe']}: {describe(r['settings'])}",
        )  # fmt: skip
    for (label, t, ppl), marker in zip(REFERENCES, ("s", "D", "^")):
        ax.scatter(
            [t], [ppl], marker=marker, s=50, zorder=5, color="black", facecolors="none",
            label=f"{label}: {ppl} at {t} s",
        )  # fmt: skip
    colors = ("tab:green", "tab:olive", "tab:purple")
    for (label, ppl, _, seconds), color in zip(GOALS, colors):
        ax.plot([xlo, seconds, seconds], [ppl, ppl, ylo], ls="--", lw=1, color=color)
        ax.fill_between([xlo, seconds], ylo, ppl, color=color, alpha=0.06)
        ax.annotate(
            f"goal: {label}", (xlo, ppl), fontsize=8, color=color, ha="left", va="top",
            xytext=(4, -3), textcoords="offset points",
        )  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlim(xlo, xhi)
    ax.set_ylim(ylo, yhi)
    ax.set_xlabel("wall-clock seconds (reading the data and validation included)")
    ax.set_ylabel("PTB test perplexity")
    ax.set_title(
        "Penn Treebank: test perplexity against wall time" + (" (--quick)" if quick else "")
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def describe(s: dict) -> str:
    cell = "Elman" if s.get("cell", "rnn") == "rnn" else s["cell"].upper()
    hidden = s.get("hidden_size", s.get("hidden"))
    layers = s.get("num_layers", s.get("layers", 1))
    size = f"{layers}x{hidden}" if layers != 1 else f"H={hidden}"
    extra = f", {s['output']}" if "output" in s else ""
    return f"{cell} {size}{extra}, {s.get('optimizer', 'adam')} {s.get('lr')}, batch {s.get('batch_size')}"


def parse_sets(items: list[str], names: list[str]) -> dict[str, dict[str, Any]]:
    """``KEY=VALUE`` (recipe rnnkit) or ``RECIPE.KEY=VALUE``; values as Python literals."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE or RECIPE.KEY=VALUE")
        recipe, _, key = key.rpartition(".")
        recipe = recipe or "rnnkit"
        if recipe not in names:
            raise SystemExit(f"--set {item!r}: no recipe {recipe!r} (recipes: {', '.join(names)})")
        if recipe.startswith("plain") and key not in RECIPES["plain"]:
            raise SystemExit(f"--set {item!r}: plain recipes take {', '.join(RECIPES['plain'])}")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        out.setdefault(recipe, {})[key] = value
    return out


def slice_ptb(ptb: Path, tmp: Path) -> dict[str, Path]:
    """The first lines of each PTB file (--quick)."""
    files = {}
    for part, lines in (("train", 3000), ("valid", 300), ("test", 300)):
        src = (ptb / f"ptb.{part}.txt").read_text().splitlines(keepends=True)
        files[part] = tmp / f"ptb.{part}.txt"
        files[part].write_text("".join(src[:lines]))
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budget", type=float, default=120.0, help="wall seconds a recipe (120)")
    parser.add_argument("--recipes", default="rnnkit,plain", help="comma-separated RECIPES names")
    parser.add_argument(
        "--set", action="append", default=[], metavar="[RECIPE.]KEY=VALUE",
        help="override a recipe setting (recipe rnnkit when none is named); repeatable",
    )  # fmt: skip
    parser.add_argument("--plot", help="PNG to write (benchmarks/results/time_to_perplexity.png)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="seconds: a slice of PTB")
    parser.add_argument("--keep", metavar="DIR", help="keep the rnnkit runs in DIR/RECIPE")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.recipes.split(",") if n.strip()]
    for n in names:
        if n not in RECIPES:
            parser.error(f"--recipes: unknown recipe {n!r}; choose from {', '.join(RECIPES)}")
    sets = parse_sets(args.set, names)
    ptb = data_dir() / "ptb"
    if not (ptb / "ptb.train.txt").is_file():
        print(f"PTB not found in {ptb} (set RNNKIT_DATA); nothing to measure.")
        return 0 if args.quick else 2
    if args.threads:
        torch.set_num_threads(args.threads)
    machine = print_machine()
    budget = 6.0 if args.quick else args.budget
    name = "time_to_perplexity" + ("_quick" if args.quick else "")
    plot_path = Path(args.plot) if args.plot else ROOT / "benchmarks" / "results" / f"{name}.png"
    results = []
    with tempfile.TemporaryDirectory(prefix="rnnkit-ttp-") as tmp_dir:
        tmp = Path(args.keep) if args.keep else Path(tmp_dir)
        tmp.mkdir(parents=True, exist_ok=True)
        files = slice_ptb(ptb, tmp) if args.quick else {
            p: ptb / f"ptb.{p}.txt" for p in ("train", "valid", "test")
        }  # fmt: skip
        for recipe in names:
            base = "plain" if recipe.startswith("plain") else "rnnkit"
            settings = {
                **RECIPES[recipe],
                **(QUICK[base] if args.quick else {}),
                **sets.get(recipe, {}),
            }
            print(f"\n== {recipe}: {budget:g} s ==\n{json.dumps(settings)}", flush=True)
            if base == "plain":
                res = run_plain(recipe, settings, budget, files)
            else:
                res = run_rnnkit(recipe, settings, budget, files, tmp)
            results.append({"recipe": recipe, "settings": settings, "budget_s": budget, **res})
    for r in results:
        r["goals"] = goals(r["points"])
    report(results)
    plot(results, plot_path, budget, args.quick)
    print(f"\nplot: {plot_path}")
    for r in results:
        record = {**r, "quick": args.quick, "machine": machine}
        if args.quick:  # a smoke test: printed, not added to benchmarks/results
            print(json.dumps({"benchmark": "time_to_perplexity", **record}))
        else:
            emit_json("time_to_perplexity", record)
    return 0


def report(results: list[dict]) -> None:
    for r in results:
        print(
            f"\n{r['recipe']} ({describe(r['settings'])}): setup {r['setup_s']:.1f} s, "
            f"trained at {r['train_tokens_per_s']:,.0f} tokens/s, stopped: {r['stopped']}"
        )
        print(f"{'wall s':>8} {'step':>7} {'epoch':>7} {'valid ppl':>10} {'test ppl':>9}")
        for p in r["points"]:
            print(
                f"{p['wall_s']:>8.1f} {p['step']:>7} {p['epoch']:>7.2f} {p['valid_ppl']:>10.2f} "
                f"{p['test_ppl']:>9.2f}"
            )
    print("\ngoals (test perplexity within wall time): first reached at")
    print(f"{'recipe':<10}" + "".join(f"{g[0]:>26}" for g in GOALS))
    for r in results:
        cells = [
            "not reached" if g["first_reached_s"] is None
            else f"{g['first_reached_s']:.1f} s ({'met' if g['met'] else 'too late'})"
            for g in r["goals"]
        ]  # fmt: skip
        best = min(r["points"], key=lambda p: p["test_ppl"])
        print(
            f"{r['recipe']:<10}" + "".join(f"{c:>26}" for c in cells)
            + f"   best test {best['test_ppl']:.2f} at {best['wall_s']:.1f} s"
        )  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
