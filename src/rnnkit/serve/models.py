"""What the page shows, computed from the library: no HTTP here.

Each served model is a :class:`Served`: a language-model run, an ARPA n-gram model, a
classifier, tagger, translator or conditional-generator run, loaded once when the server starts, with a lock that every
model call holds (requests run in threads; the lock keeps one model's calls in turn). The
functions return plain dicts, ready for JSON:

- :func:`score_text`: each token's probability, its top-k alternatives, the sentence log10
  probabilities and the perplexity, counted as ``rnnkit score`` counts them (KenLM's
  convention: ``</s>`` predicted and counted, ``<s>`` context only). For a word-level run or
  an n-gram model these numbers are :func:`rnnkit.api.score`'s; a character-level run reads
  the text as one stream after a newline, so every character is predicted.
- :func:`compare_texts`: two models on the same text, token by token.
- :func:`hidden_units`: the activations of chosen units of a recurrent LM over the text,
  ranked by variance or by correlation with a pattern; for GRU and LSTM their gates too,
  and the fraction of saturated units at each step, as ``rnnkit diagnose`` counts it.
- :func:`generate_stream`: tokens drawn one at a time as ``rnnkit generate`` draws them.
- :func:`classify_text`, :func:`tag_text`, :func:`translate_text`,
  :func:`condition_generate`: the other shapes (a translation comes with its attention
  matrix, from a forced pass of the chosen output through the model).
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from rnnkit.errors import ConfigError, DataError, RnnkitError, RunError

#: The tasks the page shows; a run of another task is refused when the server starts.
SERVED_TASKS = ("lm", "classify", "tag", "translate", "condition")


class RequestError(Exception):
    """A request the server refuses: an HTTP status (4xx) and one sentence for the user."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; past a limit the answer is a 4xx with a message."""

    max_body_bytes: int = 64 * 1024  # a request body
    max_text_chars: int = 5000  # text to score, compare, inspect, classify or tag
    max_lines: int = 200  # sentences (lines) in one text
    max_tokens: int = 2000  # tokens of one text once cut (characters of a char-level run)
    max_top_k: int = 20  # alternatives per token
    max_units: int = 64  # hidden units in one heat-map
    max_classify_tokens: int = 300  # a classifier reads every prefix: T^2 work
    max_prompt_chars: int = 1000
    max_new_tokens: int = 1000  # one generation
    max_streams: int = 4  # generations streaming at once (all clients together)
    max_source_chars: int = 1000  # one source sentence to translate
    max_beam: int = 16  # beam size and n-best list (translate, condition)
    max_samples: int = 20  # outputs of one conditional generation
    max_output_tokens: int = 200  # tokens of one conditional generation's output

    def to_dict(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.__dict__.items()}


@dataclass
class Served:
    """One model the server shows, loaded at start; requests name it by ``name``."""

    name: str
    path: Path
    kind: str  # lm, ngram, classify, tag, translate, condition
    model: Any  # a LoadedRun, or an NgramModel for kind "ngram"
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def level(self) -> str:
        if self.kind == "ngram":
            return "word"
        return str(self.model.vocab.level)

    @property
    def views(self) -> list[str]:
        """The page's views that apply to this model."""
        if self.kind == "ngram":
            return ["probabilities", "compare"]
        if self.kind == "lm":
            views = ["probabilities", "compare"]
            if _is_recurrent(self.model.model):
                views.append("hidden")
            return [*views, "generate"]
        if self.kind in ("classify", "translate", "condition"):
            return [self.kind]
        return ["tag"]

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "views": self.views}
        if self.kind == "ngram":
            out.update(level="word", order=self.model.order, vocab_size=self.model.vocab_size)
            return out
        cfg = self.model.config.get("model", {})
        out.update(
            level=self.level,
            cell=cfg.get("cell"),
            hidden_size=cfg.get("hidden_size"),
            num_layers=cfg.get("num_layers", 1),
            vocab_size=len(self.model.vocab),
        )
        if self.kind == "lm":
            out.update(mode=self.model.mode, arch=cfg.get("arch", "rnn"))
        if self.kind == "classify":
            out.update(
                labels=list(self.model.task.labels),
                pooling=cfg.get("pooling"),
                text=self.model.task.features is None,
            )
        if self.kind == "tag":
            out.update(
                labels=list(self.model.task.vocabs.labels.tokens),
                feature_columns=len(self.model.task.feature_columns),
                crf=bool(cfg.get("crf")),
            )
        if self.kind == "translate":
            task = self.model.task
            attention = str(cfg.get("attention", "none"))
            out.update(
                attention=attention,
                input_feeding=bool(cfg.get("input_feeding")) and attention != "none",
                bidirectional=bool(cfg.get("bidirectional")),
                units="pieces" if task.source.segmenter.kind == "spm" else "words",
                src_vocab_size=len(task.source.vocab),
                tgt_vocab_size=len(task.target.vocab),
                max_length=task.max_length,
            )
        if self.kind == "condition":
            task = self.model.task
            out.update(
                condition_kind=task.kind,
                labels=list(task.labels) if task.labels is not None else None,
                vector_size=task.vector_size,
                conditioning=cfg.get("condition"),
            )
        return out


def _is_recurrent(model: Any) -> bool:
    from rnnkit.models import RNNLanguageModel

    return isinstance(model, RNNLanguageModel)


# -- loading ---------------------------------------------------------------------------------


def load_models(
    paths: Sequence[str | os.PathLike[str]], device: str = "cpu", weights: str = "best"
) -> list[Served]:
    """Load every RUN (a run directory or an ARPA file) once; a bad path is a RunError
    naming it. Names are the folder or file names, made unique with a number."""
    from rnnkit.api import load
    from rnnkit.ngram import load_model
    from rnnkit.training.checkpoint import is_run_dir, read_config, task_name

    if not paths:
        raise ConfigError("give at least one RUN to serve: a run directory or an ARPA file.")
    served: list[Served] = []
    names: set[str] = set()
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise RunError(f"{str(path)!r} does not exist; give a run directory or an ARPA file.")
        if path.is_dir():
            if not is_run_dir(path):
                raise RunError(
                    f"{str(path)!r} is not an rnnkit run directory (it has no config.json)."
                )
            task = task_name(read_config(path))
            if task not in SERVED_TASKS:
                raise RunError(
                    f"run {str(path)!r} is a {task} run, which the page does not show yet; "
                    f"it shows {', '.join(SERVED_TASKS)} runs and ARPA files."
                )
            model: Any = load(path, weights=weights, device=device)
            kind = task
        else:
            try:
                model = load_model(path)  # ARPA or binary
            except RnnkitError as exc:
                raise RunError(
                    f"{str(path)!r} is neither a run directory nor a readable ARPA file: {exc}"
                ) from exc
            kind = "ngram"
        name = path.name or str(path)
        base, n = name, 2
        while name in names:
            name, n = f"{base} ({n})", n + 1
        names.add(name)
        served.append(Served(name, path, kind, model))
    return served


# -- probabilities ---------------------------------------------------------------------------


def _lines(text: str, limits: Limits) -> list[str]:
    if not text.strip():
        raise RequestError(400, "the text is empty; type a sentence (one a line).")
    if len(text) > limits.max_text_chars:
        raise RequestError(
            413, f"the text has {len(text):,} characters; the limit is {limits.max_text_chars:,}."
        )
    lines = text.split("\n")
    if len(lines) > 1 and lines[-1] == "":
        lines.pop()  # a final newline ends the last line; it opens no new one
    if len(lines) > limits.max_lines:
        raise RequestError(
            413, f"the text has {len(lines)} lines; the limit is {limits.max_lines} sentences."
        )
    return [ln.rstrip("\r") for ln in lines]


def _check_tokens(n: int, limit: int, unit: str) -> None:
    if n > limit:
        raise RequestError(413, f"the text has {n:,} {unit}s; the limit is {limit:,}.")


def _summary(total_log10: float, tokens: int, oovs: int, oov_log10: float) -> dict[str, Any]:
    def ppl(total: float, n: int) -> float:
        return math.inf if n == 0 else float(10.0 ** (-total / n))

    return {
        "tokens": tokens,
        "oovs": oovs,
        "log10_prob": total_log10,
        "perplexity": ppl(total_log10, tokens),
        "perplexity_excl_oov": ppl(total_log10 - oov_log10, tokens - oovs),
        "bits_per_token": -total_log10 * math.log2(10) / tokens if tokens else None,
    }


def score_text(served: Served, text: str, top_k: int, limits: Limits) -> dict[str, Any]:
    """Each token's probability and its ``top_k`` most probable alternatives (none for an
    n-gram model), each sentence's log10 probability, and the totals."""
    if served.kind not in ("lm", "ngram"):
        raise RequestError(
            400, f"model {served.name!r} is a {served.kind} run, not a language model."
        )
    if served.level == "char":
        return _score_chars(served, text, top_k, limits)
    lines = _lines(text, limits)
    from rnnkit import api
    from rnnkit.evaluation.sentences import ScoreResult

    with served.lock:
        if served.kind == "ngram":
            _check_tokens(sum(len(ln.split()) + 1 for ln in lines), limits.max_tokens, "token")
            result = ScoreResult(
                served.name,
                lines,
                [ln.split() for ln in lines],
                served.model.score_sentences(lines),
            )
            alternatives = None
        else:
            vocab = served.model.vocab
            _check_tokens(
                sum(len(vocab.tokenize(ln)) + 1 for ln in lines), limits.max_tokens, "token"
            )
            result = api.score(served.model, sentences=lines)
            alternatives = _word_alternatives(served, result, top_k) if top_k else None
    sentences = []
    for s, rec in enumerate(result.records(per_token=True)):
        for i, tok in enumerate(rec["per_token"]):
            tok["prob"] = 10.0 ** tok["log10_prob"]
            tok["alternatives"] = alternatives[s][i] if alternatives is not None else None
        sentences.append(rec)
    sc = result.scores
    oov_log10 = float(sc.token_log10[sc.oov].sum())
    summary = _summary(result.total_log10, result.num_tokens, result.num_oov, oov_log10)
    summary.update(sentences=result.num_sentences, words=result.num_words)
    return {"model": served.name, "level": "word", "sentences": sentences, "summary": summary}


@torch.inference_mode()
def _word_alternatives(served: Served, result: Any, top_k: int) -> list[list[list[dict[str, Any]]]]:
    """The ``top_k`` most probable next words at each predicted position of each sentence."""
    from rnnkit.evaluation.sentences import markers

    loaded = served.model
    model, vocab = loaded.model, loaded.vocab
    bos, _ = markers(vocab)
    dev = next(model.parameters()).device
    out = []
    for words in result.tokens:
        ids = [bos, *(vocab.id(w) for w in words)]
        h, _ = model.features(torch.tensor([ids], device=dev))
        out.append(_top(model.head.log_probs(h[0]), vocab.tokens, top_k))
    return out


def _top(logp: torch.Tensor, tokens: Sequence[str], k: int) -> list[list[dict[str, Any]]]:
    values, index = torch.topk(logp.double(), min(k, logp.shape[-1]), dim=-1)
    probs = values.exp().tolist()
    return [
        [{"token": tokens[j], "prob": p} for j, p in zip(row_i, row_p)]
        for row_i, row_p in zip(index.tolist(), probs)
    ]


def _char_context(vocab: Any) -> int:
    """The id a character stream starts from: a newline (as generate starts), or </s>, or 0."""
    start = vocab.index.get("\n", vocab.eos_id)
    return int(start) if start is not None else 0


@torch.inference_mode()
def _score_chars(served: Served, text: str, top_k: int, limits: Limits) -> dict[str, Any]:
    from rnnkit.text import encode_text

    if len(text) > limits.max_text_chars:
        raise RequestError(
            413, f"the text has {len(text):,} characters; the limit is {limits.max_text_chars:,}."
        )
    if not text:
        raise RequestError(400, "the text is empty; type something to score.")
    loaded = served.model
    vocab = loaded.vocab
    ids = encode_text(text, vocab).ids.astype(np.int64)
    _check_tokens(len(ids), limits.max_tokens, "character")
    with served.lock:
        model = loaded.model
        dev = next(model.parameters()).device
        x = torch.tensor([[_char_context(vocab), *ids[:-1].tolist()]], device=dev)
        h, _ = model.features(x)
        logp = model.head.log_probs(h[0]).double()
        picked = logp[torch.arange(len(ids)), torch.from_numpy(ids).to(dev)]
        log10 = (picked / math.log(10)).cpu().numpy()
        alternatives = _top(logp, vocab.tokens, top_k) if top_k else None
    chars = list(text)
    oov = ids == vocab.unk_id
    per_token = [
        {
            "token": c,
            "log10_prob": float(p),
            "prob": 10.0 ** float(p),
            "oov": bool(o),
            "alternatives": alternatives[i] if alternatives is not None else None,
        }
        for i, (c, p, o) in enumerate(zip(chars, log10.tolist(), oov.tolist()))
    ]
    total = float(log10.sum())
    summary = _summary(total, len(ids), int(oov.sum()), float(log10[oov].sum()))
    summary.update(sentences=1, words=len(ids))
    sentence = {"text": text, "log10_prob": total, "tokens": len(ids), "oovs": int(oov.sum())}
    sentence["per_token"] = per_token
    return {"model": served.name, "level": "char", "sentences": [sentence], "summary": summary}


def compare_texts(a: Served, b: Served, text: str, top_k: int, limits: Limits) -> dict[str, Any]:
    """Both models' scores, and for each token log10 P_a - log10 P_b when they cut the text
    into the same tokens (positive: ``a`` predicts it better)."""
    if a.level != b.level:
        raise RequestError(
            400,
            f"{a.name!r} reads {a.level}s and {b.name!r} reads {b.level}s; compare models "
            "over the same units.",
        )
    sa, sb = score_text(a, text, top_k, limits), score_text(b, text, top_k, limits)

    def flat(s: dict[str, Any]) -> list[dict[str, Any]]:
        return [t for sent in s["sentences"] for t in sent["per_token"]]

    ta, tb = flat(sa), flat(sb)
    aligned = [t["token"] for t in ta] == [t["token"] for t in tb]
    diff = [x["log10_prob"] - y["log10_prob"] for x, y in zip(ta, tb)] if aligned else None
    out: dict[str, Any] = {"a": sa, "b": sb, "aligned": aligned, "diff": diff}
    if diff is not None:
        out["a_better"] = sum(1 for d in diff if d > 0)
        out["b_better"] = sum(1 for d in diff if d < 0)
    else:
        out["message"] = "the two models cut the text into different tokens"
    return out


# -- hidden units ----------------------------------------------------------------------------

GATES = {"rnn": ["z"], "gru": ["r", "z", "n"], "lstm": ["i", "f", "g", "o", "c"]}
GATE_NAMES = {
    "h": "hidden state a_t (h_t)",
    "z_rnn": "pre-activation z_t = W_ax x_t + W_aa a_{t-1} + b_a",
    "r": "reset gate r_t",
    "z": "update gate z_t",
    "n": "candidate n_t",
    "i": "input gate i_t",
    "f": "forget gate f_t",
    "g": "candidate g_t",
    "o": "output gate o_t",
    "c": "cell state c_t",
}


def _stream_tokens(served: Served, text: str, limits: Limits) -> tuple[list[str], list[int], int]:
    """The tokens of ``text`` read as one stream (words with </s> at each line's end, or
    characters), their ids, and the id read before them."""
    vocab = served.model.vocab
    if vocab.level == "char":
        if len(text) > limits.max_text_chars:
            raise RequestError(
                413,
                f"the text has {len(text):,} characters; the limit is {limits.max_text_chars:,}.",
            )
        tokens = list(text)
        start = _char_context(vocab)
    else:
        from rnnkit.evaluation.sentences import markers

        tokens = []
        for line in _lines(text, limits):
            tokens += [*vocab.tokenize(line), "</s>"]
        start = markers(vocab)[0]
    if not tokens:
        raise RequestError(400, "the text is empty; type something to inspect.")
    _check_tokens(len(tokens), limits.max_tokens, "token")
    return tokens, [vocab.id(t) for t in tokens], start


@torch.inference_mode()
def _trace(model: Any, ids: Sequence[int], start: int, layer: int) -> dict[str, Any]:
    """Step through ``ids`` after ``start``: layer ``layer``'s h_t and gates at every step
    (T, H) each, and the fraction of saturated units at each step (all layers), stepping
    with :func:`rnnkit.diagnostics.step`'s equations and the model's own weights."""
    from rnnkit.diagnostics import _step

    cfg = model.config
    dev = next(model.parameters()).device
    state = model.init_state(1, dev)
    skip = model.layers is not None
    seq = torch.tensor([start, *ids], device=dev)
    h_rows: list[torch.Tensor] = []
    gate_rows: dict[str, list[torch.Tensor]] = {g: [] for g in GATES[cfg.cell]}
    saturation: list[float] = []
    for t in range(len(seq)):
        x = model.inputs(seq[t : t + 1])
        prev = state
        state, saturated, units, hs = _step(model, x, state)
        if t == 0:
            continue  # the context token: not shown
        saturation.append(float(saturated) / max(int(units), 1))
        # layer `layer`'s input: x, or the layers below (their sum with skip connections)
        inp = x
        for k in range(layer):
            inp = hs[k] + inp if skip and k > 0 else hs[k]
        h_prev = prev[0] if isinstance(prev, tuple) else prev
        w_ih, w_hh, b_ih, b_hh = model.layer_weights(layer)
        gi = inp @ w_ih.T + b_ih
        gh = h_prev[layer] @ w_hh.T + b_hh
        if cfg.cell == "rnn":
            gate_rows["z"].append((gi + gh)[0])
        elif cfg.cell == "gru":
            i_r, i_z, i_n = gi.chunk(3, dim=-1)
            h_r, h_z, h_n = gh.chunk(3, dim=-1)
            r = torch.sigmoid(i_r + h_r)
            gate_rows["r"].append(r[0])
            gate_rows["z"].append(torch.sigmoid(i_z + h_z)[0])
            gate_rows["n"].append(torch.tanh(i_n + r * h_n)[0])
        else:
            assert isinstance(state, tuple)
            i, f, g, o = (gi + gh).chunk(4, dim=-1)
            gate_rows["i"].append(torch.sigmoid(i)[0])
            gate_rows["f"].append(torch.sigmoid(f)[0])
            gate_rows["g"].append(torch.tanh(g)[0])
            gate_rows["o"].append(torch.sigmoid(o)[0])
            gate_rows["c"].append(state[1][layer, 0])
        h_rows.append(hs[layer][0])
    return {
        "h": torch.stack(h_rows).double().cpu().numpy(),
        "gates": {g: torch.stack(v).double().cpu().numpy() for g, v in gate_rows.items()},
        "saturation": saturation,
    }


def _correlation(acts: np.ndarray, pattern: np.ndarray) -> np.ndarray:
    """Pearson correlation of each unit's activations (T, H) with ``pattern`` (T,); 0 where
    a unit or the pattern does not vary."""
    a = acts - acts.mean(0)
    p = pattern - pattern.mean()
    denom = np.sqrt((a * a).sum(0) * float((p * p).sum()))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (a * p[:, None]).sum(0) / denom
    return np.where(denom > 0, r, 0.0)


def hidden_units(
    served: Served,
    text: str,
    limits: Limits,
    layer: int | None = None,
    count: int = 16,
    rank: str = "variance",
    pattern: Sequence[float] | None = None,
    units: Sequence[int] | None = None,
) -> dict[str, Any]:
    """The activations of ``count`` units of one layer over the text (chosen by ``units``, or
    the top of the ranking: by variance over the text, or by |correlation| with ``pattern``,
    one number per token), with their gates and the saturated fraction at each step."""
    if served.kind != "lm" or not _is_recurrent(served.model.model):
        raise RequestError(
            400, f"model {served.name!r} has no recurrent hidden units to show (an RNN LM has)."
        )
    model = served.model.model
    cfg = model.config
    L, H = cfg.num_layers, cfg.hidden_size
    layer = L - 1 if layer is None else layer
    if not 0 <= layer < L:
        raise RequestError(400, f"layer must be 0 to {L - 1} for this model, not {layer}.")
    if rank not in ("variance", "correlation"):
        raise RequestError(400, f"rank must be 'variance' or 'correlation', not {rank!r}.")
    tokens, ids, start = _stream_tokens(served, text, limits)
    if rank == "correlation" and (pattern is None or len(pattern) != len(tokens)):
        raise RequestError(
            400,
            f"rank by correlation needs a pattern of one number per token ({len(tokens)} "
            "here); mark some tokens first.",
        )
    if units is not None:
        bad = [u for u in units if not 0 <= u < H]
        if bad:
            raise RequestError(400, f"units must be 0 to {H - 1}; {bad[0]} is not.")
        if len(units) > limits.max_units:
            raise RequestError(
                413, f"{len(units)} units asked for; the limit is {limits.max_units}."
            )
    with served.lock:
        trace = _trace(model, ids, start, layer)
    acts = trace["h"]
    variance = acts.var(0)
    corr = (
        _correlation(acts, np.asarray(pattern, dtype=np.float64)) if pattern is not None else None
    )
    if units is not None:
        chosen = list(units)
    else:
        key = np.abs(corr) if rank == "correlation" and corr is not None else variance
        chosen = np.argsort(-key, kind="stable")[: min(count, H)].tolist()
    gates = {g: trace["gates"][g][:, chosen].T.tolist() for g in trace["gates"]}
    return {
        "model": served.name,
        "level": served.level,
        "cell": cfg.cell,
        "nonlinearity": cfg.nonlinearity,
        "layer": layer,
        "num_layers": L,
        "hidden_size": H,
        "tokens": tokens,
        "units": chosen,
        "variance": [float(variance[u]) for u in chosen],
        "correlation": [float(corr[u]) for u in chosen] if corr is not None else None,
        "activations": acts[:, chosen].T.tolist(),
        "gates": gates,
        "gate_names": {g: GATE_NAMES["z_rnn" if cfg.cell == "rnn" else g] for g in gates},
        "saturation": trace["saturation"],
        "saturated_fraction": float(np.mean(trace["saturation"])),
        "saturation_units": {
            "rnn": "a_t (tanh)" if cfg.nonlinearity == "tanh" else "z_t <= 0 (ReLU, dead)",
            "gru": "candidate n_t (tanh)",
            "lstm": "candidate g_t and tanh(c_t)",
        }[cfg.cell],
    }


# -- generation ------------------------------------------------------------------------------


@dataclass
class Sampling:
    """The controls of ``rnnkit generate``."""

    prompt: str = ""
    max_new_tokens: int = 200
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None


def prepare_generation(served: Served, s: Sampling, limits: Limits) -> tuple[list[int], bool]:
    """Check the controls and the prompt (as :func:`rnnkit.api.generate` does); return the
    context ids and whether the run samples sentences (ending at ``</s>``)."""
    from rnnkit.evaluation.sentences import markers
    from rnnkit.generation import check_sampling
    from rnnkit.text import encode_text

    if served.kind != "lm":
        raise RequestError(
            400, f"model {served.name!r} is a {served.kind} model; generate needs an RNN LM run."
        )
    if len(s.prompt) > limits.max_prompt_chars:
        raise RequestError(
            413,
            f"the prompt has {len(s.prompt):,} characters; the limit is {limits.max_prompt_chars:,}.",
        )
    if not 1 <= s.max_new_tokens <= limits.max_new_tokens:
        raise RequestError(
            413 if s.max_new_tokens > limits.max_new_tokens else 400,
            f"max_new_tokens must be 1 to {limits.max_new_tokens}, not {s.max_new_tokens}.",
        )
    check_sampling(s.temperature, s.top_k, s.top_p, False)
    vocab = served.model.vocab
    enc = encode_text(s.prompt, vocab)
    if enc.unknown:
        unseen = sorted(
            {
                t
                for t in (s.prompt if vocab.level == "char" else vocab.tokenize(s.prompt))
                if t not in vocab
            }
        )
        shown = ", ".join(repr(t) for t in unseen[:5])
        unit = "character" if vocab.level == "char" else "word"
        raise DataError(
            f"the prompt holds {len(unseen)} {unit}(s) the model never saw in training "
            f"({shown}); remove or replace them."
        )
    sentence = served.model.mode == "sentence" and vocab.level == "word"
    context = [int(i) for i in enc.ids.tolist()]
    if sentence:
        context = [markers(vocab)[0], *context]
    if not context:
        start = vocab.index.get("\n", vocab.eos_id) if vocab.level == "char" else vocab.eos_id
        context = [start if start is not None else 0]
    return context, sentence


def generate_stream(
    served: Served, s: Sampling, context: list[int], sentence: bool
) -> Iterator[dict[str, Any]]:
    """Draw tokens one at a time, as :func:`rnnkit.generation.sample` draws one sample (the
    same seed gives the same tokens as ``rnnkit generate``); yield ``{"token", "text"}`` for
    each (``text`` is what it adds to the output), then ``{"done": True, "tokens": n}``.
    The model's lock is held for each step only, so other requests go on in between."""
    from rnnkit.api import _banned
    from rnnkit.generation import _draw_two_step, filter_logits
    from rnnkit.models.output import ClassSoftmax, draw

    loaded = served.model
    model, vocab = loaded.model, loaded.vocab
    dev = next(model.parameters()).device
    generator = torch.Generator(device=dev)
    if s.seed is not None:
        generator.manual_seed(s.seed)
    else:
        generator.seed()
    banned = torch.tensor(_banned(vocab, False), dtype=torch.long, device=dev)
    plain = s.temperature in (None, 1.0) and s.top_k is None and s.top_p is None
    two_step = model.head if isinstance(model.head, ClassSoftmax) and plain else None
    eos = vocab.eos_id
    word = vocab.level == "word"
    lead = " " if s.prompt.strip() else ""
    prev: int | None = None
    drawn = 0
    with served.lock, torch.inference_mode():
        h, state = model.features(torch.tensor([context], device=dev))
        h = h[:, -1]
    while drawn < s.max_new_tokens:
        with served.lock, torch.inference_mode():
            if two_step is not None:
                tok = _draw_two_step(two_step, h, banned, generator)
            else:
                scores = model.head.logits(h).float().log_softmax(-1)
                scores[:, banned] = float("-inf")
                if s.temperature not in (None, 1.0):
                    scores = scores / s.temperature
                scores = filter_logits(scores, s.top_k, s.top_p)
                tok = draw(torch.softmax(scores, dim=-1), generator)
            tid = int(tok[0])
            if sentence and tid == eos:
                break  # the sentence is complete; its </s> is not shown (as generate)
            h, state = model.step(tok, state)
        drawn += 1
        token = vocab.tokens[tid]
        if not word:
            piece = token
        elif tid == eos:
            piece = "\n"
        else:
            piece = (lead if prev is None else "" if prev == eos else " ") + token
        prev = tid
        yield {"token": token, "text": piece}
    yield {"done": True, "tokens": drawn}


# -- classifier and tagger -------------------------------------------------------------------


@torch.inference_mode()
def classify_text(served: Served, text: str, limits: Limits) -> dict[str, Any]:
    """The predicted label and class probabilities, as ``rnnkit classify predict`` gives
    them; the probabilities after each prefix (what the model would say had the text stopped
    there); and each token's share in the pooling (attention weights; for max pooling the
    share of the pooled dimensions whose maximum it holds; mean: equal shares)."""
    from rnnkit.models.classifier import length_mask
    from rnnkit.tasks.classify import pad

    if served.kind != "classify":
        raise RequestError(
            400, f"model {served.name!r} is a {served.kind} model, not a classifier."
        )
    task = served.model.task
    if task.features is not None:
        raise RequestError(400, f"model {served.name!r} classifies audio; the page sends text.")
    if len(text) > limits.max_text_chars:
        raise RequestError(
            413, f"the text has {len(text):,} characters; the limit is {limits.max_text_chars:,}."
        )
    tokens = task.vocab.tokenize(text.replace("\n", " "))
    if not tokens:
        raise RequestError(400, "the text has no tokens; type something to classify.")
    _check_tokens(len(tokens), limits.max_classify_tokens, "token")
    ids = task.encode_tokens(tokens)
    with served.lock:
        model = served.model.model
        dev = next(model.parameters()).device
        labels, probs = task.predict(model, [text.replace("\n", " ")])
        inputs, lengths = pad([ids[: i + 1] for i in range(len(ids))])
        prefix = model.probabilities(inputs.to(dev), lengths).double().cpu().numpy()
        x = inputs[-1:].to(dev)
        emb = model.embedding(x) if model.embedding is not None else x
        out, _ = model.core(emb, lengths[-1:])
        pooling = model.config.pooling
        T = len(ids)
        share: list[float] | None
        if pooling == "attention":
            assert model.attention is not None
            mask = length_mask(lengths[-1:].to(dev), T)
            share = model.attention.weights(out, mask)[0].double().cpu().tolist()
        elif pooling == "max":
            where = out[0, :T].argmax(0)
            share = (torch.bincount(where, minlength=T).double() / where.numel()).cpu().tolist()
        elif pooling == "mean":
            share = [1.0 / T] * T
        else:
            share = None
    return {
        "model": served.name,
        "label": labels[0],
        "labels": list(task.labels),
        "probabilities": probs[0].tolist(),
        "tokens": tokens,
        "unknown": [bool(i == task.vocab.unk_id) for i in ids.tolist()],
        "prefix_probabilities": prefix.tolist(),
        "pooling": pooling,
        "pooling_share": share,
    }


@torch.inference_mode()
def tag_text(served: Served, text: str, limits: Limits) -> dict[str, Any]:
    """Each line a sentence of whitespace-separated words (``word|feature|...`` when the run
    reads extra columns): the labels ``rnnkit tag predict`` gives, and the softmax of each
    token's emission scores (with a CRF the labels come from Viterbi over the sentence)."""
    from rnnkit.text.columns import Sentence

    if served.kind != "tag":
        raise RequestError(400, f"model {served.name!r} is a {served.kind} model, not a tagger.")
    task = served.model.task
    ncols = len(task.feature_columns)
    sentences = []
    total = 0
    for n, line in enumerate(_lines(text, limits), 1):
        cells = line.split()
        if not cells:
            continue
        parts = [c.split("|") for c in cells]
        bad = next((c for c, p in zip(cells, parts) if len(p) != ncols + 1), None)
        if bad is not None:
            need = f"word|{'|'.join(['feature'] * ncols)}" if ncols else "a word without |"
            raise RequestError(
                400,
                f"line {n}: token {bad!r} should be {need} (this tagger reads {ncols} extra column(s)).",
            )
        words = [p[0] for p in parts]
        features = [[p[j + 1] for p in parts] for j in range(ncols)]
        sentences.append(Sentence(words, [], features, n))
        total += len(words)
    if not sentences:
        raise RequestError(400, "the text has no words; type a sentence to tag.")
    _check_tokens(total, limits.max_tokens, "token")
    names = task.vocabs.labels.tokens
    with served.lock:
        model = served.model.model
        dev = next(model.parameters()).device
        predicted = task.predict_sentences(model, sentences)
        out = []
        for sent, (words, labels) in zip(sentences, predicted):
            batch = task.collate([task.encode(sent, "input", "score")]).to(dev)
            probs = F.softmax(model.emissions(batch)[0].double(), dim=-1).cpu().numpy()
            chosen = [names.index(lab) for lab in labels]
            out.append(
                {
                    "words": words,
                    "labels": labels,
                    "confidence": [float(probs[i, c]) for i, c in enumerate(chosen)],
                    "alternatives": [
                        [
                            {"label": names[j], "prob": float(probs[i, j])}
                            for j in np.argsort(-probs[i])[:3]
                        ]
                        for i in range(len(words))
                    ],
                }
            )
    return {"model": served.name, "sentences": out, "crf": model.crf is not None}


# -- translator and conditional generator ------------------------------------------------------

NO_ATTENTION_NOTE = (
    "This translator has no attention: the source reaches the decoder only through the fixed "
    "vector c (the encoder's final state), so there is no matrix of where it looked."
)


def _check_search(beam: int, n_best: int, alpha: float, limits: Limits) -> None:
    from rnnkit.search import check_search

    check_search(beam, n_best, alpha)  # a ConfigError (400) below 1, or n_best > beam
    if beam > limits.max_beam:
        raise RequestError(413, f"beam {beam} asked for; the limit is {limits.max_beam}.")
    if not math.isfinite(alpha):
        raise RequestError(400, "alpha must be a finite number.")


@torch.inference_mode()
def translate_text(
    served: Served,
    text: str,
    limits: Limits,
    beam: int = 1,
    n_best: int = 1,
    alpha: float = 0.0,
) -> dict[str, Any]:
    """One source sentence translated as ``rnnkit translate translate`` translates it
    (greedy for ``beam`` 1, else beam search with GNMT's length normalisation ``alpha``): the
    ``n_best`` translations with their log10 probabilities, the source and target units, each
    target unit's log10 probability, and, for a model with attention, the attention matrix of
    each translation (rows: its units, ``</s>`` included; columns: the source units), from a
    forced pass of that translation through the model (``tgt_in`` = ``<s>`` and its units
    but the last)."""
    from rnnkit.tasks.translate import _pad

    if served.kind != "translate":
        raise RequestError(
            400, f"model {served.name!r} is a {served.kind} model, not a translator."
        )
    if len(text) > limits.max_source_chars:
        raise RequestError(
            413,
            f"the source has {len(text):,} characters; the limit is {limits.max_source_chars:,}.",
        )
    line = text.strip()
    if not line:
        raise RequestError(400, "the source is empty; type a sentence to translate.")
    if "\n" in line:
        raise RequestError(400, "type one source sentence (one line); the page translates one.")
    _check_search(beam, n_best, alpha, limits)
    task = served.model.task
    units = task.source.segmenter.split(line)
    ids = task.source.encode(line)
    if len(ids) == 0:
        raise RequestError(400, "the source has no units; type a sentence to translate.")
    if len(ids) > task.max_length:
        raise RequestError(
            413,
            f"the source has {len(ids)} units; this translator reads at most {task.max_length} "
            "(its --max-length); split it into shorter sentences.",
        )
    tgt = task.target.vocab
    with served.lock:
        model = served.model.model
        hyps = task.search(model, [ids], beam=beam, n_best=n_best, alpha=alpha)[0]
        was = model.training
        model.eval()
        try:
            dev = next(model.parameters()).device
            N, S = len(hyps), len(ids)
            src = torch.from_numpy(ids)[None].expand(N, S).to(dev)
            lengths = torch.full((N,), S, dtype=torch.long)
            outs = [np.asarray(h.tokens, dtype=np.int64) for h in hyps]
            tgt_in = _pad([o[:-1] for o in outs], before=tgt.bos_id).to(dev)
            tgt_out = _pad(outs).to(dev)
            lp = model.token_log_probs(src, lengths, tgt_in, tgt_out).double().cpu().numpy()
            weights = None
            if model.attention is not None:
                w = model.attention_weights(src, lengths, tgt_in)
                assert tuple(w.shape) == (N, tgt_in.shape[1], S), (tuple(w.shape), N, S)
                weights = w.double().cpu().numpy()
        finally:
            model.train(was)
    ln10 = math.log(10)
    translations = []
    for i, h in enumerate(hyps):
        n = len(h.tokens)
        translations.append(
            {
                "text": task.target.decode(h.tokens),
                "units": [tgt.tokens[t] for t in h.tokens],
                "ended": bool(h.tokens) and h.tokens[-1] == tgt.eos_id,
                "log_prob": float(h.score),
                "log10_prob": float(h.score) / ln10,
                "normalized": float(h.normalized),
                "unit_log10": (lp[i, :n] / ln10).tolist(),
                "attention": weights[i, :n, :S].tolist() if weights is not None else None,
            }
        )
    attention = str(served.model.model.config.attention)
    return {
        "model": served.name,
        "source": {
            "text": line,
            "units": units,
            "unknown": [bool(i == task.source.vocab.unk_id) for i in ids.tolist()],
        },
        "search": "greedy" if beam == 1 else "beam",
        "beam": beam,
        "n_best": n_best,
        "alpha": alpha,
        "attention": None if attention == "none" else attention,
        "note": NO_ATTENTION_NOTE if attention == "none" else None,
        "translations": translations,
    }


@dataclass
class Conditioning:
    """The controls of ``rnnkit condition generate`` that the page offers (labels only: a
    vector cannot be typed)."""

    label: str | None = None
    num_samples: int = 1
    greedy: bool = False
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    beam: int | None = None
    n_best: int = 1
    alpha: float = 0.0
    max_len: int | None = None


def condition_generate(served: Served, c: Conditioning, limits: Limits) -> dict[str, Any]:
    """Outputs for one label, as :func:`rnnkit.api.condition.generate_hypotheses` gives them
    (the same seed gives the same samples): sampling, greedy or beam search."""
    from rnnkit.api.condition import DEFAULT_MAX_LEN, check_generation, generate_hypotheses

    if served.kind != "condition":
        raise RequestError(
            400, f"model {served.name!r} is a {served.kind} model, not a conditional generator."
        )
    task = served.model.task
    if task.labels is None:
        raise RequestError(
            400,
            f"model {served.name!r} is conditioned on vectors of {task.vector_size} values, "
            "which the page cannot take; use rnnkit condition generate --vectors FILE.npy.",
        )
    if c.label is None:
        raise RequestError(400, f"the field 'label' is required: one of {', '.join(task.labels)}.")
    task.label_id(c.label)  # a DataError (400) naming the run's labels
    check_generation(c.num_samples, c.greedy, c.temperature, c.top_k, c.top_p, c.beam,
                     c.n_best, c.alpha, c.max_len)  # fmt: skip
    if c.num_samples > limits.max_samples:
        raise RequestError(
            413, f"{c.num_samples} samples asked for; the limit is {limits.max_samples}."
        )
    if c.beam is not None:
        _check_search(c.beam, c.n_best, c.alpha, limits)
    if c.max_len is not None and c.max_len > limits.max_output_tokens:
        raise RequestError(
            413, f"max_len {c.max_len} asked for; the limit is {limits.max_output_tokens}."
        )
    max_len = c.max_len
    if max_len is None:  # the run's own default, within the page's limit
        longest = served.model.config.get("stats", {}).get("max_target_length")
        max_len = min(int(longest) + 10 if longest else DEFAULT_MAX_LEN, limits.max_output_tokens)
    with served.lock:
        found = generate_hypotheses(
            served.model,
            c.label,
            num_samples=c.num_samples,
            greedy=c.greedy,
            temperature=c.temperature,
            top_k=c.top_k,
            top_p=c.top_p,
            seed=c.seed,
            beam=c.beam,
            n_best=c.n_best,
            alpha=c.alpha,
            max_len=max_len,
        )
    search = "beam" if c.beam is not None else "greedy" if c.greedy else "sample"
    outputs = [
        {"text": text, "log_prob": score, "log10_prob": score / math.log(10)}
        for outs in found
        for text, score in outs
    ]
    return {
        "model": served.name,
        "label": c.label,
        "search": search,
        "max_len": max_len,
        "outputs": outputs,
    }


__all__ = [
    "Conditioning",
    "Limits",
    "RequestError",
    "Sampling",
    "Served",
    "classify_text",
    "compare_texts",
    "condition_generate",
    "generate_stream",
    "hidden_units",
    "load_models",
    "prepare_generation",
    "score_text",
    "tag_text",
    "translate_text",
]
