"""n-best lists in Mikolov's RNNLM format, and rescoring them with any language model.

Each line of an n-best list is one candidate: the integer id of the sentence it is a candidate
for, optionally an existing score (for example the acoustic or translation model's), then the
words::

    0 -1234.5 the cat sat on the mat
    0 -1240.1 the cat sat on a mat
    1 -980.2 hello world

Rescoring adds ``lm_weight`` times the language model's log10 probability of the words
(``</s>`` included, ``<s>`` context only) to the existing score (0 when there is none) and picks
the best candidate per id. The language model is any :data:`TokenScorer` (sentences to
per-token log10 probabilities): an n-gram model, an RNN, or their interpolation.
:func:`rescore_nbest` does it all from a MODEL (an ARPA file or a word-level run) and an n-best
file, as ``rnnkit rescore`` does (``rnnkit.rescore`` from Python).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rnnkit.errors import ConfigError, DataError
from rnnkit.evaluation.interpolation import (
    DEFAULT_LAMBDA,
    TokenScorer,
    check_interpolation_flags,
    check_lambda,
    interpolated_scorer,
    tune_lambda_on_text,
)

if TYPE_CHECKING:
    from rnnkit.training.checkpoint import LoadedRun

_INT = re.compile(r"^\d+$")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


@dataclass(frozen=True)
class NbestEntry:
    """One candidate: sentence id, its words (one space between), existing score, line number."""

    sentence_id: str
    text: str
    score: float | None
    line: int


@dataclass(frozen=True)
class Rescored:
    """A candidate with its language-model log10 probability and combined score."""

    entry: NbestEntry
    lm_log10: float
    num_tokens: int
    total: float


def parse_nbest(
    lines: Iterable[str], name: str = "<n-best>", has_score: bool | None = None
) -> list[NbestEntry]:
    """Parse n-best lines (see the module docstring).

    ``has_score``: whether the field after the id is an existing score; None decides from the
    lines themselves (a score column when every line has a number there). A line without an
    integer id first is a :class:`DataError` naming the line.
    """
    rows: list[tuple[int, list[str]]] = []
    for n, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            raise DataError(
                f"{name}:{n}: empty line; every n-best line starts with the integer id of its "
                "sentence (Mikolov's RNNLM format: '0 the cat sat')."
            )
        if not _INT.match(fields[0]):
            raise DataError(
                f"{name}:{n}: the line has no sentence id (it starts with {fields[0][:30]!r}); "
                "every n-best line must start with the integer id of its sentence, as in "
                "Mikolov's RNNLM format: '0 the cat sat'."
            )
        rows.append((n, fields))
    if not rows:
        raise DataError(f"{name}: the n-best list is empty; give at least one candidate line.")
    if has_score is None:
        has_score = all(len(f) >= 2 and _NUMBER.match(f[1]) for _, f in rows)
    entries = []
    for n, fields in rows:
        if has_score:
            if len(fields) < 2 or not _NUMBER.match(fields[1]):
                raise DataError(
                    f"{name}:{n}: expected a score after the sentence id, found "
                    f"{(fields[1] if len(fields) > 1 else 'nothing')!r}; give a number or "
                    "rescore without existing scores."
                )
            entries.append(NbestEntry(fields[0], " ".join(fields[2:]), float(fields[1]), n))
        else:
            entries.append(NbestEntry(fields[0], " ".join(fields[1:]), None, n))
    return entries


def read_nbest(path: str | os.PathLike[str], has_score: bool | None = None) -> list[NbestEntry]:
    """Read an n-best list file (UTF-8); see :func:`parse_nbest`."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError as exc:
        raise DataError(f"{p}: no such n-best file; check the path.") from exc
    except OSError as exc:
        raise DataError(f"{p}: cannot be read ({exc.strerror}).") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{p}: invalid UTF-8 at byte offset {exc.start}.") from exc
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return parse_nbest(lines, str(p), has_score)


def rescore(
    entries: Sequence[NbestEntry],
    scorer: TokenScorer,
    lm_weight: float = 1.0,
    batch_size: int = 1024,
) -> list[Rescored]:
    """Score every candidate with ``scorer``; ``total = score + lm_weight * lm_log10``."""
    out: list[Rescored] = []
    for start in range(0, len(entries), batch_size):
        batch = entries[start : start + batch_size]
        token_scores = scorer([e.text for e in batch])
        if len(token_scores) != len(batch):
            raise ValueError("the scorer returned a different number of sentences")
        for e, toks in zip(batch, token_scores):
            lm = float(np.sum(toks, dtype=np.float64))
            base = e.score if e.score is not None else 0.0
            out.append(Rescored(e, lm, int(np.size(toks)), base + lm_weight * lm))
    return out


def best_per_id(rescored: Sequence[Rescored]) -> list[Rescored]:
    """The candidate with the highest total per sentence id, ids in order of appearance
    (the first candidate wins a tie)."""
    best: dict[str, Rescored] = {}
    for r in rescored:
        cur = best.get(r.entry.sentence_id)
        if cur is None or r.total > cur.total:
            best[r.entry.sentence_id] = r
    return list(best.values())


# -- from a MODEL argument and an n-best file ----------------------------------------------

#: ``scores`` of :func:`rescore_nbest`: whether the field after the id is an existing score.
SCORES = {"auto": None, "yes": True, "no": False}


@dataclass(frozen=True)
class RescoreResult:
    """Every candidate rescored (file order), the best per sentence id, and how."""

    candidates: list[Rescored]
    best: list[Rescored]
    has_scores: bool  # whether the n-best list held existing scores
    lam: float | None = None  # the model's interpolation weight, when mixed with an n-gram
    tuned_perplexity: float | None = None  # the interpolated perplexity it was tuned to


def ngram_scorer(path: str | os.PathLike[str]) -> TokenScorer:
    """A TokenScorer for an ARPA file (plain or gzip) or a binary n-gram model."""
    from rnnkit.ngram import load_model

    model = load_model(path)

    def score(sentences: Sequence[str]) -> list[np.ndarray]:
        return model.score_sentences(sentences).per_sentence()

    return score


def run_scorer(run: LoadedRun) -> TokenScorer:
    """A TokenScorer for a loaded word-level run (each sentence scored on its own)."""
    from rnnkit.evaluation.sentences import token_scorer

    if run.vocab.level != "word":
        raise ConfigError(
            f"MODEL {run.path} is a character-level run; rescoring needs a word-level run "
            "(--level word)."
        )
    return token_scorer(run.model, run.vocab, device=next(run.model.parameters()).device)


def _load_run(path: Path, weights: str, device: str | None) -> LoadedRun:
    """A run directory's ``best`` or ``last`` weights on ``device`` (auto: CUDA if available)."""
    import torch

    from rnnkit.training.checkpoint import load_run

    if device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return load_run(path, weights=weights, device=device)


def load_scorer(
    model: str | os.PathLike[str] | LoadedRun | TokenScorer,
    weights: str = "best",
    device: str | None = "auto",
) -> TokenScorer:
    """A TokenScorer for MODEL: an ARPA file, a word-level run directory (its ``weights``
    loaded on ``device``), a loaded run, or a TokenScorer already."""
    if isinstance(model, (str, os.PathLike)):
        p = Path(model)
        if p.is_dir():
            return run_scorer(_load_run(p, weights, device))
        if not p.exists():
            raise DataError(f"{model}: no such model file or run directory; check the path.")
        return ngram_scorer(model)
    if callable(model):
        return model
    return run_scorer(model)


def rescore_nbest(
    model: str | os.PathLike[str] | LoadedRun | TokenScorer,
    nbest: str | os.PathLike[str],
    ngram: str | os.PathLike[str] | None = None,
    lam: float | None = None,
    tune_lambda: str | os.PathLike[str] | None = None,
    lm_weight: float = 1.0,
    scores: str = "auto",
    weights: str = "best",
    *,
    device: str | None = "auto",
    log: Callable[[str], None] | None = None,
) -> RescoreResult:
    """Rescore the n-best file ``nbest`` with MODEL (see :func:`load_scorer`); the 1-best per id.

    Each candidate's total is its existing score (0 if none) plus ``lm_weight`` times MODEL's
    log10 probability of its words (``</s>`` included). ``scores``: ``auto`` (an existing
    score column when every line has a number after the id), ``yes`` or ``no``. ``ngram`` (an
    ARPA file) is interpolated with MODEL word by word, MODEL with weight ``lam`` (0.75 by
    default, Mikolov's) or with the weight minimising the interpolated perplexity of the
    text file ``tune_lambda`` (reported to ``log``). ``weights``: a run's ``best`` or ``last``
    weights.
    """
    check_interpolation_flags(ngram, lam, tune_lambda)
    if scores not in SCORES:
        raise ConfigError(f"--scores must be auto, yes or no, not {scores!r}.")
    entries = read_nbest(nbest, has_score=SCORES[scores])
    scorer = load_scorer(model, weights, device)
    tuned_ppl = None
    if ngram is not None:
        if not Path(ngram).is_file():
            raise DataError(f"--ngram {ngram}: no such ARPA file; check the path.")
        ngram_lm = ngram_scorer(ngram)
        if tune_lambda is not None:
            lam, tuned_ppl = tune_lambda_on_text(scorer, ngram_lm, tune_lambda)
            if log is not None:
                log(
                    f"tuned --lambda {lam:.4f} on {tune_lambda}: interpolated perplexity "
                    f"{tuned_ppl:.2f}"
                )
        else:
            lam = check_lambda(DEFAULT_LAMBDA if lam is None else lam)
        scorer = interpolated_scorer(scorer, ngram_lm, lam)
    candidates = rescore(entries, scorer, lm_weight=lm_weight)
    return RescoreResult(
        candidates,
        best_per_id(candidates),
        has_scores=entries[0].score is not None,
        lam=lam,
        tuned_perplexity=tuned_ppl,
    )
