"""Sentence-mode and window-LM training: it learns, config says so, resume is exact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import rnnkit
from rnnkit.errors import ConfigError

SMALL = dict(level="word", hidden_size=16, batch_size=4, bptt=8, lr=0.02, log_every=3, seed=9)


def test_word_runs_learn_and_say_what_they_are(word_runs: dict[str, Path]) -> None:
    for name in ("sentence", "stream", "window"):
        config = json.loads((word_runs[name] / "config.json").read_text())
        assert config["data"]["mode"] == ("sentence" if name == "sentence" else "stream")
        assert config["model"]["arch"] == ("window" if name == "window" else "rnn")
        ppl = rnnkit.evaluate(word_runs[name], word_runs["valid"]).perplexity
        vocab = json.loads((word_runs[name] / "vocab.json").read_text())["tokens"]
        assert ppl < len(vocab) / 3, (name, ppl, len(vocab))
    tokens = json.loads((word_runs["sentence"] / "vocab.json").read_text())["tokens"]
    assert tokens[:3] == ["<unk>", "<s>", "</s>"]


@pytest.mark.parametrize("extra", [dict(mode="sentence", bptt=4), dict(arch="window", context=2)])
def test_stopped_and_resumed_run_ends_with_the_same_weights(
    word_runs: dict[str, Path], tmp_path: Path, extra: dict
) -> None:
    corpus = tmp_path / "c.txt"
    lines = word_runs["train"].read_text(encoding="utf-8").splitlines()[:60]
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    settings = {**SMALL, "epochs": 2, "valid_fraction": 0.2, **extra}
    full = rnnkit.train(corpus, tmp_path / "full", progress=False, **settings)
    rnnkit.train(corpus, tmp_path / "part", max_steps=7, progress=False, **settings)
    rest = rnnkit.train(resume=tmp_path / "part", progress=False)
    assert rest.step == full.step
    a, b = (load_file(str(tmp_path / n / "last.safetensors")) for n in ("full", "part"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sentence_mode_needs_word_level(tmp_path: Path, tiny_corpus: Path) -> None:
    with pytest.raises(ConfigError, match="need --level word"):
        rnnkit.train(tiny_corpus, tmp_path / "r", mode="sentence", progress=False)
