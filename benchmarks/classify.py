"""Sentence classification speed on rt-polarity: rnnkit's classifier against plain PyTorch.

In one process, on the same batches, in interleaved rounds (the order alternating, so the
machine's noise hits both):

- training sentences/s and tokens/s of (a) a plain PyTorch model of the same shape, written
  below (nn.Embedding -> nn.RNN / nn.GRU / nn.LSTM, optionally bidirectional, over
  pack_padded_sequence -> pooling (last, mean, max or additive attention) -> nn.Linear ->
  binary cross-entropy with logits for two classes, else cross-entropy; torch.optim.Adam,
  the gradient norm clipped at 5) and (b) rnnkit's whole loop: ``Trainer.fit`` of the
  :class:`~rnnkit.models.classifier.SequenceClassifier` that ``ClassifyTask.build_model``
  makes, on the ``ClassifyTask`` of ``from_text_files`` (90% train / 10% valid). A round is
  one epoch of each: rnnkit's ``fit(max_steps=trainer.step + trainer.windows)`` (its batching,
  steps, metrics, and the epoch's validation and checkpoint, as in a real run); plain runs
  the same epoch's batches, padded before its clock starts (its data costs it nothing).
  rnnkit is shown with and without the time its validation takes (plain validates nothing);
- prediction sentences/s of rnnkit's ``task.predict(model, lines)`` against the plain
  model's batched no-grad forward (whitespace split, ids by dict, sorted by length,
  pad_sequence, batches of the same size, argmax), over the raw rt-polarity lines; the plain
  model then holds rnnkit's trained weights, and the share of labels they agree on is printed;
- GFLOP/s next to the machine's fp32 GEMM peak (torch.matmul, measured at the start with the
  same threads): multiply-adds of every weight matrix of the recurrent core a token (both
  directions; the attention's projection and scoring vector too) and of the output layer a
  sentence, x2, x3 for training; the embedding lookup and the biases count nothing;
- with ``--run RUN`` (a trained classify run): ``rnnkit.api.classify.predict(RUN, lines)``
  over every rt-polarity line, cold (the run loaded from disk in the call, as the CLI does)
  and warm (already loaded), against the goal of 5,000 sentences/s on this 2-core machine.

The ratios rnnkit/plain (goal: >= 1.0) are the medians of the rounds' ratios. Note that
rnnkit's Adam is ``fused=True``; plain uses torch.optim.Adam's default (``--plain-fused-adam``
gives plain the fused one too, to tell the optimizer from the rest of the loop).

    python benchmarks/classify.py                          # LSTM 1x128, batch 32, 5 rounds
    python benchmarks/classify.py --cell gru --bidirectional --pooling max --threads 2
    python benchmarks/classify.py --run runs/mr            # + predict() of a trained run
    python benchmarks/classify.py --quick                  # seconds: a slice, 1 thread
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence, pad_sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    FitProbe,
    data_dir,
    emit_json,
    gemm_peak,
    interleave,
    print_machine,
    print_rate_rows,
    rate_row,
    timed_batches,
)

from rnnkit.models.classifier import SequenceClassifier
from rnnkit.tasks.classify import ClassifyTask
from rnnkit.training import TrainConfig, Trainer

LR, CLIP = 2e-3, 5.0
GOAL_SENTENCES_PER_S = 5000
RNNS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


class PlainClassifier(nn.Module):
    """The plain PyTorch baseline: embedding, packed RNN, pooling, linear (one logit for two
    classes)."""

    def __init__(
        self, vocab: int, emb: int, hidden: int, cell: str, bidirectional: bool, pooling: str,
        classes: int,
    ) -> None:  # fmt: skip
        super().__init__()
        self.pooling = pooling
        self.emb = nn.Embedding(vocab, emb)
        self.rnn = RNNS[cell](emb, hidden, batch_first=True, bidirectional=bidirectional)
        D = hidden * (2 if bidirectional else 1)
        if pooling == "attention":
            self.attn_proj = nn.Linear(D, D)
            self.attn_v = nn.Linear(D, 1, bias=False)
        self.out = nn.Linear(D, 1 if classes == 2 else classes)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        packed = pack_padded_sequence(self.emb(x), lengths, batch_first=True, enforce_sorted=False)
        out, h = self.rnn(packed)
        if self.pooling == "last":
            h = h[0] if isinstance(h, tuple) else h  # LSTM: (h, c)
            v = torch.cat([h[-2], h[-1]], 1) if self.rnn.bidirectional else h[-1]
            return self.out(v)
        a, _ = pad_packed_sequence(out, batch_first=True)  # (B, T, D), zero at padding
        mask = (torch.arange(a.shape[1])[None, :] < lengths[:, None])[..., None]
        if self.pooling == "mean":
            v = a.sum(1) / lengths[:, None].to(a.dtype)
        elif self.pooling == "max":
            v = a.masked_fill(~mask, float("-inf")).amax(1)
        else:
            s = self.attn_v(torch.tanh(self.attn_proj(a))).masked_fill(~mask, float("-inf"))
            v = (torch.softmax(s, dim=1) * a).sum(1)
        return self.out(v)


def plain_loss(logits: Tensor, labels: Tensor) -> Tensor:
    if logits.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(logits.squeeze(1), labels.float())
    return F.cross_entropy(logits, labels)


def copy_weights(plain: PlainClassifier, model: SequenceClassifier) -> None:
    """rnnkit's trained weights into the plain model (the same shapes, other names)."""
    if model.core.rnn is None or model.embedding is None:
        raise ValueError("only a fused, token-reading classifier maps onto the plain model")
    with torch.no_grad():
        plain.emb.weight.copy_(model.embedding.weight)
        plain.rnn.load_state_dict(model.core.rnn.state_dict())
        plain.out.load_state_dict(model.head.state_dict())
        if model.attention is not None:
            plain.attn_proj.load_state_dict(model.attention.proj.state_dict())
            plain.attn_v.load_state_dict(model.attention.score.state_dict())


@torch.no_grad()
def plain_predict(
    model: PlainClassifier, index: dict[str, int], unk: int, lines: Sequence[str], batch: int
) -> np.ndarray:
    """Class probabilities (N, C) of raw lines: what a plain PyTorch user writes."""
    model.eval()
    seqs = [torch.tensor([index.get(w, unk) for w in line.split()]) for line in lines]
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    out: list[Tensor] = [torch.empty(0)] * len(seqs)
    for s in range(0, len(order), batch):
        idx = order[s : s + batch]
        x = pad_sequence([seqs[i] for i in idx], batch_first=True)
        lengths = torch.tensor([len(seqs[i]) for i in idx])
        o = model(x, lengths)
        p = torch.sigmoid(o) if o.shape[1] == 1 else torch.softmax(o, 1)
        p = torch.cat([1 - p, p], 1) if o.shape[1] == 1 else p
        for i, row in zip(idx, p):
            out[i] = row
    model.train()
    return torch.stack(out).numpy()


def macs(model: SequenceClassifier) -> tuple[float, float]:
    """Multiply-adds of one forward pass: (a token, a sentence). A token: every weight matrix
    of the recurrent core (both directions, every layer) and the attention's projection and
    scoring vector; a sentence: the output layer."""
    core = sum(
        p.numel() for n, p in model.core.named_parameters() if n.rsplit(".", 1)[-1][:6] == "weight"
    )
    if model.attention is not None:
        core += model.attention.proj.weight.numel() + model.attention.score.weight.numel()
    return float(core), float(model.head.weight.numel())


def flops_fn(per_token: float, per_sentence: float, factor: int) -> Callable[[float, float], float]:
    """GFLOP/s of (sentences/s, tokens/s); factor 3 for training, 1 for prediction."""
    return lambda sps, tps: (tps * per_token + sps * per_sentence) * 2 * factor / 1e9


def threads_text() -> str:
    n = torch.get_num_threads()
    return f"{n} thread{'s' if n != 1 else ''}"


def read_lines(paths: Sequence[Path], limit: int | None = None) -> list[str]:
    """The non-blank lines of each file (the first ``limit`` of each), as rnnkit reads them."""
    out = []
    for p in paths:
        lines = [x for x in p.read_text(encoding="utf-8").split("\n") if x.strip()]
        out += lines[:limit]
    return out


# -- the measurements ----------------------------------------------------------------------


def training(
    task: ClassifyTask, model: SequenceClassifier, plain: PlainClassifier, args: Any, tmp: Path
) -> tuple[list[dict], dict]:
    cfg = TrainConfig(
        batch_size=args.batch_size, optimizer="adam", lr=LR, clip=CLIP, epochs=1000,
        lr_schedule="constant", patience=0, seed=args.seed,
    )  # fmt: skip
    (tmp / "run").mkdir()
    trainer = Trainer(model, task, cfg, tmp / "run", torch.device("cpu"), progress=False)
    probe = FitProbe(trainer)
    opt = torch.optim.Adam(plain.parameters(), lr=LR, fused=True if args.plain_fused_adam else None)

    def plain_step(b: Any) -> None:
        loss = plain_loss(plain(b.inputs, b.lengths), b.labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(plain.parameters(), CLIP)
        opt.step()

    epochs = {"plain": 0}

    def plain_epoch() -> dict[str, float]:
        e = epochs["plain"] = epochs["plain"] + 1
        batches = [probe.collate(e, i) for i in range(task.num_batches(e))]  # before the clock
        return timed_batches(batches, plain_step)

    # warm-up: rnnkit's first epoch, plain's first few batches of it
    warm = probe.epoch()
    timed_batches([probe.collate(0, i) for i in range(min(5, task.num_batches(0)))], plain_step)
    got = interleave({"plain": plain_epoch, "rnnkit": probe.epoch}, args.rounds)
    per_token, per_sentence = macs(model)
    flops = flops_fn(per_token, per_sentence, 3)
    rows = [
        rate_row("plain PyTorch loop", got["plain"], None, flops),
        rate_row("rnnkit Trainer.fit, validation left out", got["rnnkit"], got["plain"], flops,
                 less="validate_s"),
        rate_row("rnnkit Trainer.fit, all of it", got["rnnkit"], got["plain"], flops),
    ]  # fmt: skip
    return rows, {"warmup_epoch": warm, "steps_per_epoch": task.num_batches(0)}


def prediction(
    task: ClassifyTask, model: SequenceClassifier, plain: PlainClassifier, lines: list[str],
    args: Any,
) -> tuple[list[dict], dict]:  # fmt: skip
    copy_weights(plain, model)
    assert task.vocab is not None
    index, unk = task.vocab.index, task.vocab.unk_id
    batch = task.eval_batch_size
    tokens = sum(len(x.split()) for x in lines)
    last: dict[str, Any] = {}

    def timed(name: str, fn: Any) -> dict[str, float]:
        t0 = time.perf_counter()
        last[name] = fn()
        return {"seconds": time.perf_counter() - t0, "sentences": len(lines), "tokens": tokens}

    fns = {
        "plain": lambda: timed("plain", lambda: plain_predict(plain, index, unk, lines, batch)),
        "rnnkit": lambda: timed("rnnkit", lambda: task.predict(model, lines)[1]),
    }
    for fn in fns.values():  # warm-up
        fn()
    got = interleave(fns, args.rounds)
    flops = flops_fn(*macs(model), 1)
    rows = [
        rate_row("plain PyTorch, batched no-grad forward", got["plain"], None, flops),
        rate_row("rnnkit task.predict(model, lines)", got["rnnkit"], got["plain"], flops),
    ]
    p, k = last["plain"], last["rnnkit"]
    agree = {
        "same_label": float((p.argmax(1) == k.argmax(1)).mean()),
        "max_abs_prob_diff": float(np.abs(p - k).max()),
    }
    return rows, agree


def run_prediction(run: str, lines: list[str], rounds: int) -> dict[str, Any]:
    """rnnkit.api.classify.predict of a trained run over ``lines``: cold and warm."""
    from rnnkit.api import classify as api

    t0 = time.perf_counter()
    api.predict(run, lines, device="cpu")  # loads the run, as `rnnkit classify predict` does
    cold = time.perf_counter() - t0
    loaded = api.load_classifier(run, device="cpu")
    warm = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        api.predict(loaded, lines, device="cpu")
        warm.append(len(lines) / (time.perf_counter() - t0))
    accuracy: float | None = None
    metrics = Path(run) / "metrics.jsonl"
    if metrics.is_file():
        for line in metrics.read_text().splitlines():
            rec = json.loads(line) if line.strip() else {}
            if rec.get("best") and "valid_accuracy" in rec:
                accuracy = float(rec["valid_accuracy"])  # the last best: the saved weights'
    return {
        "run": str(run), "model": loaded.config.get("model", {}), "valid_accuracy": accuracy,
        "sentences": len(lines), "cold_sentences_per_s": len(lines) / cold,
        "warm_sentences_per_s": float(np.median(warm)), "warm_rounds": warm,
        "goal_sentences_per_s": GOAL_SENTENCES_PER_S,
    }  # fmt: skip


# -- the script ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="seconds: 300 lines a label, 1 thread")
    parser.add_argument(
        "--threads", type=int, help="torch CPU threads (default: torch's; --quick 1)"
    )
    parser.add_argument("--cell", choices=tuple(RNNS), default="lstm", help="recurrent cell (lstm)")
    parser.add_argument("--hidden-size", type=int, default=128, help="units per direction (128)")
    parser.add_argument("--embedding-size", type=int, help="word embedding (= hidden size)")
    parser.add_argument("--bidirectional", action="store_true", help="a bidirectional core")
    parser.add_argument(
        "--pooling", choices=("last", "mean", "max", "attention"), default="last", help="(last)"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="sentences a batch (32)")
    parser.add_argument("--min-count", type=int, default=1, help="rarer words are <unk> (1)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (5; --quick 2)")
    parser.add_argument("--seed", type=int, default=0, help="split, batches and weights (0)")
    parser.add_argument("--run", metavar="RUN", help="also time rnnkit.api.classify.predict(RUN)")
    parser.add_argument(
        "--plain-fused-adam", action="store_true", help="plain uses Adam(fused=True) as rnnkit"
    )
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (2 if args.quick else 5)
    threads = args.threads or (1 if args.quick else None)
    folder = data_dir() / "rt-polarity"
    files = [folder / "rt-polarity.pos", folder / "rt-polarity.neg"]
    if not all(f.is_file() for f in files):
        print(f"rt-polarity not found in {folder} (set RNNKIT_DATA); nothing to measure.")
        return 0 if args.quick else 2
    if args.run and not Path(args.run).is_dir():
        parser.error(f"--run: {args.run!r} is not a run directory")
    if threads:
        torch.set_num_threads(threads)
    machine = print_machine()
    n = 1024 if args.quick else 2048
    peak = gemm_peak(n, torch.float32, 0.3 if args.quick else 3.0)
    print(f"GEMM peak (torch.matmul {n}x{n}, {threads_text()}): fp32 {peak:,.0f} GFLOP/s")
    limit = 300 if args.quick else None
    with tempfile.TemporaryDirectory(prefix="rnnkit-classify-bench-") as tmp:
        if limit:  # a slice: the first lines of each file, under the same names
            for f in files:
                (Path(tmp) / f.name).write_text("\n".join(read_lines([f], limit)) + "\n")
            files = [Path(tmp) / f.name for f in files]
        lines = read_lines(files)
        t0 = time.perf_counter()
        task = ClassifyTask.from_text_files(
            files, valid_fraction=0.1, min_count=args.min_count, batch_size=args.batch_size,
            seed=args.seed,
        )  # fmt: skip
        load_s = time.perf_counter() - t0
        assert task.vocab is not None
        settings = dict(
            cell=args.cell, hidden_size=args.hidden_size, embedding_size=args.embedding_size,
            bidirectional=args.bidirectional, pooling=args.pooling,
            dropout=0.0,  # the plain model has none: the same work on both sides
        )  # fmt: skip
        torch.manual_seed(args.seed)
        model = task.build_model(settings)
        torch.manual_seed(args.seed)
        plain = PlainClassifier(
            len(task.vocab), model.config.input_size, args.hidden_size, args.cell,
            args.bidirectional, args.pooling, len(task.labels),
        )  # fmt: skip
        n_kit = sum(p.numel() for p in model.parameters())
        n_plain = sum(p.numel() for p in plain.parameters())
        train_tokens = sum(len(x) for x in task.train_x)
        per_token, per_sentence = macs(model)
        print(
            f"rt-polarity{' (a slice)' if limit else ''}: {len(lines):,} sentences, "
            f"{len(task.train_x):,} train ({train_tokens / len(task.train_x):.1f} tokens a "
            f"sentence) / {len(task.valid_x):,} valid, vocabulary {len(task.vocab):,}, "
            f"{len(task.labels)} classes; read by rnnkit in {load_s:.2f} s"
        )
        bi = " bidirectional" if args.bidirectional else ""
        print(
            f"model: {args.cell} 1x{args.hidden_size}{bi}, embedding {model.config.input_size}, "
            f"pooling {args.pooling}, batch "
            f"{args.batch_size}; parameters rnnkit {n_kit:,}, plain {n_plain:,}; Adam lr {LR} "
            f"(plain: {'fused' if args.plain_fused_adam else 'torch default'}), clip {CLIP}; "
            f"{per_token:,.0f} multiply-adds a token, {per_sentence:,.0f} a sentence\n"
        )
        train_rows, train_info = training(task, model, plain, args, Path(tmp))
        steps = train_info["steps_per_epoch"]
        print_rate_rows(
            f"training, one epoch ({steps} steps) a round, {args.rounds} interleaved rounds; "
            "medians (x plain: the median of the rounds' ratios)",
            train_rows,
            peak,
        )
        kit_rounds = train_rows[2]["rounds"]
        val = float(np.median([r["validate_s"] for r in kit_rounds]))
        ckpt = float(np.median([r["checkpoint_s"] for r in kit_rounds]))
        print(
            f"rnnkit's epoch spent {val:.3f} s validating ({len(task.valid_x):,} sentences) and "
            f"{ckpt:.3f} s saving its checkpoint (medians)\n"
        )
        pred_rows, agree = prediction(task, model, plain, lines, args)
        print_rate_rows(
            f"prediction of {len(lines):,} raw lines, batches of {task.eval_batch_size}, "
            f"{args.rounds} interleaved rounds",
            pred_rows,
            peak,
        )
        print(
            f"the plain model with rnnkit's trained weights gives the same label for "
            f"{100 * agree['same_label']:.2f}% of the lines (max |difference| of a probability "
            f"{agree['max_abs_prob_diff']:.1e})\n"
        )
    run_rec = None
    if args.run:
        all_lines = read_lines([folder / "rt-polarity.pos", folder / "rt-polarity.neg"], limit)
        run_rec = run_prediction(args.run, all_lines, args.rounds)
        m = run_rec["model"]
        warm = run_rec["warm_sentences_per_s"]
        acc = "n/a" if run_rec["valid_accuracy"] is None else f"{run_rec['valid_accuracy']:.4f}"
        print(
            f"rnnkit.api.classify.predict({args.run}) ({m.get('cell')} {m.get('hidden_size')}"
            f"{' bidirectional' if m.get('bidirectional') else ''}, pooling {m.get('pooling')}; "
            f"best valid accuracy {acc}) over {len(all_lines):,} "
            f"lines: {warm:,.0f} sentences/s loaded (median of {args.rounds}), "
            f"{run_rec['cold_sentences_per_s']:,.0f} with the loading; "
            f"{'meets' if warm >= GOAL_SENTENCES_PER_S else 'misses'} the goal of "
            f"{GOAL_SENTENCES_PER_S:,} sentences/s\n"
        )
    print(
        f"summary: rnnkit/plain training x{train_rows[1]['x_plain']:.3f} (validation left out; "
        f"x{train_rows[2]['x_plain']:.3f} with it), prediction x{pred_rows[1]['x_plain']:.3f} "
        f"(goal >= 1.0); rnnkit trains {train_rows[1]['sentences_per_s']:,.0f} sentences/s, "
        f"predicts {pred_rows[1]['sentences_per_s']:,.0f} sentences/s at "
        f"{threads_text()}"
    )
    record = {
        "machine": machine, "quick": args.quick, "gemm_peak_gflops_fp32": peak, "gemm_n": n,
        "settings": {**settings, "embedding_size": model.config.input_size,
                     "batch_size": args.batch_size, "min_count": args.min_count, "lr": LR,
                     "clip": CLIP, "plain_fused_adam": args.plain_fused_adam, "seed": args.seed},
        "data": {"sentences": len(lines), "train": len(task.train_x),
                 "valid": len(task.valid_x), "vocab": len(task.vocab), "slice": bool(limit)},
        "parameters": n_kit, "macs_per_token": per_token, "macs_per_sentence": per_sentence,
        "rounds": args.rounds, "train": train_rows, "train_info": train_info,
        "predict": pred_rows, "agreement": agree, "run_predict": run_rec,
    }  # fmt: skip
    if args.quick:  # a smoke test: printed, not added to benchmarks/results
        print(json.dumps({"benchmark": "classify", **record}))
    else:
        emit_json("classify", record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
