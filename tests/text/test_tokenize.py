"""Word tokenisers: whitespace and words-and-punctuation (Unicode), lowercasing, sentences."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rnnkit.errors import ConfigError
from rnnkit.text import build_vocab, encode_file, encode_text
from rnnkit.text.tokenize import split_sentences, tokenize
from rnnkit.text.vocab import BOS, EOS, UNK, Vocab


@pytest.mark.parametrize(
    ("line", "tokens"),
    [
        ("Don't panic—it's 3.14 km!", ["Don't", "panic", "—", "it's", "3.14", "km", "!"]),
        ("well-known, (quoted) 1,000", ["well-known", ",", "(", "quoted", ")", "1,000"]),
        ("Café naïve Ünïcode", ["Café", "naïve", "Ünïcode"]),
        ("cafe\u0301 au lait", ["café", "au", "lait"]),  # NFC: a decomposed é stays in the word
        ("हिन्दी भाषा", ["हिन्दी", "भाषा"]),  # Devanagari vowel signs are part of the word
        ("日本語です。", ["日本語です", "。"]),
        ("  ", []),
    ],
)
def test_words_tokenizer(line: str, tokens: list[str]) -> None:
    assert tokenize(line, "words") == tokens


def test_lowercase_is_unicode_aware() -> None:
    assert tokenize("ÉCOLE Straße", "words", lowercase=True) == ["école", "straße"]
    assert tokenize("The CAT", "whitespace", lowercase=True) == ["the", "cat"]


@given(st.text(max_size=60))
def test_words_tokenizer_keeps_every_non_space_character(text: str) -> None:
    tokens = tokenize(text, "words")
    assert all(t and not any(c.isspace() for c in t) for t in tokens)
    assert "".join(tokens) == "".join(unicodedata.normalize("NFC", text).split())


@given(st.text(max_size=60))
def test_whitespace_tokenizer_is_split(text: str) -> None:
    assert tokenize(text, "whitespace") == text.split()


def test_unknown_tokenizer_says_did_you_mean() -> None:
    with pytest.raises(ConfigError, match="did you mean 'words'"):
        tokenize("a b", "word")


def test_split_sentences() -> None:
    text = 'Hello there. How are you? "Fine!" she said.\nNew line here'
    assert split_sentences(text) == [
        "Hello there.", "How are you?", '"Fine!"', "she said.", "New line here",
    ]  # fmt: skip


def test_vocab_remembers_its_tokenizer(tmp_path: Path) -> None:
    p = tmp_path / "raw.txt"
    p.write_text("The cat, the DOG.\nA cat!\n", encoding="utf-8")
    vocab = build_vocab(p, "word", tokenizer="words", lowercase=True, sentence_markers=True)
    assert vocab.tokens[:3] == [UNK, BOS, EOS] and vocab.bos_id == 1
    assert {"the", "cat", ",", "dog", ".", "a", "!"} <= set(vocab.tokens)
    vocab.save(tmp_path / "vocab.json")
    again = Vocab.load(tmp_path / "vocab.json")
    assert (again.tokenizer, again.lowercase) == ("words", True)
    ids = encode_file(p, again).ids
    assert [again.tokens[i] for i in ids[:7]] == ["the", "cat", ",", "the", "dog", ".", EOS]
    assert encode_text("THE Cat!", again).ids.tolist() == [
        again.id("the"), again.id("cat"), again.id("!"),
    ]  # fmt: skip


def test_char_level_refuses_word_settings(tmp_path: Path) -> None:
    p = tmp_path / "t.txt"
    p.write_text("abc\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="need --level word"):
        build_vocab(p, "char", tokenizer="words")
