"""Training throughput: model-samples per second, batched (one vmapped group of K models) against
one model at a time (groups of one), both through the train stage's own trainer, in one run.

    python benchmarks/train_throughput.py                       # the quickstart's MLP on MNIST-1D
    python benchmarks/train_throughput.py --arch mlp,cnn        # and the package's default CNN
    python benchmarks/train_throughput.py --arch wrn --dataset cifar-like-random --device cuda

A model-sample is one training sample passed forward and backward through one model. Rounds
alternate batched and single epochs, and each side keeps its best round, so a busy machine
disturbs the ratio little. ``--clock process`` times CPU seconds of this process instead of wall
seconds: with ``--threads 1`` the robust figure on a machine that other jobs share (two torch
threads on two shared cores spin and wait, and small single-model ops suffer most).
``cifar-like-random`` is random data of CIFAR-10's shape (3 x 32 x 32, 10 classes): throughput
does not depend on the pixel values. The last line is
``speedup: X``, the smallest batched/single ratio over the architectures measured.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from privdyn.config import config_from_dict
from privdyn.data import Dataset, load_dataset
from privdyn.training.engine import GroupTask, make_trainer, resolve_device
from privdyn.training.membership import balanced_membership

#: The quickstart's MLP, the package's default CNN, and the paper-scale conv nets.
MODELS = {
    "mlp": {"arch": "mlp", "width": 256, "depth": 2, "norm": "none"},
    "cnn": {"arch": "cnn", "width": 32, "depth": 3, "norm": "batch"},
    "resnet18": {"arch": "resnet18", "norm": "batch"},
    "wrn": {"arch": "wrn", "width": 2, "depth": 28, "norm": "batch"},
}


def dataset(name: str, n_pool: int) -> Dataset:
    if name == "cifar-like-random":
        g = np.random.default_rng(0)
        x = g.standard_normal((n_pool + 1000, 3, 32, 32), dtype=np.float32)
        y = g.integers(0, 10, n_pool + 1000)
        return Dataset("cifar-like-random", "image", x[:n_pool], y[:n_pool], x[n_pool:], y[n_pool:], 10)
    return load_dataset(name, n_pool, 1000, 0)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_flops(arch: str, ds: Dataset, batch_size: int) -> tuple[float, float]:
    """FLOPs per sample of one model: a training step (forward and backward) and an evaluation forward,
    counted by torch's FlopCounterMode on one plain model (matmuls and convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build(arch, ds)
    x, y = torch.from_numpy(ds.x_pool[:batch_size]), torch.from_numpy(ds.y_pool[:batch_size])
    with FlopCounterMode(display=False) as train_count:
        torch.nn.functional.cross_entropy(model(x), y).backward()
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as eval_count:
        model(x)
    return train_count.get_total_flops() / len(y), eval_count.get_total_flops() / len(y)


def build(arch: str, ds: Dataset) -> torch.nn.Module:
    """One plain model of ``arch`` for ``ds``."""
    from privdyn.models import build_model

    opts = {k: v for k, v in MODELS[arch].items() if k != "arch"}
    return build_model(MODELS[arch]["arch"], ds.input_shape, ds.num_classes, **opts)


def measure_eval(arch: str, ds: Dataset, k: int, device: str, clock=time.perf_counter,
                 memory_format: str = "auto", precision: str = "fp32") -> float:
    """Model-samples per second of the per-checkpoint evaluation of a group of k models on the pool
    (one identity query, every signal computed), best of two passes; ``precision`` bf16 runs the
    forward under bf16 autocast (``training.eval_precision``), anything else in fp32."""
    from privdyn.training.engine import memory_format as resolve_format
    from privdyn.training.ensemble import EnsembleGroup

    dev = resolve_device(device)
    group = EnsembleGroup(lambda: build(arch, ds), list(range(k)), 0, dev,
                          eval_precision="bf16" if precision == "bf16" else "fp32",
                          memory_format=resolve_format(memory_format, dev))
    x, y = torch.from_numpy(ds.x_pool).to(dev), torch.from_numpy(ds.y_pool).to(dev)
    best = float("inf")
    for _ in range(2):
        sync(dev)
        t0 = clock()
        group.evaluate(x, y, ["identity"], 4096)
        sync(dev)
        best = min(best, clock() - t0)
    return k * ds.n_pool / best


#: The paper-scale run of examples/paper/cifar10_wrn28_2.yaml.
PAPER = {"models": 64, "epochs": 100, "train_per_model": 25_000, "pool": 50_000, "test": 10_000, "queries": 2,
         "checkpoints": 37}


def projection(train_flops: float, eval_flops: float, rate: float) -> tuple[float, float]:
    """Hours of training and of evaluation of the paper run at ``rate`` FLOP/s."""
    p = PAPER
    train = train_flops * p["train_per_model"] * p["epochs"] * p["models"]
    evaluate = eval_flops * (p["pool"] + p["test"]) * p["queries"] * p["checkpoints"] * p["models"]
    return train / rate / 3600, evaluate / rate / 3600


def measure(arch: str, ds: Dataset, k: int, rounds: int, batch_size: int, device: str,
            clock=time.perf_counter, memory_format: str = "auto", precision: str = "fp32") -> tuple[float, float]:
    """Best-round model-samples per second of a group of k models and of a group of one
    (``precision`` is ``training.precision``)."""
    cfg = config_from_dict({
        "dataset": {"name": "synthetic"}, "model": MODELS[arch],  # the data is passed to make_trainer itself
        "training": {"n_models": max(2, k + k % 2), "epochs": rounds + 1, "batch_size": batch_size,
                     "group_size": k, "device": device, "memory_format": memory_format, "precision": precision,
                     "optimizer": {"name": "sgd", "lr": 0.01}},
    })
    dev = resolve_device(device)
    z = balanced_membership(cfg.training.n_models, ds.n_pool, 0)
    trainers = {size: make_trainer(cfg, ds, z, GroupTask(0, tuple(range(size))), dev) for size in (k, 1)}
    n_in = ds.n_pool // 2
    for tr in trainers.values():  # warm-up epoch: allocator, kernels, caches
        tr.train_epoch(1, 0)
    best = {size: float("inf") for size in trainers}
    for r in range(rounds):
        for size, tr in trainers.items():
            sync(dev)
            t0 = clock()
            tr.train_epoch(r + 2, 0)
            sync(dev)
            best[size] = min(best[size], clock() - t0)
    return k * n_in / best[k], n_in / best[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="mlp", help=f"comma-separated, from {', '.join(MODELS)} "
                    "(default: the quickstart's MLP)")
    ap.add_argument("--dataset", default="mnist1d", help="a registered dataset or cifar-like-random")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--group-size", type=int, default=16, help="K of the batched side")
    ap.add_argument("--n-pool", type=int, default=8000, help="pool size (each model trains on half)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=2, help="timed epochs per side (best one counts)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--eval", action="store_true", help="also time the per-checkpoint evaluation")
    ap.add_argument("--flops", action="store_true", help="also count FLOPs per sample, the achieved FLOP "
                    "rate and, for wrn, the paper run's projected time")
    ap.add_argument("--clock", choices=["wall", "process"], default="wall",
                    help="time wall seconds or this process's CPU seconds")
    ap.add_argument("--precision", default="fp32", help="training.precision (fp32, tf32, bf16), or several "
                    "comma-separated, each measured in turn; bf16 also evaluates under bf16")
    ap.add_argument("--memory-format", default="auto", help="training.memory_format, or several comma-separated "
                    "(auto,contiguous,channels_last), each measured in turn")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ds = dataset(args.dataset, args.n_pool)
    dev = resolve_device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"dataset {ds.name} {ds.input_shape}, pool {ds.n_pool} (each model trains on {ds.n_pool // 2}), "
          f"batch {args.batch_size}, device {name}, {args.clock} clock, torch {torch.__version__}")
    clock = time.process_time if args.clock == "process" else time.perf_counter
    speedups = []
    runs = [(a, f, p) for a in args.arch.split(",") for f in args.memory_format.split(",")
            for p in args.precision.split(",")]
    for arch, fmt, prec in runs:
        batched, single = measure(arch, ds, args.group_size, args.rounds, args.batch_size, args.device, clock, fmt,
                                  prec)
        speedups.append(batched / single)
        print(f"{arch:9s} memory_format {fmt}, precision {prec}, group of {args.group_size}: {batched:10.0f} "
              f"model-samples/s   one at a time: {single:10.0f} model-samples/s   ratio {batched / single:5.2f}")
        if args.eval or args.flops:
            evaluation = measure_eval(arch, ds, args.group_size, args.device, clock, fmt, prec)
            print(f"{'':9s} evaluation, group of {args.group_size}: {evaluation:10.0f} model-samples/s "
                  f"({evaluation / batched:.1f}x the training rate)")
        if args.flops:
            tf, ef = step_flops(arch, ds, min(args.batch_size, ds.n_pool))
            rate = batched * tf
            print(f"{'':9s} {tf / 1e6:.1f} MFLOP per training sample, {ef / 1e6:.1f} per evaluated sample: "
                  f"{rate / 1e9:.1f} GFLOP/s achieved while training")
            if arch == "wrn":
                t, e = projection(tf, ef, rate)
                print(f"{'':9s} the paper run (64 WRN-28-2, CIFAR-10, 100 epochs) at this rate: {t:.0f} h training "
                      f"+ {e:.0f} h evaluation")
                for name, peak in (("one H200 at 30% of its 989 TFLOP/s bf16 peak (assumed, not measured)", 0.3e15),):
                    t, e = projection(tf, ef, peak)
                    print(f"{'':9s} on {name}: {60 * t:.0f} min training + {60 * e:.0f} min evaluation; on 8: "
                          f"{60 * (t + e) / 8:.0f} min")
    print(f"speedup: {min(speedups):.2f}")


if __name__ == "__main__":
    main()
