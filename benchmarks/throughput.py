"""Speed on Penn Treebank: rnnkit against a plain PyTorch model, every figure in one run.

For the Elman RNN at hidden 100, 200 and 650 and the LSTM 2x650 (no dropout), on PTB:

- training tokens/s of (a) plain PyTorch, written in benchmarks/plain.py (the
  word_language_model recipe: nn.RNN / nn.LSTM + Linear + cross-entropy, batch 20, bptt 35,
  Adam, clip 0.25) and (b) rnnkit's real training step (Trainer.train_step: the batch view,
  autocast, the loss, backward, clipping, the Adam step) with each output layer (full, class,
  adaptive), fp32 and bf16, at --batch-size (64) and at the plain batch 20; timed in chunks of
  about --seconds, in --rounds rounds that interleave plain and rnnkit, the order rotated each
  round (the machine's noise hits both); medians, and the ratio to (a) as the median of each
  round's ratio;
- evaluation tokens/s over ptb.valid.txt (rnnkit's stream evaluation, as ``rnnkit eval``:
  batch 16, bptt 256; plain: batch 10, bptt 35); scoring tokens/s (``rnnkit.score`` of the
  first 1,000 ptb.test.txt sentences, against plain's stream evaluation); single-stream
  generation tokens/s (``rnnkit.generate``, one sample; untrained weights: the speed does not
  depend on them); all fp32;
- GFLOP/s achieved (multiply-adds per token of the input projection, the recurrence and the
  output layer, x2, x3 for training; the class and adaptive layers' costs weighted by the
  PTB training frequencies of their classes / clusters; predicted tokens only) next to the
  machine's GEMM peak (torch.matmul, fp32 and bf16, measured at the start of this run with
  the same threads);
- peak memory: peak RSS of training subprocesses (``rnnkit train --max-steps`` on PTB with
  each output layer, ``plain.py --steps``), and with --memory-100m of ``rnnkit train`` on a
  synthetic 100M-token corpus (Zipf words from a 10k vocabulary, ~20 words a line) against
  the same on 1M tokens: the bytes per token beyond a small corpus (the ids alone: 4).

    python benchmarks/throughput.py                        # everything (~30 min, 2 cores)
    python benchmarks/throughput.py --models elman200 --threads 1
    python benchmarks/throughput.py --memory-100m          # adds the 100M-token corpus
    python benchmarks/throughput.py --quick                # seconds: hidden 100, tiny counts
    python benchmarks/throughput.py --models elman650 --outputs full,full-unfused --threads 1
        # the fused full-softmax loss against the unfused one, in shared rounds
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import plain
from common import ROOT, data_dir, emit_json, gemm_peak, interleave, print_machine

import rnnkit
from rnnkit.evaluation.stream import stream_log_probs
from rnnkit.models import ModelConfig, make_model
from rnnkit.models.output import AdaptiveSoftmax, ClassSoftmax, default_classes, frequency_classes
from rnnkit.tasks.lm import LanguageModelTask
from rnnkit.text import encode_file
from rnnkit.text.dataset import DataConfig, prepare_data
from rnnkit.training import TrainConfig, Trainer
from rnnkit.training.checkpoint import LoadedRun

MODELS = {  # name: (cell, hidden, layers)
    "elman100": ("rnn", 100, 1),
    "elman200": ("rnn", 200, 1),
    "elman650": ("rnn", 650, 1),
    "lstm650x2": ("lstm", 650, 2),
}
OUTPUTS = ("full", "class", "adaptive")
# extra --outputs choices: the full softmax through its old path, F.linear + F.cross_entropy
# with the whole (positions x V) logits, beside the fused, chunked loss ("full")
UNFUSED = "full-unfused"
PRECISIONS = ("fp32", "bf16")
PLAIN_BATCH, BPTT, LR, CLIP = 20, 35, 1e-3, 0.25


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


# -- the machine's GEMM peak and the work per token ----------------------------------------


def forward_macs(model: Any, freq: np.ndarray, every_word: bool = False) -> float:
    """Multiply-adds per token of one forward step: input projection and recurrence (every
    weight matrix of the recurrent core) and the output layer, for the target word only
    (training, evaluation: class and adaptive costs weighted by ``freq``) or for every word
    (sampling). The embedding lookup and the biases cost nothing here."""
    rnn = model.rnn
    core = sum(p.numel() for name, p in rnn.named_parameters() if name.startswith("weight"))
    head = getattr(model, "head", None)
    if isinstance(head, ClassSoftmax):
        C, H = len(head.bounds) - 1, head.classes.weight.shape[1]
        pairs = list(zip(head.bounds[:-1], head.bounds[1:]))
        if every_word:
            return core + H * (C + head.bounds[-1])
        expected = sum(freq[a:b].sum() * (b - a) for a, b in pairs)  # E|class of the target|
        return core + H * (C + expected)
    if isinstance(head, AdaptiveSoftmax):
        ada = head.adaptive
        macs = float(ada.head.weight.numel())
        for i, tail in enumerate(ada.tail):
            share = 1.0 if every_word else freq[ada.cutoffs[i] : ada.cutoffs[i + 1]].sum()
            macs += share * sum(m.weight.numel() for m in tail)
        return core + macs
    out = head.linear.weight if head is not None else model.decoder.weight  # rnnkit's / plain
    return core + out.numel()


def gflops(tokens_per_s: float, macs: float, factor: int) -> float:
    """factor 3 for training (backward ~ 2x forward), 1 for evaluation."""
    return tokens_per_s * macs * 2 * factor / 1e9


# -- timing --------------------------------------------------------------------------------


def timed_chunk(step: Callable[[], Any], steps: int, tokens: Callable[[], int]) -> float:
    """Tokens/s over ``steps`` calls of ``step``."""
    before, t0 = tokens(), time.perf_counter()
    for _ in range(steps):
        step()
    return (tokens() - before) / (time.perf_counter() - t0)


def calibrate(step: Callable[[], Any], seconds: float, warmup: int) -> int:
    """Warm up, then how many steps make a chunk of about ``seconds``."""
    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    step()
    step()
    return max(1, round(seconds / ((time.perf_counter() - t0) / 2)))


def round_ratios(kit: list[float], base: list[float]) -> float:
    return median([a / b for a, b in zip(kit, base)])


def tokens(trainer: Trainer) -> int:
    return trainer.tokens


def kit_step(trainer: Trainer) -> None:
    """One real rnnkit training step, with the epoch wrap that Trainer.fit does."""
    if trainer.window >= trainer.windows:
        trainer.window, trainer.epoch = 0, trainer.epoch + 1
    if trainer.window == 0:
        trainer.carry = None
    trainer.train_step()


# -- the measurements ----------------------------------------------------------------------


class Data:
    def __init__(self, ptb: Path, quick: bool) -> None:
        t0 = time.perf_counter()
        data = prepare_data(
            DataConfig(
                corpus=str(ptb / "ptb.train.txt"), valid=str(ptb / "ptb.valid.txt"), level="word"
            ),
            None,
        )
        self.load_s = time.perf_counter() - t0
        self.vocab, self.train, self.valid = data.vocab, data.train_ids, data.valid_ids
        self.test_lines = (ptb / "ptb.test.txt").read_text().splitlines()
        self.test = encode_file(ptb / "ptb.test.txt", self.vocab).ids
        self.V = len(self.vocab)
        counts = np.bincount(self.train, minlength=self.V)
        self.freq = counts / counts.sum()
        self.bounds = frequency_classes(counts, default_classes(self.V))
        # scoring: the first 1,000 test sentences (~22k tokens; --quick: valid cut too)
        self.test_lines = self.test_lines[: 300 if quick else 1000]
        if quick:
            self.valid = self.valid[:20_000]
        self.train_t = torch.from_numpy(self.train.astype(np.int64))
        self.valid_t = torch.from_numpy(self.valid.astype(np.int64))


def kit_model(data: Data, cell: str, hidden: int, layers: int, output: str) -> Any:
    torch.manual_seed(0)
    bounds = data.bounds if output == "class" else None
    model = make_model(
        ModelConfig(
            vocab_size=data.V, cell=cell, hidden_size=hidden, num_layers=layers,
            output="full" if output == UNFUSED else output, class_bounds=bounds,
        )
    )  # fmt: skip
    if output == UNFUSED:
        head: Any = model.head
        head.fused_rows = None
    return model


def training(
    data: Data, cell: str, hidden: int, layers: int, args: argparse.Namespace, peaks: dict
) -> list[dict]:
    torch.manual_seed(0)
    prun = plain.PlainRun(
        plain.PlainLM(data.V, hidden, layers, cell), data.train_t, PLAIN_BATCH, BPTT, lr=LR
    )
    pmacs = forward_macs(prun.model, data.freq)
    psteps = calibrate(prun.step, args.seconds, args.warmup)
    plain_chunk = lambda: timed_chunk(prun.step, psteps, lambda: prun.tokens)  # noqa: E731
    plain_all: list[float] = []
    rows: list[dict] = []
    batches = sorted({PLAIN_BATCH, args.batch_size})
    # the full softmax fused and unfused share their rounds: their ratio is measured directly
    pair = [o for o in args.outputs if o in ("full", UNFUSED)]
    groups = [[o] for o in args.outputs if o not in pair or len(pair) == 1]
    if len(pair) == 2:
        groups.insert(args.outputs.index(pair[0]), pair)
    with tempfile.TemporaryDirectory(prefix="rnnkit-throughput-") as tmp:
        for outputs in groups:
            for precision in args.precisions:
                rows += train_group(data, cell, hidden, layers, outputs, precision, args, peaks,
                                    batches, plain_chunk, plain_all, Path(tmp))  # fmt: skip
    tps = median(plain_all)
    rows.insert(
        0,
        {
            "impl": "plain", "output": "full", "precision": "fp32", "batch": PLAIN_BATCH,
            "tokens_per_s": tps, "x_plain": 1.0, "gflops": gflops(tps, pmacs, 3),
            "peak_gflops": peaks["fp32"], "rounds": plain_all,
        },
    )  # fmt: skip
    return rows


def train_group(
    data: Data,
    cell: str,
    hidden: int,
    layers: int,
    outputs: list[str],
    precision: str,
    args: argparse.Namespace,
    peaks: dict,
    batches: list[int],
    plain_chunk: Callable[[], float],
    plain_all: list[float],
    tmp: Path,
) -> list[dict]:
    """rnnkit with each output layer at each batch size, in rounds interleaved with plain (its
    results join plain_all); with full and full-unfused, the fused layer's speed-up over the
    unfused one, the median of the rounds' ratios."""
    fns: dict[str, Callable[[], float]] = {"plain": plain_chunk}
    macs: dict[str, float] = {}
    for output in outputs:
        for b in batches:
            model = kit_model(data, cell, hidden, layers, output)
            macs[output] = forward_macs(model, data.freq)
            cfg = TrainConfig(
                batch_size=b, bptt=BPTT, optimizer="adam", lr=LR, clip=CLIP,
                precision=precision, epochs=10**6,
            )  # fmt: skip
            task = LanguageModelTask.stream(data.train, data.valid, b, BPTT, level="word")
            tr = Trainer(
                model, task, cfg, tmp / f"{output}-{precision}-{b}", torch.device("cpu"),
                progress=False,
            )  # fmt: skip
            n = calibrate(partial(kit_step, tr), args.seconds, args.warmup)
            fns[f"{output}/{b}"] = partial(
                timed_chunk, partial(kit_step, tr), n, partial(tokens, tr)
            )
    got = interleave(fns, args.rounds)
    plain_all += got["plain"]
    rows = []
    for output in outputs:
        for b in batches:
            key = f"{output}/{b}"
            tps = median(got[key])
            row = {
                "impl": "rnnkit", "output": output, "precision": precision, "batch": b,
                "tokens_per_s": tps, "x_plain": round_ratios(got[key], got["plain"]),
                "gflops": gflops(tps, macs[output], 3), "peak_gflops": peaks[precision],
                "rounds": got[key],
            }  # fmt: skip
            if output == "full" and f"{UNFUSED}/{b}" in got:
                row["x_unfused"] = round_ratios(got[key], got[f"{UNFUSED}/{b}"])
            rows.append(row)
    print_rows(rows, hidden, cell, layers)
    return rows


def inference(
    data: Data, cell: str, hidden: int, layers: int, args: argparse.Namespace, peaks: dict
) -> dict[str, list[dict]]:
    """Evaluation, scoring and generation tokens/s, fp32."""
    torch.manual_seed(0)
    pmodel = plain.PlainLM(data.V, hidden, layers, cell)
    models = {o: kit_model(data, cell, hidden, layers, o) for o in args.outputs}
    runs = {
        o: LoadedRun(Path("untrained"), m, data.vocab, {"data": {"mode": "stream"}})
        for o, m in models.items()
    }
    rounds = args.eval_rounds

    def plain_eval() -> float:
        t0 = time.perf_counter()
        _, n = plain.evaluate(pmodel, data.valid_t, 10, BPTT)
        return n / (time.perf_counter() - t0)

    def kit_eval(o: str) -> float:
        t0 = time.perf_counter()
        n = len(stream_log_probs(models[o], data.valid, batch_size=16, bptt=256))
        return n / (time.perf_counter() - t0)

    def kit_score(o: str) -> float:
        t0 = time.perf_counter()
        n = rnnkit.score(runs[o], sentences=data.test_lines, device="cpu").num_tokens
        return n / (time.perf_counter() - t0)

    def plain_gen() -> float:
        t0 = time.perf_counter()
        n = len(plain.generate(pmodel, args.gen_tokens))
        return n / (time.perf_counter() - t0)

    def kit_gen(o: str) -> float:
        t0 = time.perf_counter()
        rnnkit.generate(runs[o], max_new_tokens=args.gen_tokens, seed=0, device="cpu")
        return args.gen_tokens / (time.perf_counter() - t0)  # stream mode: never stops early

    plain_gen(), kit_eval(args.outputs[0])  # warm-up
    out: dict[str, list[dict]] = {}
    for what, base, kit, factor, every in (
        ("evaluation", plain_eval, kit_eval, 1, False),
        ("scoring", plain_eval, kit_score, 1, False),
        ("generation", plain_gen, kit_gen, 1, True),
    ):
        fns = {"plain": base, **{o: (lambda o=o, kit=kit: kit(o)) for o in args.outputs}}
        got = interleave(fns, rounds)
        pm = forward_macs(pmodel, data.freq, every)
        rows = [
            {
                "impl": "plain", "output": "full", "tokens_per_s": median(got["plain"]),
                "x_plain": 1.0, "gflops": gflops(median(got["plain"]), pm, factor),
            }
        ]  # fmt: skip
        for o in args.outputs:
            tps = median(got[o])
            rows.append(
                {
                    "impl": "rnnkit", "output": o, "tokens_per_s": tps,
                    "x_plain": round_ratios(got[o], got["plain"]),
                    "gflops": gflops(tps, forward_macs(models[o], data.freq, every), factor),
                }
            )  # fmt: skip
        out[what] = rows
    print_inference(out, hidden, cell, layers, peaks["fp32"])
    return out


# -- peak memory in subprocesses -------------------------------------------------------------


# A child's ru_maxrss starts from its parent's RSS at fork (Linux keeps the high-water mark
# across exec), and this process holds gigabytes; so a small launcher forks the command and
# reports its child's peak.
LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
open(sys.argv[1], "w").write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def peak_rss(cmd: list[str]) -> dict:
    """Run ``cmd``; its own peak RSS (MB) and wall seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        out, err = Path(tmp) / "maxrss", Path(tmp) / "stderr"
        t0 = time.perf_counter()
        with err.open("wb") as f:
            code = subprocess.run(
                [sys.executable, "-c", LAUNCHER, str(out), *cmd],
                stdout=subprocess.DEVNULL, stderr=f, cwd=ROOT,
            ).returncode  # fmt: skip
        wall = time.perf_counter() - t0
        if code != 0:
            tail = err.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{' '.join(cmd)} failed ({code}):\n{tail}")
        kb = int(out.read_text())
    return {"peak_rss_mb": kb / 1024, "wall_s": wall, "command": " ".join(cmd)}


def rnnkit_train_cmd(corpus: Path, valid: Path, out: Path, steps: int, threads: int | None, **kw):
    cmd = [
        sys.executable, "-m", "rnnkit", "train", str(corpus), "--valid", str(valid),
        "--level", "word", "--out", str(out), "--overwrite", "--max-steps", str(steps),
        "--no-progress", "--device", "cpu",
    ]  # fmt: skip
    for k, v in kw.items():
        cmd += ["--" + k.replace("_", "-"), str(v)]
    return cmd + (["--threads", str(threads)] if threads else [])


def memory(ptb: Path, cell: str, hidden: int, layers: int, args: argparse.Namespace) -> list[dict]:
    """Peak RSS of plain.py and of ``rnnkit train`` with each output layer, on PTB."""
    threads = ["--threads", str(args.threads)] if args.threads else []
    rows = []
    p = peak_rss(
        [
            sys.executable, str(ROOT / "benchmarks" / "plain.py"), "--data", str(ptb), "--cell",
            cell, "--hidden", str(hidden), "--layers", str(layers), "--steps",
            str(args.memory_steps), *threads,
        ]
    )  # fmt: skip
    rows.append({"impl": "plain", "output": "full", "batch": PLAIN_BATCH, **p})
    with tempfile.TemporaryDirectory(prefix="rnnkit-mem-") as tmp:
        for o in (o for o in args.outputs if o != UNFUSED):  # the CLI has no unfused layer
            cmd = rnnkit_train_cmd(
                ptb / "ptb.train.txt", ptb / "ptb.valid.txt", Path(tmp) / o, args.memory_steps,
                args.threads, cell=cell, hidden_size=hidden, num_layers=layers, output=o,
                batch_size=args.batch_size, bptt=BPTT,
            )  # fmt: skip
            rows.append({"impl": "rnnkit", "output": o, "batch": args.batch_size, **peak_rss(cmd)})
    for r in rows:
        r["x_plain"] = r["peak_rss_mb"] / rows[0]["peak_rss_mb"]
    return rows


def write_zipf_corpus(path: Path, tokens: int, vocab: int = 10_000, seed: int = 0) -> int:
    """``tokens`` words drawn from a Zipf law over ``vocab`` word types, about 20 words a
    line (the line ends are decided per word, so line lengths vary); returns the word count."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, vocab + 1)
    p /= p.sum()
    words = [f"w{i}".encode() for i in range(vocab)]
    table = [w + b" " for w in words] + [w + b"\n" for w in words]
    written = 0
    with path.open("wb") as f:
        while written < tokens:
            n = min(1 << 20, tokens - written)
            ids = rng.choice(vocab, size=n, p=p) + vocab * (rng.random(n) < 1 / 20)
            ids[-1] = ids[-1] % vocab + vocab  # a chunk ends a line
            f.write(b"".join(map(table.__getitem__, ids.tolist())))
            written += n
    return written


def memory_big(args: argparse.Namespace) -> dict:
    """Peak RSS of ``rnnkit train`` on a big synthetic corpus against a 1M-token one."""
    big = args.memory_tokens
    small = min(1_000_000, big // 10)
    kw = dict(cell="rnn", hidden_size=200, output="class", batch_size=64, bptt=BPTT)
    steps = 20 if args.quick else 300
    out: dict[str, Any] = {"settings": kw, "steps": steps}
    with tempfile.TemporaryDirectory(prefix="rnnkit-mem-", dir=args.tmp) as tmp:
        d = Path(tmp)
        write_zipf_corpus(d / "valid.txt", 20_000, seed=1)
        for name, n in (("small", small), ("big", big)):
            t0 = time.perf_counter()
            write_zipf_corpus(d / "corpus.txt", n)
            size = (d / "corpus.txt").stat().st_size
            print(
                f"  wrote {n:,} tokens ({size / 1e6:,.0f} MB) in {time.perf_counter() - t0:.0f} s"
            )
            cmd = rnnkit_train_cmd(
                d / "corpus.txt", d / "valid.txt", d / name, steps, args.threads, **kw
            )
            out[name] = {"tokens": n, "file_mb": size / 1e6, **peak_rss(cmd)}
            (d / "corpus.txt").unlink()
    extra = (out["big"]["peak_rss_mb"] - out["small"]["peak_rss_mb"]) * 2**20
    out["bytes_per_token_beyond_small"] = extra / (big - small)
    print(
        f"peak RSS of rnnkit train ({steps} steps, Elman 200, class output) on synthetic Zipf "
        f"corpora: {small:,} tokens {out['small']['peak_rss_mb']:,.0f} MB "
        f"({out['small']['wall_s']:.0f} s), {big:,} tokens {out['big']['peak_rss_mb']:,.0f} MB "
        f"({out['big']['wall_s']:.0f} s): {out['bytes_per_token_beyond_small']:.1f} bytes per "
        f"token beyond the small corpus (the int32 ids alone: 4)"
    )
    return out


# -- printing ----------------------------------------------------------------------------------


def label(cell: str, hidden: int, layers: int) -> str:
    return f"{'elman' if cell == 'rnn' else cell} {layers}x{hidden}"


def print_rows(rows: list[dict], hidden: int, cell: str, layers: int) -> None:
    for r in rows:
        print(
            f"{label(cell, hidden, layers):<13} {r['impl']:<7} {r['output']:<12} {r['precision']:<5} "
            f"{r['batch']:>5} {r['tokens_per_s']:>11,.0f} {r['x_plain']:>8.2f} "
            f"{r['gflops']:>8.1f} {100 * r['gflops'] / r['peak_gflops']:>6.1f}%"
            + (f"  x{r['x_unfused']:.2f} unfused" if "x_unfused" in r else ""),
            flush=True,
        )


TRAIN_HEADER = (
    f"{'model':<13} {'impl':<7} {'output':<12} {'prec':<5} {'batch':>5} {'tokens/s':>11} "
    f"{'x plain':>8} {'GFLOP/s':>8} {'%peak':>7}"
)


def print_inference(out: dict, hidden: int, cell: str, layers: int, peak: float) -> None:
    print(
        f"\n{label(cell, hidden, layers)}, fp32 (x plain: against plain PyTorch's stream "
        "evaluation for evaluation and scoring, its sampling loop for generation)"
    )
    print(
        f"{'':<11} {'impl':<7} {'output':<12} {'tokens/s':>11} {'x plain':>8} {'GFLOP/s':>8} "
        f"{'%peak':>7}"
    )
    for what, rows in out.items():
        for r in rows:
            print(
                f"{what:<11} {r['impl']:<7} {r['output']:<12} {r['tokens_per_s']:>11,.0f} "
                f"{r['x_plain']:>8.2f} {r['gflops']:>8.1f} {100 * r['gflops'] / peak:>6.1f}%"
            )
    print(flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="seconds: hidden 100, tiny counts")
    parser.add_argument(
        "--models", default=",".join(MODELS), help="comma-separated: " + ", ".join(MODELS)
    )
    parser.add_argument(
        "--outputs",
        default=",".join(OUTPUTS),
        help=f"rnnkit's output layers ({', '.join(OUTPUTS)}, and {UNFUSED}: the full softmax "
        "with its whole logits, unfused, for comparison)",
    )
    parser.add_argument("--precisions", default=",".join(PRECISIONS), help="fp32, bf16")
    parser.add_argument(
        "--batch-size", type=int, default=64, help="rnnkit's batch (also run at 20)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="interleaved training rounds (5)")
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per timed chunk (2)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (3)")
    parser.add_argument("--eval-rounds", type=int, default=3, help="interleaved inference rounds")
    parser.add_argument("--gen-tokens", type=int, default=500, help="tokens per generation (500)")
    parser.add_argument("--memory-steps", type=int, default=20, help="steps of each memory run")
    parser.add_argument("--skip-memory", action="store_true", help="no peak-RSS subprocesses")
    parser.add_argument("--skip-inference", action="store_true", help="training only")
    parser.add_argument(
        "--memory-100m", action="store_true", help="also rnnkit train on a 100M-token corpus"
    )
    parser.add_argument(
        "--memory-tokens", type=int, default=100_000_000, help="--memory-100m's corpus size"
    )
    parser.add_argument("--tmp", help="folder for the synthetic corpus (default: the system's)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    args.outputs = [o for o in args.outputs.split(",") if o]
    args.precisions = [p for p in args.precisions.split(",") if p]
    names = [m for m in args.models.split(",") if m]
    for n in names:
        if n not in MODELS:
            parser.error(f"--models: unknown model {n!r}; choose from {', '.join(MODELS)}")
    if args.quick:
        names = ["elman100"]
        args.rounds, args.seconds, args.warmup, args.eval_rounds = 2, 0.15, 1, 1
        args.gen_tokens, args.memory_steps = 30, 3
        if args.memory_tokens == 100_000_000:
            args.memory_tokens = 2_000_000
    ptb = data_dir() / "ptb"
    if not (ptb / "ptb.train.txt").is_file():
        print(f"PTB not found in {ptb} (set RNNKIT_DATA); nothing to measure.")
        return 0 if args.quick else 2
    if args.threads:
        torch.set_num_threads(args.threads)
    machine = print_machine()
    n = 1024 if args.quick else 2048
    peaks = {
        "fp32": gemm_peak(n, torch.float32, 0.3 if args.quick else 3.0),
        "bf16": gemm_peak(n, torch.bfloat16, 0.3 if args.quick else 3.0),
    }
    print(
        f"GEMM peak (torch.matmul {n}x{n}, {torch.get_num_threads()} threads): fp32 "
        f"{peaks['fp32']:,.0f} GFLOP/s, bf16 {peaks['bf16']:,.0f} GFLOP/s"
    )
    data = Data(ptb, args.quick)
    print(
        f"PTB: vocabulary {data.V:,}, train {len(data.train):,} tokens (read by rnnkit in "
        f"{data.load_s:.1f} s), {len(data.bounds) - 1} classes; Adam lr {LR}, clip {CLIP}, bptt "
        f"{BPTT}; {args.rounds} interleaved rounds of ~{args.seconds:g} s chunks\n"
    )
    records = []
    for name in names:
        cell, hidden, layers = MODELS[name]
        rec: dict[str, Any] = {"model": name, "cell": cell, "hidden": hidden, "layers": layers}
        print(f"training tokens/s (GFLOP/s, % of the fp32 or bf16 GEMM peak)\n{TRAIN_HEADER}")
        rec["train"] = training(data, cell, hidden, layers, args, peaks)
        print_rows(rec["train"][:1], hidden, cell, layers)
        if not args.skip_inference:
            rec.update(inference(data, cell, hidden, layers, args, peaks))
        if not args.skip_memory:
            rec["memory"] = memory(ptb, cell, hidden, layers, args)
            print(
                f"{label(cell, hidden, layers)} peak RSS of {args.memory_steps} training steps: "
                + ", ".join(
                    f"{r['impl'] if r['impl'] == 'plain' else 'rnnkit ' + r['output']} "
                    f"{r['peak_rss_mb']:,.0f} MB (x{r['x_plain']:.2f})"
                    for r in rec["memory"]
                )
                + "\n",
                flush=True,
            )
        records.append(rec)
    extra: dict[str, Any] = {}
    if not args.skip_memory:
        extra["import_rss_mb"] = peak_rss([sys.executable, "-c", "import torch, rnnkit.api"])[
            "peak_rss_mb"
        ]
        print(f"peak RSS of importing torch and rnnkit alone: {extra['import_rss_mb']:,.0f} MB")
    if args.memory_100m:
        extra["memory_big_corpus"] = memory_big(args)
    summary(records)
    common = {
        "machine": machine, "quick": args.quick, "gemm_peak_gflops": peaks, "gemm_n": n,
        "batch_size": args.batch_size, "plain_batch": PLAIN_BATCH, "bptt": BPTT,
        "rounds": args.rounds, "seconds": args.seconds, **extra,
    }  # fmt: skip
    for rec in records:
        line = {**rec, **common}
        if args.quick:  # a smoke test: printed, not added to benchmarks/results
            print(json.dumps({"benchmark": "throughput", **line}))
        else:
            emit_json("throughput", line)
    return 0


def summary(records: list[dict]) -> None:
    """Each model's best rnnkit training speed against plain."""
    print("\nsummary: rnnkit's fastest training setting against plain PyTorch (batch 20, fp32)")
    for rec in records:
        base, kit = rec["train"][0], max(rec["train"][1:], key=lambda r: r["tokens_per_s"])
        same = max(
            (r for r in rec["train"][1:] if r["batch"] == PLAIN_BATCH and r["precision"] == "fp32"),
            key=lambda r: r["tokens_per_s"],
            default=None,
        )
        text = (
            f"{label(rec['cell'], rec['hidden'], rec['layers']):<13} plain {base['tokens_per_s']:>9,.0f} "
            f"tokens/s; rnnkit {kit['tokens_per_s']:>9,.0f} ({kit['output']}, {kit['precision']}, "
            f"batch {kit['batch']}): x{kit['x_plain']:.2f}"
        )
        if same is not None:
            text += f"; at batch 20 fp32 ({same['output']}): x{same['x_plain']:.2f}"
        print(text)


if __name__ == "__main__":
    raise SystemExit(main())
