"""Reading, tokenising and encoding text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnkit.errors import DataError
from rnnkit.text import Vocab, build_vocab, decode, encode_file, encode_text, read_text
from rnnkit.text import reading as reading_mod
from rnnkit.text.vocab import EOS, UNK


def write(tmp_path: Path, data: bytes | str, name: str = "t.txt") -> Path:
    p = tmp_path / name
    p.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return p


@settings(max_examples=40, deadline=None)
@given(st.text(min_size=1, max_size=200).filter(lambda s: s.strip()))
def test_char_encoding_round_trips_any_unicode(
    tmp_path_factory: pytest.TempPathFactory, text: str
) -> None:
    p = tmp_path_factory.mktemp("rt") / "t.txt"
    p.write_bytes(text.encode("utf-8"))
    vocab = build_vocab(p, "char")
    enc = encode_file(p, vocab)
    assert enc.ids.dtype == np.int32
    assert enc.unknown == 0
    assert decode(enc.ids, vocab) == text.removeprefix("\ufeff")


def test_multibyte_characters_split_across_read_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reading_mod, "CHUNK_BYTES", 3)  # every 3 bytes: splits 2- and 4-byte chars
    text = "héllo wörld 🙂 ok\n" * 5
    p = write(tmp_path, text)
    vocab = build_vocab(p, "char")
    assert decode(encode_file(p, vocab).ids, vocab) == text


def test_unseen_characters_become_unk_and_are_counted(tmp_path: Path) -> None:
    vocab = build_vocab(write(tmp_path, "abcabc"), "char")
    enc = encode_file(write(tmp_path, "abzq", "other.txt"), vocab)
    assert enc.unknown == 2
    assert enc.ids.tolist() == [vocab.id("a"), vocab.id("b"), vocab.unk_id, vocab.unk_id]
    assert encode_text("az", vocab).unknown == 1


def test_non_utf8_names_file_and_byte_offset(tmp_path: Path) -> None:
    p = write(tmp_path, b"hello \xff world")
    with pytest.raises(DataError, match=r"t\.txt.*not valid UTF-8 \(byte offset 6\)"):
        build_vocab(p, "char")


def test_non_utf8_offset_is_exact_past_the_first_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reading_mod, "CHUNK_BYTES", 4)
    p = write(tmp_path, "é".encode() * 5 + b"x\xfe")  # 10 bytes of é, x at 10, bad byte at 11
    with pytest.raises(DataError, match=r"byte offset 11\)"):
        read_text(p)


@pytest.mark.parametrize("content", ["", "   \n\t\n  "])
@pytest.mark.parametrize("level", ["char", "word"])
def test_empty_or_whitespace_corpus_is_refused(tmp_path: Path, content: str, level: str) -> None:
    with pytest.raises(DataError, match=r"t\.txt.*empty or holds only whitespace"):
        build_vocab(write(tmp_path, content), level)


def test_missing_and_directory_paths(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.txt' does not exist"):
        build_vocab(tmp_path / "nope.txt", "char")
    with pytest.raises(DataError, match="is a directory"):
        build_vocab(tmp_path, "char")


def test_word_level_stream_has_an_end_marker_per_line(tmp_path: Path) -> None:
    p = write(tmp_path, "the cat sat\nthe dog\n")
    vocab = build_vocab(p, "word")
    assert vocab.tokens[:2] == [UNK, EOS]
    enc = encode_file(p, vocab)
    assert [vocab.tokens[i] for i in enc.ids] == ["the", "cat", "sat", EOS, "the", "dog", EOS]


def test_word_vocab_keeps_the_most_frequent(tmp_path: Path) -> None:
    p = write(tmp_path, "a a a b b c\n")
    vocab = build_vocab(p, "word", max_size=4)  # <unk>, </s>, a, b
    assert vocab.tokens == [UNK, EOS, "a", "b"]
    assert encode_file(p, vocab).unknown == 1


def test_vocab_json_round_trip(tmp_path: Path) -> None:
    vocab = build_vocab(write(tmp_path, "hello wörld\n"), "char")
    vocab.save(tmp_path / "vocab.json")
    again = Vocab.load(tmp_path / "vocab.json")
    assert again.tokens == vocab.tokens and again.level == "char" and again.unk_id == vocab.unk_id


def test_growing_id_array_equals_the_concatenation() -> None:
    """The in-place grown array (no second copy of a big corpus) holds every part in order,
    across the doubling and the 4M-token steps."""
    from rnnkit.text.corpus import _Growing

    rng = np.random.default_rng(0)
    parts = [rng.integers(0, 1000, size=n, dtype=np.int32) for n in (0, 5, 1 << 20, 3_000_001, 7)]
    parts += [rng.integers(0, 1000, size=1 << 21, dtype=np.int32) for _ in range(4)]
    grown = _Growing()
    for p in parts:
        grown.extend(p)
    ids = grown.finish()
    assert ids.dtype == np.int32
    np.testing.assert_array_equal(ids, np.concatenate(parts))


def test_bincount_in_blocks_equals_numpy() -> None:
    from rnnkit.text.dataset import bincount

    ids = np.random.default_rng(1).integers(0, 50, size=10_001, dtype=np.int32)
    np.testing.assert_array_equal(bincount(ids, 60, chunk=999), np.bincount(ids, minlength=60))
