"""The binary n-gram format and the bulk ARPA reader: same models, same scores, clear errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from ngram_helpers import FALLBACK, GOLDEN, TINY

from helpers import assert_one_sentence
from rnnkit.cli import main
from rnnkit.errors import DataError
from rnnkit.ngram import (
    NgramModel,
    arpa_fast,
    binary_path,
    is_binary,
    load_model,
    read_arpa,
    read_binary,
    read_lines,
    train_kneser_ney,
    write_arpa,
    write_binary,
)
from rnnkit.ngram import arpa as arpa_module

#: Unknown words, an empty line, <unk> itself, orders that back off several levels.
SENTENCES = [
    *read_lines(TINY),
    "the zebra sat on the mat",
    "mat the on sat cat the",
    "",
    "<unk> <unk> dog",
    "a a a a a a a",
    "log log the saw",
]


def _same(a: NgramModel, b: NgramModel) -> None:
    assert a.vocab == b.vocab
    assert a.order == b.order
    for k in range(a.order):
        np.testing.assert_array_equal(a.keys[k], b.keys[k])
        np.testing.assert_array_equal(a.log10_prob[k], b.log10_prob[k])
        np.testing.assert_array_equal(a.log10_backoff[k], b.log10_backoff[k])


def _fast_only(path: Path) -> NgramModel:
    """The bulk reader's model, failing if it handed the file to the line-by-line reader."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    model = arpa_fast.parse(path, data, arpa_module)
    assert model is not None, f"the fast reader gave up on {path}"
    return model  # type: ignore[no-any-return]


# ------------------------------------------------------------------- the bulk ARPA reader
@pytest.mark.parametrize("order", [1, 2, 3, 5])
@pytest.mark.parametrize("name", ["m.arpa", "m.arpa.gz"])
def test_fast_reader_equals_line_reader(tmp_path: Path, order: int, name: str) -> None:
    model = train_kneser_ney(TINY, order, discount_fallback=FALLBACK)
    path = tmp_path / name
    write_arpa(model, path)
    fast = _fast_only(path)
    _same(fast, read_arpa(path, fast=False))
    _same(fast, model)
    _same(read_arpa(path), model)


def test_fast_reader_on_the_golden_file() -> None:
    _same(_fast_only(GOLDEN), read_arpa(GOLDEN, fast=False))


def _variants(text: str) -> dict[str, str]:
    body = text.replace("\\end\\\n", "")
    return {
        "spaces": text.replace("\t", " "),
        "crlf": text.replace("\n", "\r\n"),
        "runs_of_spaces": text.replace("\t", "  \t "),
        "no_final_newline": text.rstrip("\n"),
        "blank_lines_between_sections": text.replace("\n\n", "\n\n\n\n"),
        "comments_first": "# made by hand\n\n" + text,
        "no_end_newline_after_words": body.rstrip("\n") + "\n\\end\\",
        "exponents": text.replace("\t-0.", "\t-0.0e0", 3).replace("\t-1.", "\t-10e-1", 3),
        "inf": text.replace("\t0\t<s>", "\t-inf\t<s>"),
        "missing_backoffs": "\n".join(
            ln.rsplit("\t", 1)[0] if ln.count("\t") == 2 and i % 3 == 0 else ln
            for i, ln in enumerate(text.split("\n"))
        ),
    }


@pytest.mark.parametrize("variant", sorted(_variants("")))
def test_fast_reader_layouts(tmp_path: Path, variant: str) -> None:
    """Other writers' layouts read the same with both readers (whichever path is taken)."""
    text = _variants(GOLDEN.read_text(encoding="utf-8"))[variant]
    path = tmp_path / "v.arpa"
    path.write_bytes(text.encode("utf-8"))
    _same(read_arpa(path), read_arpa(path, fast=False))


def test_fast_reader_takes_the_usual_layouts(tmp_path: Path) -> None:
    text = _variants(GOLDEN.read_text(encoding="utf-8"))
    for variant in ("spaces", "crlf", "runs_of_spaces", "exponents", "missing_backoffs"):
        path = tmp_path / f"{variant}.arpa"
        path.write_text(text[variant], encoding="utf-8", newline="")
        _same(_fast_only(path), read_arpa(path, fast=False))


def test_fast_reader_leaves_unicode_whitespace_to_the_line_reader(tmp_path: Path) -> None:
    # str.split() splits on U+00A0; the bulk reader must not glue such words together
    text = GOLDEN.read_text(encoding="utf-8").replace("\tthe\t", "\tthe\u00a0\t", 1)
    path = tmp_path / "nbsp.arpa"
    path.write_text(text, encoding="utf-8")
    assert arpa_fast.parse(path, path.read_bytes(), arpa_module) is None
    _same(read_arpa(path), read_arpa(path, fast=False))


@pytest.mark.parametrize(
    ("old", "new", "fragment"),
    [
        ("ngram 2=46", "ngram 2=47", "2-grams section ends after 46 lines"),
        ("\tcat saw\t", "\tcat zzz\t", "not among the 1-grams"),
        ("\tthe\t", "\tthe\tthe\t", "fields"),
        ("-0.", "-0.x", "not a number"),
    ],
)
def test_errors_still_name_the_line(tmp_path: Path, old: str, new: str, fragment: str) -> None:
    text = GOLDEN.read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "bad.arpa"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(DataError, match=f"^{path}:\\d+: ") as info:
        read_arpa(path)
    assert fragment in str(info.value)


# ------------------------------------------------------------------------ the binary format
@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_binary_round_trip_scores_every_token_alike(tmp_path: Path, order: int) -> None:
    model = train_kneser_ney(TINY, order, discount_fallback=FALLBACK)
    arpa = tmp_path / "m.arpa"
    write_arpa(model, arpa)
    write_binary(read_arpa(arpa), tmp_path / "m.ngram")
    binary = read_binary(tmp_path / "m.ngram", verify=True)
    _same(binary, model)
    ours, theirs = read_arpa(arpa).score_sentences(SENTENCES), binary.score_sentences(SENTENCES)
    np.testing.assert_array_equal(ours.token_log10, theirs.token_log10)
    np.testing.assert_array_equal(ours.oov, theirs.oov)
    np.testing.assert_array_equal(ours.offsets, theirs.offsets)
    # token by token too
    state = binary.begin_state()
    for w in [*SENTENCES[-1].split(), "</s>"]:
        lp, state = binary.score_word(state, w)
    assert lp == pytest.approx(float(ours.per_sentence()[-1][-1]), abs=1e-6)


def test_binary_keeps_blank_prefixes(tmp_path: Path) -> None:
    # an ARPA file whose trigram lacks its prefix bigram (pruned): a blank entry, NaN prob
    text = (
        "\\data\\\nngram 1=4\nngram 2=2\nngram 3=1\n\n\\1-grams:\n-99\t<s>\t-0.5\n-0.5\t</s>\n"
        "-0.6\ta\t-0.2\n-0.7\tb\t-0.1\n\n\\2-grams:\n-0.3\t<s> a\t-0.05\n-0.2\tb </s>\n\n"
        "\\3-grams:\n-0.1\ta b </s>\n\n\\end\\\n"
    )
    (tmp_path / "p.arpa").write_text(text, encoding="utf-8")
    model = read_arpa(tmp_path / "p.arpa")
    write_binary(model, tmp_path / "p.ngram")
    again = read_binary(tmp_path / "p.ngram")
    assert again.counts() == model.counts() == [5, 2, 1]
    np.testing.assert_array_equal(
        again.score_sentences(["a b", "b a"]).token_log10,
        model.score_sentences(["a b", "b a"]).token_log10,
    )


def test_load_model_detects_the_format_by_content(tmp_path: Path) -> None:
    model = read_arpa(GOLDEN)
    odd = tmp_path / "binary_named.arpa"  # the name does not decide
    write_binary(model, odd)
    assert is_binary(odd) and not is_binary(GOLDEN)
    _same(load_model(odd), model)
    _same(load_model(GOLDEN), model)
    assert binary_path("x/kn5.arpa.gz") == Path("x/kn5.ngram")
    assert binary_path("kn5.arpa") == Path("kn5.ngram")
    assert binary_path("kn5") == Path("kn5.ngram")


def _corrupt(path: Path, case: str) -> None:
    data = bytearray(path.read_bytes())
    if case == "truncated":
        del data[len(data) // 2 :]
    elif case == "header_byte":
        data[30] ^= 0x55
    elif case == "tiny":
        del data[10:]
    elif case == "version":
        data[8] = 99
    elif case == "header_shape":  # a header whose CRC matches but whose arrays do not fit
        hlen = int.from_bytes(data[12:16], "little")
        header = json.loads(bytes(data[20 : 20 + hlen]))
        header["arrays"]["prob.2"]["offset"] += 64
        text = json.dumps(header, separators=(",", ":")).encode()
        import zlib

        text = text[:hlen].ljust(hlen)
        data[12:20] = hlen.to_bytes(4, "little") + zlib.crc32(text).to_bytes(4, "little")
        data[20 : 20 + hlen] = text
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("case", "fragment"),
    [
        ("truncated", "truncated or corrupt"),
        ("header_byte", "truncated or corrupt"),
        ("tiny", "too short"),
        ("version", "format version 99"),
        ("header_shape", "truncated or corrupt"),
    ],
)
def test_corrupt_binary_is_one_sentence_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, fragment: str
) -> None:
    path = tmp_path / "m.ngram"
    write_binary(read_arpa(GOLDEN), path)
    _corrupt(path, case)
    with pytest.raises(DataError, match=str(path)):
        load_model(path)
    for argv in (["ngram", "eval", str(path), str(TINY)], ["eval", str(path), str(TINY)]):
        assert main(argv) == 2
        assert_one_sentence(capsys.readouterr().err, str(path), fragment)


def test_checksums_catch_a_flipped_array_byte(tmp_path: Path) -> None:
    path = tmp_path / "m.ngram"
    write_binary(read_arpa(GOLDEN), path)
    data = bytearray(path.read_bytes())
    data[-70] ^= 0x01  # inside the last array
    path.write_bytes(bytes(data))
    read_binary(path)  # structure intact: maps
    with pytest.raises(DataError, match="checksum"):
        read_binary(path, verify=True)


# ----------------------------------------------------------------------------------- CLI
def test_train_writes_the_binary_beside_instead_or_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["ngram", "train", "-n", "3", "--discount-fallback", str(TINY), "-o"]
    assert main([*base, str(tmp_path / "a.arpa")]) == 0
    assert (tmp_path / "a.arpa").is_file() and is_binary(tmp_path / "a.ngram")
    assert "a.ngram (binary)" in capsys.readouterr().err
    assert main([*base, str(tmp_path / "b.ngram"), "--binary", "instead"]) == 0
    assert is_binary(tmp_path / "b.ngram") and not (tmp_path / "b.arpa").exists()
    assert main([*base, str(tmp_path / "c.arpa.gz"), "--binary", "no"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.arpa",
        "a.ngram",
        "b.ngram",
        "c.arpa.gz",
    ]
    _same(read_binary(tmp_path / "b.ngram"), read_arpa(tmp_path / "c.arpa.gz"))


def test_build_binary_and_every_verb_reads_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    arpa = tmp_path / "kn3.arpa"
    arpa.write_bytes(GOLDEN.read_bytes())
    assert main(["ngram", "build-binary", str(arpa)]) == 0
    assert "wrote" in capsys.readouterr().err
    binary = tmp_path / "kn3.ngram"
    assert main(["ngram", "build-binary", str(arpa), str(tmp_path / "other.bin")]) == 0
    assert (tmp_path / "other.bin").read_bytes() == binary.read_bytes()
    capsys.readouterr()
    for verb in (
        ["ngram", "eval", "{m}", str(TINY), "--format", "json"],
        ["ngram", "score", "{m}", str(TINY), "--per-token"],
        ["eval", "{m}", str(TINY)],
        ["score", "{m}", str(TINY)],
    ):
        outs = []
        for m in (arpa, binary):
            assert main([a.format(m=m) for a in verb]) == 0
            outs.append(capsys.readouterr().out.replace(str(m), "MODEL"))
        assert outs[0] == outs[1], verb


def test_rescore_takes_a_binary_model_and_ngram(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    binary = tmp_path / "kn3.ngram"
    write_binary(read_arpa(GOLDEN), binary)
    nbest = tmp_path / "nbest.txt"
    nbest.write_text("0 mat the on sat cat the\n0 the cat sat on the mat\n", encoding="utf-8")
    outs = []
    for m in (GOLDEN, binary):
        assert main(["rescore", str(m), str(nbest), "--ngram", str(m), "--lambda", "0.5"]) == 0
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1] == "0 the cat sat on the mat\n"


def test_build_binary_of_a_bad_arpa_is_one_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.arpa"
    bad.write_text("\\data\\\nngram 1=2\nbogus\n", encoding="utf-8")
    assert main(["ngram", "build-binary", str(bad)]) == 2
    assert_one_sentence(capsys.readouterr().err, "bad.arpa:3: ")
    assert not (tmp_path / "bad.ngram").exists()


# --------------------------------------------------------------------------------- kenlm
@pytest.mark.parametrize("order", [2, 3, 5])
def test_binary_scores_equal_kenlm(tmp_path: Path, order: int) -> None:
    kenlm = pytest.importorskip("kenlm", reason="the kenlm package is not installed")
    arpa = tmp_path / f"tiny{order}.arpa"
    write_arpa(train_kneser_ney(TINY, order, discount_fallback=FALLBACK), arpa)
    write_binary(read_arpa(arpa), tmp_path / "m.ngram")
    ours = load_model(tmp_path / "m.ngram").score_sentences(SENTENCES)
    theirs = kenlm.Model(str(arpa))
    expected = np.array([theirs.score(s, bos=True, eos=True) for s in SENTENCES])
    np.testing.assert_allclose(ours.sentence_log10(), expected, rtol=0, atol=1e-4)
    full = [list(theirs.full_scores(s)) for s in SENTENCES]
    tokens = np.concatenate([[p for p, _, _ in f] for f in full])
    np.testing.assert_allclose(ours.token_log10, tokens, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(ours.oov, np.concatenate([[o for _, _, o in f] for f in full]))


@pytest.mark.data
@pytest.mark.slow
def test_binary_equals_arpa_and_kenlm_on_ptb(ptb: Path, ptb_kn5: Path, tmp_path: Path) -> None:
    kenlm = pytest.importorskip("kenlm", reason="the kenlm package is not installed")
    fast = _fast_only(ptb_kn5)
    _same(fast, read_arpa(ptb_kn5, fast=False))
    write_binary(fast, tmp_path / "kn5.ngram")
    lines = read_lines(ptb / "ptb.test.txt")
    ours = load_model(tmp_path / "kn5.ngram").score_sentences(lines)
    np.testing.assert_array_equal(ours.token_log10, fast.score_sentences(lines).token_log10)
    theirs = kenlm.Model(str(ptb_kn5))
    expected = np.array([theirs.score(s, bos=True, eos=True) for s in lines])
    np.testing.assert_allclose(ours.sentence_log10(), expected, rtol=0, atol=1e-4)
