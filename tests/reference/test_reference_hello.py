"""The seeds' "hello" example: vocabulary {h, e, l, o}, input "hell", targets "ello",
trained with the NumPy reference alone until it predicts every next character."""

from __future__ import annotations

import numpy as np

from rnnkit.reference import clip_by_norm, init_params, loss_and_grads, predict, sgd_step

VOCAB = "helo"


def encode(text: str) -> np.ndarray:
    return np.array([[VOCAB.index(c) for c in text]])


def test_hello_is_learned_with_the_reference_alone() -> None:
    rng = np.random.default_rng(0)
    # one-hot input x_t (no embedding), 4 -> 8 hidden -> 4, tanh, softmax
    params = init_params(rng, input_size=4, hidden_size=8, output_size=4)
    inputs, targets = encode("hell"), encode("ello")
    first_loss = None
    step = 0
    while step < 500:
        step += 1
        loss, grads, _ = loss_and_grads(params, inputs, targets, reduction="sum")
        first_loss = first_loss if first_loss is not None else loss
        clip_by_norm(grads, 5.0)
        sgd_step(params, grads, lr=0.1)
        predicted = "".join(VOCAB[i] for i in predict(params, inputs)[0].argmax(-1))
        if predicted == "ello":
            break
    assert predicted == "ello", f"after {step} steps the reference predicts {predicted!r}"
    assert loss < first_loss
