"""ARPA files: the golden file pins the writer, files round-trip, malformed ones are named."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ngram_helpers import FALLBACK, GOLDEN, TINY

from rnnkit.errors import DataError
from rnnkit.ngram import NgramModel, read_arpa, train_kneser_ney, write_arpa


def _same(a: NgramModel, b: NgramModel) -> None:
    assert a.vocab == b.vocab
    assert a.order == b.order
    for k in range(a.order):
        np.testing.assert_array_equal(a.keys[k], b.keys[k])
        np.testing.assert_array_equal(a.log10_prob[k], b.log10_prob[k])
        np.testing.assert_array_equal(a.log10_backoff[k], b.log10_backoff[k])


def test_golden_arpa(tmp_path: Path) -> None:
    """The writer's bytes for the tiny corpus, KN3 with lmplz's fallback discounts.

    Regenerate (after checking the change is intended) with:
    rnnkit ngram train --order 3 --discount-fallback tests/ngram/data/tiny.txt \
        -o tests/ngram/data/tiny_kn3.arpa
    """
    model = train_kneser_ney(TINY, 3, discount_fallback=FALLBACK)
    out = tmp_path / "kn3.arpa"
    write_arpa(model, out)
    assert out.read_bytes() == GOLDEN.read_bytes()


def test_golden_layout() -> None:
    lines = GOLDEN.read_text(encoding="utf-8").split("\n")
    assert lines[:5] == ["\\data\\", "ngram 1=16", "ngram 2=46", "ngram 3=66", ""]
    assert lines[5] == "\\1-grams:"
    # lmplz's specials: <unk> first, p(<s>) = 1 written as 0, </s> is never a context
    assert lines[6].split("\t")[1] == "<unk>"
    assert lines[7].split("\t")[:2] == ["0", "<s>"]
    assert lines[8].split("\t")[1:] == ["</s>", "0"]
    assert lines[-2:] == ["\\end\\", ""]


@pytest.mark.parametrize("name", ["model.arpa", "model.arpa.gz"])
def test_round_trip(tmp_path: Path, name: str) -> None:
    model = train_kneser_ney(TINY, 4, discount_fallback=FALLBACK)
    path = tmp_path / name
    write_arpa(model, path)
    if name.endswith(".gz"):
        assert path.read_bytes()[:2] == b"\x1f\x8b"
    again = read_arpa(path)
    _same(model, again)
    write_arpa(again, tmp_path / "again.arpa")
    plain = path.read_bytes() if not name.endswith(".gz") else gzip.decompress(path.read_bytes())
    assert (tmp_path / "again.arpa").read_bytes() == plain


@settings(max_examples=20, deadline=None)
@given(
    st.lists(
        st.lists(st.sampled_from(["x", "y", "z", "<unk>", "é"]), max_size=6).map(" ".join),
        min_size=1,
        max_size=10,
    ).filter(lambda ss: any(s.strip() for s in ss)),
    st.integers(1, 4),
)
def test_round_trip_any_corpus(
    tmp_path_factory: pytest.TempPathFactory, corpus: list[str], order: int
) -> None:
    model = train_kneser_ney(corpus, order, discount_fallback=FALLBACK)
    path = tmp_path_factory.mktemp("rt") / "m.arpa"
    write_arpa(model, path)
    _same(model, read_arpa(path))


def test_reads_foreign_arpa_with_missing_prefix_and_backoffs(tmp_path: Path) -> None:
    # SRILM style: -99 for <s>, no back-off on some lines, no <unk>, a trigram whose
    # prefix "a b" is not a stored bigram (pruned), comments before \data\.
    text = """# made by hand
\\data\\
ngram 1=4
ngram 2=2
ngram 3=1

\\1-grams:
-99\t<s>\t-0.5
-0.5\t</s>
-0.6\ta\t-0.2
-0.7\tb\t-0.1

\\2-grams:
-0.3\t<s> a\t-0.05
-0.2\tb </s>

\\3-grams:
-0.1\ta b </s>

\\end\\
"""
    path = tmp_path / "foreign.arpa"
    path.write_text(text, encoding="utf-8")
    model = read_arpa(path)
    assert model.counts() == [5, 2, 1]  # <unk> added; the blank "a b" is not counted
    assert model.score_word((), "<unk>")[0] == -100.0
    # <s> a: stored bigram -0.3
    s = model.score_sentences(["a b"]).per_sentence()[0]
    # p(b | <s> a): "<s> a b" absent, bo(<s> a) -0.05 + p(b | a): "a b" blank -> bo(a) -0.2
    # + p(b) -0.7; p(</s> | a b): "a b </s>" stored -0.1
    np.testing.assert_allclose(s, [-0.3, -0.05 - 0.2 - 0.7, -0.1], atol=1e-6)


BAD = {
    "no_data": ("hello\n", 1, "not an ARPA file"),
    "bad_count": ("\\data\\\nngram 1=3\nngram 3=1\n", 3, "ngram 2=COUNT"),
    "fields": (
        "\\data\\\nngram 1=3\n\n\\1-grams:\n-1\t<s>\n-1\t</s>\t0\t7\n-1\ta\n\\end\\\n",
        6,
        "fields",
    ),
    "number": (
        "\\data\\\nngram 1=3\n\n\\1-grams:\n-1\t<s>\n-x\t</s>\n-1\ta\n\n\\end\\\n",
        6,
        "not a number",
    ),
    "short": (
        "\\data\\\nngram 1=4\n\n\\1-grams:\n-1\t<s>\n-1\t</s>\n-1\ta\n\n\\end\\\n",
        8,
        "ends after 3 lines",
    ),
    "unknown_word": (
        "\\data\\\nngram 1=3\nngram 2=1\n\n\\1-grams:\n-1\t<s>\t0\n-1\t</s>\n-1\ta\t0\n\n"
        "\\2-grams:\n-1\ta zz\n\n\\end\\\n",
        11,
        "not among the 1-grams",
    ),
    "duplicate": (
        "\\data\\\nngram 1=3\nngram 2=2\n\n\\1-grams:\n-1\t<s>\t0\n-1\t</s>\n-1\ta\t0\n\n"
        "\\2-grams:\n-1\ta </s>\n-2\ta </s>\n\n\\end\\\n",
        12,
        "twice",
    ),
    "extra_lines": (
        "\\data\\\nngram 1=2\n\n\\1-grams:\n-1\t<s>\n-1\t</s>\n-1\ta\n\n\\end\\\n",
        7,
        "more 1-grams",
    ),
    "wrong_section": (
        "\\data\\\nngram 1=2\nngram 2=1\n\n\\1-grams:\n-1\t<s>\n-1\t</s>\n\n\\3-grams:\n",
        9,
        "2-grams",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_malformed_arpa_names_file_and_line(tmp_path: Path, case: str) -> None:
    text, line, fragment = BAD[case]
    path = tmp_path / f"{case}.arpa"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as info:
        read_arpa(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}:{line}: "), msg
    assert fragment in msg


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("\\data\\\nngram 1=2\n\n\\1-grams:\n-1\t<s>\n-1\t</s>\n", "\\end\\"),
        ("\\data\\\nngram 1=3\n\n\\1-grams:\n-1\t<s>\n", "truncated"),
        ("\\data\\\nngram 1=2\n\n\\1-grams:\n-1\t<s>\n-1\ta\n\n\\end\\\n", "lack '</s>'"),
        ("", "no '\\data\\'"),
    ],
)
def test_truncated_or_incomplete_arpa(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "m.arpa"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=str(path)) as info:
        read_arpa(path)
    assert fragment in str(info.value)


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such ARPA file"):
        read_arpa(tmp_path / "nope.arpa")
    bad_gz = tmp_path / "bad.arpa.gz"
    bad_gz.write_bytes(b"\x1f\x8b not gzip")
    with pytest.raises(DataError, match="gzip"):
        read_arpa(bad_gz)
