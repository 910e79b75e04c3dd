"""Translation speed on Multi30k de->en: rnnkit's translator against a plain PyTorch loop,
and its batched beam search against the same search one sentence at a time.

In one process, on the same batches, in interleaved rounds (the order rotating, so the
machine's noise hits every contender):

- training target tokens/s of rnnkit's :class:`~rnnkit.models.seq2seq.Seq2Seq` (the step the
  Trainer takes: ``TranslateTask.loss``, backward, clipping at 1, fused Adam) against a plain
  PyTorch encoder-decoder of the same sizes and the same mathematics written below in the
  style of bentrevett/pytorch-seq2seq (an ``nn.GRU`` encoder; a decoder called once per target
  step in a Python loop, as its tutorials do; torch.optim.Adam). Both the fixed-vector model
  (Cho et al.: c at every step, deep output) and attention (Luong general, input feeding; and
  without input feeding, where rnnkit runs the whole target through the fused kernel) are
  timed; goal: >= 1.5x;
- with ``--run RUN`` (a trained translate run): greedy and beam-5 sentences/s over the
  validation sources, batched (``--search-batch`` sentences, 128), and beam 5 batched against
  the same search one sentence at a time (batch size 1) on the first ``--single`` sources, in
  interleaved rounds, with the check that both give identical hypotheses; goal: >= 5x (the
  median of the rounds' ratios);
- GFLOP/s of training next to the machine's fp32 GEMM peak (torch.matmul, measured at the
  start with the same threads): multiply-adds of every weight matrix a source or target
  token passes, x2, x3 for training; embeddings and biases count nothing.

    python benchmarks/translate.py                         # 1 thread, 5 rounds
    python benchmarks/translate.py --run runs/m30k-attn    # + search speed of a trained run
    python benchmarks/translate.py --run runs/m30k-attn --search-only    # search speed alone
    python benchmarks/translate.py --quick                 # seconds
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import data_dir, emit_json, gemm_peak, interleave, print_machine

from rnnkit.models.seq2seq import Seq2Seq
from rnnkit.tasks.translate import TranslateBatch, TranslateTask
from rnnkit.text.parallel import read_parallel


class PlainFixed(nn.Module):
    """bentrevett's "Learning Phrase Representations" model with rnnkit's deep output."""

    def __init__(self, vs: int, vt: int, E: int, H: int) -> None:
        super().__init__()
        self.src_emb, self.tgt_emb = nn.Embedding(vs, E), nn.Embedding(vt, E)
        self.enc = nn.GRU(E, H)
        self.dec = nn.GRU(E + H, H)
        self.combine = nn.Linear(E + 2 * H, H)
        self.out = nn.Linear(H, vt)

    def forward(self, src: Tensor, trg_in: Tensor) -> Tensor:  # time-major (S, B), (T, B)
        _, c = self.enc(self.src_emb(src))
        hidden, outs = c, []
        for t in range(trg_in.shape[0]):
            emb = self.tgt_emb(trg_in[t])[None]
            s, hidden = self.dec(torch.cat([emb, c], -1), hidden)
            o = torch.tanh(self.combine(torch.cat([s, c, emb], -1)))
            outs.append(self.out(o[0]))
        return torch.stack(outs)


class PlainAttention(nn.Module):
    """A bidirectional GRU encoder and a Luong general-attention decoder, one step a call."""

    def __init__(self, vs: int, vt: int, E: int, H: int, feeding: bool) -> None:
        super().__init__()
        self.src_emb, self.tgt_emb = nn.Embedding(vs, E), nn.Embedding(vt, E)
        self.enc = nn.GRU(E, H, bidirectional=True)
        self.bridge = nn.Linear(2 * H, H)
        self.feeding = feeding
        self.dec = nn.GRU(E + (H if feeding else 0), H)
        self.w = nn.Linear(H, 2 * H, bias=False)
        self.combine = nn.Linear(3 * H, H, bias=False)
        self.out = nn.Linear(H, vt)

    def forward(self, src: Tensor, trg_in: Tensor, mask: Tensor) -> Tensor:
        memory, h = self.enc(self.src_emb(src))  # (S, B, 2H)
        hidden = torch.tanh(self.bridge(torch.cat([h[0], h[1]], -1)))[None]
        mem = memory.transpose(0, 1)  # (B, S, 2H)
        feed = mem.new_zeros(src.shape[1], hidden.shape[-1])
        outs = []
        for t in range(trg_in.shape[0]):
            emb = self.tgt_emb(trg_in[t])
            x = torch.cat([emb, feed], -1) if self.feeding else emb
            s, hidden = self.dec(x[None], hidden)
            scores = (self.w(s[0])[:, None] @ mem.transpose(1, 2)).squeeze(1)
            a = torch.softmax(scores.masked_fill(~mask, float("-inf")), -1)
            q = (a[:, None] @ mem).squeeze(1)
            feed = torch.tanh(self.combine(torch.cat([q, s[0]], -1)))
            outs.append(self.out(feed))
        return torch.stack(outs)


def plain_step(model: nn.Module, opt: torch.optim.Optimizer, b: TranslateBatch) -> int:
    src, tin, tout = b.src.t(), b.tgt_in.t(), b.tgt_out.t()
    if isinstance(model, PlainAttention):
        mask = torch.arange(b.src.shape[1])[None] < b.src_lengths[:, None]
        logits = model(src, tin, mask)
    else:
        logits = model(src, tin)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tout.reshape(-1), ignore_index=0)
    opt.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return int((tout != 0).sum())


def rnnkit_step(task: TranslateTask, model: Seq2Seq, opt: torch.optim.Optimizer,
                b: TranslateBatch) -> int:  # fmt: skip
    loss, units, _ = task.loss(model, b, None)
    opt.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return units


def flops_per_token(cfg: dict[str, Any], vt: int) -> float:
    """Training FLOPs per target token (the source side counted per target token too)."""
    E, H = cfg["embedding_size"], cfg["hidden_size"]
    if cfg["attention"] == "none":
        enc = 3 * H * (E + H)
        dec = 3 * H * (E + 2 * H) + (E + 2 * H) * H + H * vt
    else:
        enc = 2 * 3 * H * (E + H)
        fed = H if cfg["input_feeding"] else 0
        dec = 3 * H * (E + fed + H) + H * 2 * H + 3 * H * H + H * vt + 2 * 2 * H * 14
    return 3 * 2 * (enc + dec)


def train_rates(args: argparse.Namespace, task: TranslateTask, peak: float) -> None:
    vs, vt = len(task.source.vocab), len(task.target.vocab)
    E, H = args.embedding_size, args.hidden_size
    batches = [task.batch(0, i) for i in range(args.batches)]
    setups = {
        "fixed": dict(attention="none", bidirectional=False),
        "attention": dict(attention="general", bidirectional=True, input_feeding=True),
        "attention, no feeding": dict(attention="general", bidirectional=True, input_feeding=False),
    }
    for name, kw in setups.items():
        torch.manual_seed(0)
        settings = dict(embedding_size=E, hidden_size=H, dropout=0.0, **kw)
        ours = task.build_model(settings)
        ours_opt = torch.optim.Adam(ours.parameters(), lr=1e-3, fused=True)
        plain: nn.Module = (
            PlainFixed(vs, vt, E, H) if kw["attention"] == "none"
            else PlainAttention(vs, vt, E, H, bool(kw["input_feeding"]))
        )  # fmt: skip
        plain_opt = torch.optim.Adam(plain.parameters(), lr=1e-3)

        def ours_round(m: Seq2Seq = ours, o: Any = ours_opt) -> float:
            t0, tokens = time.perf_counter(), 0
            for b in batches:
                tokens += rnnkit_step(task, m, o, b)
            return tokens / (time.perf_counter() - t0)

        def plain_round(m: nn.Module = plain, o: Any = plain_opt) -> float:
            t0, tokens = time.perf_counter(), 0
            for b in batches:
                tokens += plain_step(m, o, b)
            return tokens / (time.perf_counter() - t0)

        ours_round()  # warm-up
        fns = {"rnnkit": ours_round, "plain": plain_round}
        res = interleave(fns, args.rounds)
        r, p = statistics.median(res["rnnkit"]), statistics.median(res["plain"])
        ratio = statistics.median(a / b for a, b in zip(res["rnnkit"], res["plain"]))
        gflops = r * flops_per_token({**settings, "input_feeding": kw.get("input_feeding", False)},
                                     vt) / 1e9  # fmt: skip
        print(f"train {name:24s} rnnkit {r:8,.0f} tok/s   plain {p:8,.0f} tok/s   "
              f"x{ratio:.2f}   {gflops:.1f} GFLOP/s = {100 * gflops / peak:.0f}% of peak")  # fmt: skip
        emit_json("translate", {"what": "train", "model": name, "rnnkit_tok_s": r,
                                "plain_tok_s": p, "ratio": ratio, "gflops": gflops,
                                "peak_gflops": peak, "E": E, "H": H,
                                "batch": args.batch_size})  # fmt: skip


def search_rates(args: argparse.Namespace) -> None:
    from rnnkit.api.translate import load_translator

    loaded = load_translator(args.run, device="cpu")
    task, model = loaded.task, loaded.model
    root = data_dir() / "multi30k"
    lines, _ = read_parallel(root / "val.de.gz", root / "val.en.gz")
    src = task.encode_sources(lines)
    B = args.search_batch
    task.search(model, src[:8], beam=5, batch_size=B)  # warm-up
    for beam in (1, 5):
        t0 = time.perf_counter()
        task.search(model, src, beam=beam, batch_size=B)
        rate = len(src) / (time.perf_counter() - t0)
        print(f"search {'greedy' if beam == 1 else 'beam 5':8s} batched ({B}): "
              f"{rate:8,.1f} sentences/s over {len(src):,} sentences")  # fmt: skip
        emit_json("translate", {"what": "search", "beam": beam, "batch": B,
                                "sentences_s": rate, "sentences": len(src)})  # fmt: skip
    few = src[: args.single]
    res = interleave(
        {
            "batched": lambda: _timed_search(task, model, few, B),
            "one at a time": lambda: _timed_search(task, model, few, 1),
        },
        args.rounds_search,
    )
    batched, single = res["batched"], res["one at a time"]
    same = all(
        [h.tokens for h in a] == [h.tokens for h in b] for a, b in zip(batched[0][1], single[0][1])
    )
    # scores: a CPU GEMM row is not bitwise the same at every batch size (1e-4 in the tests)
    gap = max(
        abs(h.score - g.score)
        for a, b in zip(batched[0][1], single[0][1])
        for h, g in zip(a, b)
    )  # fmt: skip
    rb = statistics.median(r for r, _ in batched)
    rs = statistics.median(r for r, _ in single)
    # the ratio of each round (the two ran back to back), then their median: the machine's
    # slow and fast moments cancel within a round
    ratio = statistics.median(b[0] / s[0] for b, s in zip(batched, single))
    print(f"beam 5 on {len(few)} sentences: batched ({B}) {rb:,.1f} sentences/s, one at a "
          f"time {rs:,.1f} sentences/s: x{ratio:.1f} (rounds: "
          f"{', '.join(f'x{b[0] / s[0]:.1f}' for b, s in zip(batched, single))}); "
          f"identical hypotheses: {same}, scores within {gap:.1e}")  # fmt: skip
    emit_json("translate", {"what": "beam batched vs single", "batched_s": rb, "single_s": rs,
                            "ratio": ratio, "identical": same, "score_gap": gap,
                            "sentences": len(few), "batch": B})  # fmt: skip


def _timed_search(task: TranslateTask, model: Seq2Seq, src: list, batch: int) -> tuple[float, Any]:
    t0 = time.perf_counter()
    hyps = task.search(model, src, beam=5, n_best=1, batch_size=batch)
    return len(src) / (time.perf_counter() - t0), hyps


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batches", type=int, default=8, help="training batches a round")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--embedding-size", type=int, default=256)
    ap.add_argument("--hidden-size", type=int, default=256)
    ap.add_argument("--run", help="a trained translate run: search speed too")
    ap.add_argument("--single", type=int, default=100, help="sentences searched one at a time")
    ap.add_argument("--rounds-search", type=int, default=3)
    ap.add_argument("--search-batch", type=int, default=128,
                    help="sentences searched together on the batched side")  # fmt: skip
    ap.add_argument("--search-only", action="store_true",
                    help="with --run: the search speed alone, no training rates")  # fmt: skip
    ap.add_argument("--quick", action="store_true", help="a few batches, small sizes")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.batches, args.hidden_size, args.embedding_size = 2, 2, 64, 32
        args.single, args.rounds_search = 10, 1
    torch.set_num_threads(args.threads)
    print_machine()
    peak = gemm_peak(1024, torch.float32, 2.0)
    print(f"fp32 GEMM peak: {peak:,.0f} GFLOP/s ({args.threads} thread(s))")
    if not (args.search_only and args.run):
        root = data_dir() / "multi30k"
        train = read_parallel(root / "train.de.gz", root / "train.en.gz")
        valid = read_parallel(root / "val.de.gz", root / "val.en.gz")
        task = TranslateTask.prepare(train, valid, lowercase=True, batch_size=args.batch_size)
        train_rates(args, task, peak)
    if args.run:
        search_rates(args)


if __name__ == "__main__":
    main()
