"""Exact evaluation of a language model over a token stream, hidden state carried."""

from __future__ import annotations

import copy

import numpy as np
import torch

from rnnkit.errors import RnnkitError
from rnnkit.models import LanguageModel, State, cat_states, detach_state, select_state
from rnnkit.text.batching import batchify, num_windows, tail, window


def to_tensor(ids: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """A (view of an) id array as a new int64 tensor on ``device``."""
    return torch.tensor(ids, dtype=torch.long, device=device)


def stream_loss(
    model: LanguageModel,
    ids: np.ndarray,
    batch_size: int = 16,
    bptt: int = 256,
    device: torch.device | str = "cpu",
    warmup: int = 512,
) -> tuple[float, int]:
    """Total negative log-likelihood (nats) of the stream and the number of predictions."""
    logp = stream_log_probs(model, ids, batch_size, bptt, device, warmup)
    return -float(logp.sum()), int(logp.shape[0])


@torch.inference_mode()
def stream_log_probs(
    model: LanguageModel,
    ids: np.ndarray,
    batch_size: int = 16,
    bptt: int = 256,
    device: torch.device | str = "cpu",
    warmup: int = 512,
) -> np.ndarray:
    """log P(ids[i] | ids[:i]) in nats for i = 1 .. N - 1: a float64 array in text order.

    Every token but the first is predicted once (N - 1 predictions whatever the batch size);
    the stream is cut into ``batch_size`` rows (see :mod:`rnnkit.text.batching`) and the
    state is carried across windows within each row. So that the score does not depend on
    the batch size, each row after the first starts from the state the model reaches on the
    ``warmup`` tokens before it (not scored), instead of from a_0 = 0 mid-text.
    """
    was_training = model.training
    model.eval()
    out = np.zeros(max(len(ids) - 1, 0), dtype=np.float64)
    try:
        rows = batchify(ids, batch_size)
        length = rows.shape[1] - 1  # row b predicts tokens b * length + 1 .. (b + 1) * length
        end = rows.shape[0] * length
        starts = [b * length for b in range(rows.shape[0])] + [end]
        parts = (
            (rows, starts[:-1], out[:end].reshape(rows.shape[0], max(length, 0))),
            (tail(ids, batch_size).reshape(1, -1), [end], out[end:].reshape(1, -1)),
        )
        for part, first, dest in parts:
            if part.shape[1] < 2:
                continue
            state = _warm_state(model, ids, first, warmup, device)
            for i in range(num_windows(part, bptt)):
                x, y = window(part, i, bptt)
                logp, state = model.log_prob(to_tensor(x, device), to_tensor(y, device), state)
                dest[:, i * bptt : i * bptt + y.shape[1]] = logp.double().cpu().numpy()
        return out
    finally:
        model.train(was_training)


def _warm_state(
    model: LanguageModel,
    ids: np.ndarray,
    starts: list[int],
    warmup: int,
    device: torch.device | str,
) -> State | None:
    """The state after reading the ``warmup`` tokens before each start (a_0 = 0 at 0)."""
    burn = min([warmup, *starts[1:]] if len(starts) > 1 else [warmup, starts[0]])
    if burn < 1 or all(s == 0 for s in starts):
        return None
    warm = np.stack([ids[max(s - burn, 0) : max(s - burn, 0) + burn] for s in starts])
    _, state = model.features(to_tensor(warm, device))  # the state only: no output layer
    if starts[0] == 0:  # the very first row reads from the start of the text: a_0 = 0
        zero = model.init_state(1, torch.device(device))
        rest = select_state(state, slice(1, None))
        return cat_states([zero, rest])
    return state


#: Tokens scored between two updates in dynamic evaluation (Mikolov's toolkit updates after
#: every word; a short window keeps the model almost as fresh at a tenth of the steps).
DYNAMIC_WINDOW = 10


def dynamic_log_probs(
    model: LanguageModel,
    ids: np.ndarray,
    lr: float,
    device: torch.device | str = "cpu",
    window_size: int = DYNAMIC_WINDOW,
) -> np.ndarray:
    """log P(ids[i] | ids[:i]) as :func:`stream_log_probs` gives them, under dynamic
    evaluation (Mikolov et al. 2010; Krause et al. 2018): the text is read once, in order,
    as one stream; each window of tokens is scored first and then the model takes one SGD
    step of rate ``lr`` on their summed negative log-likelihood, so every prediction uses
    only the text before it. ``model`` itself is left unchanged (a copy is adapted).
    """
    adapted = copy.deepcopy(model).to(device)
    adapted.eval()  # no dropout: the adapted model is the one that scores
    optimizer = torch.optim.SGD(adapted.parameters(), lr=lr)
    out = np.zeros(max(len(ids) - 1, 0), dtype=np.float64)
    row = ids.reshape(1, -1)
    state: State | None = None
    # cuDNN's RNN backward refuses a model in eval mode; the native kernels do not
    with torch.backends.cudnn.flags(enabled=False):
        for i in range(num_windows(row, window_size)):
            x, y = window(row, i, window_size)
            logp, state = adapted.log_prob(to_tensor(x, device), to_tensor(y, device), state)
            out[i * window_size : i * window_size + y.shape[1]] = logp.detach().double().cpu()[0]
            optimizer.zero_grad(set_to_none=True)
            logp.sum().neg().backward()
            optimizer.step()
            state = detach_state(state)
    if not np.all(np.isfinite(out)):
        raise RnnkitError(f"dynamic evaluation diverged with learning rate {lr}; lower it.")
    return out
