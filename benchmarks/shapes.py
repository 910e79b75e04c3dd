"""The figures of the classify and tag shapes: each recipe trained and scored through the
public Python API, exactly as the ``rnnkit`` command lines it prints, against the published
figure it is compared with.

Recipes (``--recipes a,b``; default all, in this order):

- ``fsdd``: spoken digits (free-spoken-digit, its own test split: recordings 0-4 of each
  speaker and digit), a BiLSTM 128 on MFCCs, mean pooling: test accuracy. Goal >= 98.5;
  reference: a BiLSTM on MFCCs, 98.4 on a random split.
- ``rt_cv``: sentence polarity (rt-polarity), a BiLSTM 100 with max pooling, embeddings
  200 from scratch: 10-fold cross-validation accuracy, mean and std. Goal >= 79.5; Kim
  (2014): CNN-rand 76.1, NBSVM-bi 79.4.
- ``rt_cv_lm``: first a word LSTM language model (hidden 100, embeddings 200) on Gutenberg,
  then ``rt_cv`` with ``--init-from`` that run. Goal >= 81.5; Kim (2014): CNN with word2vec
  81.5.
- ``chunk_bilstm``, ``chunk_crf``: CoNLL-2000 chunking, the POS column as an extra input; the
  training file split into its first 8,000 sentences (train) and the remaining 936 (dev,
  which picks the best checkpoint): test chunk F1 as conlleval counts it. Huang et al.
  (2015): BiLSTM 93.64, BiLSTM-CRF 94.13.
- ``pos_bi``, ``pos_uni``: POS tagging of the same files (the POS column as the label), a
  bidirectional and a left-to-right LSTM side by side: test token accuracy. Goal >= 96.

Each recipe prints its ``rnnkit`` commands, the figure, the published one, the wall time
(training and evaluation) and one JSON line, also appended to benchmarks/results/shapes.jsonl
(not with ``--quick``); a table of every recipe run ends the output.

    python benchmarks/shapes.py                          # every recipe, 1 thread
    python benchmarks/shapes.py --recipes chunk_crf,pos_bi --threads 2 --out runs/shapes
    python benchmarks/shapes.py --recipes rt_cv_lm --init-from runs/gutenberg  # reuse an LM
    python benchmarks/shapes.py --quick                  # seconds: tiny slices, 1 epoch
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import data_dir, emit_json, peak_rss_mb, print_machine

import rnnkit
from rnnkit.api import classify, tag

# -- the recipes: exactly the settings measured (API names; printed as CLI flags) ----------

FSDD = dict(
    split="fsdd", cell="lstm", hidden_size=128, bidirectional=True, pooling="mean",
    dropout=0.2, epochs=15, lr_schedule="linear", patience=0,
)  # fmt: skip
RT = dict(
    cell="lstm", hidden_size=100, embedding_size=200, bidirectional=True, pooling="max",
    dropout=0.5, lr=1e-3, epochs=3, patience=0, batch_size=50,
)  # fmt: skip
RT_FOLDS = 10
LM = dict(
    level="word", tokenizer="words", lowercase=True, vocab_size=30000, cell="lstm",
    hidden_size=100, embedding_size=200, output="adaptive", precision="bf16", batch_size=64,
    bptt=35, validate_every=3000, epochs=1,
)  # fmt: skip
LM_MAX_TIME = 1500.0
LM_VALID_BYTES = 400_000  # the language model validates on the first 400,000 bytes
# words seen once become <unk> (so its embedding is trained for the test set's unseen words);
# a character BiLSTM per word sees their spelling
CHUNK = dict(
    feature_columns=[1], char_features=True, min_count=2, hidden_size=200, dropout=0.5,
    epochs=20, average=True, patience=0, unseen_labels="score",
)  # fmt: skip
POS = dict(
    label_column=1, char_features=True, min_count=2, hidden_size=128, dropout=0.3, epochs=12,
    patience=0, unseen_labels="score",
)  # fmt: skip
CONLL_TRAIN_SENTENCES = 8000  # the rest of CoNLL-2000's training file (936) is the dev set

# --quick: tiny slices of each data set, 1 epoch
QUICK_FSDD = dict(speakers=2, indices=(0, 1, 5, 6, 7, 8))  # 0-4: the test split
QUICK_RT_LINES = 300  # of each label
QUICK_CONLL = dict(train=250, dev=50, test=100)  # sentences
QUICK_LM = dict(train_bytes=300_000, valid_bytes=20_000, max_time=60.0)


@dataclass(frozen=True)
class Recipe:
    name: str
    title: str
    metric: str  # the figure's name
    goal: float | None  # the figure to reach (>=), in percent
    reference: str  # the published figure(s) compared against
    needs: tuple[str, ...]  # paths under the data folder


RECIPES = {
    r.name: r
    for r in (
        Recipe(
            "fsdd", "spoken digits, BiLSTM 128 on MFCCs, mean pooling", "test accuracy", 98.5,
            "BiLSTM on MFCCs 98.4 (random split)", ("free-spoken-digit/recordings",),
        ),
        Recipe(
            "rt_cv", "rt-polarity, BiLSTM 100, max pooling, embeddings from scratch",
            "10-fold CV accuracy", 79.5, "Kim 2014: CNN-rand 76.1, NBSVM-bi 79.4",
            ("rt-polarity/rt-polarity.pos", "rt-polarity/rt-polarity.neg"),
        ),
        Recipe(
            "rt_cv_lm", "rt-polarity, the same BiLSTM started from a Gutenberg word LM",
            "10-fold CV accuracy", 81.5, "Kim 2014: CNN with word2vec 81.5",
            ("rt-polarity/rt-polarity.pos", "rt-polarity/rt-polarity.neg",
             "gutenberg/train.txt", "gutenberg/valid.txt"),
        ),
        Recipe(
            "chunk_bilstm", "CoNLL-2000 chunking, BiLSTM 128 + POS column, softmax",
            "test chunk F1", None, "Huang et al. 2015: BiLSTM 93.64",
            ("conll2000/train.txt", "conll2000/test.txt"),
        ),
        Recipe(
            "chunk_crf", "CoNLL-2000 chunking, BiLSTM 128 + POS column, CRF", "test chunk F1",
            None, "Huang et al. 2015: BiLSTM-CRF 94.13",
            ("conll2000/train.txt", "conll2000/test.txt"),
        ),
        Recipe(
            "pos_bi", "CoNLL-2000 POS tagging, BiLSTM 128", "test token accuracy", 96.0,
            "pos_uni (left to right), side by side", ("conll2000/train.txt", "conll2000/test.txt"),
        ),
        Recipe(
            "pos_uni", "CoNLL-2000 POS tagging, LSTM 128 left to right", "test token accuracy",
            96.0, "pos_bi (both ways), side by side",
            ("conll2000/train.txt", "conll2000/test.txt"),
        ),
    )
}  # fmt: skip

FLAG_NAMES = {"hidden_size": "hidden"}  # printed as the recipes were written


def flags(settings: dict[str, Any]) -> list[str]:
    """``settings`` (API names) as ``rnnkit`` flags."""
    out: list[str] = []
    for key, value in settings.items():
        flag = "--" + FLAG_NAMES.get(key, key).replace("_", "-")
        if value is None:
            continue
        if value is True:
            out.append(flag)
        elif value is False:
            out.append("--no-" + flag[2:])
        elif isinstance(value, list | tuple):
            out += [flag, ",".join(str(v) for v in value)]
        elif isinstance(value, float):
            out += [flag, f"{value:g}"]
        else:
            out += [flag, str(value)]
    return out


def command(*words: Any, settings: dict[str, Any] | None = None, threads: int | None = None) -> str:
    """An ``rnnkit`` command line: ``words``, the ``settings`` as flags, ``--threads``."""
    tail = [] if threads is None else ["--threads", str(threads)]
    return shlex.join([str(w) for w in words] + flags(settings or {}) + tail)


def seconds(s: float) -> str:
    return f"{s:.1f}" if s < 10 else f"{s:.0f}"


def rounded(value: Any) -> Any:
    """Floats in a JSON record to 4 decimals."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


# -- data: slices for --quick, and the splits the recipes define ---------------------------


def head_bytes(src: Path, dst: Path, n: int) -> Path:
    """The first ``n`` bytes of ``src`` (less a UTF-8 character the cut would split)."""
    data = src.read_bytes()[:n]
    while data and data.decode("utf-8", errors="ignore").encode("utf-8") != data:
        data = data[:-1]
    dst.write_bytes(data)
    return dst


def sentences(path: Path) -> list[str]:
    """The blank-line separated sentences of a column file."""
    text = path.read_text(encoding="utf-8")
    return [b.strip("\n") for b in re.split(r"\n[ \t]*\n", text) if b.strip()]


def write_sentences(blocks: list[str], dst: Path) -> Path:
    dst.write_text("".join(b + "\n\n" for b in blocks), encoding="utf-8")
    return dst


class Data:
    """The data folder, and the files each recipe derives from it (under ``work``); with
    ``quick``, tiny slices of every set."""

    def __init__(self, root: Path, work: Path, quick: bool) -> None:
        self.root, self.work, self.quick = root, work, quick
        work.mkdir(parents=True, exist_ok=True)
        self._conll: tuple[Path, Path, Path] | None = None

    def audio(self) -> Path:
        folder = self.root / "free-spoken-digit" / "recordings"
        if not self.quick:
            return folder
        out = self.work / "fsdd-quick"
        out.mkdir(exist_ok=True)
        names = sorted(p.name for p in folder.iterdir() if p.suffix == ".wav")
        speakers = sorted({n.split("_")[1] for n in names})[: QUICK_FSDD["speakers"]]
        for n in names:
            _, speaker, index = n.removesuffix(".wav").split("_")
            if speaker in speakers and int(index) in QUICK_FSDD["indices"]:
                link = out / n
                if not link.exists():
                    os.symlink(folder / n, link)
        return out

    def rt(self) -> list[Path]:
        files = [self.root / "rt-polarity" / f"rt-polarity.{s}" for s in ("pos", "neg")]
        if not self.quick:
            return files
        out = self.work / "rt-quick"  # the label is the file's suffix: the names stay
        out.mkdir(exist_ok=True)
        for f in files:
            lines = f.read_text(encoding="utf-8").splitlines(keepends=True)
            (out / f.name).write_text("".join(lines[:QUICK_RT_LINES]), encoding="utf-8")
        return [out / f.name for f in files]

    def conll(self) -> tuple[Path, Path, Path]:
        """Train (the first 8,000 sentences of train.txt), dev (the other 936) and test."""
        if self._conll is None:
            folder = self.root / "conll2000"
            blocks, test = sentences(folder / "train.txt"), folder / "test.txt"
            n_train = CONLL_TRAIN_SENTENCES
            if self.quick:
                n_train = QUICK_CONLL["train"]
                blocks = blocks[: n_train + QUICK_CONLL["dev"]]
                test = write_sentences(
                    sentences(test)[: QUICK_CONLL["test"]], self.work / "conll2000.test.txt"
                )
            self._conll = (
                write_sentences(blocks[:n_train], self.work / "conll2000.train.txt"),
                write_sentences(blocks[n_train:], self.work / "conll2000.dev.txt"),
                test,
            )
        return self._conll

    def gutenberg(self) -> tuple[Path, Path]:
        """Train, and the first 400,000 bytes of valid.txt."""
        folder = self.root / "gutenberg"
        train, valid = folder / "train.txt", folder / "valid.txt"
        if self.quick:
            train = head_bytes(train, self.work / "gutenberg.train.quick.txt",
                               QUICK_LM["train_bytes"])  # fmt: skip
            return train, head_bytes(
                valid, self.work / "gutenberg.valid.quick.txt", QUICK_LM["valid_bytes"]
            )
        return train, head_bytes(valid, self.work / "gutenberg.valid.400k.txt", LM_VALID_BYTES)


# -- running the recipes -------------------------------------------------------------------


@dataclass
class Context:
    data: Data
    out: Path  # the runs go under here
    threads: int
    quick: bool
    init_from: Path | None  # rt_cv_lm: an LM run to start from instead of training one

    def settings(self, base: dict[str, Any], **extra: Any) -> dict[str, Any]:
        s = {**base, **extra}
        if self.quick:
            s["epochs"] = 1
        return s


def log(msg: str) -> None:
    print("  " + msg, file=sys.stderr, flush=True)


def say(cmd: str) -> str:
    print(f"$ {cmd}", flush=True)
    return cmd


def run_fsdd(ctx: Context) -> dict[str, Any]:
    audio, run = ctx.data.audio(), ctx.out / "fsdd"
    s = ctx.settings(FSDD)
    cmds = [
        say(command("rnnkit", "classify", "train", "--audio", audio, "--out", run,
                    settings=s, threads=ctx.threads)),
        say(command("rnnkit", "classify", "eval", run, "--audio", audio, "--split", "fsdd")),
    ]  # fmt: skip
    t0 = time.perf_counter()
    result = classify.train(
        None, run, audio=str(audio), overwrite=True, threads=ctx.threads, progress=False,
        log=log, **s,
    )  # fmt: skip
    t1 = time.perf_counter()
    figures = classify.evaluate(run, audio=audio, split="fsdd")
    train_s, eval_s = t1 - t0, time.perf_counter() - t1
    return {
        "figure": 100 * figures["accuracy"],
        "figure_text": f"{100 * figures['accuracy']:.2f}",
        "commands": cmds, "settings": s, "train_seconds": train_s, "eval_seconds": eval_s,
        "test_examples": int(figures["count"]), "test_loss": figures["loss"],
        "best_valid_accuracy": 100 * result.best_metric, "epochs": result.epoch,
        "stopped": result.stopped,
    }  # fmt: skip


def cross_validate(
    ctx: Context, name: str, extra: dict[str, Any], cmds: list[str]
) -> dict[str, Any]:
    files, run = ctx.data.rt(), ctx.out / name
    s = ctx.settings(RT, **extra)
    cmds.append(
        say(command("rnnkit", "classify", "train", *files, "--cv", RT_FOLDS, "--out", run,
                    settings=s, threads=ctx.threads))
    )  # fmt: skip
    t0 = time.perf_counter()
    result = classify.train(
        files, run, cv=RT_FOLDS, overwrite=True, threads=ctx.threads, progress=False,
        log=log, **s,
    )  # fmt: skip
    train_s = time.perf_counter() - t0  # each fold's training and held-out evaluation
    assert isinstance(result, classify.CVResult)
    mean, std = 100 * result.mean, 100 * result.std
    return {
        "figure": mean, "figure_text": f"{mean:.2f} +- {std:.2f}", "std": std,
        "fold_accuracies": [100 * a for a in result.accuracies], "commands": cmds,
        "settings": s, "train_seconds": train_s, "eval_seconds": 0.0,
    }  # fmt: skip


def run_rt_cv(ctx: Context) -> dict[str, Any]:
    return cross_validate(ctx, "rt_cv", {}, [])


def run_rt_cv_lm(ctx: Context) -> dict[str, Any]:
    cmds: list[str] = []
    lm: dict[str, Any] = {}
    if ctx.init_from is not None:
        lm_run = ctx.init_from
        print(f"(the language model: the run given, {lm_run})")
    else:
        train, valid = ctx.data.gutenberg()
        lm_run = ctx.out / "gutenberg_lm"
        s = {**LM}
        max_time = QUICK_LM["max_time"] if ctx.quick else LM_MAX_TIME
        cmds.append(
            say(command("rnnkit", "train", train, "--valid", valid, "--out", lm_run,
                        "--max-time", f"{max_time:g}", settings=s, threads=ctx.threads))
        )  # fmt: skip
        t0 = time.perf_counter()
        result = rnnkit.train(
            train, lm_run, valid=valid, max_time=max_time, overwrite=True, threads=ctx.threads,
            progress=False, log=log, **s,
        )  # fmt: skip
        lm_s = time.perf_counter() - t0
        ppl = math.exp(result.best_valid_loss) if math.isfinite(result.best_valid_loss) else None
        print(
            f"language model: valid perplexity {ppl if ppl is None else round(ppl, 2)}, "
            f"{result.tokens_per_second:,.0f} words/s, {lm_s:.0f} s, {result.step} steps "
            f"({result.stopped})",
            flush=True,
        )
        lm = {
            "lm_valid_perplexity": ppl, "lm_seconds": lm_s, "lm_steps": result.step,
            "lm_stopped": result.stopped, "lm_words_per_second": result.tokens_per_second,
            "lm_settings": {**s, "max_time": max_time},
        }  # fmt: skip
    record = cross_validate(ctx, "rt_cv_lm", {"init_from": str(lm_run)}, cmds)
    record["train_seconds"] += lm.get("lm_seconds", 0.0)
    return {**record, "lm_run": str(lm_run), **lm}


def tagger(ctx: Context, name: str, base: dict[str, Any], **extra: Any) -> dict[str, Any]:
    train, dev, test = ctx.data.conll()
    run = ctx.out / name
    s = ctx.settings(base, **extra)
    cmds = [
        say(command("rnnkit", "tag", "train", train, "--valid", dev, "--out", run,
                    settings=s, threads=ctx.threads)),
        say(command("rnnkit", "tag", "eval", run, test, "--unseen-labels", "score")),
    ]  # fmt: skip
    t0 = time.perf_counter()
    result = tag.train(
        train, run, valid=str(dev), overwrite=True, threads=ctx.threads, progress=False,
        log=log, **s,
    )  # fmt: skip
    t1 = time.perf_counter()
    figures = tag.evaluate(run, test, unseen_labels="score")
    train_s, eval_s = t1 - t0, time.perf_counter() - t1
    chunked = "f1" in figures
    figure = 100 * (figures["f1"] if chunked else figures["accuracy"])
    details = {
        "test_accuracy": 100 * figures["accuracy"], "test_tokens": int(figures["tokens"]),
        "test_sentences": int(figures["sentences"]), "test_loss": figures["loss"],
    }  # fmt: skip
    if chunked:
        details.update(precision=100 * figures["precision"], recall=100 * figures["recall"])
    return {
        "figure": figure, "figure_text": f"{figure:.2f}", "commands": cmds, "settings": s,
        "train_seconds": train_s, "eval_seconds": eval_s, **details,
        f"best_valid_{result.metric}": 100 * result.best_metric, "epochs": result.epoch,
        "stopped": result.stopped,
    }  # fmt: skip


RUNNERS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "fsdd": run_fsdd,
    "rt_cv": run_rt_cv,
    "rt_cv_lm": run_rt_cv_lm,
    "chunk_bilstm": lambda ctx: tagger(ctx, "chunk_bilstm", CHUNK, hidden_size=256),
    "chunk_crf": lambda ctx: tagger(ctx, "chunk_crf", CHUNK, crf=True),
    "pos_bi": lambda ctx: tagger(ctx, "pos_bi", POS, bidirectional=True),
    "pos_uni": lambda ctx: tagger(ctx, "pos_uni", POS, bidirectional=False),
}


def goal_text(goal: float | None) -> str:
    return "-" if goal is None else f">= {goal:g}"


def run_recipe(recipe: Recipe, ctx: Context, machine: dict[str, Any]) -> dict[str, Any]:
    print(f"\n== {recipe.name}: {recipe.title} ==", flush=True)
    t0 = time.perf_counter()
    try:
        out = RUNNERS[recipe.name](ctx)
    except Exception as exc:  # the other recipes still run
        traceback.print_exc()
        out = {"error": f"{type(exc).__name__}: {exc}"}
    wall = time.perf_counter() - t0
    figure = out.get("figure")
    met = None if recipe.goal is None or figure is None else figure >= recipe.goal
    record = rounded({
        "recipe": recipe.name, "metric": recipe.metric, **out, "goal": recipe.goal,
        "meets_goal": met, "reference": recipe.reference, "wall_seconds": wall,
        "threads": ctx.threads, "quick": ctx.quick, "machine": machine,
        "peak_rss_mb": round(peak_rss_mb()),
    })  # fmt: skip
    if "error" in out:
        print(f"{recipe.name}: failed after {wall:.0f} s: {out['error']}")
    else:
        verdict = "" if met is None else (": met" if met else ": not met")
        print(
            f"{recipe.name}: {recipe.metric} {out['figure_text']} (goal "
            f"{goal_text(recipe.goal)}{verdict}); published: {recipe.reference}; wall "
            f"{seconds(wall)} s (training {seconds(out['train_seconds'])} s, evaluation "
            f"{seconds(out['eval_seconds'])} s)",
            flush=True,
        )
    if ctx.quick:  # a smoke test: printed, not added to benchmarks/results
        print(json.dumps({"benchmark": "shapes", **record}), flush=True)
    else:
        emit_json("shapes", record)
    return record


def print_table(records: list[dict[str, Any]]) -> None:
    rows = [("recipe", "figure", "goal", "reference", "wall s")] + [
        (
            r["recipe"],
            f"{r['metric']} {r['figure_text']}" if "error" not in r else "failed",
            goal_text(r["goal"]),
            r["reference"],
            seconds(r["wall_seconds"]),
        )
        for r in records
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    print()
    for row in rows:
        print("  ".join(f"{c:<{w}}" for c, w in zip(row[:4], widths)) + f"  {row[4]:>{widths[4]}}")
    by_name = {r["recipe"]: r for r in records if "error" not in r}
    if "pos_bi" in by_name and "pos_uni" in by_name:
        bi, uni = by_name["pos_bi"]["figure"], by_name["pos_uni"]["figure"]
        print(
            f"POS tagging, both ways against left to right: {bi:.2f} against {uni:.2f} "
            f"({bi - uni:+.2f} points)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated (all)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1)")
    parser.add_argument("--out", help="folder for the runs (default: a temporary one)")
    parser.add_argument("--quick", action="store_true", help="seconds: tiny slices, 1 epoch")
    parser.add_argument(
        "--init-from",
        metavar="RUN",
        help="rt_cv_lm: start from this word LM run instead of training one first",
    )
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.recipes.split(",") if n.strip()]
    for n in names:
        if n not in RECIPES:
            parser.error(f"--recipes: unknown recipe {n!r}; choose from {', '.join(RECIPES)}")
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    root = data_dir()
    missing = {
        n: [p for p in RECIPES[n].needs if not (root / p).exists()] for n in names
    }  # fmt: skip
    for n, paths in missing.items():
        if paths:
            print(f"{n}: {', '.join(paths)} not found in {root} (set RNNKIT_DATA); skipped.")
    names = [n for n in names if not missing[n]]
    if not names:
        print("nothing to measure.")
        return 0 if args.quick else 2
    import torch

    torch.set_num_threads(args.threads)
    machine = print_machine()
    with tempfile.TemporaryDirectory(prefix="rnnkit-shapes-") as tmp:
        base = Path(args.out) if args.out else Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        ctx = Context(
            data=Data(root, base / "data", args.quick), out=base, threads=args.threads,
            quick=args.quick, init_from=Path(args.init_from) if args.init_from else None,
        )  # fmt: skip
        records = [run_recipe(RECIPES[n], ctx, machine) for n in names]
    print_table(records)
    failed = any("error" in r for r in records)
    return 1 if failed else (0 if args.quick or not any(missing.values()) else 2)


if __name__ == "__main__":
    raise SystemExit(main())
