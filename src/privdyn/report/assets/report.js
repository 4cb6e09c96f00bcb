// privdyn report: draw the embedded plotly figures and make tables sortable (no other library).
(function () {
  "use strict";
  function drawPlots() {
    var specs = document.querySelectorAll("script.plot-spec");
    specs.forEach(function (spec) {
      var target = document.getElementById(spec.dataset.target);
      var fig = JSON.parse(spec.textContent);
      var config = {responsive: true, displaylogo: false, modeBarButtonsToRemove: ["sendDataToCloud"]};
      Plotly.newPlot(target, fig.data, fig.layout || {}, config).then(function () {
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
  document.addEventListener("DOMContentLoaded", function () { makeSortable(); drawPlots(); });
})();
