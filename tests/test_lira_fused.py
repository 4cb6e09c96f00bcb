"""The fused LiRA pass: one read of phi for all four variants, equal to each single attack, to a
plain loop over targets and samples, on float32 signals as on float64, in any blocking, and
used by the score stage with one score file and one provenance digest per attack."""

import contextlib
import math
import statistics

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import log_ndtr

from privdyn import pipeline
from privdyn.attacks import ATTACKS, CheckpointData, base, lira
from privdyn.attacks.base import run_fused
from privdyn.attacks.lira import LIRA_ATTACKS, LiraOptions, lira_scores
from privdyn.attacks.references import RULES, reference_plan
from privdyn.attacks.rmia import RmiaOptions
from privdyn.config import config_from_dict
from privdyn.errors import PrivdynError
from privdyn.pipeline import scoring
from privdyn.store import atomic, provenance
from privdyn.store.arrays import open_array, save_array
from privdyn.store.rundir import RunDir
from privdyn.training.membership import balanced_membership

FLOORS = (1e-6, 1e-3, 0.5)


# ----- signals ------------------------------------------------------------------------------------
def membership(design: str, M: int, N: int, seed: int) -> np.ndarray:
    """``pairs``: complementary pairs (model 2j+1 trains on what 2j does not; any N); ``mixed``:
    random, with two IN and two OUT models for every sample."""
    rng = np.random.default_rng(seed)
    z = rng.random((M, N)) < 0.5
    if design == "pairs":
        z[1::2] = ~z[0::2]
        return z
    z[:2], z[2:4] = True, False
    return z


def signals(z: np.ndarray, Q: int, seed: int, kind: str) -> np.ndarray:
    """The signal phi ``[M, N, Q]``: members shifted up, per-sample offsets; ``ties`` rounds to a coarse grid,
    ``constant`` is one value everywhere, ``flat_sample`` gives sample 0 no spread except model 0."""
    M, N = z.shape
    rng = np.random.default_rng(seed)
    phi = rng.normal(size=(M, N, Q)) * 2 + 3 * z[..., None] + rng.normal(size=(1, N, 1)) * 5
    if kind == "ties":
        phi = np.round(phi)
    elif kind == "constant":
        phi = np.full((M, N, Q), 2.5)
    elif kind == "flat_sample":
        phi[:, 0] = 1.0
        phi[0, 0] = 1.5
    return phi


def checkpoint(phi: np.ndarray, z: np.ndarray, rule: str) -> CheckpointData:
    return CheckpointData({"phi": phi}, {}, z, reference_plan(z, rule))


cases = st.fixed_dictionaries({
    "design": st.sampled_from(["pairs", "mixed"]),
    "M": st.sampled_from([4, 6, 8, 10]),
    "N": st.integers(1, 20),
    "Q": st.integers(1, 3),
    "seed": st.integers(0, 2**16),
    "rule": st.sampled_from(RULES),
    "kind": st.sampled_from(["normal", "ties", "constant", "flat_sample"]),
})
options = st.fixed_dictionaries({v: st.builds(LiraOptions, std_floor=st.sampled_from(FLOORS),
                                              center=st.sampled_from(["mean", "median"]))
                                 for v in LIRA_ATTACKS})


def make(case: dict) -> tuple[CheckpointData, np.ndarray]:
    z = membership(case["design"], case["M"], case["N"], case["seed"])
    phi = signals(z, case["Q"], case["seed"], case["kind"])
    return checkpoint(phi, z, case["rule"]), z


# ----- a deliberately plain implementation ----------------------------------------------------------
def reference_lists(data: CheckpointData) -> list[list[list[int]]]:
    """refs[m][i]: the reference models of target m on sample i, stated from DESIGN.md for ``pair``
    and ``one`` and read off the plan for ``balanced`` (its drop order is tested elsewhere)."""
    z, plan = data.membership, data.refs
    M, N = z.shape
    out = []
    for m in range(M):
        row = []
        for i in range(N):
            if plan.rule == "pair":
                row.append([r for r in range(M) if r not in (m, m ^ 1)])
            elif plan.rule == "one":
                row.append([r for r in range(M) if r != m])
            else:
                row.append([r for r in range(M) if r not in set(plan.excluded[:, m, i].tolist())])
        out.append(row)
    return out


def log_normal(x: float, mu: float, s: float) -> float:
    return -0.5 * math.log(2 * math.pi) - math.log(s) - 0.5 * ((x - mu) / s) ** 2


def loop_scores(data: CheckpointData, variant: str, opts: LiraOptions) -> np.ndarray:
    """One target, sample and query at a time, from the explicit reference lists."""
    phi = np.asarray(data.pool["phi"], dtype=np.float64)
    z = data.membership
    M, N, Q = phi.shape
    refs = reference_lists(data)
    centre = statistics.fmean if opts.center == "mean" else statistics.median

    def side(m: int, i: int, q: int, member: bool) -> list[float]:
        return [float(phi[r, i, q]) for r in refs[m][i] if z[r, i] == member]

    out = np.zeros((M, N))
    for m in range(M):
        pooled = {member: [statistics.fmean(statistics.pvariance(side(m, i, q, member)) for i in range(N))
                           for q in range(Q)] for member in (True, False)}
        for i in range(N):
            total = 0.0
            for q in range(Q):
                x, ins, outs = float(phi[m, i, q]), side(m, i, q, True), side(m, i, q, False)
                if variant == "lira_online_fixed":
                    s_in, s_out = math.sqrt(pooled[True][q]), math.sqrt(pooled[False][q])
                else:
                    s_in = math.sqrt(statistics.pvariance(ins)) if ins else 0.0
                    s_out = math.sqrt(statistics.pvariance(outs))
                s_in, s_out = max(s_in, opts.std_floor), max(s_out, opts.std_floor)
                mu_out = centre(outs)
                if variant == "lira_offline_cdf":
                    total += float(log_ndtr((x - mu_out) / s_out))
                elif variant == "lira_offline_pdf":
                    total -= log_normal(x, mu_out, s_out)
                else:
                    total += log_normal(x, centre(ins), s_in) - log_normal(x, mu_out, s_out)
            out[m, i] = total
    return out


# ----- the fused pass is each single attack -----------------------------------------------------------
@contextlib.contextmanager
def blocks(inner: int, outer: int, data: CheckpointData):
    """Blocks of ``inner`` samples in the LiRA kernel and of ``outer`` samples in Attack.run."""
    M, _, Q = data.pool["phi"].shape
    saved = lira.LIRA_BLOCK, base.SAMPLE_BLOCK
    lira.LIRA_BLOCK, base.SAMPLE_BLOCK = M * Q * inner, M * Q * outer
    try:
        yield
    finally:
        lira.LIRA_BLOCK, base.SAMPLE_BLOCK = saved


@settings(max_examples=60, deadline=None)
@given(cases, options, st.lists(st.sampled_from(LIRA_ATTACKS), min_size=1, max_size=4, unique=True),
       st.integers(1, 6), st.integers(1, 6))
def test_fused_pass_equals_every_single_attack_exactly(case, opts, chosen, inner, outer):
    data, _ = make(case)
    with blocks(inner, outer, data):
        fused = run_fused([ATTACKS[v] for v in chosen], data, opts)
        single = {v: ATTACKS[v].run(data, opts[v]) for v in chosen}
    assert list(fused) == chosen
    for v in chosen:
        np.testing.assert_array_equal(fused[v], single[v], err_msg=v)
        assert np.isfinite(fused[v]).all()


@settings(max_examples=25, deadline=None)
@given(cases, options)
def test_every_variant_matches_the_plain_loop(case, opts):
    case = {**case, "M": min(case["M"], 8), "N": min(case["N"], 10)}
    data, _ = make(case)
    fused = lira_scores(data, opts)
    for v in LIRA_ATTACKS:
        np.testing.assert_allclose(fused[v], loop_scores(data, v, opts[v]), rtol=1e-9, atol=1e-9, err_msg=v)


def test_constant_phi_gives_the_documented_scores():
    z = balanced_membership(8, 6, 0)
    data = checkpoint(np.full((8, 6, 2), -3.25), z, "pair")
    s = run_fused([ATTACKS[v] for v in LIRA_ATTACKS], data)
    o = LiraOptions()
    np.testing.assert_array_equal(s["lira_online"], 0.0)  # identical Gaussians
    np.testing.assert_array_equal(s["lira_online_fixed"], 0.0)
    np.testing.assert_allclose(s["lira_offline_cdf"], 2 * math.log(0.5), rtol=1e-15)  # phi at the mean
    np.testing.assert_allclose(s["lira_offline_pdf"], 2 * (0.5 * math.log(2 * math.pi) + math.log(o.std_floor)),
                               rtol=1e-15)


# ----- float32 signals, float64 arithmetic ------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(cases, options)
def test_float32_signals_give_the_float64_result_of_the_same_values(case, opts):
    """Widening a float32 block is exact, and every operation after it is float64: the scores of
    float32 phi are those of the same values held in float64, bit for bit."""
    data, z = make(case)
    phi32 = np.asarray(data.pool["phi"]).astype(np.float32)
    got = lira_scores(checkpoint(phi32, z, case["rule"]), opts)
    want = lira_scores(checkpoint(phi32.astype(np.float64), z, case["rule"]), opts)
    for v in LIRA_ATTACKS:
        np.testing.assert_array_equal(got[v], want[v], err_msg=v)


def test_float32_signals_match_the_float64_loop():
    z = balanced_membership(8, 12, 3)
    phi = signals(z, 2, 3, "normal").astype(np.float32)
    data = checkpoint(phi, z, "pair")
    for v in LIRA_ATTACKS:
        np.testing.assert_allclose(ATTACKS[v].run(data), loop_scores(data, v, LiraOptions()), rtol=1e-9, atol=1e-9)


def test_float32_arithmetic_would_miss_the_tolerance():
    """Why everything after the widening stays float64: the leave-pair-out variances of the pair
    rule, computed by the same centred identity in float32, are off by far more than the rtol of
    1e-9 the tests hold the scores to (signals 5 spreads from zero, as trained models' phi often
    are); in float64 (``side_moments``) they are exact to rounding."""
    from privdyn.attacks.references import side_moments

    rng = np.random.default_rng(0)
    M, N = 64, 2000
    z = balanced_membership(M, N, 0)
    phi = (rng.normal(size=(M, N, 1)) + 5.0).astype(np.float32)
    keep = np.arange(M) > 1  # target 0's references: every model but 0 and its partner 1
    exact = np.array([np.var(phi[z[:, i] & keep, i, 0].astype(np.float64)) for i in range(N)])

    y = np.where(z[0::2], phi[0::2, :, 0], phi[1::2, :, 0])  # [P, N] float32: the IN model of each pair
    P, k = M // 2, M // 2 - 1
    d = y - y.sum(axis=0, dtype=np.float32) / np.float32(P)
    var32 = (d * d).sum(axis=0, dtype=np.float32) / np.float32(k) - d[0] ** 2 * np.float32(P / k**2)
    assert np.max(np.abs(var32 / exact - 1)) > 100 * 1e-9  # about 4e-7 here

    var64 = side_moments(phi.astype(np.float64), z, reference_plan(z), ("in",))["in"][1]  # [P, 1, N, 1]
    assert np.max(np.abs(var64[0, 0, :, 0] / exact - 1)) < 1e-12


# ----- blocking -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("Q", [1, 2])
def test_any_blocking_gives_the_same_scores(rule, Q, monkeypatch):
    z = membership("pairs", 10, 23, 5)
    data = checkpoint(signals(z, Q, 5, "normal"), z, rule)
    opts = {v: LiraOptions() for v in LIRA_ATTACKS}
    whole = lira_scores(data, opts)
    for samples in (1, 2, 7):  # one-sample blocks included: numpy would sum those pairwise
        monkeypatch.setattr(lira, "LIRA_BLOCK", 10 * Q * samples)
        blocked = lira_scores(data, opts)
        for v in ("lira_online", "lira_offline_cdf", "lira_offline_pdf"):
            np.testing.assert_array_equal(blocked[v], whole[v], err_msg=f"{v}, blocks of {samples}")
        # the pooled variance of the fixed variant is a sum over blocks: the same to rounding
        np.testing.assert_allclose(blocked["lira_online_fixed"], whole["lira_online_fixed"], rtol=1e-12, atol=1e-12)
    monkeypatch.setattr(base, "SAMPLE_BLOCK", 10 * Q * 3)  # Attack.run's own blocks
    for v in ("lira_online", "lira_offline_cdf", "lira_offline_pdf"):
        np.testing.assert_array_equal(ATTACKS[v].run(data), ATTACKS[v].score(data, LiraOptions()))


# ----- errors --------------------------------------------------------------------------------------------
def test_fused_pass_raises_what_the_single_attacks_raise():
    z = balanced_membership(2, 10, 0)
    data = checkpoint(np.abs(np.random.default_rng(0).normal(size=(2, 10, 1))), z, "pair")
    with pytest.raises(PrivdynError, match="at least 4 models"):
        run_fused([ATTACKS["lira_offline_cdf"], ATTACKS["lira_online"]], data)
    with pytest.raises(PrivdynError, match="no OUT reference"):
        run_fused([ATTACKS["lira_offline_cdf"], ATTACKS["lira_offline_pdf"]], data)
    ok = checkpoint(np.zeros((4, 3, 1)), membership("pairs", 4, 3, 0), "pair")
    with pytest.raises(TypeError, match="LiraOptions"):
        run_fused([ATTACKS["lira_online"]], ok, {"lira_online": RmiaOptions()})
    with pytest.raises(ValueError, match="fused"):
        run_fused([ATTACKS["lira_online"], ATTACKS["rmia"]], ok)
    bad = np.zeros((4, 3, 1))
    bad[1, 2, 0] = np.nan
    with pytest.raises(PrivdynError, match="pool signal 'phi' has 1 NaN"):
        lira_scores(checkpoint(bad, membership("pairs", 4, 3, 0), "pair"), {"lira_online": LiraOptions()})


# ----- the score stage ------------------------------------------------------------------------------------
def fake_run(path, attacks, options=None):
    """A run directory holding phi and loss, written by hand (no training)."""
    cfg = config_from_dict({"name": "fake", "training": {"n_models": 6}, "attacks": attacks,
                            "attack_options": options or {}})
    run = RunDir(path)
    run.init(cfg)
    rng = np.random.default_rng(0)
    T, M, N = 3, 6, 40
    z = balanced_membership(M, N, 0)
    atomic.save_npy(path / "membership.npy", z)
    atomic.save_npy(path / "epochs.npy", np.array([1, 2, 5]))
    phi = rng.normal(size=(T, M, N, 2)) + z[None, ..., None]
    save_array(run.signal_path("phi"), phi.astype(np.float32))
    save_array(run.signal_path("loss"), np.abs(rng.normal(size=(T, M, N, 2))).astype(np.float32))
    save_array(run.signal_path("loss", "test"), np.abs(rng.normal(size=(T, M, 12, 2))).astype(np.float32))
    return cfg, run, z


def written_at(run, attack):
    return (run.score_path(attack) / "zarr.json").stat().st_mtime_ns


@pytest.fixture
def counted(monkeypatch):
    """Counts of fused passes and of single-attack runs, by attack, during the test."""
    calls = {"fused": [], "single": []}
    real_fused, real_run = scoring.run_fused, base.Attack.run

    def fused(specs, data, opts=None):
        calls["fused"].append(tuple(s.name for s in specs))
        return real_fused(specs, data, opts)

    def single(self, data, opts=None):
        calls["single"].append(self.name)
        return real_run(self, data, opts)

    monkeypatch.setattr(scoring, "run_fused", fused)
    monkeypatch.setattr(base.Attack, "run", single)
    return calls


def test_score_stage_fuses_the_lira_variants_with_one_file_and_digest_each(tmp_path, counted):
    attacks = ["lira_online", "rmia", "lira_online_fixed", "lira_offline_cdf"]
    cfg, run, z = fake_run(tmp_path, attacks, {"lira_offline_cdf": {"std_floor": 1e-3}})
    pipeline.score(cfg, run, progress=False)
    lira_set = ("lira_online", "lira_online_fixed", "lira_offline_cdf")
    assert counted["fused"] == [lira_set] * 3  # one pass per checkpoint for the three of them
    assert counted["single"] == ["rmia"] * 3
    phi = np.asarray(open_array(run.signal_path("phi")))
    arts = run.manifest()["artifacts"]
    for a in lira_set:
        assert provenance.scores_current(cfg, run, a)
        assert arts[f"scores/{a}.zarr"]["digest"] == provenance.score_digest(cfg, run, a)
        got = np.asarray(open_array(run.score_path(a)))
        for t in range(3):
            data = CheckpointData({"phi": phi[t]}, {}, z)
            want = base.Attack.run(ATTACKS[a], data, cfg.options_for(a)).astype(np.float32)
            np.testing.assert_array_equal(got[t], want, err_msg=a)
    assert len({arts[f"scores/{a}.zarr"]["digest"] for a in lira_set}) == 3


def test_named_attacks_are_rescored_alone_and_the_stale_ones_of_a_pass_share_it(tmp_path, counted):
    cfg, run, _ = fake_run(tmp_path, ["lira_online", "lira_offline_cdf", "lira_offline_pdf"])
    pipeline.score(cfg, run, progress=False)
    stamps = {a: written_at(run, a) for a in cfg.attacks}
    counted["fused"].clear()
    pipeline.score(cfg, run, ["lira_offline_cdf"], progress=False)  # the others are current: alone
    assert counted["fused"] == [] and counted["single"][-3:] == ["lira_offline_cdf"] * 3
    assert written_at(run, "lira_offline_cdf") != stamps["lira_offline_cdf"]
    assert written_at(run, "lira_online") == stamps["lira_online"]
    import shutil

    # a named attack is scored alone, even when another of its family is stale
    shutil.rmtree(run.score_path("lira_offline_pdf"))
    counted["single"].clear()
    pipeline.score(cfg, run, ["lira_online"], progress=False)
    assert counted["fused"] == [] and counted["single"] == ["lira_online"] * 3
    assert not provenance.scores_current(cfg, run, "lira_offline_pdf")
    # the default pass scores exactly the stale ones, together when several are stale
    shutil.rmtree(run.score_path("lira_online"))
    pipeline.score(cfg, run, progress=False)
    assert counted["fused"] == [("lira_online", "lira_offline_pdf")] * 3
    assert all(provenance.scores_current(cfg, run, a) for a in cfg.attacks)


def test_score_attacks_groups_any_list(tmp_path, counted):
    cfg, run, _ = fake_run(tmp_path, ["loss"])
    scoring.score_attacks(cfg, run, ["lira_offline_pdf", "loss", "lira_online", "lira_offline_pdf"])
    assert counted["fused"] == [("lira_offline_pdf", "lira_online")] * 3 and counted["single"] == ["loss"] * 3
    assert scoring.fused_groups(["rmia", "lira_online", "loss", "lira_online_fixed"]) == [
        ["rmia"], ["lira_online", "lira_online_fixed"], ["loss"]]
