"""rnnkit.diagnostics and `rnnkit diagnose`: the stepping equals the fused torch cells, the
hidden gradients equal the NumPy reference's, and the command writes its files or fails with
exit 2 and one sentence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rnnkit.cli import main
from rnnkit.diagnostics import (
    CLIPPING_CSV,
    FLOW_CSV,
    PLOT_PNG,
    SATURATION_CSV,
    TANH_SATURATION,
    RandomWindows,
    Settings,
    diagnose,
    gradient_flow,
    read_csv,
    run_steps,
    top_output,
    train_steps,
)
from rnnkit.models import ModelConfig, RNNLanguageModel
from rnnkit.reference import Params, backward, forward

TINY = ["--hidden-size", "6", "--seq-len", "10", "--batch-size", "3", "--train-steps", "2",
        "--clip-steps", "2"]  # fmt: skip
TEXT = "the quick brown fox jumps over the lazy dog. " * 8


def model_for(
    cell: str, g: str = "tanh", layers: int = 2, seed: int = 0, skip: bool = False
) -> RNNLanguageModel:
    torch.manual_seed(seed)
    cfg = ModelConfig(
        vocab_size=7, cell=cell, nonlinearity=g, hidden_size=5, num_layers=layers, skip=skip
    )
    model = RNNLanguageModel(cfg).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(-0.7, 0.7)
    return model


@pytest.mark.parametrize("skip", [False, True])
@pytest.mark.parametrize(
    ("cell", "g"), [("rnn", "tanh"), ("rnn", "relu"), ("gru", "tanh"), ("lstm", "tanh")]
)
def test_stepping_equals_the_fused_module(cell: str, g: str, skip: bool) -> None:
    model = model_for(cell, g, layers=3 if skip else 2, skip=skip)
    tokens = torch.randint(0, 7, (3, 9))
    with torch.no_grad():
        a, state = model.features(tokens)
        hs, stepped, _ = run_steps(model, tokens)
    np.testing.assert_allclose(
        torch.stack([top_output(model, h) for h in hs], 1).numpy(),
        a.numpy(),
        rtol=1e-12,
        atol=1e-12,
    )
    for got, want in zip(
        torch.utils._pytree.tree_leaves(stepped), torch.utils._pytree.tree_leaves(state)
    ):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layer", [-1, 0])
@pytest.mark.parametrize("g", ["tanh", "relu"])
def test_elman_gradient_flow_equals_the_reference(g: str, layer: int) -> None:
    """Top layer and first layer: the first layer's dL_T/da_t sums the paths up the stack at
    every step as well as those back in time, as the reference's BPTT does."""
    model = model_for("rnn", g)
    tokens, targets = torch.randint(0, 7, (4, 8)), torch.randint(0, 7, (4,))
    flow = gradient_flow(model, tokens, targets, layer=layer)

    params = Params.from_state_dict({k: v.numpy() for k, v in model.state_dict().items()})
    y = np.zeros((4, 8), dtype=np.int64)
    y[:, -1] = targets.numpy()
    weights = np.zeros((4, 8))
    weights[:, -1] = 1.0  # L = sum over sequences of L_T
    fwd = forward(params, tokens.numpy(), y, g, reduction=weights)
    da = backward(params, fwd).da[layer]  # (B, T, H)
    expected = np.linalg.norm(da, axis=-1).mean(axis=0)[::-1]  # by distance T - t
    np.testing.assert_allclose(flow.grad_norm, expected, rtol=1e-10)
    units = np.concatenate([a.ravel() for a in fwd.a]) if g == "tanh" else None
    if units is not None:
        saturated = np.mean(np.abs(units) > TANH_SATURATION)
    else:
        saturated = np.mean(np.concatenate([z.ravel() for z in fwd.z]) <= 0)
    assert flow.saturated_fraction == pytest.approx(saturated)


def test_vanishing_and_exploding_show_in_the_numbers(tmp_path: Path) -> None:
    ids = np.random.default_rng(0).integers(0, 7, 400).astype(np.int32)
    s = Settings(
        hidden_size=16, seq_len=30, batch_size=4, train_steps=0, clip_steps=3, explode_gain=3
    )
    result = diagnose(ids, 7, tmp_path, s, plot=False)
    assert result.decay_per_step("rnn-tanh") < 0.9  # default init: vanishing
    assert result.decay_per_step("rnn-tanh, W_aa x3 (init)") > 1.1  # large W_aa: exploding
    rows = read_csv(tmp_path / FLOW_CSV)
    assert len(rows) == 30 * len(result.flows)
    clipped = [r for r in read_csv(tmp_path / CLIPPING_CSV) if r["clipping"] == "clip norm 1"]
    assert [int(r["step"]) for r in clipped] == [1, 2, 3]


def test_cli_writes_csv_and_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = tmp_path / "t.txt"
    text.write_text(TEXT, encoding="utf-8")
    out = tmp_path / "diag"
    assert main(["diagnose", "--text", str(text), "--out", str(out), *TINY]) == 0
    stdout = capsys.readouterr().out
    assert "nats per unit of a" in stdout and "rnn-relu" in stdout and "lstm" in stdout
    for name in (FLOW_CSV, SATURATION_CSV, CLIPPING_CSV, PLOT_PNG):
        assert (out / name).stat().st_size > 0
    assert (out / PLOT_PNG).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    labels = {r["model"] for r in read_csv(out / SATURATION_CSV)}
    assert {"rnn-tanh (2 steps)", "rnn-relu (2 steps)", "gru (2 steps)", "lstm (2 steps)"} <= labels
    assert {"rnn-tanh, 4 layers (2 steps)", "rnn-tanh, 4 layers, skip (2 steps)"} <= labels


def test_cli_measures_a_trained_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rnnkit.text import build_vocab
    from rnnkit.training.checkpoint import BEST, VOCAB, save_weights, write_config

    text = tmp_path / "t.txt"
    text.write_text(TEXT, encoding="utf-8")
    vocab = build_vocab(text, "char")
    cfg = ModelConfig(vocab_size=len(vocab), cell="lstm", hidden_size=5)
    run = tmp_path / "myrun"
    run.mkdir()
    write_config(run, {"model": cfg.to_dict()})
    vocab.save(run / VOCAB)
    save_weights(RNNLanguageModel(cfg), run / BEST)
    out = tmp_path / "diag"
    argv = ["diagnose", str(run), "--text", str(text), "--out", str(out), "--cell", "gru", *TINY]
    assert main(argv) == 0
    labels = [r["model"] for r in read_csv(out / SATURATION_CSV)]
    assert labels == ["myrun (lstm, trained)", "gru (2 steps)"]
    assert "hidden" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["--text", "{tmp}/missing.txt"], "missing.txt"),
        (["--text", "{tmp}/short.txt", "--seq-len", "50"], "--seq-len"),
        (["--seq-len", "1"], "--seq-len"),
        (["--batch-size", "0"], "--batch-size"),
        (["--clip", "0"], "--clip"),
        (["--explode-gain", "-1"], "--explode-gain"),
        (["--train-steps", "-1"], "--train-steps"),
        (["--hidden-size", "0"], "--hidden-size"),
        (["--deep-layers", "1"], "--deep-layers"),
        (["--deep-layers", "-2"], "--deep-layers"),
        (["--cell", "gru", "--nonlinearity", "relu"], "--nonlinearity"),
        (["{tmp}/not_a_run"], "not_a_run"),
        (["--out", "{tmp}/short.txt"], "--out"),
    ],
)
def test_cli_bad_input_is_exit_2_and_one_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], names: str
) -> None:
    (tmp_path / "short.txt").write_text("abcabc", encoding="utf-8")
    (tmp_path / "not_a_run").mkdir()
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    base = ["diagnose", "--out", str(tmp_path / "o"), "--text", str(tmp_path / "short.txt")]
    assert main([*base, *TINY, "--seq-len", "3", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rnnkit: error: ")
    assert names in err[0]


def test_skip_connections_keep_more_gradient_in_a_deep_stack(tmp_path: Path) -> None:
    """A 4-layer Elman stack with and without skips, same seed and initialisation: the skip
    model's first layer gets more gradient from L_T, at distance 0 and still 10 steps back.
    Why (a measured fact, not a law): every path from L_T down to the first layer's a_t climbs
    the three layers above it once, somewhere along its way back in time. Without skips each
    climb multiplies the gradient by that layer's diag(g1') W_ax, whose norm is well below 1
    at this initialisation (W ~ U(+-1/sqrt(H))); with skips by I + diag(g1') W_ax, whose
    identity part passes it on whole. The steps back in time are the same W_aa Jacobians in
    both, so skips do not stop the per-step decay: the ratio comes from depth, and it would
    fall below 1 for weights whose Jacobians cancel the identity."""
    ids = np.random.default_rng(0).integers(0, 7, 400).astype(np.int32)
    s = Settings(
        cells=("rnn",), nonlinearities=("tanh",), hidden_size=16, seq_len=30, batch_size=4,
        train_steps=0, clip_steps=0, deep_layers=4,
    )  # fmt: skip
    result = diagnose(ids, 7, tmp_path, s, plot=False)
    plain = result.flows["rnn-tanh, 4 layers"].grad_norm
    skip = result.flows["rnn-tanh, 4 layers, skip"].grad_norm
    ratio = skip / plain
    assert ratio[0] > 3 and ratio[10] > 1.5  # measured: 6.4 and 2.4
    rows = {r["model"] for r in read_csv(tmp_path / FLOW_CSV)}
    assert {"rnn-tanh, 4 layers", "rnn-tanh, 4 layers, skip"} <= rows


def test_training_is_the_shared_trainer_with_its_figures_per_step() -> None:
    """train_steps records each step's loss, gradient norm before clipping and ||W_aa|| after
    the update; step 1 equals one SGD step taken by hand on the task's first batch."""
    ids = np.random.default_rng(0).integers(0, 7, 400).astype(np.int32)
    probe = torch.from_numpy(ids[:33].astype(np.int64)).reshape(3, 11)
    task = RandomWindows(ids, 4, 11, 3, seed=5, probe=probe)
    assert torch.equal(task.batch(0, 1), task.batch(0, 1))  # the same batch on every call
    assert not torch.equal(task.batch(0, 1), task.batch(0, 2))
    model = model_for("rnn", layers=1).float()
    by_hand = model_for("rnn", layers=1).float()
    records = train_steps(model, task, "sgd", lr=0.1, clip=1e-3)
    assert [r.step for r in records] == [1, 2, 3]

    batch = task.batch(0, 0)
    loss, _ = by_hand.loss(batch[:, :-1], batch[:, 1:])
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(by_hand.parameters(), 1e-3)
    with torch.no_grad():
        for p in by_hand.parameters():
            assert p.grad is not None
            p -= 0.1 * p.grad
    assert records[0].loss == pytest.approx(float(loss.detach()), rel=1e-6)
    assert records[0].grad_norm == pytest.approx(float(norm), rel=1e-5)  # before clipping
    assert records[0].grad_norm > 1e-3  # so the step was clipped
    w_aa = by_hand.layer_weights(0)[1].detach()
    assert records[0].w_aa_norm == pytest.approx(float(w_aa.norm()), rel=1e-6)


def test_a_diverging_step_is_recorded_and_ends_the_training() -> None:
    ids = np.random.default_rng(0).integers(0, 7, 400).astype(np.int32)
    probe = torch.from_numpy(ids[:33].astype(np.int64)).reshape(3, 11)
    model = model_for("rnn", layers=1).float()
    with torch.no_grad():
        model.head.linear.bias[0] = float("nan")  # every loss is NaN
    records = train_steps(model, RandomWindows(ids, 4, 11, 5, 0, probe), "adam", 1e-3)
    assert len(records) == 1 and np.isnan(records[0].loss) and records[0].step == 1
