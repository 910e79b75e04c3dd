"""Character-level LM on tiny Shakespeare: quality in a time budget, and loop overhead.

1. Overhead: rnnkit's Trainer against a plain PyTorch loop (nn.RNN + Linear + cross-entropy,
   same sizes, same batches, same optimizer and clipping), interleaved in rounds in this one
   process; prints both tokens/s and their ratio (rnnkit must add no overhead: >= 1.0).
2. Precision: rnnkit's training speed with --precision fp32 and bf16, side by side.
3. Quality: the Elman RNN and an LSTM trained for --minutes each on the first 90% of tiny
   Shakespeare, validated on the last 10%; prints validation nats/char against the targets
   (Elman <= 1.55, LSTM <= 1.50; nanoGPT's 6-layer transformer: 1.47).

    python benchmarks/char_lm.py                # the figures (about 25 minutes)
    python benchmarks/char_lm.py --quick        # seconds: a smoke test of the same code
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import data_dir, emit_json, peak_rss_mb, print_machine

import rnnkit
from rnnkit.models import ModelConfig, RNNLanguageModel
from rnnkit.tasks.lm import LanguageModelTask
from rnnkit.text import build_vocab, encode_file, resolve_corpus
from rnnkit.text.batching import batchify, num_windows, window
from rnnkit.training import TrainConfig, Trainer

# The configurations measured for the quality figures (also the CLI commands in the note).
QUALITY = {
    "elman": dict(cell="rnn", hidden_size=512, batch_size=64, bptt=64, precision="bf16"),
    "lstm": dict(cell="lstm", hidden_size=512, batch_size=64, bptt=64, precision="bf16"),
}
TARGETS = {"elman": 1.55, "lstm": 1.50}


class PlainRNN(nn.Module):
    """The plain PyTorch baseline: embedding, nn.RNN, linear output, cross-entropy."""

    def __init__(self, vocab: int, hidden: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, hidden)
        self.rnn = nn.RNN(hidden, hidden, batch_first=True)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, x: torch.Tensor, h: torch.Tensor | None):
        a, h = self.rnn(self.emb(x), h)
        return self.out(a), h


def corpus_path() -> Path:
    shared = data_dir() / "tinyshakespeare" / "input.txt"
    return shared if shared.exists() else resolve_corpus(None)


def overhead(hidden: int, batch: int, bptt: int, steps: int, rounds: int) -> dict:
    path = corpus_path()
    vocab = build_vocab(path, "char")
    ids = encode_file(path, vocab).ids
    train_ids = ids[: int(len(ids) * 0.9)]
    columns = batchify(train_ids, batch)
    V = len(vocab)

    torch.manual_seed(0)
    plain = PlainRNN(V, hidden)
    opt = torch.optim.Adam(plain.parameters(), lr=2e-3)
    state = {"h": None, "w": 0}

    def plain_steps(n: int) -> int:
        tokens = 0
        for _ in range(n):
            if state["w"] >= num_windows(columns, bptt):
                state["w"], state["h"] = 0, None
            x, y = window(columns, state["w"], bptt)
            xt = torch.from_numpy(np.ascontiguousarray(x)).long()
            yt = torch.from_numpy(np.ascontiguousarray(y)).long()
            h = state["h"].detach() if state["h"] is not None else None
            logits, h = plain(xt, h)
            loss = nn.functional.cross_entropy(logits.reshape(-1, V), yt.reshape(-1))
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(plain.parameters(), 5.0)
            opt.step()
            state["h"], state["w"] = h, state["w"] + 1
            tokens += yt.numel()
        return tokens

    torch.manual_seed(0)
    model = RNNLanguageModel(ModelConfig(vocab_size=V, cell="rnn", hidden_size=hidden))
    cfg = TrainConfig(batch_size=batch, bptt=bptt, epochs=10_000, lr=2e-3, clip=5.0)
    tmp = Path(tempfile.mkdtemp(prefix="rnnkit-bench-"))
    task = LanguageModelTask.stream(train_ids, ids[-2000:], batch, bptt)
    trainer = Trainer(model, task, cfg, tmp, torch.device("cpu"), progress=False)

    plain_steps(5)  # warm-up both
    trainer.fit(max_steps=5)
    ratios, plain_tps, kit_tps = [], [], []

    def time_plain() -> None:
        t0 = time.perf_counter()
        n = plain_steps(steps)
        plain_tps.append(n / (time.perf_counter() - t0))

    def time_kit() -> None:
        before, t0 = trainer.tokens, time.perf_counter()
        trainer.fit(max_steps=trainer.step + steps)  # the whole loop, bar, metrics, checkpoint
        kit_tps.append((trainer.tokens - before) / (time.perf_counter() - t0))

    for r in range(rounds):  # interleaved, in alternating order, so both see the same machine
        for timed in (time_plain, time_kit) if r % 2 == 0 else (time_kit, time_plain):
            timed()
        ratios.append(kit_tps[-1] / plain_tps[-1])
    ratio = float(np.median(ratios))
    print(
        f"overhead, Elman 1x{hidden}, batch {batch}, bptt {bptt}, {rounds} interleaved rounds of "
        f"{steps} steps: plain PyTorch {np.median(plain_tps):,.0f} chars/s, rnnkit "
        f"{np.median(kit_tps):,.0f} chars/s (medians); ratio rnnkit/plain {ratio:.3f} (median of "
        f"{', '.join(f'{r:.3f}' for r in ratios)})"
    )
    return {
        "plain_chars_per_s": float(np.median(plain_tps)),
        "rnnkit_chars_per_s": float(np.median(kit_tps)),
        "ratio": ratio,
        "round_ratios": ratios,
    }


def precision_speed(cell: str, hidden: int, batch: int, bptt: int, steps: int, rounds: int) -> dict:
    """Training chars/s with --precision fp32 and bf16, interleaved rounds of rnnkit's loop."""
    path = corpus_path()
    vocab = build_vocab(path, "char")
    ids = encode_file(path, vocab).ids
    trainers = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = RNNLanguageModel(ModelConfig(vocab_size=len(vocab), cell=cell, hidden_size=hidden))
        cfg = TrainConfig(batch_size=batch, bptt=bptt, epochs=10_000, precision=precision)
        tmp = Path(tempfile.mkdtemp(prefix="rnnkit-bench-"))
        trainers[precision] = Trainer(
            model, ids[:-2000], ids[-2000:], cfg, tmp, torch.device("cpu"), progress=False
        )
        trainers[precision].fit(max_steps=3)  # warm-up
    speed: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for _ in range(rounds):
        for precision, trainer in trainers.items():
            before, t0 = trainer.tokens, time.perf_counter()
            trainer.fit(max_steps=trainer.step + steps)
            speed[precision].append((trainer.tokens - before) / (time.perf_counter() - t0))
    fp32, bf16 = float(np.median(speed["fp32"])), float(np.median(speed["bf16"]))
    print(
        f"precision, {cell} 1x{hidden}, batch {batch}, bptt {bptt}: fp32 {fp32:,.0f} chars/s, "
        f"bf16 {bf16:,.0f} chars/s (medians of {rounds} interleaved rounds), bf16/fp32 "
        f"{bf16 / fp32:.2f}"
    )
    return {"cell": cell, "fp32_chars_per_s": fp32, "bf16_chars_per_s": bf16, "ratio": bf16 / fp32}


def quality(name: str, minutes: float, quick: bool) -> dict:
    settings = dict(QUALITY[name])
    if quick:
        settings.update(hidden_size=32, batch_size=8, bptt=16)
    with tempfile.TemporaryDirectory(prefix="rnnkit-bench-") as tmp:
        t0 = time.perf_counter()
        result = rnnkit.train(
            str(corpus_path()),
            Path(tmp) / name,
            max_time=minutes * 60,
            validate_every=0 if not quick else 20,  # each epoch
            patience=0,
            epochs=1000,
            progress=False,
            log=lambda msg: print("   ", msg, file=sys.stderr),
            **settings,
        )
        wall = time.perf_counter() - t0
    best = result.best_valid_loss
    target = TARGETS[name]
    flag = "meets" if best <= target else "misses"
    print(
        f"{name}: best validation {best:.4f} nats/char ({best / math.log(2):.4f} bits/char) after "
        f"{wall / 60:.1f} min wall, {result.step} steps, {result.tokens_per_second:,.0f} chars/s; "
        f"{flag} the target {target}"
    )
    return {
        "model": name,
        "settings": settings,
        "best_valid_nats_per_char": best,
        "wall_s": wall,
        "steps": result.step,
        "chars_per_s": result.tokens_per_second,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a few seconds, tiny sizes")
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget per model")
    parser.add_argument("--models", default="elman,lstm", help="comma-separated: elman, lstm")
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-precision", action="store_true")
    args = parser.parse_args()
    machine = print_machine()
    record: dict = {"machine": machine, "quick": args.quick}
    if not args.skip_overhead:
        if args.quick:
            record["overhead"] = overhead(hidden=64, batch=8, bptt=16, steps=5, rounds=2)
        else:
            record["overhead"] = overhead(hidden=512, batch=64, bptt=64, steps=100, rounds=7)
    if not args.skip_precision:
        if args.quick:
            record["precision"] = [precision_speed("rnn", 32, 8, 16, steps=3, rounds=1)]
        else:
            record["precision"] = [
                precision_speed(cell, 512, 64, 64, steps=40, rounds=3) for cell in ("rnn", "lstm")
            ]
    minutes = 0.05 if args.quick else args.minutes
    if not args.skip_quality:
        record["quality"] = [quality(m, minutes, args.quick) for m in args.models.split(",") if m]
    record["peak_rss_mb"] = peak_rss_mb()
    emit_json("char_lm", record)


if __name__ == "__main__":
    main()
