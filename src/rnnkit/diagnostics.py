"""Why plain RNNs forget: gradient flow over time and saturated units.

For a model and a text, :func:`gradient_flow` measures ``||dL_T/da_t||``, the norm of the
gradient of the loss at the last step T with respect to the (top layer's) hidden state a_t,
as a function of the distance T - t. Backpropagation multiplies it at every step by the
Jacobian ``da_t/da_{t-1} = diag(g1'(z_t)) W_aa``; when those factors are below one the
gradient shrinks geometrically (vanishing: what happened T - t steps ago cannot be learned),
when above one it grows (exploding). It also counts the **saturated** units: those whose
local derivative is below 0.1 (tanh units with |a| > 0.949, ReLU units with z <= 0) pass
less than a tenth of the gradient that reaches them.

torch's fused ``nn.RNN``/``GRU``/``LSTM`` do not expose per-step states to autograd, so the
measurement steps through the cell equations (those of the torch documentation) with the
model's own weights, in float64; the tests check the stepping against the fused module and,
for the Elman RNN, the hidden gradients against the NumPy reference.

:func:`diagnose` runs the comparison behind ``rnnkit diagnose``: Elman tanh, Elman ReLU, GRU
and LSTM side by side (each briefly trained on the text first, or a trained run), a deep
Elman stack with and without skip connections, an Elman RNN with a large W_aa initialisation
(exploding), and that model trained with and without gradient clipping. Every model is
trained by the shared :class:`~rnnkit.training.Trainer` on :class:`RandomWindows` of the text.
It writes CSV files and a PNG plot. Nothing here prints to stdout.
"""

from __future__ import annotations

import copy
import csv
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from rnnkit.errors import ConfigError, DataError, RnnkitError
from rnnkit.models import CELLS, ModelConfig, RNNLanguageModel, State
from rnnkit.tasks.base import Task
from rnnkit.training.config import TrainConfig
from rnnkit.training.trainer import Trainer
from rnnkit.utils import atomic_write, atomic_write_text

Log = Callable[[str], None]

SATURATION_DERIVATIVE = 0.1  # a unit is saturated when its local derivative is below this
TANH_SATURATION = math.sqrt(1.0 - SATURATION_DERIVATIVE)  # |tanh| > 0.949 <=> tanh' < 0.1

FLOW_CSV, SATURATION_CSV, CLIPPING_CSV, PLOT_PNG = (
    "gradient_flow.csv",
    "saturation.csv",
    "clipping.csv",
    "diagnostics.png",
)


# --- stepping through the cell with the fused module's weights ----------------------------


def step(model: RNNLanguageModel, x: Tensor, state: State) -> tuple[State, Tensor, Tensor]:
    """One time step of every layer, as torch documents the cells.

    ``x`` (B, E) is x_t; ``state`` is (L, B, H), or (h, c) for an LSTM. Returns the new
    state, and two counts over this step's nonlinearity units: how many are saturated
    (local derivative < 0.1) and how many there are. Elman: a_t (tanh) or z_t (ReLU); GRU:
    the candidate n_t; LSTM: the candidate g_t and tanh(c_t). With skip connections layer
    k >= 1 reads the sum of the layers below, a^(k-1) = h^(0) + ... + h^(k-1) (see
    :func:`top_output`); the state holds each layer's own h^(k).
    """
    new_state, saturated, units, _ = _step(model, x, state)
    return new_state, saturated, units


def _step(
    model: RNNLanguageModel, x: Tensor, state: State
) -> tuple[State, Tensor, Tensor, list[Tensor]]:
    """:func:`step`, and each layer's new h^(k) (B, H) itself: the graph node that every
    path from it to the loss (up the stack, back in time, to the output) runs through."""
    cfg = model.config
    skip = model.layers is not None
    h_prev = state[0] if isinstance(state, tuple) else state
    c_prev = state[1] if isinstance(state, tuple) else None
    hs, cs = [], []
    saturated = torch.zeros((), dtype=torch.long)
    units = 0

    def tanh_units(v: Tensor) -> None:
        nonlocal saturated, units
        saturated = saturated + (v.detach().abs() > TANH_SATURATION).sum()
        units += v.numel()

    for k in range(cfg.num_layers):
        w_ih, w_hh, b_ih, b_hh = model.layer_weights(k)
        h = h_prev[k]
        gi = x @ w_ih.T + b_ih
        gh = h @ w_hh.T + b_hh
        if cfg.cell == "rnn":
            z = gi + gh  # z_t = W_ax x_t + W_aa a_{t-1} + b_a
            if cfg.nonlinearity == "tanh":
                h = torch.tanh(z)
                tanh_units(h)
            else:
                h = torch.relu(z)
                saturated = saturated + (z.detach() <= 0).sum()
                units += z.numel()
        elif cfg.cell == "gru":
            i_r, i_z, i_n = gi.chunk(3, dim=-1)
            h_r, h_z, h_n = gh.chunk(3, dim=-1)
            r = torch.sigmoid(i_r + h_r)
            u = torch.sigmoid(i_z + h_z)
            n = torch.tanh(i_n + r * h_n)
            tanh_units(n)
            h = (1 - u) * n + u * h
        else:
            assert c_prev is not None  # an LSTM state is (h, c); not user input
            i, f, g, o = (gi + gh).chunk(4, dim=-1)
            g = torch.tanh(g)
            c = torch.sigmoid(f) * c_prev[k] + torch.sigmoid(i) * g
            tc = torch.tanh(c)
            tanh_units(g)
            tanh_units(tc)
            h = torch.sigmoid(o) * tc
            cs.append(c)
        hs.append(h)
        x = h + x if skip and k > 0 else h  # the next layer's input (the skip adds its own)
    new_h = torch.stack(hs)
    new_state: State = (new_h, torch.stack(cs)) if cfg.cell == "lstm" else new_h
    return new_state, saturated, torch.tensor(units), hs


def run_steps(
    model: RNNLanguageModel, tokens: Tensor, state: State | None = None
) -> tuple[list[Tensor], State, float]:
    """Step through ``tokens`` (B, T): the stacked hidden states h_t (L, B, H) of every step
    (graph kept), the final state, and the fraction of saturated units over all steps."""
    hs, _, state, saturated = _run(model, tokens, state)
    return hs, state, saturated


def _run(
    model: RNNLanguageModel, tokens: Tensor, state: State | None = None
) -> tuple[list[Tensor], list[list[Tensor]], State, float]:
    """:func:`run_steps`, and every step's list of the layers' own h^(k) (see :func:`_step`)."""
    B, T = tokens.shape
    if state is None:
        state = model.init_state(B)
    x = model.inputs(tokens)
    hs: list[Tensor] = []
    layers: list[list[Tensor]] = []
    saturated, units = 0, 0
    for t in range(T):
        state, s, n, per_layer = _step(model, x[:, t], state)
        hs.append(state[0] if isinstance(state, tuple) else state)
        layers.append(per_layer)
        saturated += int(s)
        units += int(n)
    return hs, layers, state, saturated / max(units, 1)


@dataclass
class Flow:
    """||dL_T/da_t|| by distance T - t (0 .. T-1), averaged over the sequences, in nats per
    unit of a; and the fraction of saturated units."""

    grad_norm: np.ndarray  # (T,), index = distance
    saturated_fraction: float
    units: str  # which units were counted


def top_output(model: RNNLanguageModel, h: Tensor) -> Tensor:
    """What the output layer reads, from the stacked states h (L, B, H) of one step: the top
    layer's h, or with skip connections the sum of every layer's (a^(L-1) = h^(0) + ... +
    h^(L-1), since layer k >= 1 outputs h^(k) + a^(k-1))."""
    return h.sum(0) if model.layers is not None else h[-1]


def gradient_flow(
    model: RNNLanguageModel, tokens: Tensor, targets: Tensor, layer: int = -1
) -> Flow:
    """Measure the gradient flow of ``model`` on sequences ``tokens`` (B, T).

    L_T is the cross-entropy (nats) of predicting ``targets`` (B,) after the last step. For
    each sequence b, ||dL_T/da_t||_2 over the H units of layer ``layer`` (-1: the top one;
    0: the first, which reads x_t, so every path from the input T - t steps ago to L_T runs
    through it, up the whole stack); the mean over b per distance. Runs in float64 on a copy,
    so the model itself is untouched.
    """
    m = _float64_copy(model)
    hs, layers, _, saturated = _run(m, tokens)
    head: Any = m.head  # FullSoftmax (typed as nn.Module on the model)
    logits = head.logits(top_output(m, hs[-1]))
    loss = F.cross_entropy(logits, targets, reduction="sum")  # sequences independent
    # the layer's h_t itself, not the stacked state: paths up the stack leave from it too
    grads = torch.autograd.grad(loss, [per_layer[layer] for per_layer in layers])
    T = tokens.shape[1]
    norms = np.array([float(grads[T - 1 - d].norm(dim=-1).mean()) for d in range(T)])
    cfg = m.config
    units = {
        "rnn": "a_t (tanh)" if cfg.nonlinearity == "tanh" else "z_t <= 0 (ReLU, dead)",
        "gru": "candidate n_t (tanh)",
        "lstm": "candidate g_t and tanh(c_t)",
    }[cfg.cell]
    return Flow(norms, saturated, units)


def _float64_copy(model: RNNLanguageModel) -> RNNLanguageModel:
    m = copy.deepcopy(model)  # keeps float64 weights exact; a float32 copy would round them
    m.double().eval()
    return m


# --- the comparison behind `rnnkit diagnose` -----------------------------------------------


@dataclass
class Settings:
    """Everything ``rnnkit diagnose`` can change (names are its flags)."""

    cells: Sequence[str] = ("rnn", "gru", "lstm")
    nonlinearities: Sequence[str] = ("tanh", "relu")
    hidden_size: int = 128
    num_layers: int = 1
    seq_len: int = 100  # T: distances 0 .. T-1
    batch_size: int = 32  # sequences measured (and trained on)
    train_steps: int = 200  # Adam steps on the text before measuring a fresh model
    lr: float = 3e-3  # Adam, for those steps
    deep_layers: int = 4  # an Elman tanh stack this deep, with and without skips (0: none)
    explode_gain: float = 2.0  # W_aa ~ N(0, gain^2 / H): spectral radius about `gain`
    clip: float = 1.0  # clip-by-norm threshold in the clipping experiment
    clip_steps: int = 100  # SGD steps with and without clipping
    clip_lr: float = 0.3  # the SGD learning rate there
    seed: int = 1234

    def validate(self) -> None:
        checks = [
            ("--hidden-size", self.hidden_size, 1),
            ("--num-layers", self.num_layers, 1),
            ("--seq-len", self.seq_len, 2),
            ("--batch-size", self.batch_size, 1),
            ("--train-steps", self.train_steps, 0),
            ("--clip-steps", self.clip_steps, 0),
            ("--deep-layers", self.deep_layers, 0),
        ]
        for flag, value, least in checks:
            if value < least:
                raise ConfigError(f"{flag} must be at least {least}, not {value}.")
        for flag, fvalue in [
            ("--lr", self.lr),
            ("--clip", self.clip),
            ("--clip-lr", self.clip_lr),
            ("--explode-gain", self.explode_gain),
        ]:
            if not (fvalue > 0 and math.isfinite(fvalue)):
                raise ConfigError(f"{flag} must be a positive number, not {fvalue}.")
        for cell in self.cells:
            if cell not in CELLS:
                raise ConfigError(f"--cell must be rnn, gru or lstm, not {cell!r}.")
        for g in self.nonlinearities:
            if g not in ("tanh", "relu"):
                raise ConfigError(f"--nonlinearity must be tanh or relu, not {g!r}.")
        if self.deep_layers == 1:
            raise ConfigError("--deep-layers must be 0 (no deep stacks) or at least 2, not 1.")
        if not self.cells:
            raise ConfigError("--cell needs at least one of rnn, gru, lstm.")
        if "rnn" in self.cells and not self.nonlinearities:
            raise ConfigError("--nonlinearity needs at least one of tanh, relu.")


@dataclass
class Result:
    """What :func:`diagnose` measured and where it wrote it."""

    out: Path
    flows: dict[str, Flow]  # label -> flow
    clipping: dict[str, list[Step]] = field(default_factory=dict)  # "no clipping" / "clip ..."
    files: list[Path] = field(default_factory=list)

    def decay_per_step(self, label: str) -> float:
        """Geometric mean ratio ||dL_T/da_{t-1}|| / ||dL_T/da_t|| over all distances:
        below 1 vanishing, above 1 exploding."""
        g = self.flows[label].grad_norm
        with np.errstate(divide="ignore", invalid="ignore"):
            return float(np.exp(np.log(g[-1] / g[0]) / (len(g) - 1)))


def _windows(ids: np.ndarray, n: int, length: int, rng: np.random.Generator) -> Tensor:
    starts = rng.integers(0, len(ids) - length + 1, size=n)
    return torch.from_numpy(np.stack([ids[s : s + length] for s in starts]).astype(np.int64))


@dataclass
class Step:
    """One training step: loss (nats per token), gradient norm before clipping, ||W_aa||
    (Frobenius, first layer) after the update."""

    step: int
    loss: float
    grad_norm: float
    w_aa_norm: float


class RandomWindows(Task):
    """Random windows of a token array as training batches, for the Trainer.

    Batch ``index`` of ``epoch`` is ``batch_size`` windows of ``length`` tokens (inputs and
    next-token targets) from a generator seeded with (seed, epoch, index): the same batch on
    every call. An epoch has ``steps`` batches. Validation is the loss (nats per token) on the
    fixed ``probe`` windows (N, length').
    """

    name = "diagnose"

    def __init__(
        self, ids: np.ndarray, batch_size: int, length: int, steps: int, seed: int, probe: Tensor
    ) -> None:
        self.ids, self.batch_size, self.length = ids, batch_size, length
        self.steps, self.seed, self.probe = steps, seed, probe

    def num_batches(self, epoch: int) -> int:
        return self.steps

    def batch(self, epoch: int, index: int) -> Tensor:
        rng = np.random.default_rng([self.seed, epoch, index])
        return _windows(self.ids, self.batch_size, self.length, rng)

    def loss(self, model: torch.nn.Module, batch: Tensor, carry: Any) -> tuple[Tensor, int, Any]:
        assert isinstance(model, RNNLanguageModel)  # built here, never user input
        loss, _ = model.loss(batch[:, :-1], batch[:, 1:])
        return loss, int(batch[:, 1:].numel()), None

    def validate(self, model: torch.nn.Module) -> dict[str, float]:
        assert isinstance(model, RNNLanguageModel)
        model.eval()
        with torch.no_grad():
            loss, _ = model.loss(self.probe[:, :-1], self.probe[:, 1:])
        return {"loss": float(loss)}


def train_steps(
    model: RNNLanguageModel,
    task: RandomWindows,
    optimizer: str = "adam",
    lr: float = 3e-3,
    clip: float | None = None,
) -> list[Step]:
    """``task.steps`` steps of the shared Trainer (in a temporary run directory), recording
    each step's loss, gradient norm before clipping and ||W_aa|| after the update. A step
    whose loss is not finite is recorded (loss NaN) and ends the training, as the Trainer
    stops there (it has applied that step's update)."""
    records: list[Step] = []

    def record(trainer: Trainer, loss: float) -> None:
        norm = trainer.last_grad_norm
        w_aa = model.layer_weights(0)[1]
        records.append(
            Step(
                trainer.step,
                loss if math.isfinite(loss) else math.nan,
                math.nan if norm is None else float(norm),
                float(w_aa.detach().norm()),
            )
        )

    config = TrainConfig(
        batch_size=task.batch_size,
        optimizer=optimizer,
        lr=lr,
        lr_schedule="constant",
        clip=clip or 0.0,
        epochs=1,
        patience=0,
        seed=task.seed,
    )
    with tempfile.TemporaryDirectory(prefix="rnnkit-diagnose-") as run:
        trainer = Trainer(model, task, config, Path(run), torch.device("cpu"), progress=False)
        trainer.record_grad_norm = True
        try:
            result = trainer.fit(max_steps=task.steps, on_step=record)
        except RnnkitError:
            if not records or math.isfinite(records[-1].loss):
                raise  # not the divergence the records show
        else:
            if result.interrupted:
                raise KeyboardInterrupt
    model.eval()
    return records


def explode_init(model: RNNLanguageModel, gain: float, generator: torch.Generator) -> None:
    """W_aa ~ N(0, gain^2 / H) in every layer: its spectral radius is about ``gain``."""
    H = model.config.hidden_size
    with torch.no_grad():
        for k in range(model.config.num_layers):
            w = model.layer_weights(k)[1]
            w.copy_(torch.randn(w.shape, generator=generator, dtype=w.dtype) * gain / math.sqrt(H))


def diagnose(
    ids: np.ndarray,
    vocab_size: int,
    out: str | os.PathLike[str],
    settings: Settings | None = None,
    run_model: RNNLanguageModel | None = None,
    run_label: str = "run",
    log: Log | None = None,
    plot: bool = True,
) -> Result:
    """Measure gradient flow and saturation for the configurations of ``settings`` (and a
    trained ``run_model``) on the token ids ``ids``; write CSV files and a PNG to ``out``."""
    s = settings or Settings()
    s.validate()
    say = log or (lambda msg: None)
    if len(ids) < s.seq_len + 1:
        raise DataError(
            f"the text has {len(ids)} tokens, fewer than --seq-len + 1 = {s.seq_len + 1}; "
            "give a longer --text or a smaller --seq-len."
        )
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {str(out_dir)!r} exists and is not a directory.")
    out_dir.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(s.seed)
    probe = _windows(ids, s.batch_size, s.seq_len + 1, rng)
    tokens, targets = probe[:, :-1], probe[:, -1]
    result = Result(out=out_dir, flows={})

    def config(cell: str, g: str = "tanh", layers: int = 0, skip: bool = False) -> ModelConfig:
        return ModelConfig(
            vocab_size=vocab_size,
            cell=cell,
            nonlinearity=g,
            hidden_size=s.hidden_size,
            num_layers=layers or s.num_layers,
            skip=skip,
        )

    def windows(steps: int, seed: int) -> RandomWindows:
        return RandomWindows(ids, s.batch_size, min(s.seq_len, 64) + 1, steps, seed, probe)

    def measure(label: str, model: RNNLanguageModel) -> None:
        result.flows[label] = gradient_flow(model, tokens, targets, layer=0)

    if run_model is not None:
        say(f"measuring {run_label}")
        measure(run_label, run_model.cpu())
    fresh = [(f"rnn-{g}", config("rnn", g)) for g in s.nonlinearities if "rnn" in s.cells]
    fresh += [(c, config(c)) for c in s.cells if c != "rnn"]
    if "rnn" in s.cells and s.deep_layers:
        # the seeds' third cure: a path around each layer of a deep stack
        deep = f"rnn-tanh, {s.deep_layers} layers"
        fresh.append((deep, config("rnn", layers=s.deep_layers)))
        fresh.append((f"{deep}, skip", config("rnn", layers=s.deep_layers, skip=True)))
    for label, cfg in fresh:
        torch.manual_seed(s.seed)
        model = RNNLanguageModel(cfg)
        if s.train_steps:
            say(f"training {label} for {s.train_steps} steps (Adam, lr {s.lr})")
            recs = train_steps(model, windows(s.train_steps, s.seed + 1), "adam", s.lr)
            say(f"  {label}: loss {recs[-1].loss:.3f} nats/token after {recs[-1].step} steps")
            label += f" ({s.train_steps} steps)"
        measure(label, model)

    # The exploding case: an Elman tanh RNN with a large W_aa, measured at initialisation,
    # then trained by plain SGD with and without clipping by norm.
    if "rnn" in s.cells:
        gen = torch.Generator().manual_seed(s.seed)
        torch.manual_seed(s.seed)
        base = RNNLanguageModel(config("rnn", "tanh"))
        explode_init(base, s.explode_gain, gen)
        measure(f"rnn-tanh, W_aa x{s.explode_gain:g} (init)", base)
        if s.clip_steps:
            for name, clip in (("no clipping", None), (f"clip norm {s.clip:g}", s.clip)):
                model = RNNLanguageModel(base.config)
                model.load_state_dict(base.state_dict())
                say(f"training the large-W_aa RNN by SGD (lr {s.clip_lr}), {name}")
                task = windows(s.clip_steps, s.seed + 2)
                result.clipping[name] = train_steps(model, task, "sgd", s.clip_lr, clip)
                label = f"rnn-tanh, W_aa x{s.explode_gain:g}, {s.clip_steps} SGD steps, {name}"
                measure(label, model)

    result.files = _write_csv(result)
    if plot:
        plot_diagnostics(result, out_dir / PLOT_PNG, s)
        result.files.append(out_dir / PLOT_PNG)
    return result


def _write_csv(result: Result) -> list[Path]:
    out = result.out
    lines = ["model,distance,grad_norm"]
    for label, flow in result.flows.items():
        lines += [f'"{label}",{d},{g:.6e}' for d, g in enumerate(flow.grad_norm)]
    atomic_write_text(out / FLOW_CSV, "\n".join(lines) + "\n")
    lines = ["model,saturated_fraction,units"]
    lines += [f'"{lab}",{f.saturated_fraction:.6f},"{f.units}"' for lab, f in result.flows.items()]
    atomic_write_text(out / SATURATION_CSV, "\n".join(lines) + "\n")
    files = [out / FLOW_CSV, out / SATURATION_CSV]
    if result.clipping:
        lines = ["clipping,step,loss_nats,grad_norm,w_aa_norm"]
        for name, recs in result.clipping.items():
            lines += [
                f'"{name}",{r.step},{r.loss:.6f},{r.grad_norm:.6e},{r.w_aa_norm:.6e}' for r in recs
            ]
        atomic_write_text(out / CLIPPING_CSV, "\n".join(lines) + "\n")
        files.append(out / CLIPPING_CSV)
    return files


def read_csv(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """The rows of one of the CSV files written here (for tests and notebooks)."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def plot_diagnostics(result: Result, path: Path, s: Settings) -> None:
    """Gradient norm by distance (log scale), saturated fraction, and the clipping
    experiment (loss; gradient norm and ||W_aa||), as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9.5))
    tiny = 1e-300
    ax = axes[0, 0]
    for label, flow in result.flows.items():
        style = ":" if "SGD" in label else "--" if "W_aa" in label else "-"
        deep = " layers" in label  # the deep stacks: dash-dot, or thick with skip connections
        style = ("-" if "skip" in label else "-.") if deep else style
        width = 2.5 if deep and "skip" in label else 1.5
        g = flow.grad_norm
        zero = np.flatnonzero(~(g > 0))  # exactly zero (or NaN) cannot be drawn on a log axis
        if len(zero):
            label += f" (0 from distance {zero[0]})"
        ax.semilogy(np.where(g > 0, g, np.nan), style, label=label, linewidth=width)
    ax.set_xlabel("distance T - t (steps)")
    ax.set_ylabel("||dL_T / da_t|| of the first layer (nats per unit of a)")
    ax.set_title(f"gradient flow back in time (H={s.hidden_size}, layers={s.num_layers})")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)

    ax = axes[0, 1]
    labels = list(result.flows)
    fractions = [100 * result.flows[lab].saturated_fraction for lab in labels]
    ax.barh(range(len(labels)), fractions, color="tab:gray")
    ax.set_yticks(range(len(labels)), [lab.replace(", ", ",\n", 1) for lab in labels], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("saturated units (%): local derivative < 0.1 (ReLU: dead, z <= 0)")
    ax.set_xlim(0, 100)
    ax.set_title("saturation")
    ax.grid(alpha=0.3, axis="x")

    ax, ax2 = axes[1, 0], axes[1, 1]
    if result.clipping:
        for name, recs in result.clipping.items():
            steps = [r.step for r in recs]
            ax.plot(steps, [r.loss for r in recs], label=name)
            line = ax2.semilogy(
                steps, [max(r.grad_norm, tiny) for r in recs], label=f"grad norm, {name}"
            )
            ax2.semilogy(steps, [r.w_aa_norm for r in recs], "--", color=line[0].get_color(),
                         label=f"||W_aa||, {name}")  # fmt: skip
        ax.set_title(f"W_aa x{s.explode_gain:g}, SGD lr {s.clip_lr:g}: training loss")
        ax.set_ylabel("loss (nats per token)")
        ax2.set_title("gradient norm before clipping, and ||W_aa|| (Frobenius)")
        for a in (ax, ax2):
            a.set_xlabel("SGD step")
            a.grid(alpha=0.3, which="both")
            a.legend(fontsize=8)
    else:
        ax.axis("off")
        ax2.axis("off")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)


def diagnose_text(
    text: str | os.PathLike[str],
    out: str | os.PathLike[str],
    run: str | os.PathLike[str] | None = None,
    level: str = "char",
    cell: Sequence[str] = CELLS,
    nonlinearity: Sequence[str] | None = None,
    hidden_size: int | None = None,
    num_layers: int | None = None,
    log: Log | None = None,
    **settings: Any,
) -> Result:
    """:func:`diagnose` on a text file (or 'shakespeare'), with the arguments of
    ``rnnkit diagnose``: a trained ``run`` is measured too and sets the vocabulary and, unless
    given, the hidden size and number of layers of the fresh configurations."""
    from rnnkit.text import build_vocab, encode_file
    from rnnkit.text.corpus import check_level, resolve_corpus

    if nonlinearity is not None and "rnn" not in cell:
        raise ConfigError("--nonlinearity applies only to --cell rnn, which is not among --cell.")
    run_model, run_label = None, "run"
    path = resolve_corpus(text)
    if run is not None:
        from rnnkit.training.checkpoint import load_run

        loaded = load_run(run)
        if not isinstance(loaded.model, RNNLanguageModel):
            raise ConfigError(
                f"run {str(run)!r} is a fixed-window model (--arch window): it has no "
                "recurrence to diagnose; give an rnn, gru or lstm run."
            )
        run_model, vocab = loaded.model, loaded.vocab
        mc = run_model.config
        run_label = f"{Path(run).name} ({mc.cell}" + (
            f"-{mc.nonlinearity}, trained)" if mc.cell == "rnn" else ", trained)"
        )
        hidden_size = hidden_size or mc.hidden_size
        num_layers = num_layers or mc.num_layers
    else:
        check_level(level)
        vocab = build_vocab(path, level, what="--text")
    ids = encode_file(path, vocab, what="--text").ids
    s = Settings(
        cells=tuple(cell),
        nonlinearities=tuple(nonlinearity or ("tanh", "relu")),
        hidden_size=hidden_size if hidden_size is not None else 128,
        num_layers=num_layers if num_layers is not None else 1,
        **settings,
    )
    return diagnose(ids, len(vocab), out, s, run_model, run_label, log)
