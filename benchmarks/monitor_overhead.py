"""The training-time monitor's overhead: a small model trained with and without the monitor
recording its per-sample training losses, in the same run.

Epochs alternate between the two (with, without, with, ...) in one process and one training run,
so that machine load and the model's state affect both alike; the A/B overhead is the ratio of
the median epoch times. Both loops compute the same per-sample losses (``reduction="none"``) and
their mean; the monitored one also calls ``monitor(idx, losses)`` for every batch and
``monitor.end_epoch()`` once per epoch. On a shared machine the A/B ratio is noisy, so the script
also times the monitor's own calls inside the monitored epochs: their share of those epochs' time
is the direct overhead. Goal (issue 17): under 5% of training time.

    python benchmarks/monitor_overhead.py                       # the quickstart's shape
    python benchmarks/monitor_overhead.py --n 50000 --disk      # a CIFAR-sized pool, streamed to disk
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

from privdyn.training.monitor import Monitor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4000, help="training samples (the quickstart's: 4000 per model)")
    ap.add_argument("--dim", type=int, default=40, help="input features (MNIST-1D: 40)")
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=20, help="epochs per mode (they alternate)")
    ap.add_argument("--disk", action="store_true", help="stream the traces to a temporary folder")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default; 1 is steadier "
                    "on a shared machine)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.n, args.dim, generator=g)
    y = torch.randint(0, args.classes, (args.n,), generator=g)
    layers: list[torch.nn.Module] = []
    d = args.dim
    for _ in range(args.depth):
        layers += [torch.nn.Linear(d, args.width), torch.nn.ReLU()]
        d = args.width
    model = torch.nn.Sequential(*layers, torch.nn.Linear(d, args.classes))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    tmp = tempfile.TemporaryDirectory() if args.disk else None
    monitor = Monitor(args.n, path=tmp.name if tmp else None)

    inside = [0.0]  # seconds spent in the monitor's calls

    def epoch(with_monitor: bool) -> float:
        perm = torch.randperm(args.n, generator=g)
        t0 = time.perf_counter()
        for start in range(0, args.n, args.batch):
            idx = perm[start:start + args.batch]
            losses = F.cross_entropy(model(x[idx]), y[idx], reduction="none")
            losses.mean().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if with_monitor:
                m0 = time.perf_counter()
                monitor(idx, losses)
                inside[0] += time.perf_counter() - m0
        if with_monitor:
            m0 = time.perf_counter()
            monitor.end_epoch()
            inside[0] += time.perf_counter() - m0
        return time.perf_counter() - t0

    epoch(False)  # warm-up
    times: dict[bool, list[float]] = {True: [], False: []}
    for e in range(2 * args.epochs):
        on = e % 2 == 0
        times[on].append(epoch(on))
    with_m, without = statistics.median(times[True]), statistics.median(times[False])
    rank_t0 = time.perf_counter()
    monitor.scores("lt_iqr")
    rank_s = time.perf_counter() - rank_t0
    print(f"N={args.n} MLP {args.dim}-{args.width}x{args.depth}-{args.classes} batch {args.batch}, "
          f"{args.epochs} epochs per mode, {'disk' if args.disk else 'memory'}, torch threads "
          f"{torch.get_num_threads()}")
    print(f"median epoch: without monitor {1000 * without:.1f} ms, with monitor {1000 * with_m:.1f} ms")
    print(f"overhead ratio (with / without): {with_m / without:.3f} ({100 * (with_m / without - 1):+.1f}%)")
    share = inside[0] / sum(times[True])
    print(f"direct overhead: the monitor's calls take {100 * share:.2f}% of the monitored epochs' time "
          f"({1e6 * inside[0] / (args.epochs * -(-args.n // args.batch)):.1f} us per batch, end_epoch included)")
    print(f"ranking all {args.n} samples by lt_iqr after {len(monitor.epochs)} epochs: {1000 * rank_s:.1f} ms")
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
