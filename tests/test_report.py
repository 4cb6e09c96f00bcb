"""The run report and the comparison report, built from a tiny real run (8x8 digit images)."""

import json
import re
import shutil
import sys

import numpy as np
import pandas as pd
import pytest
from browser import find_chromium, inspect_page  # tests/browser.py (pytest puts tests/ on sys.path)
from hypothesis import given, settings
from hypothesis import strategies as st

from privdyn import pipeline
from privdyn.cli import main
from privdyn.config import config_from_dict
from privdyn.errors import PrivdynError
from privdyn.report import common, page
from privdyn.report.compare import build_comparison, run_labels
from privdyn.report.data import load_run_data
from privdyn.report.gallery import sparkline, stored_inputs
from privdyn.report.html import TABLE_ROWS, build_report, key_metrics
from privdyn.report.interactive import histogram
from privdyn.store import atomic
from privdyn.store.rundir import RunDir

TINY = {
    "name": "tiny-digits", "seed": 5,
    "dataset": {"name": "digits", "n_pool": 240, "n_test": 120},
    "model": {"arch": "mlp", "width": 128, "depth": 1, "norm": "none"},
    "training": {"n_models": 8, "epochs": 10, "batch_size": 32, "group_size": 8,
                 "optimizer": {"name": "sgd", "lr": 0.2}},
    "attacks": ["lira_online"],
    "analysis": {"grid": 4, "n_bootstrap": 50, "rule": "fpr:0.1"},  # some samples reach the high state
}
RULE = TINY["analysis"]["rule"]
PANELS = ("plane", "plane-difficulty", "trajectories", "gallery", "time-to-high", "clusters", "com", "entropy",
          "states", "p-to-high", "transitions", "speed", "tpr-accuracy", "difficulty-scatter", "difficulty-deciles",
          "spearman", "early", "top-table")


def cli(monkeypatch, *args: str) -> int:
    """Run the privdyn command line in this process; its exit code."""
    monkeypatch.setattr(sys, "argv", ["privdyn", *args])
    try:
        main()
    except SystemExit as e:
        return int(e.code)
    return 0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A trained, scored and analysed tiny run whose report is made by `privdyn report`."""
    out = tmp_path_factory.mktemp("report") / "tiny"
    cfg = config_from_dict(TINY)
    rd = RunDir(out)
    rd.init(cfg)
    for stage in (pipeline.train, pipeline.score):
        stage(cfg, rd, progress=False)
    pipeline.analyze(cfg, rd)
    with pytest.MonkeyPatch.context() as mp:
        assert cli(mp, "report", str(out)) == 0
    return out


def specs(html: str) -> dict[str, dict]:
    """The embedded plotly figures of a page, by their div id."""
    found = re.findall(r'<script type="application/json" class="plot-spec" data-target="([^"]+)">(.*?)</script>',
                       html, re.S)
    return {k: json.loads(v) for k, v in found}


def decode(a):
    """A plotly array from the page JSON: a plain list, or a base64 typed array."""
    if isinstance(a, dict) and "bdata" in a:
        import base64
        arr = np.frombuffer(base64.b64decode(a["bdata"]), dtype=np.dtype(a["dtype"]))
        return arr.reshape([int(s) for s in a["shape"].split(",")]) if "shape" in a else arr
    return np.asarray(a)


def test_report_has_every_panel_and_no_external_reference(tiny):
    index = tiny / "report" / "index.html"
    html = index.read_text()
    for key in PANELS:
        assert f'id="{key}"' in html, key
    assert "Not shown" not in html and "panel(s) not shown" not in html
    # self-contained: plotly.js inline, no script, stylesheet or image loaded from anywhere
    assert "<script src" not in html and "<link" not in html and 'src="http' not in html
    assert html.count("Plotly.newPlot") >= 1  # plotly.js is in the page, gzipped
    packed = re.search(r'<script type="application/octet-stream" id="plotly-gzip">([^<]+)</script>', html).group(1)
    import base64
    import gzip

    from plotly.offline import get_plotlyjs
    assert gzip.decompress(base64.b64decode(packed)).decode() == get_plotlyjs()
    for stem in ("plane", "trajectories", "gallery", "com_path", "states_entropy", "transitions", "encoding_speed",
                 "tpr_accuracy", "difficulty", "early_determination", "clusters", "plane_difficulty"):
        for ext, magic in (("png", b"\x89PNG"), ("pdf", b"%PDF")):
            assert (tiny / "report" / f"{stem}.{ext}").read_bytes()[:4] == magic, (stem, ext)


def test_plane_frames_match_the_analysis(tiny):
    """Every animation frame carries, for each shown sample, the exact flag counts and the state."""
    d = load_run_data(tiny)
    fig = specs((tiny / "report" / "index.html").read_text())["plot-plane"]
    assert [f["name"] for f in fig["frames"]] == [str(e) for e in d.epochs]
    half = d.n_models // 2
    for t, frame in enumerate(fig["frames"]):
        main = frame["data"][0]
        counts = decode(main["customdata"])
        assert np.array_equal(counts[:, 0], np.rint(d.plane.fpr[t] * half))
        assert np.array_equal(counts[:, 1], np.rint(d.plane.tpr[t] * half))
        assert np.array_equal(decode(main["marker"]["color"]), d.states[t])
        # positions come from the counts and a fixed jitter, which stays within a third of the
        # resolution, so the dot sits nearest its exact position
        assert "x" not in main and "y" not in main
        xy = fig["privdyn"]["plane_xy"]
        assert xy["half"] == half
        for axis, (j, exact) in enumerate(((decode(xy["jx"]), d.plane.fpr[t]), (decode(xy["jy"]), d.plane.tpr[t]))):
            assert len(j) == d.n_samples and np.abs(j).max() <= 1 / (3 * half) + 1e-6
            assert np.abs(counts[:, axis] / half + j - exact).max() <= 1 / (3 * half) + 1e-6
        assert frame["layout"]["title"]["text"] == f"epoch {d.epochs[t]}: " + ", ".join(
            f"{name} {int((d.states[t] == k).sum()):,}" for k, name in enumerate(("safe", "low", "medium", "high")))


def test_top_table_is_the_plain_ranking(tiny):
    d = load_run_data(tiny)
    adv, auc = d.plane.adv[-1], d.plane.auc[-1]
    expected = sorted(range(d.n_samples), key=lambda i: (-adv[i], -auc[i], i))[:TABLE_ROWS]
    assert common.top_samples(d, TABLE_ROWS).tolist() == expected
    html = (tiny / "report" / "index.html").read_text()
    table = html[html.index('<table class="sortable">'):]
    ids = re.findall(r'<tr><td data-v="\d+">\d+</td><td data-v="(\d+)">', table)
    assert [int(i) for i in ids] == expected


def test_summary_numbers_on_the_page(tiny):
    d = load_run_data(tiny)
    m = key_metrics(d)
    s = json.loads((tiny / "summary.json").read_text())
    assert m["samples high at the end"] == s["n_high_final"] == int((d.states[-1] == 3).sum())
    assert m["TPR at 1% FPR"] == s["final"]["tpr_at_fpr_0.01"]
    html = (tiny / "report" / "index.html").read_text()
    assert f"<td>samples high at the end</td><td>{s['n_high_final']:,}</td>" in html
    assert "<td>dataset</td><td>digits: 240 pool samples</td>" in html


#: Imports a command needs only when it has work to do (seconds each on a cold start).
HEAVY = ("torch", "scipy.stats", "sklearn", "matplotlib", "plotly")


@pytest.mark.parametrize("command", ["run", "verify"])
def test_a_finished_run_is_checked_without_the_heavy_imports(tiny, tmp_path, command):
    """`privdyn run` on a finished run and `privdyn verify` check every artifact, but import
    neither torch nor the analysis and plotting libraries: each would only be needed for work."""
    import subprocess

    copy = tmp_path / "tiny"
    shutil.copytree(tiny, copy)
    args = ["run", str(copy / "config.yaml"), "--out", str(copy)] if command == "run" else ["verify", str(copy)]
    code = ("import sys\nfrom privdyn.cli import main\n"
            f"sys.argv = ['privdyn', *{args!r}]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    before = {p.name: p.stat().st_mtime_ns for p in (copy / "report").iterdir()}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr
    assert {p.name: p.stat().st_mtime_ns for p in (copy / "report").iterdir()} == before  # nothing was redone


def test_gallery_shows_the_stored_images_and_refuses_a_mismatch(tiny, tmp_path, monkeypatch):
    from privdyn.data import load_dataset
    from privdyn.pipeline.analysis import GALLERY_SIZE, pool_inputs

    d = load_run_data(tiny)
    top, x, kind = stored_inputs(d)
    ds = load_dataset("digits", 240, 120, 5)
    assert kind == "image" and np.array_equal(ds.y_pool, d.labels)
    assert top.tolist() == common.top_samples(d, GALLERY_SIZE).tolist()
    assert np.array_equal(x, ds.x_pool[top].astype(np.float16).astype(np.float32))  # the right pictures
    html = (tiny / "report" / "index.html").read_text()
    assert html.count('class="thumb image"') == GALLERY_SIZE
    # the report is built from the stored results only: it never reloads the dataset
    copy = tmp_path / "copy"
    shutil.copytree(tiny, copy)

    def no_reload(*args, **kwargs):
        raise AssertionError("the report reloaded the dataset")
    monkeypatch.setattr("privdyn.data.load_dataset", no_reload)
    build_report(RunDir(copy).load_config(), RunDir(copy))
    assert (copy / "report" / "index.html").read_text().count('class="thumb image"') == GALLERY_SIZE
    # the train stage kept the small pool's inputs, so the analysis did not make the dataset again
    kept = pool_inputs(RunDir(copy).load_config(), RunDir(copy))
    assert kept.kind == "image" and np.array_equal(kept.x, ds.x_pool.astype(np.float16))
    monkeypatch.undo()
    # without them (a large pool) it reloads the data; labels that do not match the reloaded data
    # give no pictures, and say why
    (copy / "inputs.npz").unlink()
    assert np.array_equal(pool_inputs(RunDir(copy).load_config(), RunDir(copy)).x, ds.x_pool)
    labels = np.load(copy / "labels.npy")
    atomic.save_npy(copy / "labels.npy", (labels + 1) % 10)
    got = pool_inputs(RunDir(copy).load_config(), RunDir(copy))
    assert got.x is None and "other labels" in got.reason


def test_panels_without_their_data_are_skipped_with_a_note(tiny, tmp_path):
    copy = tmp_path / "old"
    shutil.copytree(tiny, copy)
    adir = RunDir(copy).analysis_dir("lira_online", RULE)
    for stem in ("transitions", "difficulty_deciles", "difficulty_spearman", "clusters"):
        (adir / f"{stem}.parquet").unlink()
    sample = pd.read_parquet(adir / "sample.parquet")
    keep = ["sample", "final_fpr", "final_tpr", "final_advantage", "final_auc", "final_state", "max_advantage"]
    atomic.write_parquet(adir / "sample.parquet", sample[keep])  # an older analysis: intact, fewer columns
    epoch = pd.read_parquet(adir / "epoch.parquet")
    atomic.write_parquet(adir / "epoch.parquet", epoch.drop(columns=["recall", "spearman_to_final", "p_to_high"]))
    rd = RunDir(copy)
    html = build_report(rd.load_config(), rd).read_text()
    assert "Not shown: the analysis did not write transitions.parquet" in html
    assert "Not shown: epoch.parquet has no column recall" in html
    assert "Not shown: sample.parquet has no difficulty measure" in html
    assert "panel(s) not shown because the analysis did not produce their data" in html
    figs = specs(html)
    assert "plot-plane" in figs and "plot-tpr-accuracy" in figs and "plot-transitions" not in figs
    assert not (copy / "report" / "transitions.png").exists() or (copy / "report" / "transitions.png").stat().st_mtime
    assert 'id="plane-difficulty"' in html and 'id="top-table"' in html


def test_unanalysed_run_is_a_clear_error(tmp_path):
    """A run that never trained names the stage that did not finish (not `analyze`, which would
    itself fail on the missing signals)."""
    rd = RunDir(tmp_path / "empty")
    rd.init(config_from_dict(TINY))
    with pytest.raises(PrivdynError, match="train stage has not finished.*privdyn run"):
        load_run_data(rd.path)


def test_cli_compare(tiny, tmp_path, monkeypatch, capsys):
    other = tmp_path / "other"
    shutil.copytree(tiny, other)
    out = tmp_path / "cmp"
    assert cli(monkeypatch, "compare", str(tiny), str(other), "--out", str(out)) == 0
    html = (out / "index.html").read_text()
    assert "tiny-digits (tiny)" in html and "tiny-digits (other)" in html
    assert (out / "compare_curves.png").exists() and (out / "compare_curves.pdf").exists()
    capsys.readouterr()
    assert cli(monkeypatch, "compare", str(tmp_path / "nope"), "--out", str(out)) == 2
    assert "not a privdyn run directory" in capsys.readouterr().err


def test_compare_refuses_a_folder_it_does_not_own_and_rewrites_its_own(tiny, tmp_path, monkeypatch, capsys):
    """A folder with files and no privdyn-comparison.json is refused (exit 2, the files untouched);
    a folder an earlier comparison wrote is rewritten."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<h1>my page</h1>")
    with pytest.raises(PrivdynError, match=f"The comparison folder {re.escape(str(site))} already holds files"):
        build_comparison([tiny], site)
    assert cli(monkeypatch, "compare", str(tiny), "--out", str(site)) == 2
    err = capsys.readouterr().err
    assert str(site) in err and "new or empty folder" in err and "Traceback" not in err
    assert [p.name for p in site.iterdir()] == ["index.html"]
    assert (site / "index.html").read_text() == "<h1>my page</h1>"
    afile = tmp_path / "afile"
    afile.write_text("mine")
    for out, needle in [(afile, "is a file, not a folder"), (afile / "x", "Cannot create the comparison folder")]:
        assert cli(monkeypatch, "compare", str(tiny), "--out", str(out)) == 2
        err = capsys.readouterr().err
        assert needle in err and str(out) in err and "Traceback" not in err
    assert afile.read_text() == "mine"
    own = tmp_path / "cmp"
    first = build_comparison([tiny], own)
    assert json.loads((own / "privdyn-comparison.json").read_text())["format"] == "privdyn-comparison"
    assert cli(monkeypatch, "compare", str(tiny), str(tiny), "--out", str(own)) == 0
    assert first.read_text().count("tiny-digits (tiny) #2") > 0


def test_comparison_curves_are_each_runs_own(tiny, tmp_path):
    other = tmp_path / "b"
    shutil.copytree(tiny, other)
    adir = RunDir(other).analysis_dir("lira_online", RULE)
    e = pd.read_parquet(adir / "epoch.parquet")
    e["tpr_at_fpr_0.01"] = e["tpr_at_fpr_0.01"] / 2
    atomic.write_parquet(adir / "epoch.parquet", e)
    index = build_comparison([tiny, other], tmp_path / "cmp")
    fig = specs(index.read_text())["plot-cmp-tpr"]
    a, b = (decode(tr["y"]) for tr in fig["data"])
    want = pd.read_parquet(RunDir(tiny).analysis_dir("lira_online", RULE) / "epoch.parquet")["tpr_at_fpr_0.01"]
    assert np.allclose(a, want, atol=1e-6) and np.allclose(b, want / 2, atol=1e-6)
    with pytest.raises(PrivdynError, match="at least one"):
        build_comparison([], tmp_path / "x")


def test_comparison_groups_share_a_colour_and_a_legend_entry(tiny, tmp_path):
    """The seeds of one configuration are drawn in one colour with one legend entry; hover names the run."""
    index = build_comparison([tiny, tiny, tiny], tmp_path / "cmp", groups=["a", "a", "b"])
    traces = specs(index.read_text())["plot-cmp-tpr"]["data"]
    assert [t["name"] for t in traces] == ["a", "a", "b"]
    assert [t["showlegend"] for t in traces] == [True, False, True]
    colours = [t["line"]["color"] for t in traces]
    assert colours[0] == colours[1] != colours[2]
    assert "tiny-digits (tiny) #2" in traces[1]["hovertemplate"]
    with pytest.raises(PrivdynError, match="one per run"):
        build_comparison([tiny, tiny], tmp_path / "x", groups=["a"])


def test_comparison_com_is_drawn_by_epoch_when_the_rule_fixes_fpr(tiny, tmp_path):
    """Under an fpr: rule the global threshold pins the mean FPR_i, so the CoM path would be a
    vertical line: the panel shows the CoM's TPR against the epoch instead."""
    e = pd.read_parquet(RunDir(tiny).analysis_dir("lira_online", RULE) / "epoch.parquet")
    assert np.ptp(e["com_fpr"]) < 1e-9
    index = build_comparison([tiny], tmp_path / "cmp")
    (trace,) = specs(index.read_text())["plot-cmp-com"]["data"]
    assert np.array_equal(decode(trace["x"]), e["epoch"]) and np.allclose(decode(trace["y"]), e["com_tpr"] * 100)
    assert "mean FPR_i fixed by the rule" in index.read_text()


def test_run_labels_are_distinct(tiny, tmp_path):
    d = load_run_data(tiny)
    assert run_labels([d]) == ["tiny-digits"]
    assert run_labels([d, d]) == ["tiny-digits (tiny) #1", "tiny-digits (tiny) #2"]


# ----- small pieces ------------------------------------------------------------------------------

@given(n=st.integers(0, 5000), k=st.integers(1, 3000), seed=st.integers(0, 10))
@settings(max_examples=60, deadline=None)
def test_display_subset(n, k, seed):
    idx = common.display_subset(n, k, seed)
    assert len(idx) == min(n, k) and len(np.unique(idx)) == len(idx)
    assert np.all(np.diff(idx) > 0) and (n == 0 or (idx.min() >= 0 and idx.max() < n))
    assert np.array_equal(idx, common.display_subset(n, k, seed))


@given(t=st.integers(1, 500), k=st.integers(2, 80))
def test_frame_indices(t, k):
    f = common.frame_indices(t, k)
    assert f[0] == 0 and f[-1] == t - 1 and len(f) <= max(k, 1) and np.all(np.diff(f) > 0)
    if t <= k:
        assert np.array_equal(f, np.arange(t))


@given(st.lists(st.one_of(st.floats(-1e6, 1e6), st.just(float("nan"))), max_size=300), st.booleans())
def test_histogram_counts_every_finite_value_once(values, integers):
    v = np.round(np.asarray(values, dtype=np.float64)) if integers else np.asarray(values, dtype=np.float64)
    centres, counts, widths = histogram(v)
    finite = v[np.isfinite(v)]
    assert counts.sum() == finite.size and len(centres) == len(counts) == len(widths)
    if finite.size:
        lo, hi = centres - widths / 2, centres + widths / 2
        tol = 1e-9 * max(1.0, np.abs(finite).max())
        assert lo[0] <= finite.min() + tol and finite.max() <= hi[-1] + tol


def test_fmt_and_escaping():
    assert page.fmt(17.0) == "17" and page.fmt(np.int64(12345)) == "12,345" and page.fmt(0.12345) == "0.123"
    assert page.fmt(float("nan")) == "\u2013" and page.fmt(None) == "\u2013" and page.fmt("x") == "x"
    t = page.sortable_table(["a<b"], [[("<script>alert(1)</script>", '"1')]])
    assert "<script>" not in t and "&lt;script&gt;" in t and 'data-v="&quot;1"' in t
    import plotly.graph_objects as go
    js = page.figure_json(go.Figure(layout=dict(title="</script><script>alert(1)</script>")))
    assert "</script>" not in js and json.loads(js)["layout"]["title"]["text"].startswith("</script>")


def test_the_page_carries_the_template_once_and_no_figure_carries_it(tiny):
    import plotly.graph_objects as go
    import plotly.io as pio

    fig = go.Figure(go.Scatter(x=[1, 2], y=[3, 4]), layout=dict(template="plotly_dark", height=300))
    spec = json.loads(page.figure_json(fig))
    assert "template" not in spec["layout"] and spec["layout"]["height"] == 300
    assert fig.layout.template == pio.templates["plotly_dark"]  # the figure itself is left as it was
    html = (tiny / "report" / "index.html").read_text()
    assert html.count('id="plotly-template"') == 1 and html.count('"template"') == 0
    shared = re.search(r'<script type="application/json" id="plotly-template">(.*?)</script>', html).group(1)
    assert json.loads(shared) == pio.templates[page.TEMPLATE].to_plotly_json()


def test_thumbnails_show_the_input_itself():
    import base64
    import io

    from PIL import Image

    from privdyn.report.gallery import thumbnail

    x = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    uri = thumbnail(x, "image")
    assert uri.startswith("data:image/png;base64,")
    pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))
    assert pixels.shape == (3, 4) and pixels[0, 0] == 0 and pixels[-1, -1] == 255
    assert np.all(np.diff(pixels.ravel()) > 0)
    rgb = np.asarray(Image.open(io.BytesIO(base64.b64decode(thumbnail(np.zeros((3, 2, 2)), "image").split(",")[1]))))
    assert rgb.shape == (2, 2, 3) and not rgb.any()  # a constant image is black, not NaN
    svg = base64.b64decode(thumbnail(np.array([[0.0, 1.0, 0.5], [1.0, 0.0, 0.5]]), "sequence").split(",")[1]).decode()
    lines = re.findall(r'points="([^"]+)"', svg)
    assert len(lines) == 2  # one line per channel, on the same scale
    ys = [[float(p.split(",")[1]) for p in pts.split()] for pts in lines]
    assert ys[0][1] == ys[1][0] < ys[0][2] == ys[1][2] < ys[0][0] == ys[1][1]  # up is larger


def test_sparkline_geometry():
    svg = sparkline(np.array([-1.0, 0.0, 1.0]), high=0.6, width=100, height=44)
    pts = [tuple(map(float, p.split(","))) for p in re.search(r'points="([^"]+)"', svg).group(1).split()]
    assert [x for x, _ in pts] == [2.0, 50.0, 98.0]
    ys = [y for _, y in pts]
    assert ys[0] == 42.0 and ys[2] == 2.0 and ys[0] > ys[1] > ys[2]  # clipped at -0.2 and 1, up is larger A


# ----- in a real browser -------------------------------------------------------------------------

needs_chromium = pytest.mark.skipif(find_chromium() is None,
                                    reason="Chromium is not installed (apt-get install chromium); .ci/run installs it")

#: Run in the page: the plane's title after moving to the first frame (and how long that took), the
#: sample column of the top table after a click on its header.
PROBE = """(async () => {
  const plane = document.getElementById('plot-plane');
  const first = plane.layout.sliders[0].steps[0].label;
  const t0 = performance.now();
  await Plotly.animate(plane, [first], plane.layout.sliders[0].steps[0].args[1]);
  const ms = performance.now() - t0;
  const title = plane.querySelector('.gtitle').textContent;
  const table = document.querySelector('#top-table table.sortable');
  table.querySelectorAll('thead th')[1].click();
  const ids = Array.from(table.tBodies[0].rows).map(r => Number(r.cells[1].textContent));
  const backgrounds = Array.from(document.querySelectorAll('.plot')).map(p => p._fullLayout.plot_bgcolor);
  return {title: title, ids: ids, ms: ms, frames: plane._transitionData._frames.length, backgrounds: backgrounds,
          x: Array.from(plane.data[0].x), y: Array.from(plane.data[0].y)};
})()"""


@needs_chromium
def test_report_renders_offline_in_chromium(tiny, tmp_path):
    d = load_run_data(tiny)
    shot = tmp_path / "report.png"
    r = inspect_page(tiny / "report" / "index.html", shot, script=PROBE)
    drawn = {p["id"] for p in r.plots if p["svg"] > 0}
    expected = {f"plot-{k}" for k in PANELS if k not in ("gallery", "spearman", "top-table")}
    assert expected <= drawn, expected - drawn
    assert next(p for p in r.plots if p["id"] == "plot-plane")["points"] == d.n_samples
    assert r.network_requests == [], r.network_requests
    assert r.errors == [], r.errors
    assert r.title == "privdyn report: tiny-digits"
    # the animation moved to the first epoch: the title counts the states of the first checkpoint
    assert r.probe["frames"] == len(d.epochs)
    assert r.probe["title"] == f"epoch {d.epochs[0]}: " + ", ".join(
        f"{n} {int((d.states[0] == k).sum()):,}" for k, n in enumerate(("safe", "low", "medium", "high")))
    # the browser derived the first frame's positions from its counts: each dot sits within a
    # third of the resolution of its exact (FPR_i, TPR_i)
    half = d.n_models // 2
    assert np.abs(np.array(r.probe["x"]) - d.plane.fpr[0]).max() <= 1 / (3 * half) + 1e-6
    assert np.abs(np.array(r.probe["y"]) - d.plane.tpr[0]).max() <= 1 / (3 * half) + 1e-6
    assert np.abs(np.array(r.probe["x"]) - d.plane.fpr[-1]).max() > 0 or np.array_equal(d.plane.fpr[0], d.plane.fpr[-1])
    # every figure is drawn with the page's one template (plotly_white: a white plot area; plotly's
    # default would be #E5ECF6), which no figure carries itself
    assert len(r.probe["backgrounds"]) == len(drawn) and set(r.probe["backgrounds"]) == {"white"}
    # one click sorts the table by sample, ascending
    assert r.probe["ids"] == sorted(common.top_samples(d, TABLE_ROWS).tolist())
    png = shot.read_bytes()
    assert png[:4] == b"\x89PNG" and len(png) > 50_000


@needs_chromium
def test_browser_check_catches_requests_and_errors(tmp_path):
    """The checker itself can fail: a CDN script, a fetch and a console error are all reported."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!doctype html><title>bad</title><script src='https://cdn.example.org/plotly.js'></script>"
                   "<script>console.error('boom'); fetch('http://example.com/x').catch(() => {});</script>")
    r = inspect_page(bad, settle_s=2)
    assert set(r.network_requests) == {"https://cdn.example.org/plotly.js", "http://example.com/x"}
    assert any("boom" in e for e in r.errors) and any("ERR_NAME_NOT_RESOLVED" in e for e in r.errors)


def test_a_figure_preview_is_the_scaled_png_without_its_opaque_alpha(tmp_path):
    import io

    import matplotlib
    from matplotlib.figure import Figure
    from PIL import Image

    from privdyn.report import figures

    with matplotlib.rc_context(figures.STYLE):
        fig = Figure(figsize=(3, 2))
        fig.add_subplot().plot([0, 1, 2], [2, 0, 1], color="tab:red")
        png, caption, preview = figures.save(fig, tmp_path, "toy", "a toy")
    full = Image.open(png)
    small = Image.open(io.BytesIO(preview))
    assert caption == "a toy" and (tmp_path / "toy.pdf").stat().st_size > 0
    assert full.mode == "RGBA" and small.mode == "RGB"
    scale = figures.PREVIEW_DPI / figures.STYLE["savefig.dpi"]
    size = (round(full.width * scale), round(full.height * scale))
    expected = full.resize(size, Image.Resampling.LANCZOS)  # what the preview was before: RGBA
    assert expected.getextrema()[3] == (255, 255)
    assert np.array_equal(np.asarray(small), np.asarray(expected)[..., :3])
