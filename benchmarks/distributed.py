"""DDP on one machine: ranks x threads against one process, on the character LM.

Trains the same model (an LSTM character LM on tiny Shakespeare, global batch B, truncated
BPTT) for the same steps in each layout and prints characters per second (the whole batch,
all ranks together) and the speed-up over one process with one thread:

    1x1   one process, one thread          (the baseline)
    1xT   one process, T threads           (intra-op threads: what one process can do)
    Nx1   N ranks under torchrun, gloo, one thread each (DDP: data parallel)
    NxT/N ...                               (when the machine has more cores)

Each layout trains from the same seed on the same batches; a DDP rank trains on B/N columns
and all-reduces its gradients each step (gloo over loopback on CPU, NCCL on CUDA). On CPU the
layouts share the machine's cores, so the figures say how best to spend *these* cores: they
are honest only on an otherwise idle machine (the script prints the load average).

    python benchmarks/distributed.py                 # every layout that fits the cores
    python benchmarks/distributed.py --quick         # a few steps: a smoke test
    python benchmarks/distributed.py --device cuda --layouts 1x1,2x1   # GPUs: NCCL
    python benchmarks/distributed.py --device cuda --layouts 1x1 --ddp-one  # one GPU: NCCL

A layout's worker is this script itself (``--worker``), launched by torchrun for N > 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def worker(args: argparse.Namespace) -> None:
    import torch

    from rnnkit.api.runs import resolve_device
    from rnnkit.distributed import world
    from rnnkit.models import ModelConfig, RNNLanguageModel
    from rnnkit.tasks.lm import LanguageModelTask
    from rnnkit.text.dataset import DataConfig, prepare_data
    from rnnkit.training import TrainConfig, Trainer

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    data = prepare_data(DataConfig(corpus="shakespeare", level="char"), None)
    task = LanguageModelTask.stream(
        data.train_ids, data.valid_ids[:2000], args.batch_size, args.bptt, level="char"
    )
    cfg = TrainConfig(batch_size=args.batch_size, bptt=args.bptt, lr=2e-3, clip=5.0,
                      epochs=1000, log_every=50, validate_every=0, seed=1)  # fmt: skip
    torch.manual_seed(0)
    model = RNNLanguageModel(
        ModelConfig(vocab_size=len(data.vocab), cell=args.cell, hidden_size=args.hidden)
    )
    run = (
        Path(tempfile.mkdtemp(prefix="rnnkit-ddp-bench-"))
        if world().is_main
        else Path("/nonexistent")
    )
    trainer = Trainer(model, task, cfg, run, device, progress=False)
    trainer.fit(max_steps=args.warmup)
    before, t0 = trainer.tokens, time.perf_counter()
    trainer.fit(max_steps=args.warmup + args.steps)
    seconds = time.perf_counter() - t0
    if world().is_main:
        print("RESULT " + json.dumps({"chars_per_s": (trainer.tokens - before) / seconds}))
        shutil.rmtree(run, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure(layout: str, args: argparse.Namespace) -> float:
    ranks, threads = (int(x) for x in layout.split("x"))
    flags = ["--worker", "--threads", str(threads), "--device", args.device, "--cell", args.cell,
             "--hidden", str(args.hidden), "--batch-size", str(args.batch_size), "--bptt",
             str(args.bptt), "--steps", str(args.steps), "--warmup", str(args.warmup)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = str(threads)
    if ranks == 1 and not args.ddp_one:
        cmd = [sys.executable, __file__, *flags]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={ranks}",
               "--master-addr=127.0.0.1", f"--master-port={free_port()}", __file__, *flags]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"layout {layout} failed:\n{proc.stderr[-3000:]}")
    return float(json.loads(lines[-1][7:])["chars_per_s"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--layouts", help="comma-separated RANKSxTHREADS (default: all that fit)")
    p.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL, one GPU a rank)")
    p.add_argument("--cell", default="lstm")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32, help="global batch (all ranks)")
    p.add_argument("--bptt", type=int, default=64)
    p.add_argument("--steps", type=int, default=60, help="timed steps per layout")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds (median kept)")
    p.add_argument("--quick", action="store_true", help="a few steps: a smoke test")
    p.add_argument("--ddp-one", action="store_true",
                   help="run 1-rank layouts under torchrun too (DDP over a group of one: its "
                   "overhead; with one GPU, the NCCL path)")  # fmt: skip
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    if args.quick:
        args.steps, args.warmup, args.rounds, args.hidden = 4, 1, 1, 64
    from common import emit_json, print_machine

    machine = print_machine()
    cores = os.cpu_count() or 1
    if args.layouts:
        layouts = args.layouts.split(",")
    else:  # every ranks x threads using at most the cores, ranks and threads powers of two
        layouts = [f"{r}x{t}" for r in (1, 2, 4, 8) for t in (1, 2, 4, 8, 16) if r * t <= cores]
    print(f"load average {os.getloadavg()[0]:.2f} on {cores} cores; char LM {args.cell} "
          f"1x{args.hidden}, global batch {args.batch_size}, bptt {args.bptt}, {args.steps} "
          f"timed steps, median of {args.rounds} interleaved rounds, device {args.device}")  # fmt: skip
    rates: dict[str, list[float]] = {x: [] for x in layouts}
    for r in range(args.rounds):
        for layout in layouts if r % 2 == 0 else layouts[::-1]:
            rates[layout].append(measure(layout, args))
    median = {x: sorted(v)[len(v) // 2] for x, v in rates.items()}
    base = median.get("1x1") or next(iter(median.values()))
    print(f"{'ranks x threads':>16} {'chars/s':>10} {'vs 1x1':>7}")
    for x in layouts:
        print(f"{x:>16} {median[x]:>10,.0f} {median[x] / base:>6.2f}x")
    if not args.quick:
        emit_json("distributed", {"machine": machine, "device": args.device, "cell": args.cell,
                                  "hidden": args.hidden, "batch_size": args.batch_size,
                                  "bptt": args.bptt, "steps": args.steps,
                                  "load_average": os.getloadavg()[0],
                                  "chars_per_s": median})  # fmt: skip


if __name__ == "__main__":
    main()
