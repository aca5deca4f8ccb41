/* heapline report: draws the figures described in the page's JSON data block with plotly.js.
   Axes and hovers are labelled in KiB/MiB/GiB and µs/ms/s; the page follows the light or dark
   colour scheme; a finding's time button zooms the shared time axis to it. */
(function () {
  "use strict";
  performance.mark("hl-start");
  var D = JSON.parse(document.getElementById("hl-data").textContent);
  performance.mark("hl-parsed");
  var state = { rendered: null, figures: [], errors: [] };
  window.__heapline = state;
  state.hb = hb;  // the bytes rule, which the tests hold to tracer.units.human_bytes

  function decode(v) {
    var s = atob(v.bdata), n = s.length, u = new Uint8Array(n);
    for (var i = 0; i < n; i++) u[i] = s.charCodeAt(i);
    return new Float64Array(u.buffer);
  }
  function unpacker() {
    var shared = {};
    return function unpack(o) {
      if (Array.isArray(o)) return o.map(unpack);
      if (o && typeof o === "object") {
        if (typeof o.bdata === "string" && o.dtype === "f8") return (shared[o.id] = decode(o));
        if (typeof o.ref === "number" && Object.keys(o).length === 1) return shared[o.ref];
        var out = {};
        for (var k in o) out[k] = unpack(o[k]);
        return out;
      }
      return o;
    };
  }

  var UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];
  function hb(n) {  // tracer.units.human_bytes: B below 1 KiB, else three significant figures
    var v = Math.abs(n), i = 0;
    while (v >= 1024 && i < UNITS.length - 1) { v /= 1024; i++; }
    var sign = n < 0 ? "-" : "";
    if (i === 0) return sign + Math.floor(v) + " B";
    var d = v < 10 ? 2 : v < 100 ? 1 : 0;
    if (Number(v.toFixed(d)) >= 1024 && i < UNITS.length - 1) { v /= 1024; i++; d = 2; }
    var t = v.toFixed(d);
    if (t.indexOf(".") >= 0) t = t.replace(/0+$/, "").replace(/\.$/, "");
    t = t.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
    return sign + t + " " + UNITS[i];
  }
  function ht(s) {
    var a = Math.abs(s);
    if (a >= 1) return s.toFixed(6) + " s";
    if (a >= 1e-3) return (s * 1e3).toFixed(3) + " ms";
    return (s * 1e6).toFixed(1) + " µs";
  }
  function nice(raw) {
    var p = Math.pow(10, Math.floor(Math.log10(raw))), f = raw / p;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
  }
  function ticks(lo, hi, count, unitOf) {
    if (!(hi > lo)) return null;
    var u = unitOf(Math.max(Math.abs(lo), Math.abs(hi)));
    var step = Math.max(nice((hi - lo) / u.scale / count) * u.scale, u.min || 0);
    var dec = Math.max(0, -Math.floor(Math.log10(step / u.scale) + 1e-9));
    var vals = [], text = [];
    for (var v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) {
      var x = Math.abs(v) < step * 1e-9 ? 0 : v;
      vals.push(x);
      text.push((x / u.scale).toFixed(dec) + " " + u.name);
    }
    return { tickmode: "array", tickvals: vals, ticktext: text };
  }
  function timeUnit(m) {
    if (m >= 1) return { scale: 1, name: "s" };
    if (m >= 1e-3) return { scale: 1e-3, name: "ms" };
    if (m >= 1e-6) return { scale: 1e-6, name: "µs" };
    return { scale: 1e-9, name: "ns" };
  }
  function byteUnit(m) {
    var i = 0;
    while (m >= 1024 && i < UNITS.length - 1) { m /= 1024; i++; }
    return { scale: Math.pow(1024, i), name: UNITS[i], min: 1 };
  }

  function sliceText(sl, i) {
    var lo = sl.edges[i], hi = sl.edges[i + 1], w = Math.max(hi - lo, 1e-9);
    return "<b>" + ht(lo) + " – " + ht(hi) + "</b> (" + ht(w) + ")<br>allocated: " +
      sl.allocated[i].toLocaleString("en-US") + " blocks, " + hb(sl.allocated_bytes[i]) + "<br>freed: " +
      sl.freed[i].toLocaleString("en-US") + " blocks, " + hb(sl.freed_bytes[i]) + "<br>" +
      Math.round((sl.allocated[i] + sl.freed[i]) / w).toLocaleString("en-US") + " calls/s";
  }
  function hoverText(data) {
    data.forEach(function (tr) {
      var m = tr.meta || {};
      if (m.hover === "slices") {
        tr.hovertext = Array.prototype.map.call(m.rows, function (i) { return sliceText(m.slices, i); });
        return;
      }
      if (!m.hover || !tr.y) return;
      var label = m.label || tr.name, n = tr.y.length, text = new Array(n);
      var live = m.live !== undefined ? data[m.live] : null, k = 0;
      for (var i = 0; i < n; i++) {
        var s = label + ": <b>" + hb(tr.y[i]) + "</b>";
        if (live) {  /* live's value at this time: its last point at or before it (both are in time order) */
          while (k + 1 < live.x.length && live.x[k + 1] <= tr.x[i]) k++;
          s += "<br>live: " + hb(live.x[k] <= tr.x[i] ? live.y[k] : 0) +
               " · retained (footprint − live): " + hb(tr.y[i] - (live.x[k] <= tr.x[i] ? live.y[k] : 0));
        }
        text[i] = s + (m.note ? "<br>" + m.note : "") + "<br>at " + ht(tr.x[i]);
      }
      tr.text = text;
    });
  }

  function palette() {
    var cs = getComputedStyle(document.documentElement);
    function v(n) { return cs.getPropertyValue(n).trim(); }
    return { fg: v("--fg"), muted: v("--muted"), grid: v("--grid"), panel: v("--panel"), border: v("--border") };
  }
  function themeUpdate(layout, t) {
    var u = { "font.color": t.fg, "hoverlabel.bgcolor": t.panel, "hoverlabel.bordercolor": t.border,
              "hoverlabel.font.color": t.fg, "legend.font.color": t.fg, "legend2.font.color": t.fg };
    Object.keys(layout).forEach(function (k) {
      if (/^[xy]axis\d*$/.test(k)) {
        u[k + ".gridcolor"] = t.grid; u[k + ".linecolor"] = t.border;
        u[k + ".tickcolor"] = t.border; u[k + ".zerolinecolor"] = t.grid;
      }
    });
    return u;
  }
  function setPath(obj, path, value) {
    var parts = path.split("."), o = obj;
    for (var i = 0; i < parts.length - 1; i++) { o[parts[i]] = o[parts[i]] || {}; o = o[parts[i]]; }
    o[parts[parts.length - 1]] = value;
  }

  function tickUpdate(layout, full) {
    var meta = layout.meta || {}, u = {};
    function range(name) { var a = (full || layout)[name]; return a && a.range; }
    (meta.time_axes || []).forEach(function (name) {
      var r = range(name), t = r && ticks(+r[0], +r[1], 8, timeUnit);
      if (t) { u[name + ".tickmode"] = "array"; u[name + ".tickvals"] = t.tickvals; u[name + ".ticktext"] = t.ticktext; }
    });
    (meta.byte_axes || []).forEach(function (name) {
      var r = range(name), t = r && ticks(+r[0], +r[1], 5, byteUnit);
      if (t) { u[name + ".tickmode"] = "array"; u[name + ".tickvals"] = t.tickvals; u[name + ".ticktext"] = t.ticktext; }
    });
    return u;
  }

  function draw(spec) {
    var div = document.getElementById(spec.div);
    var fig = unpacker()(spec.figure);
    var meta = fig.layout.meta || {};
    var unranged = (meta.byte_axes || []).concat(meta.time_axes || []).some(function (a) {
      return !(fig.layout[a] || {}).range;
    });
    hoverText(fig.data);
    performance.mark("hl-prepared");
    var initial = Object.assign(themeUpdate(fig.layout, palette()), tickUpdate(fig.layout, null));
    Object.keys(initial).forEach(function (k) { setPath(fig.layout, k, initial[k]); });
    return Plotly.newPlot(div, fig.data, fig.layout, fig.config).then(function (gd) {
      var busy = false;
      gd.on("plotly_relayout", function (ev) {
        if (busy || !Object.keys(ev).some(function (k) { return /range|autorange/.test(k); })) return;
        busy = true;
        Plotly.relayout(gd, tickUpdate(gd.layout, gd._fullLayout)).then(function () { busy = false; });
      });
      gd.on("plotly_clickannotation", function (ev) {
        var name = ev.annotation && ev.annotation.name, el = name && document.getElementById(name);
        if (el) { el.scrollIntoView({ block: "center" }); el.classList.add("active"); }
      });
      state.figures.push(gd);
      if (!unranged) return gd;
      busy = true;
      return Plotly.relayout(gd, tickUpdate(gd.layout, gd._fullLayout)).then(function () { busy = false; return gd; });
    });
  }

  function zoomTo(gd, t) {
    var dur = gd.layout.meta.duration_s || 1, w = Math.max(dur / 40, 2e-5);
    return Plotly.relayout(gd, { "xaxis.range": [t - w, t + w] });
  }

  document.querySelectorAll("[data-goto]").forEach(function (btn) {
    btn.addEventListener("click", function () {
      var gd = state.figures[+btn.dataset.figure || 0];
      if (!gd) return;
      document.querySelectorAll(".finding.active").forEach(function (e) { e.classList.remove("active"); });
      var item = btn.closest(".finding");
      if (item) item.classList.add("active");
      zoomTo(gd, +btn.dataset.goto);
      gd.scrollIntoView({ block: "start", behavior: "smooth" });
    });
  });
  /* a verdict line: the charts zoomed to its span, a little wider */
  document.querySelectorAll("[data-span]").forEach(function (btn) {
    btn.addEventListener("click", function () {
      var gd = state.figures[+btn.dataset.figure || 0];
      if (!gd) return;
      var ab = btn.dataset.span.split(",").map(Number), a = ab[0], b = ab[1];
      var pad = Math.max((b - a) * 0.1, 2e-5);
      document.querySelectorAll(".v.active").forEach(function (e) { e.classList.remove("active"); });
      var item = btn.closest(".v");
      if (item) item.classList.add("active");
      Plotly.relayout(gd, { "xaxis.range": [Math.max(a - pad, 0), b + pad] });
      gd.scrollIntoView({ block: "start", behavior: "smooth" });
    });
  });
  document.querySelectorAll("[data-reset]").forEach(function (btn) {
    btn.addEventListener("click", function () {
      var gd = state.figures[+btn.dataset.figure || 0];
      var m = gd && gd.layout.meta;
      if (m) Plotly.relayout(gd, { "xaxis.range": btn.dataset.reset === "all" ? [0, m.duration_s] : m.view });
    });
  });
  /* the process selector: each process has a page of its own, next to this one */
  var proc = document.getElementById("hl-proc");
  if (proc) proc.addEventListener("change", function () { if (proc.value) window.location.href = proc.value; });
  var scheme = window.matchMedia("(prefers-color-scheme: dark)");
  var onScheme = function () {
    state.figures.forEach(function (gd) { Plotly.relayout(gd, themeUpdate(gd.layout, palette())); });
  };
  if (scheme.addEventListener) scheme.addEventListener("change", onScheme);

  Promise.all((D.figures || []).map(draw)).then(function () {
    requestAnimationFrame(function () {
      state.rendered = performance.now();
      document.body.setAttribute("data-rendered", "1");
    });
  }).catch(function (e) {
    state.errors.push(String(e));
    var box = document.getElementById("hl-error");
    if (box) { box.textContent = "The figures could not be drawn: " + e; box.hidden = false; }
    throw e;
  });
})();
