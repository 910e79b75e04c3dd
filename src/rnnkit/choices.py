"""The named choices of settings, in one torch-free module.

The configs validate against these tuples and the CLI offers them as ``choices``, so a new
schedule or output layer is added in one place (and ``rnnkit --help`` stays free of torch).
"""

LEVELS = ("char", "word")
MODES = ("stream", "sentence")
TOKENIZERS = ("whitespace", "words")
ARCHS = ("rnn", "window")
CELLS = ("rnn", "gru", "lstm")
NONLINEARITIES = ("tanh", "relu")
OUTPUTS = ("full", "class", "adaptive")
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("rnnlm", "plateau", "constant", "step", "linear")
PRECISIONS = ("fp32", "bf16")
ATTENTIONS = ("none", "dot", "general", "bahdanau")  # the translator: none is the fixed vector
