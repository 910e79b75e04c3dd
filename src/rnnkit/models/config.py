"""The model configuration: everything needed to rebuild a language model's shapes."""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from typing import Any

from rnnkit.choices import ARCHS, CELLS, NONLINEARITIES, OUTPUTS
from rnnkit.errors import ConfigError, did_you_mean

_TYPES: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float), "bool": (bool,),
                                        "str": (str,)}  # fmt: skip


def check_types(obj: Any, what: str) -> None:
    """ConfigError naming the setting whose value has the wrong type (a hand-edited
    config.json: ``hidden_size: "abc"``, ``48.0``, ``true``). Fields annotated ``int``,
    ``float``, ``bool``, ``str`` or ``X | None`` are checked; others are left alone."""
    for f in dataclasses.fields(obj):
        kinds = [k.strip() for k in str(f.type).split("|")]
        value = getattr(obj, f.name)
        if value is None and "None" in kinds:
            continue
        if any(k not in _TYPES and k != "None" for k in kinds):
            continue  # a type this check does not know
        allowed = tuple(t for k in kinds for t in _TYPES.get(k, ()))
        ok = isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed)
        if not ok:
            want = " or ".join(k for k in kinds if k != "None")
            raise ConfigError(f"{what} setting {f.name!r} must be {want}, not {value!r}.")


def check_choice(flag: str, value: str, choices: tuple[str, ...]) -> None:
    """ConfigError naming ``--flag`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ConfigError(
            f"--{flag} must be one of {', '.join(choices)}, not {value!r}"
            f"{did_you_mean(value, choices)}."
        )


def check_cell(cell: str, nonlinearity: str) -> None:
    """ConfigError unless ``cell`` is rnn, gru or lstm and ``nonlinearity`` fits it."""
    if cell not in CELLS:
        raise ConfigError(
            f"--cell must be one of {', '.join(CELLS)}, not {cell!r}{did_you_mean(cell, CELLS)}."
        )
    if nonlinearity not in NONLINEARITIES:
        raise ConfigError(
            f"--nonlinearity must be tanh or relu, not {nonlinearity!r}"
            f"{did_you_mean(nonlinearity, NONLINEARITIES)}."
        )
    if nonlinearity != "tanh" and cell != "rnn":
        raise ConfigError("--nonlinearity applies only to --cell rnn (GRU and LSTM fix theirs).")


@dataclass
class ModelConfig:
    """Shapes and options of a language model.

    ``arch`` ``rnn`` is :class:`~rnnkit.models.RNNLanguageModel` (``cell`` picks Elman, GRU or
    LSTM); ``window`` is the fixed-window model of Bengio et al.,
    :class:`~rnnkit.models.WindowLanguageModel`, which reads the ``context`` previous tokens
    (an n-gram model of order n = context + 1) through one tanh layer of ``hidden_size``.
    ``embedding_size`` None means equal to ``hidden_size``. ``one_hot`` feeds the one-hot
    vector of each token to the first layer (input size = vocabulary size) instead of an
    embedding, as the seeds write it. ``skip`` adds residual connections between stacked
    layers (layer k >= 1 outputs f_k(a^(k-1)) + a^(k-1); no effect with one layer; a config
    saved before it existed loads with False). ``weight_dropout`` drops entries of each W_aa
    while training (DropConnect, as AWD-LSTM does): the recurrence stays the fused kernel and
    the model stays an Elman/GRU/LSTM network at evaluation. ``locked_dropout`` draws the input
    and output dropout masks once per sequence and window, the same at every time step
    (variational dropout, Gal and Ghahramani 2016; AWD-LSTM's LockedDropout). ``output``
    picks the output layer (see :mod:`rnnkit.models.output`): ``full`` softmax, ``class``
    (``classes`` classes, 0 for sqrt(V); ``class_bounds`` is filled in from the training
    counts) or ``adaptive`` (``cutoffs``, None for the default).
    """

    vocab_size: int
    arch: str = "rnn"
    context: int = 4
    cell: str = "rnn"
    nonlinearity: str = "tanh"
    hidden_size: int = 256
    num_layers: int = 1
    skip: bool = False
    embedding_size: int | None = None
    one_hot: bool = False
    dropout: float = 0.0
    weight_dropout: float = 0.0
    locked_dropout: bool = False
    tie_weights: bool = False
    output: str = "full"
    classes: int = 0
    class_bounds: list[int] | None = None
    cutoffs: list[int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    @property
    def input_size(self) -> int:
        """Size of x_t, the vector the first recurrent layer reads."""
        if self.one_hot:
            return self.vocab_size
        return self.embedding_size if self.embedding_size is not None else self.hidden_size

    def validate(self) -> None:
        check_types(self, "model")
        if self.arch not in ARCHS:
            raise ConfigError(
                f"--arch must be rnn or window, not {self.arch!r}{did_you_mean(self.arch, ARCHS)}."
            )
        if self.arch == "window":
            self._validate_window()
        check_cell(self.cell, self.nonlinearity)
        for name in ("vocab_size", "hidden_size", "num_layers"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be at least 1, not {getattr(self, name)}.")
        if self.embedding_size is not None and self.embedding_size < 1:
            raise ConfigError(f"--embedding-size must be at least 1, not {self.embedding_size}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"--dropout must be in [0, 1), not {self.dropout}.")
        if not 0.0 <= self.weight_dropout < 1.0:
            raise ConfigError(f"--weight-dropout must be in [0, 1), not {self.weight_dropout}.")
        if self.weight_dropout and self.arch != "rnn":
            raise ConfigError("--weight-dropout applies to recurrent weights: --arch rnn only.")
        if self.skip and self.arch != "rnn":
            raise ConfigError("--skip connects stacked recurrent layers: --arch rnn only.")
        if self.locked_dropout and self.arch != "rnn":
            raise ConfigError("--locked-dropout masks a sequence over time: --arch rnn only.")
        if self.one_hot and self.embedding_size is not None:
            raise ConfigError(
                "--one-hot and --embedding-size conflict: one-hot input has no embedding."
            )
        if self.tie_weights:
            if self.one_hot:
                raise ConfigError(
                    "--tie-weights needs an embedding table, so it conflicts with --one-hot."
                )
            if self.input_size != self.hidden_size:
                raise ConfigError(
                    f"--tie-weights needs --embedding-size equal to --hidden-size "
                    f"({self.input_size} != {self.hidden_size})."
                )

        self._validate_output()

    def _validate_output(self) -> None:
        if self.output not in OUTPUTS:
            raise ConfigError(
                f"--output must be full, class or adaptive, not {self.output!r}"
                f"{did_you_mean(self.output, OUTPUTS)}."
            )
        if self.classes < 0 or self.classes > self.vocab_size:
            raise ConfigError(
                f"--classes must be between 1 and the vocabulary size {self.vocab_size}, "
                f"not {self.classes}."
            )
        if self.classes and self.output != "class":
            raise ConfigError("--classes applies only to --output class.")
        if self.cutoffs is not None and self.output != "adaptive":
            raise ConfigError("--cutoffs applies only to --output adaptive.")
        bounds = self.class_bounds
        if bounds is not None and (
            bounds[0] != 0
            or bounds[-1] != self.vocab_size
            or any(a >= b for a, b in itertools.pairwise(bounds))
        ):
            raise ConfigError("class_bounds must rise strictly from 0 to the vocabulary size.")
        cuts = self.cutoffs
        if cuts is not None and (
            not cuts
            or any(a >= b for a, b in itertools.pairwise(cuts))
            or cuts[0] < 1
            or cuts[-1] >= self.vocab_size
        ):
            raise ConfigError(
                f"--cutoffs must rise strictly, each between 1 and the vocabulary size "
                f"{self.vocab_size} - 1, not {cuts}."
            )
        if self.output == "adaptive":
            if self.vocab_size < 3 and cuts is None:
                raise ConfigError("--output adaptive needs a vocabulary of at least 3 tokens.")
            if self.tie_weights:
                raise ConfigError("--tie-weights works with --output full or class, not adaptive.")

    def _validate_window(self) -> None:
        if self.context < 1:
            raise ConfigError(f"--context must be at least 1, not {self.context}.")
        if self.cell != "rnn" or self.nonlinearity != "tanh" or self.num_layers != 1:
            raise ConfigError(
                "--arch window has one tanh hidden layer: leave out --cell, --nonlinearity "
                "and --num-layers."
            )
        if self.one_hot:
            raise ConfigError(
                "--arch window needs an embedding table, so it conflicts with --one-hot."
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(
                f"unknown model setting {unknown[0]!r}{did_you_mean(unknown[0], names)}."
            )
        return cls(**data)
