"""Penn Treebank: KN5 and KN3 perplexities equal KenLM's (Mikolov's) figures to 0.1%."""

from __future__ import annotations

from pathlib import Path

import pytest

from rnnkit.ngram import read_arpa, read_lines, train_kneser_ney

# KenLM lmplz + query on PTB (<unk> renamed to a plain word), </s> counted: BENCHMARKS.md.
KENLM = {(5, "test"): 141.19, (5, "valid"): 148.01, (3, "test"): 148.28, (3, "valid"): 157.77}


@pytest.mark.data
def test_kn5_from_arpa_matches_kenlm(ptb: Path, ptb_kn5: Path) -> None:
    model = read_arpa(ptb_kn5)
    for split in ("valid", "test"):
        s = model.score_sentences(read_lines(ptb / f"ptb.{split}.txt"))
        assert s.perplexity() == pytest.approx(KENLM[(5, split)], rel=1e-3)
        assert s.num_oov == {"valid": 3485, "test": 4794}[split]  # the <unk> tokens


@pytest.mark.data
def test_kn3_matches_kenlm(ptb: Path) -> None:
    model = train_kneser_ney(ptb / "ptb.train.txt", 3)
    for split in ("valid", "test"):
        s = model.score_sentences(read_lines(ptb / f"ptb.{split}.txt"))
        assert s.perplexity() == pytest.approx(KENLM[(3, split)], rel=1e-3)
