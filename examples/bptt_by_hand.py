"""Train a tiny character RNN with backpropagation through time written out in NumPy.

Everything here is rnnkit's NumPy reference (``rnnkit.reference``): no torch. Every few steps
it prints the loss and the gradient norms, so you can watch BPTT at work:

* ``loss``: cross-entropy per character, in nats and in bits;
* ``|g|``: the global gradient norm before clipping (``--clip``), and whether it was clipped;
* ``|dW_aa|``: the norm of the recurrent weights' gradient;
* ``|dL_T/da_1| / |dL_T/da_T|``: how much of the gradient of the window's last loss L_T
  is left when it has flowed back to the window's first hidden state: the vanishing
  gradient, measured (a second backward pass that counts only L_T).

Run it (a few seconds; the text is tiny, so the loss falls as it learns it by heart)::

    python examples/bptt_by_hand.py
    python examples/bptt_by_hand.py --nonlinearity relu --lr 0.05 --clip 1

The equations and their code are in docs/reference.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from rnnkit.reference import (
    backward,
    clip_by_norm,
    forward,
    init_params,
    sgd_step,
)

TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
    "First Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\n"
    "Resolved. resolved.\n\nFirst Citizen:\nFirst, you know Caius Marcius is chief enemy "
    "to the people.\n\nAll:\nWe know't, we know't.\n\nFirst Citizen:\nLet us kill him, and "
    "we'll have corn at our own price.\nIs't a verdict?\n"
)


def sample(params, a0, first: int, n: int, vocab: str, g: str, rng) -> str:  # type: ignore[no-untyped-def]
    """Feed each sampled character back in, carrying the state a_t."""
    out, token, state = [], first, a0
    for _ in range(n):
        fwd = forward(params, np.array([[token]]), np.array([[0]]), g, a0=state)
        state = fwd.state
        token = int(rng.choice(len(vocab), p=fwd.y[0, 0]))
        out.append(vocab[token])
    return "".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=3000, help="SGD steps (3000)")
    ap.add_argument("--hidden-size", type=int, default=48, help="H (48)")
    ap.add_argument("--seq-len", type=int, default=25, help="BPTT window, in characters (25)")
    ap.add_argument("--lr", type=float, default=0.1, help="SGD learning rate (0.1)")
    ap.add_argument("--clip", type=float, default=5.0, help="clip the gradient norm to this (5)")
    ap.add_argument("--nonlinearity", choices=("tanh", "relu"), default="tanh")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    vocab = "".join(sorted(set(TEXT)))
    ids = np.array([vocab.index(c) for c in TEXT])
    V, H, T = len(vocab), args.hidden_size, args.seq_len
    rng = np.random.default_rng(args.seed)
    # one-hot input, as the seeds: x_t = e_{char_t}, so W_ax is (H, V)
    params = init_params(rng, input_size=V, hidden_size=H, output_size=V)
    print(f"{len(TEXT)} characters, vocabulary of {V}; H = {H}, windows of {T} characters")
    print(
        "step   loss (nats/char, bits/char)   |g| before clip   |dW_aa|   |dL_T/da_1|/|dL_T/da_T|"
    )

    state = np.zeros((1, 1, H))
    pos, smooth, start = 0, np.log(V), time.perf_counter()
    for step in range(1, args.steps + 1):
        if pos + T + 1 > len(ids):  # back to the start of the text, with a fresh a_0 = 0
            pos, state = 0, np.zeros((1, 1, H))
        x, y = ids[None, pos : pos + T], ids[None, pos + 1 : pos + T + 1]
        # Truncated BPTT as min-char-rnn does it: the state carries over between windows,
        # the gradient does not (a0 enters as a constant).
        fwd = forward(params, x, y, args.nonlinearity, a0=state, reduction="mean")
        bwd = backward(params, fwd)
        state = fwd.state
        norm = clip_by_norm(bwd.grads, args.clip)
        sgd_step(params, bwd.grads, args.lr)
        smooth = 0.98 * smooth + 0.02 * fwd.loss
        pos += T
        if step % 250 == 0 or step == 1:
            last = np.zeros((1, T))
            last[0, -1] = 1.0  # count only L_T: then bwd.da holds dL_T/da_t
            only_T = backward(params, dataclasses.replace(fwd, weights=last))
            da = np.linalg.norm(only_T.da[0][0], axis=-1)  # ||dL_T/da_t||, t = 1..T
            dW_aa = float(np.linalg.norm(bwd.grads.W_aa[0]))
            print(
                f"{step:4d}   {smooth:6.3f} nats, {smooth / np.log(2):6.3f} bits"
                f"        {norm:9.3f}{' (clipped)' if norm > args.clip else '          '}"
                f" {dW_aa:8.4f}   {da[0] / da[-1]:10.2e}"
            )
    elapsed = time.perf_counter() - start
    print(f"trained in {elapsed:.1f} s; a sample (200 characters):")
    print(sample(params, np.zeros((1, 1, H)), vocab.index("F"), 200, vocab, args.nonlinearity, rng))


if __name__ == "__main__":
    main()
