"""The plain PyTorch baseline of the speed benchmarks (throughput.py, time_to_perplexity.py).

pytorch/examples' word_language_model recipe, written out with nothing from rnnkit:
nn.Embedding(V, H) -> nn.RNN (tanh) or nn.LSTM -> nn.Linear(H, V) -> F.cross_entropy; the
token stream (``<eos>`` after each line) cut into ``batch_size`` columns, time first; windows
of ``bptt`` steps with the hidden state carried and detached between them; the gradient norm
clipped at 0.25. Run on its own it trains for a number of steps and prints its speed (the
throughput benchmark runs it so, in a subprocess, for its peak memory):

    python benchmarks/plain.py --cell rnn --hidden 200 --steps 300
    python benchmarks/plain.py --cell lstm --hidden 650 --layers 2 --steps 20 --threads 2
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


class Corpus:
    """Words to ids in order of first appearance (the example's data.Corpus)."""

    def __init__(self) -> None:
        self.word2idx: dict[str, int] = {"<unk>": 0}
        self.idx2word: list[str] = ["<unk>"]

    def tokenize(self, path: str | Path, grow: bool = True) -> torch.Tensor:
        """The file's ids, ``<eos>`` after each line; new words are added when ``grow``,
        else read as ``<unk>``."""
        ids = []
        with open(path, encoding="utf-8") as f:
            for line in f:
                for word in [*line.split(), "<eos>"]:
                    if word not in self.word2idx:
                        if not grow:
                            word = "<unk>"
                        else:
                            self.word2idx[word] = len(self.idx2word)
                            self.idx2word.append(word)
                    ids.append(self.word2idx[word])
        return torch.tensor(ids, dtype=torch.long)


def batchify(data: torch.Tensor, bsz: int) -> torch.Tensor:
    """(N,) ids -> (N // bsz, bsz): each column a contiguous part of the text."""
    nbatch = data.size(0) // bsz
    return data[: nbatch * bsz].view(bsz, -1).t().contiguous()


def get_batch(source: torch.Tensor, i: int, bptt: int) -> tuple[torch.Tensor, torch.Tensor]:
    seq_len = min(bptt, len(source) - 1 - i)
    return source[i : i + seq_len], source[i + 1 : i + 1 + seq_len].reshape(-1)


class PlainLM(nn.Module):
    """Embedding -> nn.RNN (tanh) or nn.LSTM -> Linear, time first."""

    def __init__(
        self, ntoken: int, nhid: int, nlayers: int = 1, cell: str = "rnn", dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.ntoken, self.nhid, self.nlayers, self.cell = ntoken, nhid, nlayers, cell
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, nhid)
        between = dropout if nlayers > 1 else 0.0
        if cell == "lstm":
            self.rnn: nn.RNNBase = nn.LSTM(nhid, nhid, nlayers, dropout=between)
        else:
            self.rnn = nn.RNN(nhid, nhid, nlayers, nonlinearity="tanh", dropout=between)
        self.decoder = nn.Linear(nhid, ntoken)
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)

    def forward(self, x: torch.Tensor, hidden):
        output, hidden = self.rnn(self.drop(self.encoder(x)), hidden)
        return self.decoder(self.drop(output)).view(-1, self.ntoken), hidden

    def init_hidden(self, bsz: int):
        h = torch.zeros(self.nlayers, bsz, self.nhid)
        return (h, h.clone()) if self.cell == "lstm" else h


def repackage_hidden(h):
    """Detach the state from its history (truncated BPTT)."""
    return tuple(repackage_hidden(v) for v in h) if isinstance(h, tuple) else h.detach()


def train_step(model, optimizer, data, targets, hidden, clip: float = 0.25):
    """One window: forward, cross-entropy, backward, clip, optimizer step -> (loss, hidden)."""
    model.train()
    hidden = repackage_hidden(hidden)
    optimizer.zero_grad()
    output, hidden = model(data, hidden)
    loss = F.cross_entropy(output, targets)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    return loss.item(), hidden


class PlainRun:
    """A model, its optimizer and its place in the batched training text; ``step()`` trains on
    the next window, going back to the start (and the zero state) after the last one."""

    def __init__(
        self,
        model: PlainLM,
        train_ids: torch.Tensor,
        batch_size: int = 20,
        bptt: int = 35,
        optimizer: str = "adam",
        lr: float = 1e-3,
        clip: float = 0.25,
    ) -> None:
        self.model, self.bptt, self.clip, self.batch_size = model, bptt, clip, batch_size
        self.data = batchify(train_ids, batch_size)
        opt = torch.optim.Adam if optimizer == "adam" else torch.optim.SGD
        self.optimizer = opt(model.parameters(), lr=lr)
        self.i, self.hidden, self.tokens, self.epoch = 0, model.init_hidden(batch_size), 0, 0

    def step(self) -> float:
        if self.i >= self.data.size(0) - 1:  # the end of the text: again, from the zero state
            self.i, self.epoch = 0, self.epoch + 1
            self.hidden = self.model.init_hidden(self.batch_size)
        x, y = get_batch(self.data, self.i, self.bptt)
        loss, self.hidden = train_step(self.model, self.optimizer, x, y, self.hidden, self.clip)
        self.i += self.bptt
        self.tokens += y.numel()
        return loss

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr


@torch.no_grad()
def evaluate(model: PlainLM, ids: torch.Tensor, batch_size: int = 10, bptt: int = 35):
    """(perplexity, predicted tokens) of an id stream, the state carried (as the example:
    ``batch_size`` columns, each from the zero state; the last N mod batch_size ids dropped)."""
    model.eval()
    data = batchify(ids, batch_size)
    hidden = model.init_hidden(batch_size)
    total, count = 0.0, 0
    for i in range(0, data.size(0) - 1, bptt):
        x, y = get_batch(data, i, bptt)
        output, hidden = model(x, hidden)
        total += F.cross_entropy(output, y, reduction="sum").item()
        count += y.numel()
    return math.exp(total / count), count


@torch.no_grad()
def generate(model: PlainLM, n: int, start: int = 0, seed: int = 0) -> list[int]:
    """``n`` ids sampled one at a time from the softmax (single stream, the example's generate.py)."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    x, hidden, out = torch.tensor([[start]]), model.init_hidden(1), []
    for _ in range(n):
        logits, hidden = model(x, hidden)
        word = torch.multinomial(F.softmax(logits[-1], -1), 1, generator=gen)
        x.fill_(int(word))
        out.append(int(word))
    return out


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import data_dir, peak_rss_mb

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(data_dir() / "ptb"), help="folder of ptb.*.txt")
    parser.add_argument("--cell", choices=("rnn", "lstm"), default="rnn")
    parser.add_argument("--hidden", type=int, default=200)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--bptt", type=int, default=35)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    corpus = Corpus()
    train = corpus.tokenize(Path(args.data) / "ptb.train.txt")
    valid = corpus.tokenize(Path(args.data) / "ptb.valid.txt", grow=False)
    torch.manual_seed(0)
    model = PlainLM(len(corpus.idx2word), args.hidden, args.layers, args.cell)
    run = PlainRun(model, train, args.batch_size, args.bptt, lr=args.lr)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = run.step()
    tps = run.tokens / (time.perf_counter() - t0)
    ppl, _ = evaluate(model, valid)
    print(
        f"plain {args.cell} {args.layers}x{args.hidden}: {args.steps} steps, {tps:,.0f} tokens/s, "
        f"train loss {loss:.3f}, valid perplexity {ppl:.1f}, peak RSS {peak_rss_mb():.0f} MB"
    )


if __name__ == "__main__":
    main()
