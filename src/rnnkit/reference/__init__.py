"""The Elman RNN written out in NumPy: forward pass, BPTT, clipping, SGD, gradient checks.

The teaching text and the oracle the torch path is tested against. It imports NumPy and
nothing else (not torch, not the rest of rnnkit). The equations and how each maps to code
are in ``docs/reference.md``; a worked example is ``examples/bptt_by_hand.py``::

    from rnnkit.reference import Params, init_params, loss_and_grads, clip_by_norm, sgd_step
    params = init_params(np.random.default_rng(0), input_size=4, hidden_size=8, output_size=4)
    loss, grads, _ = loss_and_grads(params, tokens, targets)   # tokens, targets: (B, T) ints
    clip_by_norm(grads, 5.0)
    sgd_step(params, grads, lr=0.1)

A trained rnnkit Elman model loads with
``Params.from_state_dict({k: v.detach().numpy() for k, v in model.state_dict().items()})``.
"""

from rnnkit.reference.elman import (
    NONLINEARITIES,
    OUTPUTS,
    Backward,
    Forward,
    backward,
    embed_backward,
    embed_forward,
    forward,
    g1_backward,
    g1_forward,
    layer_backward,
    layer_forward,
    loss_and_grads,
    one_hot,
    predict,
    sigmoid_bce_backward,
    sigmoid_bce_forward,
    softmax_ce_backward,
    softmax_ce_forward,
    step_backward,
    step_forward,
)
from rnnkit.reference.gradcheck import check_gradients, numerical_gradient, relative_error
from rnnkit.reference.optim import clip_by_norm, clip_by_value, grad_norm, sgd_step
from rnnkit.reference.params import Params, gradients_to_state_dict, init_params

__all__ = [
    "NONLINEARITIES",
    "OUTPUTS",
    "Backward",
    "Forward",
    "Params",
    "backward",
    "check_gradients",
    "clip_by_norm",
    "clip_by_value",
    "embed_backward",
    "embed_forward",
    "forward",
    "g1_backward",
    "g1_forward",
    "grad_norm",
    "gradients_to_state_dict",
    "init_params",
    "layer_backward",
    "layer_forward",
    "loss_and_grads",
    "numerical_gradient",
    "one_hot",
    "predict",
    "relative_error",
    "sgd_step",
    "sigmoid_bce_backward",
    "sigmoid_bce_forward",
    "softmax_ce_backward",
    "softmax_ce_forward",
    "step_backward",
    "step_forward",
]
