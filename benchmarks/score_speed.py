"""Scoring speed: privdyn's vectorised attacks against a loop per target model and per sample.

Synthetic signals (M models, N pool samples, T checkpoints, Q queries, a test split for RMIA)
are generated one checkpoint at a time; only the attack calls are timed, in CPU seconds of this
process (time.process_time), so that other jobs on a shared machine do not inflate them.

1. Vectorised: every registered attack (or --attacks) at all T checkpoints.
2. Loop baseline, in the style of the LiRA reference code: for each target model and each
   sample, gather its IN/OUT references, fit the Gaussians and score (LiRA online and offline);
   Attack-R likewise. Running it on all M x N x T cells would take hours, so it is timed on a
   random subset of (checkpoint, target, sample) cells and extrapolated linearly (its cost is
   the same for every cell); the output says so.
3. Against the memory-bandwidth bound: the bytes of float32 signals each attack reads per
   checkpoint over the measured copy bandwidth, and how far the measured time is from it.
4. Scaling: the vectorised attacks at M = 16, 32, 64, 128 (seconds per checkpoint, the fastest
   of a few checkpoints), to show linear growth in M.
5. The LiRA family against today's code, in the same run (issue 16): the four variants of the
   baseline commit (``--lira-baseline``, imported from git into temporary modules) and of this
   tree, one at a time and in one fused pass (``attacks.base.run_fused``), on the same float32
   signals, each timing the fastest of ``--repeat`` runs per checkpoint, interleaved; the scores
   are checked to agree; the fused pass against the bandwidth bound of reading phi once; and
   (``--blocks``) the fused pass at several block sizes.

    python benchmarks/score_speed.py                   # M=64, N=20,000, T=10; scaling at N=20,000
    python benchmarks/score_speed.py --n 2000 --t 2    # a quick check
    python benchmarks/score_speed.py --lira-only       # section 5 only
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
from scipy.stats import norm

SIGNALS = ("phi", "loss", "top1", "top2", "top3", "entropy", "mentropy")


def checkpoint(m: int, n: int, n_test: int, q: int, t: int, seed: int = 0):
    """One checkpoint of synthetic signals: members have higher phi and lower loss."""
    from privdyn.attacks import CheckpointData
    from privdyn.training.membership import balanced_membership

    rng = np.random.default_rng([seed, t])
    z = balanced_membership(m, n, seed)
    gap = 0.5 + 0.2 * t
    phi = rng.normal(size=(m, n, q)) + gap * z[..., None] + rng.normal(size=(1, n, 1)) * 3
    loss = np.log1p(np.exp(-phi))  # binary-style loss from phi
    probs = np.sort(rng.dirichlet(np.ones(10), size=(m, n)), axis=-1)[..., ::-1]
    pool = {"phi": phi, "loss": loss, "entropy": rng.gamma(1.0, 1.0, (m, n, q)),
            "mentropy": rng.gamma(1.0, 1.0, (m, n, q)),
            **{f"top{k + 1}": np.repeat(probs[..., k:k + 1], q, axis=-1) for k in range(3)}}
    test_phi = rng.normal(size=(m, n_test, q)) + rng.normal(size=(1, n_test, 1)) * 3
    return CheckpointData({k: v.astype(np.float32) for k, v in pool.items()},
                          {"loss": np.log1p(np.exp(-test_phi)).astype(np.float32)}, z)


clock = time.process_time


def time_vectorised(attacks: list[str], m: int, n: int, n_test: int, q: int, t: int,
                    rule: str = "pair") -> dict[str, list[float]]:
    """CPU seconds of every attack at each of t checkpoints, under reference rule ``rule``."""
    from privdyn.attacks import ATTACKS, CheckpointData
    from privdyn.attacks.references import reference_plan

    times: dict[str, list[float]] = {a: [] for a in attacks}
    for k in range(t):
        base = checkpoint(m, n, n_test, q, k)
        data = CheckpointData(base.pool, base.test, base.membership, reference_plan(base.membership, rule))
        for a in attacks:
            t0 = clock()
            ATTACKS[a].run(data)
            times[a].append(clock() - t0)
    return times


def copy_bandwidth(mb: int = 256, repeat: int = 5) -> float:
    """Bytes per second this machine copies (read + write counted once, as a read-only bound):
    the fastest of a few ``np.copyto`` of ``mb`` MB of float32."""
    src = np.ones(mb * 2**20 // 4, dtype=np.float32)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return src.nbytes / best


# ----- the loop baseline (one target, one sample at a time) -----------------------------------
def loop_cell(kind: str, phi: np.ndarray, loss: np.ndarray, z: np.ndarray, m: int, i: int) -> float:
    """Score one (target, sample) cell the straightforward way."""
    refs = [r for r in range(z.shape[0]) if r != m]
    ins = [r for r in refs if z[r, i]]
    outs = [r for r in refs if not z[r, i]]
    if kind == "attack_r":
        own = loss[m, i].mean()
        return float(np.mean([loss[r, i].mean() >= own for r in outs]))
    x = phi[m, i]
    out_v = phi[outs, i]
    mu_out, s_out = out_v.mean(axis=0), np.maximum(out_v.std(axis=0), 1e-6)
    if kind == "lira_offline_cdf":
        return float(norm.logcdf((x - mu_out) / s_out).sum())
    in_v = phi[ins, i]
    mu_in, s_in = in_v.mean(axis=0), np.maximum(in_v.std(axis=0), 1e-6)
    return float((norm.logpdf(x, mu_in, s_in) - norm.logpdf(x, mu_out, s_out)).sum())


def time_loop(kind: str, m: int, n: int, n_test: int, q: int, t: int, cells: int, seed: int = 1) -> tuple[float, int]:
    """Seconds for ``cells`` random cells spread over the checkpoints; returns (seconds, cells)."""
    rng = np.random.default_rng(seed)
    per_t = max(1, cells // t)
    spent = 0.0
    for k in range(t):
        data = checkpoint(m, n, n_test, q, k)
        phi = np.asarray(data.pool["phi"], dtype=np.float64)
        loss = np.asarray(data.pool["loss"], dtype=np.float64)
        targets, samples = rng.integers(0, m, per_t), rng.integers(0, n, per_t)
        t0 = clock()
        for mm, ii in zip(targets, samples):
            loop_cell(kind, phi, loss, data.membership, int(mm), int(ii))
        spent += clock() - t0
    return spent, per_t * t


# ----- the LiRA family against today's code (issue 16) -------------------------------------------
#: The last commit before the fused LiRA kernel: "today's code" for the ratios of issue 16.
LIRA_BASELINE = "69d8a7c"
ROOT = Path(__file__).resolve().parents[1]
LIRA = ("lira_online", "lira_online_fixed", "lira_offline_cdf", "lira_offline_pdf")
COMBOS = (("online + offline_cdf", ("lira_online", "lira_offline_cdf")),
          ("default config (online, online_fixed, offline_cdf)",
           ("lira_online", "lira_online_fixed", "lira_offline_cdf")),
          ("all four", LIRA))


def baseline_lira(commit: str) -> dict:
    """The four LiRA attacks of ``commit``: its lira.py and the references.py it imports, read with
    ``git show`` into temporary modules (their registration cut off), wrapped as unregistered
    :class:`Attack` entries with the commit's ``per_sample`` flags, so ``Attack.run`` blocks them
    as it did."""
    from privdyn.attacks import ATTACKS, Attack

    def show(path: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:{path}"], capture_output=True,
                              text=True, check=True).stdout

    modules = {}
    for name, path, swap in (("_baseline_references", "src/privdyn/attacks/references.py", None),
                             ("_baseline_lira", "src/privdyn/attacks/lira.py", "_baseline_references")):
        src = show(path)
        if swap:
            src = src.replace("from privdyn.attacks.references import", f"from {swap} import")
            src = src[:src.index("_PAPER = ")]  # no registration
        mod = types.ModuleType(name)
        sys.modules[name] = mod  # dataclasses and pydantic look their module up
        exec(compile(src, f"{commit}:{path}", "exec"), mod.__dict__)
        modules[name] = mod
    old = modules["_baseline_lira"]
    return {a: Attack(a, getattr(old, a), ATTACKS[a].options, ("phi",), per_sample=ATTACKS[a].per_sample)
            for a in LIRA}


def time_lira(m: int, n: int, q: int, t: int, repeat: int, commit: str) -> dict:
    """CPU seconds over t checkpoints: each item the fastest of ``repeat`` runs per checkpoint,
    the items interleaved so that a busy spell of the machine hits all of them alike."""
    from privdyn.attacks import ATTACKS
    from privdyn.attacks.base import run_fused

    old = baseline_lira(commit)
    items: dict[str, object] = {}
    for a in LIRA:
        items[f"old {a}"] = (lambda d, a=a: old[a].run(d))
        items[f"new {a}"] = (lambda d, a=a: ATTACKS[a].run(d))
    for label, names in COMBOS:
        items[f"fused {label}"] = (lambda d, names=names: run_fused([ATTACKS[a] for a in names], d))
    took = {k: 0.0 for k in items}
    worst = {a: 0.0 for a in LIRA}
    for k in range(t):
        data = checkpoint(m, n, 0, q, k)
        best = {key: float("inf") for key in items}
        for _ in range(repeat):
            for key, fn in items.items():
                t0 = clock()
                fn(data)
                best[key] = min(best[key], clock() - t0)
        for key in items:
            took[key] += best[key]
        fused = run_fused([ATTACKS[a] for a in LIRA], data)
        for a in LIRA:
            want = old[a].run(data)
            worst[a] = max(worst[a], float(np.max(np.abs(fused[a] - want) / np.maximum(np.abs(want), 1.0))))
    return {"took": took, "worst": worst}


def time_log_ndtr(m: int, n: int, q: int, t: int, repeat: int) -> float:
    """CPU seconds of ``scipy.special.log_ndtr`` alone on M*N*Q values per checkpoint (the offline
    CDF's own cost, which no pass over the references can avoid), in the kernel's block size."""
    from scipy.special import log_ndtr

    from privdyn.attacks import lira

    x = np.random.default_rng(0).normal(size=(m, n, q))
    step = max(1, lira.LIRA_BLOCK // (m * q))
    best = float("inf")
    for _ in range(repeat):
        t0 = clock()
        for i in range(0, n, step):
            log_ndtr(x[:, i:i + step])
        best = min(best, clock() - t0)
    return best * t


def time_blocks(m: int, n: int, q: int, t: int, repeat: int, sizes: list[int]) -> dict[int, float]:
    """CPU seconds of the fused pass of all four variants over t checkpoints at each block size."""
    from privdyn.attacks import ATTACKS, lira
    from privdyn.attacks.base import run_fused

    saved = lira.LIRA_BLOCK
    took = {b: 0.0 for b in sizes}
    try:
        for k in range(t):
            data = checkpoint(m, n, 0, q, k)
            best = {b: float("inf") for b in sizes}
            for _ in range(repeat):
                for b in sizes:
                    lira.LIRA_BLOCK = b
                    t0 = clock()
                    run_fused([ATTACKS[a] for a in LIRA], data)
                    best[b] = min(best[b], clock() - t0)
            for b in sizes:
                took[b] += best[b]
    finally:
        lira.LIRA_BLOCK = saved
    return took


def lira_report(args: argparse.Namespace, bandwidth: float) -> None:
    """Print section 5: the LiRA family against the baseline commit, as ratios."""
    from privdyn.attacks import lira

    M, N, T, Q = args.m, args.n, args.t, args.q
    res = time_lira(M, N, Q, T, args.repeat, args.lira_baseline)
    took, worst = res["took"], res["worst"]
    print(f"\n## LiRA: this tree against today's code ({args.lira_baseline}), same signals, same run "
          f"(CPU seconds, all T={T} checkpoints, fastest of {args.repeat} per checkpoint; block "
          f"{lira.LIRA_BLOCK:,} elements)\n")
    print("| variant | today | now, alone | speed-up | largest difference of the scores, relative to max(abs(s), 1) |")
    print("|---|---:|---:|---:|---:|")
    for a in LIRA:
        o, nw = took[f"old {a}"], took[f"new {a}"]
        print(f"| {a} | {o:.3f} | {nw:.3f} | {o / nw:.2f}x | {worst[a]:.1e} |")
    read = 4 * M * N * Q * T  # phi as stored (float32), read once per checkpoint by the fused pass
    bound = read / bandwidth
    print(f"\nFused: one pass over phi for the variants named (bound: {read / 1e6:,.0f} MB of float32 phi "
          f"over {bandwidth / 1e9:.1f} GB/s = {bound:.4f} s)\n")
    print("| attacks | today, one at a time | now, one at a time | now, fused | **speed-up, fused** "
          "| fused / bandwidth bound |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, names in COMBOS:
        o = sum(took[f"old {a}"] for a in names)
        alone = sum(took[f"new {a}"] for a in names)
        f = took[f"fused {label}"]
        print(f"| {label} | {o:.3f} | {alone:.3f} | {f:.3f} | **{o / f:.2f}x** | {f / bound:,.0f}x |")
    floor = time_log_ndtr(M, N, Q, T, args.repeat)
    f = took[f"fused {COMBOS[0][0]}"]
    print(f"\nOf the fused online + offline_cdf pass, scipy.special.log_ndtr alone on the same {M * N * Q * T:,} "
          f"values takes {floor:.3f} s ({floor / f:.0%}); the rest, the moments and both variants' arithmetic, "
          f"{f - floor:.3f} s.")
    if args.blocks:
        sizes = [int(b) for b in args.blocks.split(",")]
        blk = time_blocks(M, N, Q, T, args.repeat, sizes)
        print("\n### the fused pass of all four at other block sizes (elements = models x samples x queries)\n")
        print("| block | seconds | relative to the fastest |")
        print("|---:|---:|---:|")
        fastest = min(blk.values())
        for b in sizes:
            print(f"| {b:,} | {blk[b]:.3f} | {blk[b] / fastest:.2f} |")


def main() -> None:
    import torch

    from privdyn.attacks import ATTACKS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--m", type=int, default=64)
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--t", type=int, default=10)
    p.add_argument("--q", type=int, default=1)
    p.add_argument("--n-test", type=int, default=5_000)
    p.add_argument("--cells", type=int, default=2_000, help="loop-baseline cells timed (extrapolated)")
    p.add_argument("--attacks", default=",".join(ATTACKS))
    p.add_argument("--scaling", default="16,32,64,128", help="M values for the scaling table ('' to skip)")
    p.add_argument("--scaling-t", type=int, default=3, help="checkpoints per M in the scaling table")
    p.add_argument("--lira-only", action="store_true", help="only the LiRA section (5)")
    p.add_argument("--lira-baseline", default=LIRA_BASELINE, help="commit whose LiRA is 'today's code'")
    p.add_argument("--repeat", type=int, default=3, help="LiRA section: runs per checkpoint (fastest kept)")
    p.add_argument("--blocks", default="", help="LiRA section: block sizes to compare, e.g. 8192,32768,131072")
    args = p.parse_args()
    torch.set_num_threads(1)
    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    M, N, T, Q = args.m, args.n, args.t, args.q

    print(f"# scoring speed: M={M}, N={N:,}, T={T}, Q={Q}, N_test={args.n_test:,}; "
          f"{platform.processor() or platform.machine()}, numpy {np.__version__}, 1 torch thread")
    if args.lira_only:
        bandwidth = copy_bandwidth()
        print(f"measured copy bandwidth {bandwidth / 1e9:.1f} GB/s")
        lira_report(args, bandwidth)
        return
    vec = {a: sum(v) for a, v in time_vectorised(attacks, M, N, args.n_test, Q, T).items()}
    print("\n## vectorised (all T checkpoints; CPU seconds)\n")
    print("| attack | seconds | per checkpoint |")
    print("|---|---:|---:|")
    for a in attacks:
        print(f"| {a} | {vec[a]:.2f} | {vec[a] / T:.3f} |")
    print(f"| **all {len(attacks)} attacks** | **{sum(vec.values()):.2f}** | {sum(vec.values()) / T:.3f} |")

    bandwidth = copy_bandwidth()
    print(f"\n## against the memory-bandwidth bound (measured copy bandwidth {bandwidth / 1e9:.1f} GB/s; "
          "bytes = the float32 signals an attack reads per checkpoint, as stored)\n")
    print("| attack | MB read per checkpoint | bound (s) | measured (s) | measured / bound |")
    print("|---|---:|---:|---:|---:|")
    for a in attacks:
        spec = ATTACKS[a]
        read = 4 * Q * (M * N * len(spec.needs) + M * args.n_test * len(spec.needs_test))
        bound, took = read / bandwidth, vec[a] / T
        print(f"| {a} | {read / 1e6:.0f} | {bound:.4f} | {took:.3f} | {took / bound:,.0f}x |")

    one = {a: sum(v) for a, v in time_vectorised(attacks, M, N, args.n_test, Q, T, rule="one").items()}
    print("\n## reference rules in the same run: default `pair` (leave-pair-out) against `one` "
          "(leave-one-out; CPU seconds, all T checkpoints)\n")
    print("| attack | one | pair | pair / one |")
    print("|---|---:|---:|---:|")
    for a in attacks:
        print(f"| {a} | {one[a]:.2f} | {vec[a]:.2f} | {vec[a] / max(one[a], 1e-9):.2f} |")

    cells_total = M * N * T
    print(f"\n## loop baseline: one target and one sample at a time; timed on random cells and "
          f"extrapolated linearly to all M*N*T = {cells_total:,} cells\n")
    print("| attack | cells timed | seconds timed | extrapolated seconds | vectorised seconds | speed-up |")
    print("|---|---:|---:|---:|---:|---:|")
    for kind in ("lira_online", "lira_offline_cdf", "attack_r"):
        if kind not in vec:
            continue
        spent, cells = time_loop(kind, M, N, args.n_test, Q, T, args.cells)
        full = spent / cells * cells_total
        print(f"| {kind} | {cells:,} | {spent:.2f} | {full:,.0f} | {vec[kind]:.2f} | **{full / vec[kind]:,.0f}x** |")

    if args.scaling:
        ms = [int(x) for x in args.scaling.split(",")]
        print(f"\n## growth in M (N={N:,}, Q={Q}; CPU seconds per checkpoint, fastest of {args.scaling_t}; "
              f"the last columns divide the time ratio by the M ratio: 1.0 = linear)\n")
        print("| attack | " + " | ".join(f"M={m}" for m in ms) + " | "
              + " | ".join(f"{m}/{ms[0]} vs linear" for m in ms[1:]) + " |")
        print("|---|" + "---:|" * (2 * len(ms) - 1))
        rows = {m: time_vectorised(attacks, m, N, args.n_test, Q, args.scaling_t) for m in ms}
        for a in [*attacks, "all"]:
            v = [sum(min(x) for x in rows[m].values()) if a == "all" else min(rows[m][a]) for m in ms]
            rel = [(x / v[0]) / (m / ms[0]) for x, m in zip(v[1:], ms[1:])]
            print(f"| {a} | " + " | ".join(f"{x:.3f}" for x in v) + " | " + " | ".join(f"{r:.2f}" for r in rel) + " |")

    if any(a in attacks for a in LIRA):
        lira_report(args, bandwidth)


if __name__ == "__main__":
    main()
