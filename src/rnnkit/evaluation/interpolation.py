"""Per-word linear interpolation of two language models, and tuning its weight.

Mikolov's RNNLM toolkit mixes an RNN with an n-gram model word by word::

    p(w | h) = lambda * p_rnn(w | h) + (1 - lambda) * p_ngram(w | h)

``lambda`` is the RNN's weight. Everything here works on per-token log10 probabilities (NumPy
arrays, one entry per predicted token, ``</s>`` included), so it needs neither torch nor a
particular model: any scorer that maps sentences to per-token log10 probabilities plugs in.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence

import numpy as np

from rnnkit.errors import ConfigError, DataError

#: A scorer maps a list of sentences (whitespace-tokenised strings) to one array of per-token
#: log10 probabilities per sentence, ``</s>`` included as the last token.
TokenScorer = Callable[[Sequence[str]], list[np.ndarray]]

_LN10 = math.log(10.0)

#: Mikolov's RNNLM toolkit's default interpolation weight of the RNN.
DEFAULT_LAMBDA = 0.75


def check_lambda(lam: float, flag: str = "--lambda") -> float:
    """Return ``lam`` as a float if it is within [0, 1]; else raise :class:`ConfigError`."""
    lam = float(lam)
    if not 0.0 <= lam <= 1.0 or math.isnan(lam):
        raise ConfigError(f"{flag} must be between 0 and 1 (the RNN's weight), got {lam}.")
    return lam


def check_interpolation_flags(
    ngram: str | os.PathLike[str] | None,
    lam: float | None,
    tune_lambda: str | os.PathLike[str] | None,
    *,
    model_is_arpa: bool = False,
) -> None:
    """Check that ``--ngram``, ``--lambda`` and ``--tune-lambda`` go together.

    ``--lambda`` (within [0, 1]) or ``--tune-lambda`` needs ``--ngram``, and not both are given;
    ``model_is_arpa``: MODEL is an ARPA file, which takes none of them (``evaluate`` and
    ``score`` interpolate a run with an n-gram model). Raises :class:`ConfigError`.
    """
    if model_is_arpa and (ngram is not None or lam is not None or tune_lambda is not None):
        raise ConfigError("--ngram, --lambda and --tune-lambda need an RNN run as MODEL.")
    if ngram is None and (lam is not None or tune_lambda is not None):
        raise ConfigError("--lambda and --tune-lambda need --ngram ARPA to interpolate with.")
    if lam is not None and tune_lambda is not None:
        raise ConfigError("--lambda and --tune-lambda conflict: give one.")
    if lam is not None:
        check_lambda(lam)


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise DataError(
            f"the two models scored different numbers of tokens ({a.shape} vs {b.shape}); "
            "they must share the tokenisation (one token per word, </s> last)."
        )
    return a, b


def interpolate_log10(rnn_log10: np.ndarray, ngram_log10: np.ndarray, lam: float) -> np.ndarray:
    """log10 of ``lam * 10**rnn + (1 - lam) * 10**ngram``, token by token (float64).

    ``lam = 1`` gives the RNN's scores, ``lam = 0`` the n-gram's.
    """
    lam = check_lambda(lam)
    a, b = _pair(rnn_log10, ngram_log10)
    if lam == 1.0:
        return a.copy()
    if lam == 0.0:
        return b.copy()
    ln = np.logaddexp(a * _LN10 + math.log(lam), b * _LN10 + math.log1p(-lam))
    return ln / _LN10


def perplexity_from_log10(log10_probs: np.ndarray) -> float:
    """``10 ** (-mean log10 p)`` over the tokens given."""
    x = np.asarray(log10_probs, dtype=np.float64)
    if x.size == 0:
        return math.inf
    return float(10.0 ** (-x.mean()))


def tune_lambda(
    rnn_log10: np.ndarray, ngram_log10: np.ndarray, *, tol: float = 1e-6
) -> tuple[float, float]:
    """The weight in [0, 1] that minimises the interpolated perplexity, and that perplexity.

    The negative log-likelihood is convex in ``lambda`` (minus the log of a function linear
    in it), so its derivative is increasing: bisection on the derivative finds the optimum,
    at a bound when the derivative does not change sign.
    """
    a, b = _pair(rnn_log10, ngram_log10)
    if a.size == 0:
        raise DataError("no tokens to tune the interpolation weight on.")
    # Work with probabilities relative to the larger of the two, per token, to stay finite.
    top = np.maximum(a, b)
    pa = 10.0 ** (a - top)
    pb = 10.0 ** (b - top)
    diff = pa - pb

    def slope(lam: float) -> float:  # d/dlam of -sum log(lam pa + (1 - lam) pb)
        return float(-(diff / (lam * pa + (1.0 - lam) * pb)).sum())

    if slope(0.0) >= 0.0:
        lam = 0.0
    elif slope(1.0) <= 0.0:
        lam = 1.0
    else:
        lo, hi = 0.0, 1.0
        while hi - lo > tol:
            mid = 0.5 * (lo + hi)
            if slope(mid) > 0.0:
                hi = mid
            else:
                lo = mid
        lam = 0.5 * (lo + hi)
    return lam, perplexity_from_log10(interpolate_log10(a, b, lam))


def interpolated_scorer(rnn: TokenScorer, ngram: TokenScorer, lam: float) -> TokenScorer:
    """A scorer whose per-token probabilities mix ``rnn`` (weight ``lam``) and ``ngram``."""
    lam = check_lambda(lam)

    def score(sentences: Sequence[str]) -> list[np.ndarray]:
        r = rnn(sentences)
        n = ngram(sentences)
        out = []
        for i, (x, y) in enumerate(zip(r, n)):
            if x.shape != y.shape:
                raise DataError(
                    f"sentence {i + 1}: the models scored {x.size} and {y.size} tokens; they "
                    "must share the tokenisation to be interpolated."
                )
            out.append(interpolate_log10(x, y, lam))
        return out

    return score


def tune_lambda_on_text(
    model: TokenScorer, ngram: TokenScorer, valid: str | os.PathLike[str]
) -> tuple[float, float]:
    """The weight of ``model`` (against ``ngram``) minimising the interpolated perplexity of
    the text file ``valid`` (one sentence a line), and that perplexity; see :func:`tune_lambda`.
    """
    from rnnkit.ngram import read_lines

    lines = read_lines(valid)
    if not lines:
        raise DataError(f"--tune-lambda {valid}: the file is empty; give a validation text.")
    a, b = model(lines), ngram(lines)
    for i, (x, y) in enumerate(zip(a, b)):
        if x.shape != y.shape:
            raise DataError(
                f"--tune-lambda {valid}:{i + 1}: the models scored {x.size} and {y.size} tokens;"
                " they must share the tokenisation."
            )
    return tune_lambda(np.concatenate(a), np.concatenate(b))
