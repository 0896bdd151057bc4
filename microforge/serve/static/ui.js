/* microforge web GUI, shared pieces: API client, messages, a zoomable image viewer and charts
 * drawn by hand on <canvas>. No libraries, no network access beyond the server itself. */
"use strict";

const TOKEN_KEY = "microforge.token";
const MUTATING = new Set(["POST", "PUT", "PATCH", "DELETE"]);

function $(selector, root = document) { return root.querySelector(selector); }
function $$(selector, root = document) { return Array.from(root.querySelectorAll(selector)); }

/** Create an element: el("div", {class: "x", onclick: f}, child, "text", ...). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else if (key in node && typeof value !== "string") node[key] = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function fmt(value, digits = 2) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  if (typeof value !== "number") return String(value);
  if (Number.isInteger(value)) return value.toLocaleString("en-US");
  const abs = Math.abs(value);
  if (abs !== 0 && (abs < 0.01 || abs >= 1e5)) return value.toExponential(2);
  return value.toFixed(digits);
}

function debounce(fn, ms) {
  let timer = null;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}

/** Show a message in a .msg element: kind is "error", "info" or "ok"; empty text hides it. */
function say(target, text, kind = "info") {
  const node = typeof target === "string" ? $(target) : target;
  if (!node) return;
  node.className = `msg ${kind}`;
  node.textContent = text || "";
}

// --- API ---------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, detail) {
    super(status === 401 ? `${detail} — enter the API token at the top right` : detail);
    this.status = status;
  }
}

const api = {
  token() { return localStorage.getItem(TOKEN_KEY) || ""; },

  /** A server path ("/get_image?..." or "health") as a URL relative to the page (works under a route prefix). */
  url(path) { return new URL(String(path).replace(/^\//, ""), document.baseURI).toString(); },

  async request(method, path, { json, form, query } = {}) {
    const url = new URL(api.url(path));
    for (const [k, v] of Object.entries(query || {})) if (v !== undefined && v !== null) url.searchParams.set(k, v);
    const headers = {};
    const token = api.token();
    if (token && MUTATING.has(method)) headers.Authorization = `Bearer ${token}`;
    let body;
    if (json !== undefined) { headers["Content-Type"] = "application/json"; body = JSON.stringify(json); }
    else if (form !== undefined) body = form;
    let response;
    // A GET is retried (twice, after 0.5 s and 1 s) when the server cannot be reached or answers a
    // 5xx that is not the API's JSON: an ingress replica that died mid-request (Serve replaces it).
    for (let attempt = 0; ; attempt++) {
      const retry = method === "GET" && attempt < 2;
      try {
        response = await fetch(url, { method, headers, body });
      } catch (err) {
        if (retry) { await new Promise((r) => setTimeout(r, 500 * 2 ** attempt)); continue; }
        throw new ApiError(0, `cannot reach the server (${err.message})`);
      }
      const json = (response.headers.get("content-type") || "").includes("application/json");
      if (!(retry && response.status >= 500 && !json)) break;
      await new Promise((r) => setTimeout(r, 500 * 2 ** attempt));
    }
    const type = response.headers.get("content-type") || "";
    const data = type.includes("application/json") ? await response.json() : await response.blob();
    if (!response.ok) {
      const detail = data && data.detail ? data.detail : `${response.status} ${response.statusText}`;
      throw new ApiError(response.status, detail);
    }
    return data;
  },
  get(path, query) { return api.request("GET", path, { query }); },
  post(path, json, query) { return api.request("POST", path, { json, query }); },
  upload(path, form, query) { return api.request("POST", path, { form, query }); },
};

// --- files -------------------------------------------------------------------------------------

function download(name, content, type = "text/csv") {
  const blob = content instanceof Blob ? content : new Blob([content], { type });
  const url = URL.createObjectURL(blob);
  const a = el("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

function toCSV(rows, columns) {
  const cell = (v) => {
    const s = v === null || v === undefined ? "" : String(v);
    return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  };
  return [columns.join(","), ...rows.map((r) => columns.map((c) => cell(r[c])).join(","))].join("\n") + "\n";
}

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error("the browser cannot display this image"));
    image.src = src;
  });
}

/** The image drawn on a canvas whose RGBA pixels ``paint(px, i)`` rewrites in place. */
function repaintedCanvas(image, paint) {
  const canvas = el("canvas", { width: image.naturalWidth, height: image.naturalHeight });
  const ctx = canvas.getContext("2d");
  ctx.drawImage(image, 0, 0);
  const data = ctx.getImageData(0, 0, canvas.width, canvas.height);
  for (let i = 0; i < data.data.length; i += 4) paint(data.data, i);
  ctx.putImageData(data, 0, 0);
  return canvas;
}

/** A gray image (0-255) recoloured with a heat colormap whose alpha follows the value. */
function heatmapCanvas(image) {
  return repaintedCanvas(image, (px, i) => {
    const t = px[i] / 255;  // black -> red -> yellow -> white
    px[i] = Math.min(255, 765 * t);
    px[i + 1] = Math.min(255, Math.max(0, 765 * t - 255));
    px[i + 2] = Math.min(255, Math.max(0, 765 * t - 510));
    px[i + 3] = 40 + 190 * t;
  });
}

/** A binary mask (white = foreground) as a translucent colour layer. */
function maskCanvas(image, rgb = [60, 200, 255]) {
  return repaintedCanvas(image, (px, i) => {
    const on = px[i] > 127;
    px[i] = rgb[0]; px[i + 1] = rgb[1]; px[i + 2] = rgb[2]; px[i + 3] = on ? 110 : 0;
  });
}

// --- zoomable image viewer -----------------------------------------------------------------------

/** An image on a canvas with layers (bitmaps and polygons); wheel zooms around the cursor,
 * dragging pans, double-click fits. */
class Viewer {
  constructor(container, emptyText = "no image") {
    this.container = typeof container === "string" ? $(container) : container;
    this.canvas = el("canvas");
    this.emptyNode = el("div", { class: "empty" }, emptyText);
    this.hint = el("div", { class: "hint" }, "wheel: zoom · drag: pan · double-click: fit");
    this.container.replaceChildren(this.canvas, this.emptyNode, this.hint);
    this.image = null;
    this.layers = [];  // {image, visible}
    this.polygons = [];  // [[x, y], ...] in image pixels
    this.showPolygons = true;
    this.polygonColor = "rgba(57, 255, 106, 0.85)";
    this.scale = 1; this.ox = 0; this.oy = 0;
    this.onView = null;  // called after every zoom or pan (to link two viewers)
    this._bind();
    this.fitted = false;  // fitted while visible (a viewer in a hidden tab fits once it is shown)
    new ResizeObserver(() => (this.fitted ? this.draw() : this.fit())).observe(this.container);
  }

  _bind() {
    const c = this.canvas;
    c.addEventListener("wheel", (e) => {
      if (!this.image) return;
      e.preventDefault();
      const r = c.getBoundingClientRect();
      this.zoomAt(Math.exp(-e.deltaY * 0.0015), e.clientX - r.left, e.clientY - r.top);
    }, { passive: false });
    c.addEventListener("mousedown", (e) => {
      if (!this.image) return;
      const start = { x: e.clientX, y: e.clientY, ox: this.ox, oy: this.oy };
      this.container.classList.add("dragging");
      const move = (ev) => {
        this.ox = start.ox + ev.clientX - start.x; this.oy = start.oy + ev.clientY - start.y;
        this.draw(); this._viewChanged();
      };
      const up = () => {
        this.container.classList.remove("dragging");
        window.removeEventListener("mousemove", move); window.removeEventListener("mouseup", up);
      };
      window.addEventListener("mousemove", move); window.addEventListener("mouseup", up);
    });
    c.addEventListener("dblclick", () => this.fit());
  }

  /** Show an image (URL, data URL, HTMLImageElement or canvas); layers and polygons are cleared. */
  async setImage(source, { keepView = false } = {}) {
    const image = typeof source === "string" ? await loadImage(source) : source;
    const sameSize = this.image && this.width === (image.naturalWidth || image.width)
      && this.height === (image.naturalHeight || image.height);
    this.image = image;
    this.width = image.naturalWidth || image.width;
    this.height = image.naturalHeight || image.height;
    this.layers = [];
    this.polygons = [];
    this.emptyNode.classList.add("hidden");
    if (keepView && sameSize && this.fitted) this.draw(); else this.fit();
    return image;
  }

  clear(text) {
    this.image = null; this.layers = []; this.polygons = [];
    if (text) this.emptyNode.textContent = text;
    this.emptyNode.classList.remove("hidden");
    this.draw();
  }

  fit() {
    if (!this.image) return this.draw();
    const w = this.container.clientWidth, h = this.container.clientHeight;
    this.fitted = w > 0 && h > 0;
    this.scale = Math.min(w / this.width, h / this.height) || 1;
    this.ox = (w - this.width * this.scale) / 2;
    this.oy = (h - this.height * this.scale) / 2;
    this.draw();
    this._viewChanged();
  }

  /** Take another viewer's zoom and pan (same image size). */
  copyView(other) {
    if (!this.image || other.width !== this.width || other.height !== this.height) return;
    this.scale = other.scale; this.ox = other.ox; this.oy = other.oy;
    this.draw();
  }

  _viewChanged() { if (this.onView) this.onView(this); }

  zoomAt(factor, x, y) {
    const scale = Math.min(64, Math.max(0.02, this.scale * factor));
    this.ox = x - (x - this.ox) * (scale / this.scale);
    this.oy = y - (y - this.oy) * (scale / this.scale);
    this.scale = scale;
    this.draw();
    this._viewChanged();
  }

  draw() {
    const dpr = window.devicePixelRatio || 1;
    const w = this.container.clientWidth, h = this.container.clientHeight;
    if (this.canvas.width !== Math.round(w * dpr) || this.canvas.height !== Math.round(h * dpr)) {
      this.canvas.width = Math.round(w * dpr); this.canvas.height = Math.round(h * dpr);
    }
    const ctx = this.canvas.getContext("2d");
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    if (!this.image) return;
    ctx.setTransform(dpr * this.scale, 0, 0, dpr * this.scale, dpr * this.ox, dpr * this.oy);
    ctx.imageSmoothingEnabled = this.scale < 2;
    ctx.drawImage(this.image, 0, 0, this.width, this.height);
    for (const layer of this.layers) if (layer.visible) ctx.drawImage(layer.image, 0, 0, this.width, this.height);
    if (this.showPolygons && this.polygons.length) {
      ctx.strokeStyle = this.polygonColor;
      ctx.lineWidth = 1.25 / this.scale;
      ctx.beginPath();
      for (const poly of this.polygons) {
        ctx.moveTo(poly[0][0], poly[0][1]);
        for (let i = 1; i < poly.length; i++) ctx.lineTo(poly[i][0], poly[i][1]);
        ctx.closePath();
      }
      ctx.stroke();
    }
  }
}

/** Corners of a detection {x, y, w, h, angle (rad)}: the same order as the server's overlay. */
function detectionCorners(d) {
  const c = Math.cos(d.angle), s = Math.sin(d.angle);
  const ux = c * d.w / 2, uy = s * d.w / 2, vx = -s * d.h / 2, vy = c * d.h / 2;
  return [[d.x + ux + vx, d.y + uy + vy], [d.x - ux + vx, d.y - uy + vy],
    [d.x - ux - vx, d.y - uy - vy], [d.x + ux - vx, d.y + uy - vy]];
}

// --- charts --------------------------------------------------------------------------------------

const COLORS = ["#2f6fde", "#e8590c", "#2b8a3e", "#ae3ec9", "#c92a2a", "#1098ad"];

function niceTicks(lo, hi, count = 5) {
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) return [0, 1];
  if (hi <= lo) { hi = lo + (Math.abs(lo) || 1); }
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const ticks = [];
  for (let v = Math.floor(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(+v.toFixed(10));
  if (ticks[0] > lo) ticks.unshift(ticks[0] - step);
  if (ticks[ticks.length - 1] < hi) ticks.push(ticks[ticks.length - 1] + step);
  return ticks;
}

/** Prepare a canvas for crisp drawing at its CSS size; returns {ctx, w, h}. */
function chartContext(canvas) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 300, h = canvas.clientHeight || 180;
  canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  ctx.font = "11px system-ui, sans-serif";
  return { ctx, w, h };
}

/** Axes with ticks; returns functions mapping data to pixels. */
function drawAxes(ctx, w, h, xr, yr, { title, xLabel } = {}) {
  const pad = { l: 44, r: 10, t: title ? 20 : 8, b: xLabel ? 32 : 20 };
  const xt = niceTicks(xr[0], xr[1], 5), yt = niceTicks(yr[0], yr[1], 4);
  const x0 = xt[0], x1 = xt[xt.length - 1], y0 = yt[0], y1 = yt[yt.length - 1];
  const X = (v) => pad.l + ((v - x0) / (x1 - x0 || 1)) * (w - pad.l - pad.r);
  const Y = (v) => h - pad.b - ((v - y0) / (y1 - y0 || 1)) * (h - pad.t - pad.b);
  const label = (ticks) => {  // as many decimals as the tick step needs
    const step = ticks.length > 1 ? Math.abs(ticks[1] - ticks[0]) : 1;
    let decimals = 0;
    while (decimals < 4 && Math.abs(step * 10 ** decimals - Math.round(step * 10 ** decimals)) > 1e-6) decimals++;
    return (v) => (Math.abs(v) >= 1e5 ? v.toExponential(1) : v.toFixed(decimals));
  };
  const xl = label(xt), yl = label(yt);
  ctx.strokeStyle = "#eceef2"; ctx.fillStyle = "#667085"; ctx.lineWidth = 1;
  ctx.textAlign = "right"; ctx.textBaseline = "middle";
  for (const v of yt) {
    ctx.beginPath(); ctx.moveTo(pad.l, Y(v)); ctx.lineTo(w - pad.r, Y(v)); ctx.stroke();
    ctx.fillText(yl(v), pad.l - 4, Y(v));
  }
  ctx.textAlign = "center"; ctx.textBaseline = "top";
  for (const v of xt) ctx.fillText(xl(v), X(v), h - pad.b + 4);
  ctx.strokeStyle = "#98a2b3";
  ctx.beginPath(); ctx.moveTo(pad.l, pad.t); ctx.lineTo(pad.l, h - pad.b); ctx.lineTo(w - pad.r, h - pad.b); ctx.stroke();
  ctx.fillStyle = "#1d2330";
  if (title) { ctx.textAlign = "left"; ctx.fillText(title, pad.l, 4); }
  if (xLabel) { ctx.textAlign = "center"; ctx.fillStyle = "#667085"; ctx.fillText(xLabel, (pad.l + w - pad.r) / 2, h - 14); }
  return { X, Y };
}

function emptyChart(canvas, title, text = "no data") {
  const { ctx, w, h } = chartContext(canvas);
  ctx.fillStyle = "#1d2330"; ctx.textAlign = "left"; ctx.textBaseline = "top";
  if (title) ctx.fillText(title, 8, 4);
  ctx.fillStyle = "#98a2b3"; ctx.textAlign = "center"; ctx.textBaseline = "middle";
  ctx.fillText(text, w / 2, h / 2);
}

/** Line chart: series [{label, color?, points: [[x, y, std?], ...]}]; std draws a band. */
function lineChart(canvas, series, { title, xLabel } = {}) {
  const all = series.flatMap((s) => s.points);
  if (!all.length) return emptyChart(canvas, title);
  const { ctx, w, h } = chartContext(canvas);
  const xs = all.map((p) => p[0]);
  // Bands below zero are cut off when every value is non-negative (counts, lengths...).
  const floor = all.every((p) => p[1] >= 0) ? 0 : -Infinity;
  const lows = all.map((p) => Math.max(floor, p[1] - (p[2] || 0))), highs = all.map((p) => p[1] + (p[2] || 0));
  let xr = [Math.min(...xs), Math.max(...xs)];
  if (xr[0] === xr[1]) xr = [xr[0] - 1, xr[1] + 1];
  const yr = [Math.min(0, ...lows), Math.max(...highs) || 1];
  const { X, Y } = drawAxes(ctx, w, h, xr, yr, { title, xLabel });
  series.forEach((s, i) => {
    const color = s.color || COLORS[i % COLORS.length];
    const pts = [...s.points].sort((a, b) => a[0] - b[0]);
    if (pts.some((p) => p[2])) {
      ctx.fillStyle = color + "22";
      ctx.beginPath();
      pts.forEach((p, j) => (j ? ctx.lineTo : ctx.moveTo).call(ctx, X(p[0]), Y(p[1] + (p[2] || 0))));
      [...pts].reverse().forEach((p) => ctx.lineTo(X(p[0]), Y(Math.max(floor, p[1] - (p[2] || 0)))));
      ctx.closePath(); ctx.fill();
    }
    ctx.strokeStyle = color; ctx.fillStyle = color; ctx.lineWidth = 1.6;
    ctx.beginPath();
    pts.forEach((p, j) => (j ? ctx.lineTo : ctx.moveTo).call(ctx, X(p[0]), Y(p[1])));
    ctx.stroke();
    if (pts.length <= 60) for (const p of pts) { ctx.beginPath(); ctx.arc(X(p[0]), Y(p[1]), 2.2, 0, 2 * Math.PI); ctx.fill(); }
  });
}

/** Equal-width bins over the values' range: {edges, counts}. */
function histogramOf(values, bins = 20) {
  if (!values.length) return { edges: [], counts: [] };
  let lo = Math.min(...values), hi = Math.max(...values);
  if (hi <= lo) hi = lo + 1;
  const edges = Array.from({ length: bins + 1 }, (_, i) => lo + (i * (hi - lo)) / bins);
  const counts = new Array(bins).fill(0);
  for (const v of values) counts[Math.min(bins - 1, Math.floor(((v - lo) / (hi - lo)) * bins))]++;
  return { edges, counts };
}

function histogramChart(canvas, { edges, counts }, { title, xLabel, color = COLORS[0] } = {}) {
  if (!counts || !counts.length || !counts.some((c) => c > 0)) return emptyChart(canvas, title);
  const { ctx, w, h } = chartContext(canvas);
  const { X, Y } = drawAxes(ctx, w, h, [edges[0], edges[edges.length - 1]], [0, Math.max(...counts)], { title, xLabel });
  ctx.fillStyle = color;
  counts.forEach((c, i) => {
    if (!c) return;
    const x0 = X(edges[i]), x1 = X(edges[i + 1]);
    ctx.fillRect(x0 + 0.5, Y(c), Math.max(1, x1 - x0 - 1), Y(0) - Y(c));
  });
}

// --- ZIP -------------------------------------------------------------------------------------

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(bytes) {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** The bytes of a base64 data URL. */
function dataUrlBytes(url) {
  return Uint8Array.from(atob(url.slice(url.indexOf(",") + 1)), (ch) => ch.charCodeAt(0));
}

/** A ZIP archive of [{name, bytes: Uint8Array}], stored uncompressed (PNGs are compressed already). */
function zipBlob(files) {
  const encoder = new TextEncoder();
  const parts = [], central = [];
  let offset = 0;
  for (const file of files) {
    const name = encoder.encode(file.name), size = file.bytes.length, crc = crc32(file.bytes);
    // Shared by the local header (from byte 4) and the central record (from byte 6): version 20,
    // no flags, stored, 1980-01-01 00:00, crc, sizes, name length.
    const fields = (view, at) => {
      view.setUint16(at, 20, true); view.setUint16(at + 6, 0, true); view.setUint16(at + 8, 0x21, true);
      view.setUint32(at + 10, crc, true); view.setUint32(at + 14, size, true); view.setUint32(at + 18, size, true);
      view.setUint16(at + 22, name.length, true);
    };
    const local = new DataView(new ArrayBuffer(30));
    local.setUint32(0, 0x04034b50, true);
    fields(local, 4);
    const record = new DataView(new ArrayBuffer(46));
    record.setUint32(0, 0x02014b50, true);
    record.setUint16(4, 20, true);
    fields(record, 6);
    record.setUint32(42, offset, true);
    parts.push(local, name, file.bytes);
    central.push(record, name);
    offset += 30 + name.length + size;
  }
  const end = new DataView(new ArrayBuffer(22));
  end.setUint32(0, 0x06054b50, true);
  end.setUint16(8, files.length, true); end.setUint16(10, files.length, true);
  end.setUint32(12, central.reduce((sum, part) => sum + part.byteLength, 0), true);
  end.setUint32(16, offset, true);
  return new Blob([...parts, ...central, end], { type: "application/zip" });
}
