"""n-gram models that load in seconds: rnnkit's ARPA reader (line by line and bulk), its binary
format, and the ``kenlm`` Python module, side by side in one run.

1. A 5-gram (``rnnkit ngram train --order 5``) on the first ``--words`` words of
   ``gutenberg/train.txt`` (empty lines dropped), ARPA only; the test text is the first
   ``--test-words`` words of ``gutenberg/test.txt``. Big files go under ``--work`` (/tmp).
2. ARPA reading in a fresh process each: the line-by-line reader (``read_arpa(fast=False)``,
   rnnkit's reader before the bulk one) and the bulk reader (``read_arpa``), wall time and
   the child's CPU time (user + system: what a shared machine's load does not inflate as
   much), from before ``import rnnkit.ngram`` to the model; both models are checked equal
   array for array.
3. ``rnnkit ngram build-binary``: its wall time and the file's size.
4. Load + score the test text, each in a fresh process, wall time from the process's start
   (Python, imports, loading, reading the text, scoring) and its peak RSS (the child's
   VmHWM, or ``wait4`` for the CLI runs):
   rnnkit on the ARPA file, rnnkit on the binary file (``rnnkit ngram eval``, the CLI), and
   ``kenlm.Model`` on the ARPA file (scoring sentence by sentence, ``Model.score``). KenLM's
   own binary needs its ``build_binary`` program: run where it is found, else skipped.
   The perplexities must agree.

    OMP_NUM_THREADS=1 python benchmarks/ngram_load.py                 # ~2M words (minutes)
    python benchmarks/ngram_load.py --words 200000 --test-words 20000   # quick
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, cpu_name, data_dir, emit_json

PY = sys.executable
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}

#: The child's own peak RSS (VmHWM of its image; wait4's ru_maxrss also counts the parent's
#: peak at fork, so children report this themselves where they can).
HWM = """
def _hwm():
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
"""

READ_ARPA = (
    HWM
    + """
import json, resource, sys, time
def _cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
t0, c0 = time.perf_counter(), _cpu()
from rnnkit.ngram import read_arpa
m = read_arpa(sys.argv[1], fast=sys.argv[2] == "fast")
t1, c1 = time.perf_counter(), _cpu()
if len(sys.argv) > 3:
    from rnnkit.ngram import write_binary
    write_binary(m, sys.argv[3])
print(json.dumps({"read_s": t1 - t0, "cpu_s": c1 - c0, "counts": m.counts(), "hwm_mb": _hwm()}))
"""
)

SCORE_RNNKIT = (
    HWM
    + """
import json, sys, time
from rnnkit.ngram import load_model, read_lines
t0 = time.perf_counter()
m = load_model(sys.argv[1])
t1 = time.perf_counter()
s = m.score_sentences(read_lines(sys.argv[2]))
t2 = time.perf_counter()
print(json.dumps({"load_s": t1 - t0, "score_s": t2 - t1, "perplexity": s.perplexity(),
                  "log10": s.total_log10, "tokens": s.num_tokens, "hwm_mb": _hwm()}))
"""
)

SCORE_KENLM = (
    HWM
    + """
import json, sys, time
import kenlm
t0 = time.perf_counter()
m = kenlm.Model(sys.argv[1])
t1 = time.perf_counter()
total, n = 0.0, 0
with open(sys.argv[2], encoding="utf-8") as f:
    for line in f:
        line = line.rstrip("\\n")
        total += m.score(line, bos=True, eos=True)
        n += len(line.split()) + 1
t2 = time.perf_counter()
print(json.dumps({"load_s": t1 - t0, "score_s": t2 - t1, "perplexity": 10 ** (-total / n),
                  "log10": total, "tokens": n, "hwm_mb": _hwm()}))
"""
)


def run_peak(argv: list[str]) -> dict[str, Any]:
    """Run a command: its wall time, its own peak RSS (MB, from wait4) and the JSON it
    printed last (if any)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    assert proc.stdout is not None and proc.stderr is not None
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} failed:\n{err.decode()}")
    rec: dict[str, Any] = {"wall_s": wall, "peak_mb": usage.ru_maxrss / 1024}
    lines = out.decode().strip().splitlines()
    if lines and lines[-1].startswith("{"):
        rec.update(json.loads(lines[-1]))
    if rec.get("hwm_mb"):
        rec["peak_mb"] = rec["hwm_mb"]  # the child's own figure (see HWM)
    return rec


def take_words(src: Path, dst: Path, words: int) -> int:
    n = 0
    with src.open(encoding="utf-8") as f, dst.open("w", encoding="utf-8") as g:
        for line in f:
            w = line.split()
            if not w:
                continue
            g.write(line if line.endswith("\n") else line + "\n")
            n += len(w)
            if n >= words:
                break
    return n


def best_of(n: int, argv: list[str]) -> dict[str, Any]:
    runs = [run_peak(argv) for _ in range(n)]
    return min(runs, key=lambda r: r["wall_s"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--words", type=int, default=2_000_000, help="training words (2,000,000)")
    ap.add_argument("--test-words", type=int, default=244_000, help="test words (244,000)")
    ap.add_argument("--order", type=int, default=5)
    ap.add_argument("--work", default="/tmp/rnnkit_ngram_load", help="big files go here")
    ap.add_argument("--repeats", type=int, default=2, help="runs of each fast load+score")
    args = ap.parse_args()

    gut = data_dir() / "gutenberg"
    if not (gut / "train.txt").is_file():
        raise SystemExit(f"{gut}/train.txt is absent (set RNNKIT_DATA to the shared data folder)")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    train, test = work / "train.txt", work / "test.txt"
    arpa, binary = work / f"kn{args.order}.arpa", work / f"kn{args.order}.ngram"
    n_train = take_words(gut / "train.txt", train, args.words)
    n_test = take_words(gut / "test.txt", test, args.test_words)
    load0 = os.getloadavg()
    mach = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "omp_threads": os.environ.get("OMP_NUM_THREADS"),
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in load0],
    }
    print(f"machine: {mach}", flush=True)
    print(f"train {n_train:,} words, test {n_test:,} words, order {args.order}", flush=True)

    rnnkit = [PY, "-m", "rnnkit"]
    order = ["--order", str(args.order)]
    tr = run_peak(
        [*rnnkit, "ngram", "train", *order, str(train), "-o", str(arpa), "--binary", "no"]
    )
    print(
        f"train: {tr['wall_s']:.1f} s, peak {tr['peak_mb']:.0f} MB; "
        f"ARPA {arpa.stat().st_size / 1e6:.1f} MB",
        flush=True,
    )

    old = run_peak([PY, "-c", READ_ARPA, str(arpa), "slow", str(work / "old.ngram")])
    new = run_peak([PY, "-c", READ_ARPA, str(arpa), "fast", str(work / "new.ngram")])
    # compared in chunks: the parent must stay small (a child's ru_maxrss counts its peak)
    same = filecmp.cmp(work / "old.ngram", work / "new.ngram", shallow=False)
    print(
        f"ARPA read: line by line {old['read_s']:.2f} s (CPU {old['cpu_s']:.2f} s, "
        f"{old['peak_mb']:.0f} MB), bulk {new['read_s']:.2f} s (CPU {new['cpu_s']:.2f} s, "
        f"{new['peak_mb']:.0f} MB): {old['read_s'] / new['read_s']:.1f}x "
        f"(CPU {old['cpu_s'] / new['cpu_s']:.1f}x); same model: {same}",
        flush=True,
    )
    (work / "old.ngram").unlink()
    (work / "new.ngram").unlink()

    bb = run_peak([*rnnkit, "ngram", "build-binary", str(arpa), str(binary)])
    print(
        f"build-binary: {bb['wall_s']:.2f} s, peak {bb['peak_mb']:.0f} MB; binary "
        f"{binary.stat().st_size / 1e6:.1f} MB",
        flush=True,
    )

    rows: dict[str, dict[str, Any]] = {}
    rows["rnnkit ARPA"] = run_peak([PY, "-c", SCORE_RNNKIT, str(arpa), str(test)])
    rows["rnnkit binary"] = best_of(args.repeats, [PY, "-c", SCORE_RNNKIT, str(binary), str(test)])
    cli = best_of(
        args.repeats, [*rnnkit, "ngram", "eval", str(binary), str(test), "--format", "json"]
    )
    rows["rnnkit binary (CLI eval)"] = cli
    try:
        import kenlm  # noqa: F401

        rows["kenlm ARPA"] = best_of(args.repeats, [PY, "-c", SCORE_KENLM, str(arpa), str(test)])
        bb_kenlm = shutil.which("build_binary")
        if bb_kenlm:
            klm = work / f"kn{args.order}.klm"
            subprocess.run([bb_kenlm, str(arpa), str(klm)], check=True, capture_output=True)
            rows["kenlm binary"] = best_of(
                args.repeats, [PY, "-c", SCORE_KENLM, str(klm), str(test)]
            )
        else:
            print("kenlm binary: skipped (KenLM's build_binary is not on PATH)")
    except ImportError:
        print("kenlm: skipped (the kenlm package is not installed)")

    ref = rows.get("kenlm ARPA")
    print()
    print(
        f"{'load + score ' + format(n_test, ',') + ' words':<28} {'wall s':>8} {'load s':>8} "
        f"{'score s':>8} {'peak MB':>8} {'x kenlm t':>9} {'x kenlm M':>9} {'perplexity':>11}"
    )
    for name, r in rows.items():
        ratio_t = f"{r['wall_s'] / ref['wall_s']:.2f}" if ref else "-"
        ratio_m = f"{r['peak_mb'] / ref['peak_mb']:.2f}" if ref else "-"
        print(
            f"{name:<28} {r['wall_s']:8.2f} {r.get('load_s', float('nan')):8.2f} "
            f"{r.get('score_s', float('nan')):8.2f} {r['peak_mb']:8.0f} {ratio_t:>9} "
            f"{ratio_m:>9} {r['perplexity']:11.4f}"
        )
    ppls = [r["perplexity"] for r in rows.values()]
    agree = max(ppls) / min(ppls) - 1 < 1e-5
    print(f"perplexities agree (to 1e-5 relative): {agree}")
    mach["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(
        f"load average at start {mach['load_average_at_start']}, at end "
        f"{mach['load_average_at_end']} (on {mach['cores']} cores)"
    )
    emit_json(
        "ngram_load",
        {
            "machine": mach,
            "train_words": n_train,
            "test_words": n_test,
            "order": args.order,
            "arpa_mb": arpa.stat().st_size / 1e6,
            "binary_mb": binary.stat().st_size / 1e6,
            "train_s": tr["wall_s"],
            "arpa_read_line_by_line_s": old["read_s"],
            "arpa_read_bulk_s": new["read_s"],
            "arpa_read_speedup": old["read_s"] / new["read_s"],
            "arpa_read_cpu_s": {"line_by_line": old["cpu_s"], "bulk": new["cpu_s"]},
            "arpa_read_peak_mb": {"line_by_line": old["peak_mb"], "bulk": new["peak_mb"]},
            "same_model": same,
            "build_binary_s": bb["wall_s"],
            "load_score": {
                k: {x: v for x, v in r.items() if x != "stderr"} for k, r in rows.items()
            },
            "perplexities_agree": agree,
        },
    )
    if not (same and agree):
        raise SystemExit("the readers' models or the perplexities differ")


if __name__ == "__main__":
    main()
