"""Sequence tagging speed on CoNLL-2000 chunking: rnnkit's tagger against plain PyTorch.

In one process, on the same batches, in interleaved rounds (the order alternating, so the
machine's noise hits both):

- training tokens/s (and sentences/s) of (a) a plain PyTorch tagger of the same shape,
  written below (word nn.Embedding and POS nn.Embedding, concatenated -> nn.LSTM / nn.GRU /
  nn.RNN, bidirectional by default, over pack_padded_sequence -> nn.Linear -> cross-entropy
  over the real tokens; torch.optim.Adam, the gradient norm clipped at 5) and (b) rnnkit's
  whole loop: ``Trainer.fit`` of the :class:`~rnnkit.models.tagger.SequenceTagger` that
  ``TagTask.build_model`` makes, on ``TagTask.prepare(train.txt, test.txt, word_column=0,
  label_column=-1, feature_columns=[1], unseen_labels="score")``. A round is one epoch of
  each: rnnkit's ``fit(max_steps=trainer.step + trainer.windows)`` (its batching, steps,
  metrics, and the epoch's validation, with conlleval's chunk F1, and checkpoint, as in a
  real run); plain runs the same epoch's batches, padded before its clock starts (its data
  costs it nothing). rnnkit is shown with and without the time its validation takes (plain
  validates nothing). With ``--crf`` rnnkit trains a linear-chain CRF (the forward algorithm
  on top of the emissions) while plain stays a softmax tagger: the ratio then prices the CRF;
- tagging tokens/s of rnnkit's ``task.predict_sentences(model, sentences)`` over test.txt
  (words and POS tags read once, labels ignored) against the plain model's batched no-grad
  forward (ids by dict, sorted by length, pad_sequence, batches of the same size, argmax);
  the plain model then holds rnnkit's trained weights, and the share of tokens whose label
  they agree on is printed (with ``--crf``: rnnkit's Viterbi path against plain's argmax);
- GFLOP/s next to the machine's fp32 GEMM peak (torch.matmul, measured at the start with the
  same threads): multiply-adds a token of every weight matrix of the recurrent core (both
  directions) and of the emission layer, x2, x3 for training; the embedding lookups, the
  biases and the CRF's label-by-label sums count nothing.

The ratios rnnkit/plain (goal: >= 1.0) are the medians of the rounds' ratios. rnnkit's
Adam is ``fused=True``; plain uses torch.optim.Adam's default (``--plain-fused-adam`` gives
plain the fused one too).

    python benchmarks/tag.py                       # BiLSTM 128, embeddings 100 + 16, batch 32
    python benchmarks/tag.py --crf --threads 2     # rnnkit's BiLSTM-CRF against plain softmax
    python benchmarks/tag.py --quick               # seconds: a slice, 1 thread
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

from rnnkit.models.tagger import SequenceTagger
from rnnkit.tasks.tag import TagTask
from rnnkit.text.columns import Sentence, read_columns
from rnnkit.training import TrainConfig, Trainer

LR, CLIP = 2e-3, 5.0
RNNS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}
POS_COLUMN = 1


class PlainTagger(nn.Module):
    """The plain PyTorch baseline: word and POS embeddings, packed RNN, linear, softmax."""

    def __init__(
        self, vocab: int, tags: int, labels: int, emb: int, tag_emb: int, hidden: int,
        cell: str, bidirectional: bool,
    ) -> None:  # fmt: skip
        super().__init__()
        self.emb = nn.Embedding(vocab, emb)
        self.pos = nn.Embedding(tags, tag_emb)
        self.rnn = RNNS[cell](emb + tag_emb, hidden, batch_first=True, bidirectional=bidirectional)
        self.out = nn.Linear(hidden * (2 if bidirectional else 1), labels)

    def forward(self, words: Tensor, pos: Tensor, lengths: Tensor) -> Tensor:
        """Emission scores (B, T, L)."""
        x = torch.cat([self.emb(words), self.pos(pos)], dim=-1)
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        a, _ = pad_packed_sequence(self.rnn(packed)[0], batch_first=True)
        return self.out(a)


def copy_weights(plain: PlainTagger, model: SequenceTagger) -> None:
    """rnnkit's trained weights into the plain model (the same shapes, other names)."""
    if model.core.rnn is None:
        raise ValueError("only a fused core maps onto the plain model")
    with torch.no_grad():
        plain.emb.weight.copy_(model.embedding.weight)
        plain.pos.weight.copy_(model.extra_embeddings[0].weight)
        plain.rnn.load_state_dict(model.core.rnn.state_dict())
        plain.out.load_state_dict(model.emission.state_dict())


@torch.no_grad()
def plain_predict(
    model: PlainTagger,
    words: dict[str, int],
    tags: dict[str, int],
    unk: tuple[int, int],
    sentences: Sequence[Sentence],
    batch: int,
) -> list[list[int]]:
    """Label ids of each sentence: what a plain PyTorch user writes."""
    model.eval()
    w = [torch.tensor([words.get(x, unk[0]) for x in s.words]) for s in sentences]
    p = [torch.tensor([tags.get(x, unk[1]) for x in s.features[0]]) for s in sentences]
    order = sorted(range(len(w)), key=lambda i: len(w[i]))
    out: list[list[int]] = [[] for _ in sentences]
    for s in range(0, len(order), batch):
        idx = order[s : s + batch]
        lengths = torch.tensor([len(w[i]) for i in idx])
        e = model(
            pad_sequence([w[i] for i in idx], batch_first=True),
            pad_sequence([p[i] for i in idx], batch_first=True),
            lengths,
        )
        for i, row, n in zip(idx, e.argmax(-1).tolist(), lengths.tolist()):
            out[i] = row[:n]
    model.train()
    return out


def macs(model: SequenceTagger) -> float:
    """Multiply-adds a token of one forward pass: every weight matrix of the recurrent core
    (both directions, every layer) and the emission layer."""
    core = sum(
        p.numel() for n, p in model.core.named_parameters() if n.rsplit(".", 1)[-1][:6] == "weight"
    )
    return float(core + model.emission.weight.numel())


def flops_fn(per_token: float, factor: int) -> Callable[[float, float], float]:
    """GFLOP/s of (sentences/s, tokens/s); factor 3 for training, 1 for tagging."""
    return lambda sps, tps: tps * per_token * 2 * factor / 1e9


def threads_text() -> str:
    n = torch.get_num_threads()
    return f"{n} thread{'s' if n != 1 else ''}"


def write_slice(src: Path, dst: Path, sentences: int) -> None:
    """The first ``sentences`` sentences (blank-line separated) of a column file."""
    blocks = [b for b in src.read_text(encoding="utf-8").split("\n\n") if b.strip()]
    dst.write_text("\n\n".join(b.strip("\n") for b in blocks[:sentences]) + "\n\n")


# -- the measurements ----------------------------------------------------------------------


def training(
    task: TagTask, model: SequenceTagger, plain: PlainTagger, args: Any, tmp: Path
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
        e = plain(b.words, b.features[0], b.lengths)
        T = e.shape[1]
        mask = torch.arange(T)[None, :] < b.lengths[:, None]
        loss = F.cross_entropy(e[mask], b.labels[:, :T][mask])
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
    flops = flops_fn(macs(model), 3)
    rows = [
        rate_row("plain PyTorch loop (softmax)", got["plain"], None, flops),
        rate_row("rnnkit Trainer.fit, validation left out", got["rnnkit"], got["plain"], flops,
                 less="validate_s"),
        rate_row("rnnkit Trainer.fit, all of it", got["rnnkit"], got["plain"], flops),
    ]  # fmt: skip
    return rows, {"warmup_epoch": warm, "steps_per_epoch": task.num_batches(0)}


def prediction(
    task: TagTask, model: SequenceTagger, plain: PlainTagger, sentences: list[Sentence],
    args: Any,
) -> tuple[list[dict], dict]:  # fmt: skip
    copy_weights(plain, model)
    v = task.vocabs
    tag_vocab = v.columns[POS_COLUMN]
    words, tags, unk = v.words.index, tag_vocab.index, (v.words.unk_id, tag_vocab.unk_id)
    label_ids = {name: i for i, name in enumerate(v.labels.tokens)}
    tokens = sum(len(s) for s in sentences)
    last: dict[str, Any] = {}

    def timed(name: str, fn: Callable[[], Any]) -> dict[str, float]:
        t0 = time.perf_counter()
        last[name] = fn()
        return {
            "seconds": time.perf_counter() - t0, "sentences": len(sentences), "tokens": tokens,
        }  # fmt: skip

    fns: dict[str, Callable[[], dict[str, float]]] = {
        "plain": lambda: timed(
            "plain", lambda: plain_predict(plain, words, tags, unk, sentences, task.batch_size)
        ),
        "rnnkit": lambda: timed("rnnkit", lambda: task.predict_sentences(model, sentences)),
    }
    for fn in fns.values():  # warm-up
        fn()
    got = interleave(fns, args.rounds)
    flops = flops_fn(macs(model), 1)
    rows = [
        rate_row("plain PyTorch, batched no-grad forward", got["plain"], None, flops),
        rate_row("rnnkit task.predict_sentences", got["rnnkit"], got["plain"], flops),
    ]
    kit = [label_ids[x] for _, labels in last["rnnkit"] for x in labels]
    ours = [x for row in last["plain"] for x in row]
    agree = {"same_label": float(np.mean(np.array(kit) == np.array(ours)))}
    return rows, agree


# -- the script ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="seconds: a slice, 1 thread")
    parser.add_argument(
        "--threads", type=int, help="torch CPU threads (default: torch's; --quick 1)"
    )
    parser.add_argument("--cell", choices=tuple(RNNS), default="lstm", help="recurrent cell (lstm)")
    parser.add_argument("--hidden-size", type=int, default=128, help="units per direction (128)")
    parser.add_argument("--embedding-size", type=int, default=100, help="word embedding (100)")
    parser.add_argument(
        "--bidirectional",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="a bidirectional core (default: yes)",
    )
    parser.add_argument("--crf", action="store_true", help="rnnkit with a CRF (plain: softmax)")
    parser.add_argument("--batch-size", type=int, default=32, help="sentences a batch (32)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (5; --quick 2)")
    parser.add_argument("--seed", type=int, default=0, help="batches and weights (0)")
    parser.add_argument(
        "--plain-fused-adam", action="store_true", help="plain uses Adam(fused=True) as rnnkit"
    )
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (2 if args.quick else 5)
    threads = args.threads or (1 if args.quick else None)
    folder = data_dir() / "conll2000"
    train_file, test_file = folder / "train.txt", folder / "test.txt"
    if not (train_file.is_file() and test_file.is_file()):
        print(f"CoNLL-2000 not found in {folder} (set RNNKIT_DATA); nothing to measure.")
        return 0 if args.quick else 2
    if threads:
        torch.set_num_threads(threads)
    machine = print_machine()
    n = 1024 if args.quick else 2048
    peak = gemm_peak(n, torch.float32, 0.3 if args.quick else 3.0)
    print(f"GEMM peak (torch.matmul {n}x{n}, {threads_text()}): fp32 {peak:,.0f} GFLOP/s")
    with tempfile.TemporaryDirectory(prefix="rnnkit-tag-bench-") as tmp:
        if args.quick:  # a slice: the first sentences of each file
            write_slice(train_file, Path(tmp) / "train.txt", 250)
            write_slice(test_file, Path(tmp) / "test.txt", 80)
            train_file, test_file = Path(tmp) / "train.txt", Path(tmp) / "test.txt"
        t0 = time.perf_counter()
        task = TagTask.prepare(
            train_file, test_file, word_column=0, label_column=-1, feature_columns=[POS_COLUMN],
            batch_size=args.batch_size, seed=args.seed, unseen_labels="score",
        )  # fmt: skip
        load_s = time.perf_counter() - t0
        sentences = read_columns(test_file, 0, -1, [POS_COLUMN])
        settings = dict(
            cell=args.cell, hidden_size=args.hidden_size, embedding_size=args.embedding_size,
            bidirectional=args.bidirectional, crf=args.crf,
        )  # fmt: skip
        torch.manual_seed(args.seed)
        model = task.build_model(settings)
        v = task.vocabs
        torch.manual_seed(args.seed)
        plain = PlainTagger(
            len(v.words), len(v.columns[POS_COLUMN]), len(v.labels), args.embedding_size,
            model.config.extra_embedding_size, args.hidden_size, args.cell, args.bidirectional,
        )  # fmt: skip
        n_kit = sum(p.numel() for p in model.parameters())
        n_plain = sum(p.numel() for p in plain.parameters())
        train_tokens = sum(len(e.words) for e in task.train)
        per_token = macs(model)
        print(
            f"CoNLL-2000{' (a slice)' if args.quick else ''}: train {len(task.train):,} "
            f"sentences ({train_tokens:,} tokens), test (validation, tagged) {len(sentences):,} "
            f"sentences ({sum(len(s) for s in sentences):,} tokens); {len(v.words):,} words, "
            f"{len(v.columns[POS_COLUMN])} POS tags, {len(v.labels)} labels; read by rnnkit in "
            f"{load_s:.2f} s"
        )
        print(
            f"model: {'bi' if args.bidirectional else ''}{args.cell} 1x{args.hidden_size}, "
            f"embeddings {args.embedding_size} + {model.config.extra_embedding_size} (POS), "
            f"{'CRF' if args.crf else 'softmax'} output (plain: softmax), batch "
            f"{args.batch_size}; parameters rnnkit {n_kit:,}, plain {n_plain:,}; Adam lr {LR} "
            f"(plain: {'fused' if args.plain_fused_adam else 'torch default'}), clip {CLIP}; "
            f"{per_token:,.0f} multiply-adds a token\n"
        )
        train_rows, train_info = training(task, model, plain, args, Path(tmp))
        print_rate_rows(
            f"training, one epoch ({train_info['steps_per_epoch']} steps) a round, "
            f"{args.rounds} interleaved rounds; medians (x plain: the median of the rounds' "
            "ratios)",
            train_rows,
            peak,
        )
        kit_rounds = train_rows[2]["rounds"]
        val = float(np.median([r["validate_s"] for r in kit_rounds]))
        ckpt = float(np.median([r["checkpoint_s"] for r in kit_rounds]))
        print(
            f"rnnkit's epoch spent {val:.3f} s validating ({len(task.valid):,} sentences, loss, "
            f"accuracy and chunk F1) and {ckpt:.3f} s saving its checkpoint (medians)\n"
        )
        pred_rows, agree = prediction(task, model, plain, sentences, args)
        print_rate_rows(
            f"tagging {len(sentences):,} sentences of test.txt, batches of {task.batch_size}, "
            f"{args.rounds} interleaved rounds",
            pred_rows,
            peak,
        )
        what = "rnnkit's Viterbi path" if args.crf else "rnnkit"
        print(
            f"the plain model with rnnkit's trained weights gives the same label as {what} for "
            f"{100 * agree['same_label']:.2f}% of the tokens\n"
        )
    print(
        f"summary: rnnkit/plain training x{train_rows[1]['x_plain']:.3f} (validation left out; "
        f"x{train_rows[2]['x_plain']:.3f} with it), tagging x{pred_rows[1]['x_plain']:.3f} "
        f"(goal >= 1.0{'; rnnkit with a CRF, plain softmax' if args.crf else ''}); rnnkit trains "
        f"{train_rows[1]['tokens_per_s']:,.0f} tokens/s, tags {pred_rows[1]['tokens_per_s']:,.0f} "
        f"tokens/s at {threads_text()}"
    )
    record = {
        "machine": machine, "quick": args.quick, "gemm_peak_gflops_fp32": peak, "gemm_n": n,
        "settings": {**settings, "extra_embedding_size": model.config.extra_embedding_size,
                     "batch_size": args.batch_size, "lr": LR, "clip": CLIP,
                     "plain_fused_adam": args.plain_fused_adam, "seed": args.seed,
                     "plain_output": "softmax"},
        "data": {"train_sentences": len(task.train), "train_tokens": train_tokens,
                 "test_sentences": len(sentences), "words": len(v.words),
                 "labels": len(v.labels), "slice": args.quick},
        "parameters": n_kit, "macs_per_token": per_token, "rounds": args.rounds,
        "train": train_rows, "train_info": train_info, "predict": pred_rows, "agreement": agree,
    }  # fmt: skip
    if args.quick:  # a smoke test: printed, not added to benchmarks/results
        print(json.dumps({"benchmark": "tag", **record}))
    else:
        emit_json("tag", record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
