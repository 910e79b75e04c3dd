"""Kill harness: SIGKILL and SIGTERM one training run at random moments, resume it each time,
and check that it ends exactly where an uninterrupted run ends.

Everything goes through the command line, as a user would run it (``python -m rnnkit train``,
or ``python -m rnnkit classify|tag|translate train``):

1. the reference: one uninterrupted run (``--out DIR/ref``), timed to place the signals;
2. the killed run (``--out DIR/killed``): started, sent one signal at a moment drawn from a
   seeded RNG, waited for, and started again with the same command, until every signal has
   been sent and a last start finishes the run. A start is ``--out RUN`` while RUN has no
   ``config.json`` (a folder without it is not a run yet: a kill during start-up may leave
   one) and ``--resume RUN`` after that. The moments, one per signal:

   - ``startup``: a uniform delay within the reference's start-up (Python, torch, data,
     building or loading the run, truncating metrics.jsonl), before the first step;
   - ``train``: once the run reaches a target step (drawn uniformly over the run, the targets
     in increasing order), after a uniform delay within one step's time: mid-epoch;
   - ``validation``: once the run logs a step that validates (at or after the target), after
     a uniform delay within the reference's validation time: during the validation or the
     checkpoint saved after it;
   - ``save``: once past the target, the moment a checkpoint's temporary file (``.*.tmp``) is
     seen in the run directory: mid-write of model/last.safetensors or state.pt.

   A SIGKILL loses the steps since the last checkpoint (every ``--validate-every`` steps and at
   each epoch's end); the resume trains them again. A SIGTERM is Ctrl-C to rnnkit: the run
   finishes its step, saves, validates the final weights (a ``kind: "final"`` record, unless
   the step validated anyway) and exits with 143; one during start-up, before training has
   set its handler, ends the process like a SIGKILL (exit -15);
3. the comparison:

   - weights: every tensor of the killed run's ``last.safetensors`` (the final weights) is
     ``torch.equal`` to the reference's, same names, same dtypes; ``model.safetensors`` (the
     best weights) too, unless a SIGTERM's final validation was kept as best: a stop between
     validations keeps its weights when they beat the best so far (docs/run-directory.md),
     which an uninterrupted run never sees, so the best weights may then differ by design
     ("n/a"), and are only checked to be the step of the last record marked ``best``;
   - metrics.jsonl, by kind and step. A record is **missing** when the reference has a
     ``train`` (``valid``) record at a step and the killed run has none of that kind there;
     **doubled** when the killed run has more than one record of one kind at one step;
     **extra** when it has one at a step where the reference has none of that kind. A redone
     step must not be doubled: its records were written before the kill, and the resume drops
     every record past the checkpoint's step (``MetricsLog.truncate_after``) before training
     it again. ``final`` records have no counterpart in the reference (whose last step ends an
     epoch, so validates): each SIGTERM that stopped the run (exit 143) at a step that does
     not validate must leave exactly one there (none: missing); one anywhere else is extra. A
     ``final`` record is never redone: the stop saved the state at its step first. Also
     counted: records out of step order (a step written after a later one), and **values
     differing**, fields that must equal the reference's record at the same step (``epoch``,
     ``tokens``, ``lr``, ``train_loss``, whose running average state.pt carries, and for
     validations every ``valid_*`` figure and ``averaged``). Not compared: ``time`` and
     ``tokens_per_second`` (clocks) and ``best`` (a final validation kept as best moves it).

Prints one line per start and a table of the counts; exit status 1 if anything differs, if a
start ends with a status other than its signal's (-9 after a SIGKILL, 143 after a SIGTERM, or
-15 for one during start-up; 0 at the end), or if the run ended before every signal was sent.

    python benchmarks/kill_harness.py                          # 20 SIGKILLs + 3 SIGTERMs, lm
    python benchmarks/kill_harness.py --task classify --kills 5 --terms 1 --seed 3
    python benchmarks/kill_harness.py --out /tmp/kh --steps 400     # keep the runs in /tmp/kh
    python benchmarks/kill_harness.py --checkpoint-every 0.5    # + a checkpoint every 0.5 s

The data is generated (a slice of the built-in Shakespeare for ``lm``; small synthetic sets
for ``classify``, ``tag`` and ``translate``), so the harness needs no data folder.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TASKS = ("lm", "classify", "tag", "translate")
KINDS = ("startup", "train", "validation", "save")
EPOCHS = 4
BATCH = 8
# fields of a record that must match the reference's at the same step (see the docstring)
SAME_TRAIN = ("epoch", "tokens", "lr", "train_loss")
SAME_VALID = ("epoch", "tokens", "lr", "averaged")


# -- the data and the commands ------------------------------------------------------------


def _words(rng: random.Random, n: int, prefix: str) -> list[str]:
    return [f"{prefix}{i}{rng.choice('aeiou')}" for i in range(n)]


def make_data(task: str, folder: Path, steps: int, seed: int) -> list[str]:
    """Write a small data set of about ``steps`` training steps (EPOCHS epochs of batch BATCH)
    under ``folder`` and return the data arguments of a fresh ``train`` for it."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    per_epoch = max(2, math.ceil(steps / EPOCHS))
    if task == "lm":
        import rnnkit

        text = Path(rnnkit.__file__).with_name("data").joinpath("shakespeare.txt").read_text()
        n = per_epoch * BATCH * 32 + 1  # --bptt 32: B x bptt characters a step
        (folder / "train.txt").write_text(text[:n], encoding="utf-8")
        (folder / "valid.txt").write_text(text[n : n + 3000], encoding="utf-8")
        return [str(folder / "train.txt"), "--valid", str(folder / "valid.txt")]
    if task == "classify":
        pos, neg, other = _words(rng, 8, "p"), _words(rng, 8, "n"), _words(rng, 30, "w")

        def sentence() -> str:
            words = [rng.choice(pos + neg + other * 2) for _ in range(rng.randint(3, 12))]
            score = sum(w in pos for w in words) - sum(w in neg for w in words)
            label = "pos" if score > 0 or (score == 0 and rng.random() < 0.5) else "neg"
            return f"{label}\t{' '.join(words)}\n"

        for name, count in (("train.tsv", per_epoch * BATCH), ("valid.tsv", 120)):
            (folder / name).write_text("".join(sentence() for _ in range(count)))
        return [str(folder / "train.tsv"), "--valid", str(folder / "valid.tsv")]
    if task == "tag":
        lexicon = {w: t for t in ("N", "V", "A", "D") for w in _words(rng, 12, t.lower())}
        words = list(lexicon)

        def sentence() -> str:
            return "".join(f"{w} {lexicon[w]}\n" for w in rng.choices(words, k=rng.randint(3, 10)))

        for name, count in (("train.txt", per_epoch * BATCH), ("valid.txt", 60)):
            (folder / name).write_text("\n".join(sentence() for _ in range(count)))
        return [str(folder / "train.txt"), "--valid", str(folder / "valid.txt")]
    if task == "translate":
        source = _words(rng, 24, "s")
        target = dict(zip(source, _words(rng, 24, "t")))

        def pair() -> tuple[str, str]:
            src = rng.choices(source, k=rng.randint(2, 7))
            return " ".join(src), " ".join(target[w] for w in reversed(src))

        for split, count in (("train", per_epoch * BATCH), ("valid", 60)):
            pairs = [pair() for _ in range(count)]
            (folder / f"{split}.src").write_text("".join(p[0] + "\n" for p in pairs))
            (folder / f"{split}.tgt").write_text("".join(p[1] + "\n" for p in pairs))
        return [
            str(folder / "train.src"),
            str(folder / "train.tgt"),
            "--valid",
            str(folder / "valid.src"),
            str(folder / "valid.tgt"),
        ]
    raise ValueError(task)


def model_flags(
    task: str, validate_every: int, seed: int, checkpoint_every: float | None = None
) -> list[str]:
    """A tiny model, a checkpoint every ``validate_every`` steps (and ``checkpoint_every``
    seconds), every step logged."""
    common = [
        "--epochs", str(EPOCHS), "--batch-size", str(BATCH),
        "--validate-every", str(validate_every), "--log-every", "1",
        "--patience", "0", "--eval-batch-size", "16", "--seed", str(seed),
    ]  # fmt: skip
    per_task = {
        # dropout: the RNG state must come back too; an LSTM: a carry of two tensors
        "lm": ["--cell", "lstm", "--hidden", "32", "--bptt", "32", "--dropout", "0.1"],
        "classify": ["--cell", "gru", "--hidden", "16"],
        "tag": ["--cell", "gru", "--hidden", "16", "--dropout", "0.1"],
        "translate": ["--cell", "gru", "--hidden-size", "16", "--embedding-size", "16"],
    }
    timed = [] if checkpoint_every is None else ["--checkpoint-every", f"{checkpoint_every:g}"]
    return common + per_task[task] + timed


def verb(task: str) -> list[str]:
    return ["train"] if task == "lm" else [task, "train"]


# -- watching a run -----------------------------------------------------------------------


class MetricsTail:
    """The records a started process writes to RUN/metrics.jsonl, read as they come.

    What is there at the start was written before: the killed process's records, steps the
    resume will redo, so reading starts at the end. A resume rewrites the file (atomically: a
    new inode) without the records past its checkpoint, then appends; that file is read from
    its start (the records it kept are at steps the caller already knows are not new)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        st = self._stat()
        self.inode = st.st_ino if st else None
        self.offset = st.st_size if st else 0
        self.buffer = b""

    def _stat(self) -> os.stat_result | None:
        try:
            return self.path.stat()
        except FileNotFoundError:
            return None

    def read(self) -> list[dict[str, Any]]:
        st = self._stat()
        if st is None:
            return []
        if st.st_ino != self.inode or st.st_size < self.offset:
            self.inode, self.offset, self.buffer = st.st_ino, 0, b""
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(chunk)
        *lines, self.buffer = (self.buffer + chunk).split(b"\n")
        records = []
        for line in lines:
            try:
                records.append(json.loads(line))
            except ValueError:  # a line cut short by a kill: the resume drops it
                continue
        return records


def saved_step(run: Path) -> int | None:
    """The step of RUN/state.pt, None before the run has one."""
    if not (run / "config.json").exists():
        return None
    from rnnkit.training.checkpoint import load_state

    return int(load_state(run / "state.pt")["position"]["step"])


def checkpoint_writing(run: Path) -> bool:
    """A checkpoint file is being written: its temporary file is there."""
    try:
        return any(
            e.name.startswith(".") and e.name.endswith(".tmp") and "metrics" not in e.name
            for e in os.scandir(run)
        )
    except FileNotFoundError:
        return False


# -- the plan -------------------------------------------------------------------------------


@dataclass
class Shot:
    """One signal: which, when (kind), and the step it waits for (train, validation, save)."""

    signum: int
    kind: str
    target: int = 0
    delay: float = 0.0  # seconds after the moment is reached

    def describe(self) -> str:
        name = "SIGKILL" if self.signum == signal.SIGKILL else "SIGTERM"
        where = f" at step >= {self.target}" if self.kind != "startup" else ""
        return f"{name} {self.kind}{where} +{self.delay * 1000:.0f} ms"


@dataclass
class Reference:
    steps: int  # optimizer steps of the whole run
    valid_steps: list[int]  # steps that validate (and save a checkpoint)
    startup: float  # seconds from start to the first logged step
    step_time: float  # seconds a step
    valid_time: float  # seconds a validation (median)
    wall: float


def plan(kills: int, terms: int, ref: Reference, seed: int) -> list[Shot]:
    rng = random.Random(seed)
    signals = [signal.SIGKILL] * kills + [signal.SIGTERM] * terms
    rng.shuffle(signals)
    n = len(signals)
    # every kind at least once (when there are enough signals), the rest weighted to mid-run
    kinds = list(KINDS[:n]) + rng.choices(KINDS, weights=(2, 4, 2, 2), k=max(0, n - len(KINDS)))
    rng.shuffle(kinds)
    # targets in increasing order, short of the last validation so the run is still going
    last = max([s for s in ref.valid_steps if s < ref.steps] or [ref.steps // 2])
    targets = iter(sorted(rng.randint(1, max(1, last - 1)) for _ in range(n)))
    shots = []
    for signum, kind in zip(signals, kinds):
        target = next(targets)
        if kind == "startup":
            delay = rng.uniform(0.0, ref.startup)
        elif kind == "train":
            delay = rng.uniform(0.0, ref.step_time)
        elif kind == "validation":
            delay = rng.uniform(0.0, ref.valid_time + 0.02)  # + a checkpoint's write
        else:
            delay = 0.0
        shots.append(Shot(signum, kind, target, delay))
    return shots


# -- running it -------------------------------------------------------------------------


@dataclass
class Attempt:
    command: str  # "out" or "resume"
    shot: Shot | None
    resumed_from: int | None
    status: int = 0
    sent: bool = False
    sent_at_step: int | None = None
    saved: int | None = None
    seconds: float = 0.0


@dataclass
class Harness:
    task: str
    data_args: list[str]
    flags: list[str]
    threads: int
    log: Path
    timeout: float = 600.0
    attempts: list[Attempt] = field(default_factory=list)

    def command(self, run: Path) -> tuple[str, list[str]]:
        base = [sys.executable, "-m", "rnnkit", *verb(self.task)]
        hardware = ["--threads", str(self.threads), "--no-progress"]
        if (run / "config.json").exists():
            return "resume", [*base, "--resume", str(run), *hardware]
        return "out", [*base, *self.data_args, "--out", str(run), *self.flags, *hardware]

    def start(self, run: Path) -> tuple[str, subprocess.Popen[bytes]]:
        kind, cmd = self.command(run)
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads), "PYTHONUNBUFFERED": "1"}
        with self.log.open("ab") as log:
            log.write(("$ " + " ".join(cmd) + "\n").encode())
            log.flush()
            # a session of its own: a Ctrl-C meant for the harness is not one of its signals
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=log, env=env, cwd=ROOT, start_new_session=True
            )
        return kind, proc

    def reference(self, run: Path) -> Reference:
        """The uninterrupted run, and the timings the signals are placed with."""
        t0 = time.monotonic()
        _, proc = self.start(run)
        tail, startup = MetricsTail(run / "metrics.jsonl"), math.nan
        while proc.poll() is None and math.isnan(startup):
            if tail.read():
                startup = time.monotonic() - t0
            time.sleep(0.002)
        status = proc.wait(timeout=self.timeout)
        wall = time.monotonic() - t0
        if status != 0:
            raise SystemExit(f"the reference run failed with status {status}; see {self.log}.")
        records = read_records(run)
        train = {r["step"]: r for r in records if r["kind"] == "train"}
        valid = [r for r in records if r["kind"] == "valid"]
        steps = max(train)
        step_time = train[steps]["time"] / steps  # includes the validations: an upper bound
        valid_time = sorted(
            max(0.0, r["time"] - train[r["step"]]["time"]) for r in valid if r["step"] in train
        )[len(valid) // 2]
        return Reference(
            steps=steps,
            valid_steps=[r["step"] for r in valid],
            startup=startup if math.isfinite(startup) else 1.0,
            step_time=step_time,
            valid_time=valid_time,
            wall=wall,
        )

    def attempt(self, run: Path, shot: Shot | None, ref: Reference) -> Attempt:
        resumed = saved_step(run)
        tail = MetricsTail(run / "metrics.jsonl")
        t0 = time.monotonic()
        kind, proc = self.start(run)
        att = Attempt(kind, shot, resumed)
        try:
            if shot is not None:
                att.sent_at_step = self._wait_for_moment(run, proc, tail, shot, resumed, ref, t0)
                if proc.poll() is None:
                    proc.send_signal(shot.signum)
                    att.sent = True
            att.status = proc.wait(timeout=self.timeout)
        finally:
            if proc.poll() is None:  # a SIGTERM not heeded, or the harness interrupted
                proc.kill()
                proc.wait()
        att.seconds = time.monotonic() - t0
        att.saved = saved_step(run)
        self.attempts.append(att)
        return att

    def _wait_for_moment(
        self,
        run: Path,
        proc: subprocess.Popen[bytes],
        tail: MetricsTail,
        shot: Shot,
        resumed: int | None,
        ref: Reference,
        t0: float,
    ) -> int | None:
        """Sleep until ``shot``'s moment (or the process's end); the last step logged."""
        if shot.kind == "startup":
            end = t0 + shot.delay
            while proc.poll() is None and time.monotonic() < end:
                time.sleep(0.001)
            return None
        # a step this process trains, not one it only kept from before the kill
        first = max(shot.target, (resumed or 0) + 1)
        validating = set(ref.valid_steps)
        step: int | None = None
        reached = False
        deadline = t0 + self.timeout
        saving = False
        while proc.poll() is None and time.monotonic() < deadline:
            for r in tail.read():
                if r["kind"] == "train":
                    step = r["step"]
                    if r["step"] >= first and (
                        shot.kind != "validation" or r["step"] in validating
                    ):
                        reached = True
                # a validation's record is written just before its checkpoint: a write too
                # quick for the poll to see its temporary file is under way now
                elif r["kind"] == "valid" and reached:
                    saving = True
            if reached and (shot.kind != "save" or saving or checkpoint_writing(run)):
                break
            time.sleep(0.0005 if reached else 0.002)
        time.sleep(shot.delay)
        return step


def read_records(run: Path) -> list[dict[str, Any]]:
    from rnnkit.training.metrics import read_metrics

    return read_metrics(run / "metrics.jsonl")


# -- the comparison ---------------------------------------------------------------------------


@dataclass
class Report:
    kills: int = 0
    terms: int = 0
    resumes: int = 0
    starts: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    bad_statuses: list[str] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)
    steps: int = 0
    ref_steps: int = 0
    train_records: int = 0
    valid_records: int = 0
    final_records: int = 0
    missing: int = 0
    doubled: int = 0
    extra: int = 0
    out_of_order: int = 0
    values_differing: int = 0
    details: list[str] = field(default_factory=list)
    last_identical: bool = False
    best_identical: bool | None = False  # None: not comparable (a final validation kept best)
    unsent: int = 0
    ref_wall: float = 0.0
    killed_wall: float = 0.0
    wall: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            self.last_identical
            and not self.unsent
            and self.best_identical is not False
            and not self.bad_statuses
            and self.steps == self.ref_steps
            and not (self.missing or self.doubled or self.extra)
            and not (self.out_of_order or self.values_differing)
        )

    def table(self) -> str:
        codes = ", ".join(f"{c} x{n}" for c, n in sorted(self.statuses.items()))
        best = {True: "yes", False: "NO", None: "n/a (a stop's validation was kept as best)"}
        rows = [
            ("SIGKILLs sent", str(self.kills)),
            ("SIGTERMs sent", str(self.terms)),
            ("signals not sent (run ended first)", str(self.unsent)),
            ("moments", ", ".join(f"{k} {self.kinds[k]}" for k in KINDS)),
            ("starts / resumes", f"{self.starts} / {self.resumes}"),
            ("exit codes seen", codes),
            ("unexpected exit codes", str(len(self.bad_statuses))),
            ("steps (reference)", f"{self.steps} ({self.ref_steps})"),
            (
                "records train / valid / final",
                f"{self.train_records} / {self.valid_records} / {self.final_records}",
            ),
            ("records missing", str(self.missing)),
            ("records doubled", str(self.doubled)),
            ("records extra", str(self.extra)),
            ("records out of order", str(self.out_of_order)),
            ("record values differing", str(self.values_differing)),
            ("final weights identical", "yes" if self.last_identical else "NO"),
            ("best weights identical", best[self.best_identical]),
            (
                "wall time",
                f"{self.wall:.1f} s (reference {self.ref_wall:.1f} s, "
                f"killed run {self.killed_wall:.1f} s)",
            ),
            ("result", "PASS" if self.ok else "FAIL"),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def same_weights(a: Path, b: Path) -> tuple[bool, str]:
    import torch
    from safetensors.torch import load_file

    if not a.exists() or not b.exists():
        return False, f"{a.name} is missing"
    x, y = load_file(str(a)), load_file(str(b))
    if x.keys() != y.keys():
        return False, f"{a.name}: tensor names differ"
    for k in x:
        if x[k].dtype != y[k].dtype or not torch.equal(x[k], y[k]):
            return False, f"{a.name}: tensor {k} differs"
    return True, ""


def weights_step(path: Path) -> int | None:
    """The step a weights file was saved at (its metadata)."""
    from safetensors import safe_open

    if not path.exists():
        return None
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    return int(meta["step"]) if "step" in meta else None


def compare_metrics(
    ref: list[dict[str, Any]], got: list[dict[str, Any]], stops: set[int], report: Report
) -> None:
    """Count missing, doubled and extra records, and differing values (see the docstring)."""
    by_kind: dict[str, list[dict[str, Any]]] = {"train": [], "valid": [], "final": []}
    for r in got:
        by_kind.setdefault(r["kind"], []).append(r)
    report.train_records = len(by_kind["train"])
    report.valid_records = len(by_kind["valid"])
    report.final_records = len(by_kind["final"])
    last = -1
    for r in got:  # in the order written: steps never go back
        if r["step"] < last:
            report.out_of_order += 1
            report.details.append(f"{r['kind']} record of step {r['step']} after step {last}")
        last = max(last, r["step"])
    validated = {r["step"] for r in ref if r["kind"] == "valid"}
    for kind, same in (("train", SAME_TRAIN), ("valid", SAME_VALID), ("final", ())):
        want = {r["step"]: r for r in ref if r["kind"] == kind}
        counts = Counter(r["step"] for r in by_kind.get(kind, []))
        # a SIGTERM's stop validates unless its step validated anyway
        expected = set(want) if kind != "final" else stops - validated
        for step in sorted(expected - set(counts)):
            report.missing += 1
            report.details.append(f"{kind} record of step {step} missing")
        for step, n in sorted(counts.items()):
            if n > 1:
                report.doubled += n - 1
                report.details.append(f"{kind} record of step {step} written {n} times")
            if step not in expected:
                report.extra += 1
                report.details.append(f"{kind} record of step {step} not expected")
        figures = sorted({k for r in want.values() for k in r if k.startswith("valid_")})
        fields = [*same, *figures]
        for r in by_kind.get(kind, []):
            base = want.get(r["step"])
            if base is None:
                continue
            for k in fields:
                if r.get(k) != base.get(k):
                    report.values_differing += 1
                    report.details.append(
                        f"{kind} record of step {r['step']}: {k} {r.get(k)!r}, "
                        f"reference {base.get(k)!r}"
                    )


def run_harness(
    task: str = "lm",
    kills: int = 20,
    terms: int = 3,
    seed: int = 1,
    out: Path | None = None,
    steps: int = 800,
    threads: int = 1,
    validate_every: int | None = None,
    checkpoint_every: float | None = None,
    echo: bool = True,
) -> Report:
    def say(line: str) -> None:
        if echo:
            print(line, flush=True)

    t_start = time.monotonic()
    folder = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="rnnkit-kill-"))
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.iterdir()):
        raise ValueError(f"--out {str(folder)!r} is not empty; give a new folder.")
    # a checkpoint every ~1/40 of the run: most SIGKILLs lose some steps, none loses many
    every = validate_every or max(5, steps // 40)
    data_args = make_data(task, folder / "data", steps, seed)
    flags = model_flags(task, every, seed, checkpoint_every)
    harness = Harness(task, data_args, flags, threads, folder / "log.txt")
    ref_run, run = folder / "ref", folder / "killed"
    say(f"kill harness: task {task}, {kills} SIGKILLs + {terms} SIGTERMs, seed {seed}, in {folder}")
    ref = harness.reference(ref_run)
    say(
        f"reference: {ref.steps} steps, {len(ref.valid_steps)} validations, {ref.wall:.1f} s "
        f"(start-up {ref.startup:.2f} s, {ref.step_time * 1000:.1f} ms a step, "
        f"validation {ref.valid_time * 1000:.1f} ms)"
    )
    report = Report(ref_steps=ref.steps, ref_wall=ref.wall)
    shots = plan(kills, terms, ref, seed)
    stops: set[int] = set()  # steps a SIGTERM stopped the run at, with a final validation
    t_killed = time.monotonic()
    for i in range(len(shots) + 1):  # + the start that finishes
        shot = shots[i] if i < len(shots) else None
        att = harness.attempt(run, shot, ref)
        report.starts += 1
        report.resumes += att.command == "resume"
        report.statuses[att.status] += 1
        if att.sent and shot is not None:
            report.kinds[shot.kind] += 1
            if shot.signum == signal.SIGKILL:
                report.kills += 1
            else:
                report.terms += 1
        expected = {0} if not att.sent or shot is None else {-signal.SIGKILL}
        if att.sent and shot is not None and shot.signum == signal.SIGTERM:
            expected = {143, -signal.SIGTERM}  # -15: before training has set its handler
            if att.status == 143 and att.saved is not None:
                stops.add(att.saved)
        if att.status not in expected:
            report.bad_statuses.append(f"start {i + 1}: status {att.status}")
        say(
            f"start {i + 1:2d} ({att.command:6s} from step {att.resumed_from}): "
            f"{shot.describe() if shot else 'no signal'}"
            f"{'' if att.sent or shot is None else ' (not sent: it had ended)'}"
            f"{f' at step {att.sent_at_step}' if att.sent_at_step is not None else ''}"
            f" -> exit {att.status}, state at step {att.saved}, "
            f"{att.seconds:.1f} s"
        )
        if att.status == 0 or att.status not in (-signal.SIGKILL, -signal.SIGTERM, 143):
            break  # finished, or an error that resuming again would not mend
    report.unsent = len(shots) - report.kills - report.terms
    report.killed_wall = time.monotonic() - t_killed
    report.steps = saved_step(run) or 0
    ref_records, records = read_records(ref_run), read_records(run)
    compare_metrics(ref_records, records, stops, report)
    report.last_identical, why = same_weights(
        ref_run / "last.safetensors", run / "last.safetensors"
    )
    if why:
        report.details.append(why)
    if any(r["kind"] == "final" and r.get("best") for r in records):
        # not the reference's best, by design; but the record that says best must be theirs
        report.best_identical = None
        best = [r["step"] for r in records if r.get("best")]
        held = weights_step(run / "model.safetensors")
        if not best or held != best[-1]:
            report.best_identical = False
            report.details.append(
                f"model.safetensors holds step {held}, the last record marked best is of step "
                f"{best[-1] if best else None}"
            )
    else:
        report.best_identical, why = same_weights(
            ref_run / "model.safetensors", run / "model.safetensors"
        )
        if why:
            report.details.append(why)
    report.wall = time.monotonic() - t_start
    for line in report.details[:30]:
        say("  " + line)
    say(report.table())
    if out is None and report.ok:
        shutil.rmtree(folder)
    elif not report.ok:
        say(f"runs and their output kept in {folder} (log.txt)")
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=20, help="SIGKILLs to send (20)")
    p.add_argument("--terms", type=int, default=3, help="SIGTERMs to send (3)")
    p.add_argument("--seed", type=int, default=1, help="the moments' RNG and the runs' seed (1)")
    p.add_argument("--task", choices=TASKS, default="lm", help="the run's task (lm)")
    p.add_argument("--out", type=Path, help="a new folder for the data and runs (a temporary one)")
    p.add_argument("--steps", type=int, default=800, help="about this many steps a run (800)")
    p.add_argument("--validate-every", type=int, help="steps between checkpoints (steps/40)")
    p.add_argument(
        "--checkpoint-every",
        type=float,
        metavar="SECONDS",
        help="passed to the run: also a checkpoint every SECONDS of training (off)",
    )
    p.add_argument("--threads", type=int, default=1, help="CPU threads of each run (1)")
    args = p.parse_args(argv)
    if args.kills < 0 or args.terms < 0 or args.steps < 20:
        p.error("--kills and --terms must be >= 0 and --steps >= 20.")
    if args.out is not None and args.out.exists() and any(args.out.iterdir()):
        p.error(f"--out {str(args.out)!r} is not empty; give a new folder.")
    report = run_harness(
        args.task,
        args.kills,
        args.terms,
        args.seed,
        args.out,
        args.steps,
        args.threads,
        args.validate_every,
        args.checkpoint_every,
    )
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
