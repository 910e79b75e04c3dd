"""Output layers at large vocabularies, on gutenberg: speed and quality side by side.

Every layer here is exact (each probability normalised over the whole vocabulary). For one
model (Elman 1x512, embedding 512, batch 64, bptt 64, Adam, one thread by default) on
``gutenberg/train.txt`` at word level (``--tokenizer words``, the vocabulary capped at
--vocab-size, 33,000 by default, up to 100,000):

- training tokens/s of each output layer: the full softmax (fused, chunked loss), the class
  layer (Mikolov's frequency classes, sqrt(V) of them), the adaptive softmax at the cutoffs
  that were the library's default until this benchmark (V/10, V/2) and at the tuned ones
  (--tuned-cutoffs); rnnkit's real training step (Trainer.train_step), timed in chunks of
  about --seconds in --rounds rounds whose order rotates (the machine's noise hits every
  layer); medians, the ratio to the full softmax as the median of each round's ratio, and
  GFLOP/s next to the fp32 GEMM peak measured at the start of the run (work per token
  weighted by the training frequencies of the classes / clusters, as throughput.py);
- the rnnlm-0.4b figure: training words/s at hidden 100 (Elman, 33k words, one thread)
  with the class layer and the tuned adaptive softmax at --rnnlm-batches; Mikolov's
  rnnlm-0.4b runs about 71k words/s here (hidden 100, classes, one thread);
- quality at the same wall time: each layer trained for --quality-time seconds (600) by
  ``rnnkit.train`` (the API behind ``rnnkit train``, every setting given: the same model for
  each layer, untied, the learning rate decayed linearly to 0 at the end of the budget,
  validating on the first ~54k words of valid.txt) into --quality-dir/LAYER, then ``rnnkit
  eval RUN test.txt --weights last``: the test perplexity. With --train-quality the runs
  are made here, one after another (about --quality-time + 1 to 7 min each: reading the
  data, the evaluation); without it, runs already in --quality-dir are read, so a later run
  prints speed and quality side by side without retraining (--also: more run folders there).

    taskset -c 1 python benchmarks/output_layers.py --quality-dir /tmp/ol        # reads runs
    taskset -c 1 python benchmarks/output_layers.py --quality-dir /tmp/ol --train-quality
    taskset -c 1 python benchmarks/output_layers.py --vocab-size 100000 --skip-rnnlm  # speed
    taskset -c 1 python benchmarks/output_layers.py --quick                      # seconds
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, data_dir, emit_json, gemm_peak, interleave, print_machine
from throughput import calibrate, forward_macs, gflops, kit_step, timed_chunk, tokens

from rnnkit.models import ModelConfig, make_model
from rnnkit.models.output import OutputLayer, default_classes, frequency_classes
from rnnkit.tasks.lm import LanguageModelTask
from rnnkit.text.dataset import DataConfig, bincount, prepare_data
from rnnkit.training import TrainConfig, Trainer

LR, CLIP = 2e-3, 0.25
RNNLM_WORDS_PER_S = 71_000  # rnnlm-0.4b here: hidden 100, classes, one thread (issue 16)


def layers(V: int, tuned: list[int]) -> dict[str, dict[str, Any]]:
    """The candidates: name -> ModelConfig output settings (explicit, so that a later change
    of the library's defaults does not change what a name measures)."""
    old = [c for c in sorted({max(1, V // 10), max(2, V // 2)}) if c < V]
    return {
        "full": {"output": "full"},
        "class": {"output": "class"},
        "adaptive V/10,V/2": {"output": "adaptive", "cutoffs": old},
        "adaptive " + ",".join(map(str, tuned)): {"output": "adaptive", "cutoffs": tuned},
    }


def slug(name: str) -> str:
    """A run folder's name for a layer: 'adaptive 2000,10000' -> 'adaptive-2000-10000'."""
    return name.replace(" ", "-").replace(",", "-").replace("/", "")


class Data:
    """gutenberg at word level, read the way ``rnnkit train`` reads it."""

    def __init__(self, root: Path, vocab_size: int, quick: bool) -> None:
        t0 = time.perf_counter()
        corpus = root / "train.txt"
        if quick:  # the first ~4 MB: seconds, not a minute
            cut = Path(tempfile.mkdtemp(prefix="rnnkit-ol-")) / "train.txt"
            with corpus.open("rb") as f:
                cut.write_bytes(f.read(4_000_000).rsplit(b"\n", 1)[0] + b"\n")
            corpus = cut
        data = prepare_data(
            DataConfig(
                corpus=str(corpus), valid=str(root / "valid.txt"), level="word",
                tokenizer="words", vocab_size=vocab_size,
            ),
            None,
        )  # fmt: skip
        self.load_s = time.perf_counter() - t0
        self.vocab, self.train, self.valid = data.vocab, data.train_ids, data.valid_ids
        self.V = len(self.vocab)
        self.counts = bincount(self.train, self.V)
        self.freq = self.counts / self.counts.sum()
        self.bounds = frequency_classes(self.counts, default_classes(self.V))


def kit_trainer(
    data: Data, hidden: int, settings: dict[str, Any], batch: int, bptt: int, out: Path
) -> Trainer:
    torch.manual_seed(0)
    bounds = data.bounds if settings["output"] == "class" else None
    unfused = settings.get("unfused", False)
    settings = {k: v for k, v in settings.items() if k != "unfused"}
    model = make_model(
        ModelConfig(
            vocab_size=data.V, cell="rnn", hidden_size=hidden, class_bounds=bounds, **settings
        )
    )
    if unfused:  # the adaptive layer's loss through torch's module, as before the fused one
        head = model.head
        head.loss = types.MethodType(OutputLayer.loss, head)  # type: ignore[method-assign]
    cfg = TrainConfig(batch_size=batch, bptt=bptt, optimizer="adam", lr=LR, clip=CLIP, epochs=10**6)
    task = LanguageModelTask.stream(data.train, data.valid, batch, bptt, level="word")
    return Trainer(model, task, cfg, out, torch.device("cpu"), progress=False)


def speed(
    data: Data,
    hidden: int,
    cands: dict[str, dict[str, Any]],
    batches: list[int],
    bptt: int,
    args: argparse.Namespace,
    peak: float,
) -> list[dict[str, Any]]:
    """Training tokens/s of each (layer, batch), in interleaved rounds; the first key is the
    base of the ratios."""
    fns: dict[str, Callable[[], float]] = {}
    macs: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="rnnkit-ol-") as tmp:
        for name, settings in cands.items():
            for b in batches:
                key = f"{name}/{b}"
                tr = kit_trainer(data, hidden, settings, b, bptt, Path(tmp) / slug(key))
                macs[key] = forward_macs(tr.model, data.freq)
                n = calibrate(partial(kit_step, tr), args.seconds, args.warmup)
                fns[key] = partial(timed_chunk, partial(kit_step, tr), n, partial(tokens, tr))
        got = interleave(fns, args.rounds)
    base = next(iter(got))
    rows = []
    for key, rates in got.items():
        name, batch = key.rsplit("/", 1)
        tps = statistics.median(rates)
        rows.append(
            {
                "layer": name, "hidden": hidden, "batch": int(batch), "bptt": bptt,
                "tokens_per_s": tps,
                "x_base": statistics.median(r / q for r, q in zip(rates, got[base])),
                "base": base, "gflops": gflops(tps, macs[key], 3),
                "pct_peak": 100 * gflops(tps, macs[key], 3) / peak, "rounds": rates,
            }
        )  # fmt: skip
    return rows


def print_speed(title: str, rows: list[dict[str, Any]]) -> None:
    print(title)
    print(
        f"{'layer':<28} {'batch':>5} {'tokens/s':>10} {'x ' + rows[0]['layer']:>10} "
        f"{'GFLOP/s':>8} {'%peak':>6}"
    )
    for r in rows:
        print(
            f"{r['layer']:<28} {r['batch']:>5} {r['tokens_per_s']:>10,.0f} {r['x_base']:>10.2f} "
            f"{r['gflops']:>8.1f} {r['pct_peak']:>5.1f}%"
        )
    print(flush=True)


# -- quality at the same wall time -------------------------------------------------------------


# Every setting the CLI's --max-time plan would otherwise choose is given (tie_weights
# False: the plan ties the full and class layers' tables at word level, and the adaptive
# layer cannot be tied; the same model for every layer), so a change of defaults does not
# change what is measured.
TRAIN = """
import json, sys
import rnnkit
kw = json.loads(sys.argv[1])
rnnkit.train(log=lambda m: print(m, flush=True), **kw)
"""


def train_settings(
    root: Path, valid: Path, run: Path, settings: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    """``rnnkit.train``'s arguments for one layer: the speed part's model, --quality-time
    seconds, the learning rate decayed linearly to 0 at the end of the budget."""
    return {
        "corpus": str(root / "train.txt"), "out": str(run), "overwrite": True,
        "valid": str(valid), "level": "word", "tokenizer": "words",
        "vocab_size": args.vocab_size, "cell": "rnn", "hidden_size": args.hidden,
        "num_layers": 1, "dropout": 0.0, "tie_weights": False, "batch_size": args.batch_size,
        "bptt": args.bptt, "optimizer": "adam", "lr": LR, "clip": CLIP,
        "lr_schedule": "linear", "epochs": 20, "validate_every": 0, "validate_seconds": 0,
        "max_time": args.quality_time, "threads": args.threads, "progress": False,
        "device": "cpu", **settings,
    }  # fmt: skip


def train_cmd(kw: dict[str, Any]) -> list[str]:
    """The same run as a command line (``python -c`` with the settings as JSON)."""
    return ["python", "-c", TRAIN.strip(), json.dumps(kw)]


def eval_cmd(root: Path, run: Path) -> list[str]:
    return [
        "rnnkit", "eval", str(run), str(root / "test.txt"), "--weights", "last", "--format",
        "json", "--no-progress",
    ]  # fmt: skip


def run_py(cmd: list[str], log: Path, stdout: Path | None = None) -> float:
    """``cmd`` (``rnnkit ...`` through ``python -m rnnkit``, or ``python ...``: this
    interpreter), its stdout in ``stdout`` (or ``log``) and its stderr in ``log``; wall
    seconds."""
    t0 = time.perf_counter()
    full = (
        [sys.executable, "-m", "rnnkit", *cmd[1:]]
        if cmd[0] == "rnnkit"
        else [sys.executable, *cmd[1:]]
    )
    with log.open("w") as err, (stdout or log).open("a") as out:
        code = subprocess.run(full, stdout=out, stderr=err, cwd=ROOT).returncode
    if code != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed ({code}); see {log}")
    return time.perf_counter() - t0


def trained(run: Path) -> dict[str, Any]:
    """Steps and tokens trained, and the last validation loss, from the run's metrics."""
    last: dict[str, Any] = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "tokens" in rec:
            last = {**last, "steps": rec["step"], "tokens": rec["tokens"]}
        if "valid_loss" in rec:
            last["valid_loss"] = rec["valid_loss"]
    return last


def quality(
    root: Path, cands: dict[str, dict[str, Any]], args: argparse.Namespace
) -> list[dict[str, Any]]:
    """Each layer's test perplexity after --quality-time seconds of training: trained here
    with --train-quality, else read from --quality-dir (layers not there are left out)."""
    qdir = Path(args.quality_dir)
    qdir.mkdir(parents=True, exist_ok=True)
    valid = root / "valid.txt"
    if args.quality_valid_bytes:  # the first lines of valid.txt: validating costs little
        valid = qdir / "valid_small.txt"
        if not valid.exists():
            with (root / "valid.txt").open("rb") as f:
                valid.write_bytes(f.read(args.quality_valid_bytes).rsplit(b"\n", 1)[0] + b"\n")
    rows = []
    names = [*cands, *args.also]
    for name in names:
        run, result = qdir / slug(name), qdir / f"{slug(name)}.test.json"
        row: dict[str, Any] = {"layer": name}
        ecmd = eval_cmd(root, run)
        wanted = args.train_quality.split(",")
        if name in cands and ("all" in wanted or name in wanted):
            kw = train_settings(root, valid, run, cands[name], args)
            tcmd = train_cmd(kw)
            print(f"training {name} ({args.quality_time} s): {shlex.join(tcmd)}", flush=True)
            row["train_wall_s"] = run_py(tcmd, qdir / f"{slug(name)}.train.log")
            result.unlink(missing_ok=True)
            row["eval_wall_s"] = run_py(ecmd, qdir / f"{slug(name)}.test.err", result)
        if not result.exists():
            print(f"  {name}: no run in {qdir} (give --train-quality to train it)")
            continue
        got = json.loads(result.read_text())
        config = json.loads((run / "config.json").read_text())
        model, tr = config["model"], config["training"]
        row.update(
            test_ppl=float(got["perplexity"]), eval_command=shlex.join(ecmd),
            output=model["output"], cutoffs=model.get("cutoffs"),
            tie_weights=model["tie_weights"], hidden=model["hidden_size"],
            batch_size=tr["batch_size"], bptt=tr["bptt"], lr=tr["lr"],
            lr_schedule=tr["lr_schedule"], **trained(run),
        )  # fmt: skip
        rows.append(row)
    return rows


def print_side_by_side(speed: list[dict[str, Any]], q: list[dict[str, Any]], budget: int) -> None:
    sp = {r["layer"]: r for r in speed}
    base = next((r["test_ppl"] for r in q if r["layer"] == "full"), None)
    print(f"\nside by side: the same model, {budget} s of training each")
    print(
        f"{'layer':<28} {'tokens/s':>10} {'x full':>7} {'steps':>6} {'tokens':>11} "
        f"{'test ppl':>9} {'vs full':>8}"
    )
    for r in q:
        s = sp.get(r["layer"], {})
        rel = f"{100 * (r['test_ppl'] / base - 1):+.1f}%" if base else ""
        print(
            f"{r['layer']:<28} {s.get('tokens_per_s', float('nan')):>10,.0f} "
            f"{s.get('x_base', float('nan')):>7.2f} {r.get('steps', 0):>6} "
            f"{r.get('tokens', 0):>11,} {r['test_ppl']:>9.1f} {rel:>8}"
        )
    for r in q:
        print(
            f"  {r['layer']}: Elman 1x{r['hidden']}, {r['output']}, cutoffs {r['cutoffs']}, "
            f"tied {r['tie_weights']}, batch {r['batch_size']}, bptt {r['bptt']}, Adam "
            f"{r['lr']:g} {r['lr_schedule']}; {r['eval_command']}"
        )
    print(flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="seconds: tiny counts, no quality")
    parser.add_argument("--vocab-size", type=int, default=33_000, help="30,000 to 100,000")
    parser.add_argument("--hidden", type=int, default=512, help="Elman hidden = embedding (512)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--bptt", type=int, default=64)
    parser.add_argument("--tuned-cutoffs", default="2000,10000", help="the tuned adaptive layer")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per timed chunk (4)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (2)")
    parser.add_argument(
        "--rnnlm-batches", default="64,256,1024", help="batches of the hidden-100 figure"
    )
    parser.add_argument("--skip-speed", action="store_true", help="quality only")
    parser.add_argument("--skip-rnnlm", action="store_true", help="no hidden-100 figure")
    parser.add_argument("--quality-dir", help="runs of the quality part (none: no quality part)")
    parser.add_argument(
        "--train-quality",
        nargs="?",
        const="all",
        default="",
        help="train them here: all, or the layers named (comma-separated, as printed)",
    )
    parser.add_argument(
        "--also", default="", help="more run folders in --quality-dir to read, comma-separated"
    )
    parser.add_argument("--quality-time", type=int, default=600, help="--max-time of each run")
    parser.add_argument(
        "--quality-valid-bytes", type=int, default=300_000,
        help="validate on the lines of valid.txt within its first this many bytes, ~54k "
        "words (0: all of it)",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if not 1_000 <= args.vocab_size <= 100_000:
        parser.error("--vocab-size must be between 1,000 and 100,000.")
    tuned = [int(c) for c in args.tuned_cutoffs.split(",") if c]
    args.also = [a for a in args.also.split(",") if a]
    root = data_dir() / "gutenberg"
    if not (root / "train.txt").is_file():
        print(f"gutenberg not found in {root} (set RNNKIT_DATA); nothing to measure.")
        return 0 if args.quick else 2
    torch.set_num_threads(args.threads)
    if args.quick:
        args.rounds, args.seconds, args.warmup, args.hidden = 2, 0.2, 1, 64
        args.rnnlm_batches, args.quality_dir = "64", None
    machine = print_machine()
    peak = gemm_peak(1024 if args.quick else 2048, torch.float32, 0.3 if args.quick else 3.0)
    print(f"fp32 GEMM peak (torch.matmul, {args.threads} threads): {peak:,.0f} GFLOP/s")
    record: dict[str, Any] = {"machine": machine, "quick": args.quick, "gemm_peak_fp32": peak}
    cands = {}
    if not args.skip_speed:  # (the vocabulary is --vocab-size: gutenberg has more words)
        data = Data(root, args.vocab_size, args.quick)
        print(
            f"gutenberg (words tokenizer): vocabulary {data.V:,}, train {len(data.train):,} "
            f"tokens (read in {data.load_s:.0f} s), {len(data.bounds) - 1} classes\n"
        )
        cands = layers(data.V, tuned)
        tuned_name = list(cands)[-1]
        timed = {**cands, tuned_name + " unfused": {**cands[tuned_name], "unfused": True}}
        rows = speed(data, args.hidden, timed, [args.batch_size], args.bptt, args, peak)
        print_speed(
            f"training tokens/s, Elman 1x{args.hidden}, batch {args.batch_size}, bptt "
            f"{args.bptt}, Adam, fp32, {args.threads} thread(s); {args.rounds} rounds of "
            f"~{args.seconds:g} s",
            rows,
        )
        record["speed"] = rows
    if not args.skip_speed and not args.skip_rnnlm:
        fast = {k: v for k, v in cands.items() if k in ("class", list(cands)[-1])}
        small = 32 if args.quick else 100
        rnnlm = speed(
            data, small, fast,
            [int(b) for b in args.rnnlm_batches.split(",")], args.bptt, args, peak,
        )  # fmt: skip
        print_speed(
            f"the rnnlm-0.4b figure: Elman 1x{small}, V {data.V:,}, {args.threads} thread(s) "
            f"(rnnlm-0.4b: ~{RNNLM_WORDS_PER_S:,} words/s)",
            rnnlm,
        )
        record["rnnlm"] = rnnlm
        record["rnnlm_best_tokens_per_s"] = max(r["tokens_per_s"] for r in rnnlm)
    if args.quality_dir:
        cands = cands or layers(args.vocab_size, tuned)
        q = quality(root, cands, args)
        record["quality"] = q
        print_side_by_side(record.get("speed", []), q, args.quality_time)
    settings = {
        "vocab_size": args.vocab_size, "hidden": args.hidden, "batch_size": args.batch_size,
        "bptt": args.bptt, "lr": LR, "clip": CLIP, "threads": args.threads,
        "rounds": args.rounds, "seconds": args.seconds, "quality_time": args.quality_time,
    }  # fmt: skip
    record.update(settings)
    if args.quick:
        print(json.dumps({"benchmark": "output_layers", **record}))
    else:
        emit_json("output_layers", record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
