// privdyn report: draw the embedded plotly figures and make tables sortable (no other library).
(function () {
  "use strict";
  function bytes(b64) {
    var raw = atob(b64), out = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) { out[i] = raw.charCodeAt(i); }
    return out;
  }
  // plotly.js travels gzipped (a third of its size); the browser unpacks it before the first plot.
  function loadPlotly() {
    if (window.Plotly) { return Promise.resolve(); }
    var packed = document.getElementById("plotly-gzip");
    if (!packed || typeof DecompressionStream === "undefined") {
      return Promise.reject(new Error("this browser cannot unpack the report's plotly.js (no DecompressionStream)"));
    }
    var stream = new Blob([bytes(packed.textContent)]).stream().pipeThrough(new DecompressionStream("gzip"));
    return new Response(stream).text().then(function (code) {
      var script = document.createElement("script");
      script.text = code;
      document.head.appendChild(script);
    });
  }
  var TYPED = {u1: Uint8Array, u2: Uint16Array, f4: Float32Array};
  function typed(spec) {
    var b = bytes(spec.bdata);
    return new TYPED[spec.dtype](b.buffer, 0, b.length / TYPED[spec.dtype].BYTES_PER_ELEMENT);
  }
  // Plane frames carry only the flag counts (customdata [n, 2]); positions are the counts over
  // n_out, n_in plus each sample's fixed jitter (privdyn.report.interactive._plane_points).
  function planePositions(fig) {
    var spec = fig.privdyn && fig.privdyn.plane_xy;
    if (!spec) { return; }
    var jx = typed(spec.jx), jy = typed(spec.jy), half = spec.half;
    function place(trace) {
      if (!trace || !trace.customdata) { return; }
      var c = typed(trace.customdata), n = jx.length;
      var x = new Float32Array(n), y = new Float32Array(n);
      for (var i = 0; i < n; i++) { x[i] = c[2 * i] / half + jx[i]; y[i] = c[2 * i + 1] / half + jy[i]; }
      trace.x = x; trace.y = y;
    }
    place(fig.data[spec.trace]);
    (fig.frames || []).forEach(function (f) { place(f.data[spec.trace]); });
  }
  function drawPlots() {
    var specs = document.querySelectorAll("script.plot-spec");
    // The page's plotly template is embedded once and applied to every figure (privdyn.report.page.TEMPLATE).
    var shared = document.getElementById("plotly-template");
    var template = shared ? JSON.parse(shared.textContent) : undefined;
    specs.forEach(function (spec) {
      var target = document.getElementById(spec.dataset.target);
      var fig = JSON.parse(spec.textContent);
      planePositions(fig);
      var layout = fig.layout || {};
      if (template && !layout.template) { layout.template = template; }
      var config = {responsive: true, displaylogo: false, modeBarButtonsToRemove: ["sendDataToCloud"]};
      Plotly.newPlot(target, fig.data, layout, config).then(function () {
        if (fig.frames && fig.frames.length) {
          keepTitleCurrent(target);
          return Plotly.addFrames(target, fig.frames);
        }
      });
    });
  }
  // Frames animate without a full redraw (fast with thousands of points), which updates the
  // layout but not the drawn title; redraw just the title after each frame when it changed.
  function keepTitleCurrent(gd) {
    var shown = gd.layout.title && gd.layout.title.text;
    gd.on("plotly_transitioned", function () {
      var text = gd.layout.title && gd.layout.title.text;
      if (text !== undefined && text !== shown) {
        shown = text;
        Plotly.relayout(gd, {"title.text": text});
      }
    });
  }
  function cellValue(row, col) {
    var cell = row.cells[col];
    var v = cell.getAttribute("data-v");
    if (v === null) { v = cell.textContent.trim(); }
    if (v === "" || v === "\u2013") { return null; }  // missing values sort last either way
    var n = Number(v);
    return isNaN(n) ? v.toLowerCase() : n;
  }
  function sortTable(table, col, th) {
    var body = table.tBodies[0];
    var asc = !th.classList.contains("asc");
    table.querySelectorAll("th").forEach(function (h) { h.classList.remove("asc", "desc"); });
    th.classList.add(asc ? "asc" : "desc");
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = cellValue(a, col), y = cellValue(b, col);
      if (x === null || y === null) { return (x === null) - (y === null); }
      var xn = typeof x === "number", yn = typeof y === "number";
      var c = (xn && yn) ? x - y : (xn ? -1 : (yn ? 1 : (x < y ? -1 : (x > y ? 1 : 0))));
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  function makeSortable() {
    document.querySelectorAll("table.sortable").forEach(function (table) {
      table.querySelectorAll("thead th").forEach(function (th, col) {
        th.addEventListener("click", function () { sortTable(table, col, th); });
      });
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    makeSortable();
    loadPlotly().then(drawPlots, function (e) { console.error(e.message); });
  });
})();
