// Live plots of the origin's status page, drawn as inline SVG from
// /v1/history (one point per second, the last minutes); the tables above
// are refreshed from the page itself every 5 s. No external library.
(function () {
  "use strict";
  var charts = [
    {key: "ingestKbps", title: "ingest", unit: "kbit/s"},
    {key: "outKbps", title: "out (RTSP+HLS+P2P)", unit: "kbit/s"},
    {key: "rtspReaders", title: "RTSP readers", unit: ""},
    {key: "peers", title: "P2P peers", unit: ""},
    {key: "offload", title: "offload (10 s window)", unit: "%", scale: 100, max: 100},
    {key: "continuity", title: "P2P continuity", unit: "%", scale: 100, max: 100}
  ];
  var W = 260, H = 90;
  var NS = "http://www.w3.org/2000/svg";

  function el(name, attrs, text) {
    var e = document.createElementNS(NS, name);
    for (var k in attrs) { e.setAttribute(k, attrs[k]); }
    if (text !== undefined) { e.textContent = text; }
    return e;
  }

  function plot(points, c) {
    var box = document.createElement("div");
    box.className = "plot";
    var vals = points.map(function (p) { var v = p[c.key]; return v === null || v === undefined ? null : v * (c.scale || 1); });
    var known = vals.filter(function (v) { return v !== null; });
    var last = known.length ? known[known.length - 1] : null;
    var b = document.createElement("b");
    b.textContent = c.title + ": " + (last === null ? "–" : (Math.round(last * 10) / 10) + " " + c.unit);
    box.appendChild(b);
    var top = c.max || Math.max(1, Math.max.apply(null, known.length ? known : [1]) * 1.1);
    var svg = el("svg", {width: W, height: H, viewBox: "0 0 " + W + " " + H});
    svg.appendChild(el("rect", {x: 0, y: 0, width: W, height: H, fill: "#fafafa", stroke: "#ddd"}));
    if (points.length > 1) {
      var t0 = points[0].t, t1 = points[points.length - 1].t, span = Math.max(1, t1 - t0);
      var d = "", pen = false;
      for (var i = 0; i < points.length; i++) {
        if (vals[i] === null) { pen = false; continue; }
        var x = (points[i].t - t0) / span * (W - 2) + 1;
        var y = H - 1 - vals[i] / top * (H - 14);
        d += (pen ? "L" : "M") + x.toFixed(1) + " " + y.toFixed(1) + " ";
        pen = true;
      }
      if (d) { svg.appendChild(el("path", {d: d, fill: "none", stroke: "#2a6fdb", "stroke-width": 1.5})); }
      svg.appendChild(el("text", {x: 3, y: 11, "font-size": 10, fill: "#888"}, "max " + (Math.round(top * 10) / 10) + " " + c.unit));
      svg.appendChild(el("text", {x: W - 3, y: H - 3, "font-size": 10, fill: "#888", "text-anchor": "end"}, Math.round(span / 1000) + " s"));
    }
    box.appendChild(svg);
    return box;
  }

  function draw(series) {
    var root = document.getElementById("plots");
    if (!root) { return; }
    var paths = Object.keys(series).sort();
    root.textContent = "";
    if (!paths.length) { root.textContent = "no stream"; return; }
    paths.forEach(function (path) {
      var h = document.createElement("h3");
      h.textContent = path;
      root.appendChild(h);
      var row = document.createElement("div");
      row.className = "plots";
      charts.forEach(function (c) { row.appendChild(plot(series[path], c)); });
      root.appendChild(row);
    });
  }

  function refreshPlots() {
    fetch("/v1/history").then(function (r) { return r.json(); })
      .then(function (j) { draw(j.streams || {}); }).catch(function () {});
  }

  function refreshTables() {
    fetch("/", {cache: "no-store"}).then(function (r) { return r.text(); }).then(function (t) {
      var doc = new DOMParser().parseFromString(t, "text/html");
      var fresh = doc.getElementById("tables"), cur = document.getElementById("tables");
      if (fresh && cur) { cur.replaceWith(fresh); }
    }).catch(function () {});
  }

  refreshPlots();
  setInterval(refreshPlots, 2000);
  setInterval(refreshTables, 5000);
})();
