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
from rnnkit.ngram import NgramModel, arpa_fast, read_arpa, train_kneser_ney, write_arpa
from rnnkit.ngram import arpa as arpa_module


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


# ------------------------------------------------------------- the bulk reader, in detail
def _bulk(path: Path) -> NgramModel:
    """The bulk reader's model, failing if it handed the file to the line-by-line reader."""
    model = arpa_fast.parse(path, path.read_bytes(), arpa_module)
    assert model is not None, f"the bulk reader gave up on {path}"
    return model  # type: ignore[no-any-return]


def _number_tokens(rng: np.random.Generator, n: int) -> list[str]:
    """Decimal tokens of every shape an ARPA file may hold, ``float()`` able to read each."""
    digits = np.array(list("0123456789"))
    out = []
    for _ in range(n):
        shape = rng.integers(6)
        if shape == 0:  # the usual -D.DDDD, 1 to 14 decimals
            out.append(f"-{rng.integers(10)}." + "".join(rng.choice(digits, rng.integers(1, 15))))
        elif shape == 1:  # %.9g of any magnitude (exponents too)
            out.append("%.9g" % (-rng.random() * 10.0 ** rng.integers(-12, 4)))
        elif shape == 2:  # repr: 17 digits, exponents
            out.append(repr(float(rng.standard_normal() * 10.0 ** rng.integers(-30, 30))))
        else:  # [-]digits[.digits] with leading zeros, no integer part, no decimals
            whole = "".join(rng.choice(digits, rng.integers(0, 10)))
            frac = "".join(rng.choice(digits, rng.integers(0, 10)))
            sign = "-" if rng.integers(2) else ""
            out.append(sign + (whole + "." + frac if rng.integers(3) else whole or "7"))
            if out[-1] in ("", "-", ".", "-."):
                out[-1] += "5"
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bulk_number_parser_equals_float_bit_for_bit(seed: int) -> None:
    tokens = _number_tokens(np.random.default_rng(seed), 20000)
    tokens += ["0", "-0", "-0.0", ".5", "5.", "-.5", "-5.", "00012.500", "-99", "1e5", "inf"]
    tokens += ["123456789012345", "1234567890123456", "-9.99999999999999", "-0.0000000001"]
    tokens += ["-1.2345678901234", "-1.23456789012345", "4.9406564584124654e-324"]
    buf = ("\t".join(tokens) + "\n").encode()  # the last numbers lie in the last 16 bytes
    a = np.frombuffer(buf, dtype=np.uint8)
    views = arpa_fast._Views(
        a,
        np.ndarray(shape=(len(buf) - 7,), dtype="<u8", buffer=buf, strides=(1,)),
        np.ndarray(shape=(len(buf) - 15,), dtype=np.complex128, buffer=buf, strides=(1,)),
    )
    ends = np.flatnonzero(a <= 32)
    starts = np.concatenate([[0], ends[:-1] + 1])
    expected = np.array(tokens, dtype=np.float64)  # what the line-by-line reader does
    for parse in (arpa_fast._floats, arpa_fast._floats_any):
        got = parse(views, starts, ends)
        np.testing.assert_array_equal(got.view(np.uint64), expected.view(np.uint64))


@pytest.mark.parametrize("bad", ["1.2.3", "--1", "1-2", "0x10", "nan", "-", ".", "1e", "1_0"])
def test_bulk_number_parser_leaves_odd_tokens_to_the_line_reader(tmp_path: Path, bad: str) -> None:
    text = GOLDEN.read_text(encoding="utf-8").replace("-1.12973332\tthe", f"{bad}\tthe", 1)
    path = tmp_path / "bad.arpa"
    path.write_text(text, encoding="utf-8")
    assert arpa_fast.parse(path, path.read_bytes(), arpa_module) is None
    if bad == "1_0":  # float() reads it (10.0): so does the line reader
        model = read_arpa(path)
        assert model.log10_prob[0][model.vocab.index("the")] == 10.0
        return
    with pytest.raises(DataError, match=f"^{path}:10: the log10 probability"):
        read_arpa(path)


def _shuffled_sections(text: str, seed: int) -> str:
    """The ARPA text with the lines of each section above the 1-grams (whose order is the
    vocabulary's) in a random order: other writers' order is not ours."""
    rng = np.random.default_rng(seed)
    out = []
    for part in text.split("\n\n"):
        lines = part.split("\n")
        if lines[0].endswith("-grams:") and lines[0] != "\\1-grams:":
            body = lines[1:]
            lines = [lines[0]] + [body[i] for i in rng.permutation(len(body))]
        out.append("\n".join(lines))
    return "\n\n".join(out)


@pytest.mark.parametrize("order", [2, 4])
def test_bulk_reader_sorts_unsorted_sections(tmp_path: Path, order: int) -> None:
    model = train_kneser_ney(TINY, order, discount_fallback=FALLBACK)
    write_arpa(model, tmp_path / "m.arpa")
    path = tmp_path / "shuffled.arpa"
    path.write_text(_shuffled_sections((tmp_path / "m.arpa").read_text("utf-8"), order), "utf-8")
    _same(_bulk(path), model)
    _same(_bulk(path), read_arpa(path, fast=False))


def test_bulk_reader_names_a_duplicate_in_an_unsorted_section(tmp_path: Path) -> None:
    text = _shuffled_sections(GOLDEN.read_text(encoding="utf-8"), 0)
    lines = text.split("\n")
    first = next(i for i, ln in enumerate(lines) if ln.count(" ") == 1 and "\t" in ln)
    lines[first] = "-0.5\t" + lines[first + 1].split("\t")[1] + "\t-0.1"  # the next bigram again
    path = tmp_path / "dup.arpa"
    path.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(DataError, match=f"^{path}:{first + 2}: this 2-gram appears twice"):
        read_arpa(path)


def test_bulk_reader_adds_blank_prefixes_of_a_pruned_model(tmp_path: Path) -> None:
    # drop every trigram prefix "X Y" of some trigram: the bulk reader retries keeping ids
    model = train_kneser_ney(TINY, 3, discount_fallback=FALLBACK)
    write_arpa(model, tmp_path / "m.arpa")
    lines = (tmp_path / "m.arpa").read_text(encoding="utf-8").split("\n")
    pruned = {" ".join(ln.split("\t")[1].split()[:2]) for ln in lines if ln.count(" ") == 2}
    gone = sorted(pruned)[:3]
    kept = [ln for ln in lines if not (ln.count("\t") == 2 and ln.split("\t")[1] in gone)]
    n2 = next(i for i, ln in enumerate(kept) if ln.startswith("ngram 2="))
    kept[n2] = f"ngram 2={len(model.keys[1]) - len(gone)}"
    path = tmp_path / "pruned.arpa"
    path.write_text("\n".join(kept), encoding="utf-8")
    fast = _bulk(path)
    _same(fast, read_arpa(path, fast=False))
    assert fast.counts() == [len(model.vocab), len(model.keys[1]) - len(gone), len(model.keys[2])]
    assert np.isnan(fast.log10_prob[1]).sum() == len(gone)


@pytest.mark.parametrize("block", [64, 200, 4096])
@pytest.mark.parametrize("variant", ["plain", "crlf", "missing_backoffs", "exponents"])
def test_bulk_reader_in_small_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int, variant: str
) -> None:
    """Every block boundary (a block is cut after a line break) gives the same model."""
    text = GOLDEN.read_text(encoding="utf-8")
    if variant == "crlf":
        text = text.replace("\n", "\r\n")
    elif variant == "missing_backoffs":
        text = "\n".join(
            ln.rsplit("\t", 1)[0] if ln.count("\t") == 2 and i % 3 == 0 else ln
            for i, ln in enumerate(text.split("\n"))
        )
    elif variant == "exponents":
        text = text.replace("\t-0.", "\t-0.0e0", 5).replace("-1.", "-10e-1", 5)
    path = tmp_path / "v.arpa"
    path.write_bytes(text.encode("utf-8"))
    expected = read_arpa(path, fast=False)
    monkeypatch.setattr(arpa_fast, "_BLOCK", block)
    _same(_bulk(path), expected)


def test_bulk_hash_table_keeps_every_bit_pattern() -> None:
    # the table is gathered 16 bytes at a time as complex128: NaN patterns must pass unchanged
    hashes = np.array(
        [0x7FF0000000000001, 0xFFF0000000000001, 0x7FF8000000000000, 5, 2**64 - 1], np.uint64
    )
    index = arpa_fast._HashIndex(hashes, np.arange(5) + 10)
    np.testing.assert_array_equal(index.get(hashes), np.arange(5) + 10)
    with pytest.raises(arpa_fast._Unusual):
        index.get(np.array([6], dtype=np.uint64))
