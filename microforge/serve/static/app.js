/* microforge web GUI: the tabs (Generate in generate.js). Every call goes to this server's HTTP API (see /docs). */
"use strict";

const state = {
  image: null,        // the current image: {name, url (browser-displayable), file, width, height}
  models: [],         // /available_models
  selection: {},      // the server's selected models
  started: new Set(), // tabs initialised
};

// ================================================================ tabs, token, health ==========

const TABS = ["synthesis", "inference", "generate", "colorize", "preprocess", "timelapse", "live", "system"];
// generate: generate.js; colorize: colorize.js
const onShow = {};  // tab -> function called each time it is shown

function showTab(name) {
  if (!TABS.includes(name)) name = TABS[0];
  for (const t of TABS) {
    $(`#tab-${t}`).classList.toggle("active", t === name);
    $(`#tabs button[data-tab=${t}]`).classList.toggle("active", t === name);
  }
  if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
  state.tab = name;
  if (onShow[name]) onShow[name](!state.started.has(name));
  state.started.add(name);
}

function initChrome() {
  for (const button of $$("#tabs button")) button.addEventListener("click", () => showTab(button.dataset.tab));
  window.addEventListener("hashchange", () => showTab(location.hash.slice(1)));
  const input = $("#token");
  input.value = api.token();
  const save = () => {
    if (input.value.trim()) localStorage.setItem(TOKEN_KEY, input.value.trim());
    else localStorage.removeItem(TOKEN_KEY);
    $("#token-save").textContent = "Saved";
    setTimeout(() => { $("#token-save").textContent = "Save"; }, 1200);
  };
  $("#token-form").addEventListener("submit", (e) => { e.preventDefault(); save(); });
  $("#token-clear").addEventListener("click", () => { input.value = ""; localStorage.removeItem(TOKEN_KEY); });
  pollHealth();
  setInterval(pollHealth, 10000);
}

async function pollHealth() {
  const dot = $("#health-dot");
  try {
    const health = await api.get("health");
    dot.className = health.status === "ok" ? "ok" : "degraded";
    dot.textContent = `${health.status} · ${health.device}`;
  } catch (err) {
    dot.className = "down";
    dot.textContent = "unreachable";
  }
}

// ================================================================ shared: models, images =======

async function loadModels() {
  const data = await api.get("available_models?task=detect");  // the models the Detector runs
  state.models = data.models;
  state.selection = data.selected || {};
  for (const select of [$("#model-select"), $("#tl-model")]) {
    const keep = select.value;
    select.replaceChildren(...data.models.map((m) => el("option", { value: m.id }, `${m.name} · ${m.type}`)));
    select.value = select.id === "model-select" ? (state.selection.detector || data.models[0].id)
      : (keep && data.models.some((m) => m.id === keep) ? keep : state.selection.detector || data.models[0].id);
  }
  showModelInfo();
}

function modelById(id) { return state.models.find((m) => m.id === id); }

function showModelInfo(info) {
  const model = modelById($("#model-select").value);
  const parts = model ? [`id ${model.id}`, model.type === "segmentation" ? "segmentation U-Net: mask and heatmap available" : model.type] : [];
  if (info && info.metrics && info.metrics.val_dice !== undefined) parts.push(`val Dice ${fmt(info.metrics.val_dice, 3)}`);
  $("#model-info").textContent = parts.join(" · ");
  const seg = model && model.type === "segmentation";
  for (const id of ["#infer-show-mask", "#infer-show-heat"]) {
    $(id).disabled = !seg;
    $(id).parentElement.title = seg ? "" : "segmentation models only";
  }
}

/** Upload a file to /upload and make it the current image (shared by Inference and Preprocess). */
async function uploadImage(file) {
  const form = new FormData();
  form.append("file", file, file.name);
  const saved = await api.upload("upload", form);
  let url = URL.createObjectURL(file);
  try {
    await loadImage(url);
  } catch {  // e.g. TIFF or 16-bit: ask the server for a displayable JPEG of it
    URL.revokeObjectURL(url);
    url = (await api.post("preproc_preview", { image_name: saved.name })).overlay_b64;
  }
  state.image = { name: saved.name, url, file, width: saved.width, height: saved.height };
  $("#pre-image").textContent = `${saved.name} (${saved.width}×${saved.height})`;
  return state.image;
}

// ================================================================ Synthesis ====================

const GROUPS = [
  ["Canvas", /^(width|height|channels)$/],
  ["Growth stage", /^stage_/],
  ["Rods", /^(rods?_|n_rods|taper|min_width|cross_soft|shadow|fused)/],
  ["Background", /^(bg_|vignette|tilt|illum|relief)/],
  ["Ghosts", /^ghost/],
  ["Debris", /^debris/],
  ["Scale bar", /^scalebar/],
  ["Finish", /^blur_sigma$/],
];
const HIDDEN_FIELDS = new Set(["parallel_workers"]);  // documented as ignored
const synth = { fields: {}, rows: [], nextRow: 1, job: null, timer: null };

function numberInput(spec, integer) {
  const attrs = { type: "number", step: integer ? "1" : "any" };
  if (spec.minimum !== undefined) attrs.min = spec.minimum;
  if (spec.exclusiveMinimum !== undefined) attrs.min = spec.exclusiveMinimum;
  if (spec.maximum !== undefined) attrs.max = spec.maximum;
  return el("input", attrs);
}

function parseNumber(text, integer, name) {
  const value = integer ? Number.parseInt(text, 10) : Number.parseFloat(text);
  if (text.trim() === "" || Number.isNaN(value)) throw new Error(`${name}: enter a number`);
  return value;
}

/** A form field for one JSON-schema property: {node, get(), set(value)}. */
function schemaField(name, spec) {
  const label = el("label", { title: name }, spec.title || name);
  const help = spec.description ? el("div", { class: "help" }, spec.description) : null;
  let control, get, set;
  const nullable = spec.anyOf && spec.anyOf.some((s) => s.type === "null");
  const base = nullable ? spec.anyOf.find((s) => s.type !== "null") : spec;
  if (spec.enum) {
    control = el("select", {}, spec.enum.map((v) => el("option", { value: JSON.stringify(v) }, String(v))));
    get = () => JSON.parse(control.value);
    set = (v) => { control.value = JSON.stringify(v); };
  } else if (base.type === "boolean") {
    control = el("input", { type: "checkbox" });
    get = () => control.checked;
    set = (v) => { control.checked = !!v; };
  } else if (base.type === "integer" || base.type === "number") {
    const integer = base.type === "integer";
    control = numberInput(spec, integer);
    if (nullable) control.placeholder = "none";
    get = () => (nullable && control.value.trim() === "" ? null : parseNumber(control.value, integer, name));
    set = (v) => { control.value = v === null || v === undefined ? "" : v; };
  } else if (base.type === "array" && base.prefixItems && base.prefixItems.length === 2) {
    const integer = base.prefixItems.every((p) => p.type === "integer");
    const lo = numberInput({}, integer), hi = numberInput({}, integer);
    control = el("div", { class: "pair" }, lo, hi);
    get = () => [parseNumber(lo.value, integer, name), parseNumber(hi.value, integer, name)];
    set = (v) => { lo.value = v[0]; hi.value = v[1]; };
  } else if (base.type === "array") {
    const numeric = base.items && ["number", "integer"].includes(base.items.type);
    control = el("input", { type: "text", placeholder: "comma-separated" });
    get = () => {
      const parts = control.value.split(",").map((s) => s.trim()).filter((s) => s !== "");
      return numeric ? parts.map((s) => parseNumber(s, base.items.type === "integer", name)) : parts;
    };
    set = (v) => { control.value = (v || []).join(", "); };
  } else {
    control = el("input", { type: "text", placeholder: nullable ? "none" : "" });
    get = () => (nullable && control.value.trim() === "" ? null : control.value);
    set = (v) => { control.value = v === null || v === undefined ? "" : v; };
  }
  const node = el("div", { class: "field", "data-name": name }, label, control, help);
  return { node, get, set };
}

function buildSynthForm(schema) {
  const groups = new Map(GROUPS.map(([title]) => [title, []]));
  groups.set("Other", []);
  for (const [name, spec] of Object.entries(schema.properties)) {
    if (HIDDEN_FIELDS.has(name)) continue;
    const field = schemaField(name, spec);
    synth.fields[name] = field;
    const group = (GROUPS.find(([, re]) => re.test(name)) || ["Other"])[0];
    groups.get(group).push(field.node);
  }
  const form = $("#synth-form");
  form.replaceChildren();
  let first = true;
  for (const [title, nodes] of groups) {
    if (!nodes.length) continue;
    form.append(el("details", { open: first }, el("summary", {}, `${title} (${nodes.length})`),
      el("div", { class: "fields" }, nodes)));
    first = false;
  }
}

function setSynthConfig(config) {
  for (const [name, field] of Object.entries(synth.fields)) if (name in config) field.set(config[name]);
}

/** The form's config; throws naming the first field that does not parse. */
function getSynthConfig() {
  const config = {};
  for (const field of $$("#synth-form .field.invalid")) field.classList.remove("invalid");
  for (const [name, field] of Object.entries(synth.fields)) {
    try {
      config[name] = field.get();
    } catch (err) {
      field.node.classList.add("invalid");
      field.node.closest("details").open = true;
      field.node.scrollIntoView({ block: "center" });
      throw err;
    }
  }
  return config;
}

function markInvalidFromDetail(detail) {
  for (const name of Object.keys(synth.fields)) {
    if (detail.includes(name)) {
      const node = synth.fields[name].node;
      node.classList.add("invalid");
      node.closest("details").open = true;
    }
  }
}

async function loadSynthPresets(selected) {
  const data = await api.get("synth_presets");
  const select = $("#synth-preset");
  select.replaceChildren(
    ...(data.user.length ? [el("optgroup", { label: "saved" }, data.user.map((n) => el("option", { value: n }, n)))] : []),
    el("optgroup", { label: "shipped" }, data.builtin.map((n) => el("option", { value: n }, n))));
  if (selected) select.value = selected;
}

const tToLambda = (t) => 10 ** (2 * t - 1);

function addPreviewRow(t = 0.5) {
  const id = `row${synth.nextRow++}`;
  const slider = el("input", { type: "range", min: "0", max: "1", step: "0.01", value: String(t), class: "grow" });
  const tLabel = el("span", { class: "mono" });
  const seed = el("input", { type: "number", min: "0", placeholder: "random", style: "width:110px" });
  const info = el("div", { class: "small muted" });
  const container = el("div", { class: "viewer" });
  const row = { id, slider, seed, info, busy: false };
  const updateLabel = () => { tLabel.textContent = `t ${Number(slider.value).toFixed(2)} · λ ${fmt(tToLambda(Number(slider.value)), 2)}`; };
  updateLabel();
  slider.addEventListener("input", updateLabel);
  slider.addEventListener("change", () => renderRow(row));
  seed.addEventListener("change", () => renderRow(row));
  const node = el("div", { class: "preview-row", "data-row": id },
    el("div", { class: "controls" },
      el("div", { class: "row" }, tLabel),
      el("div", { class: "row" }, slider),
      el("div", { class: "row" }, el("span", { class: "small" }, "seed"), seed,
        el("button", { class: "secondary", title: "new random seed", onclick: () => { seed.value = ""; renderRow(row); } }, "New")),
      el("div", { class: "row" },
        el("button", { class: "render", onclick: () => renderRow(row) }, "Render"),
        el("button", { class: "secondary", onclick: () => removePreviewRow(row) }, "Remove")),
      info),
    container);
  $("#synth-rows").append(node);
  row.node = node;
  row.viewer = new Viewer(container, "press Render");
  synth.rows.push(row);
  return row;
}

function removePreviewRow(row) {
  synth.rows = synth.rows.filter((r) => r !== row);
  row.node.remove();
}

async function showPreview(row, result) {
  await row.viewer.setImage(result.image_b64, { keepView: true });
  row.viewer.polygons = (result.obbs || []).map((o) => o.corners);
  row.viewer.showPolygons = $("#synth-boxes").checked;
  row.viewer.draw();
  row.seed.value = result.seed_used;
  const t = result.timings || {};
  row.info.textContent = `${result.width}×${result.height} px · ${(result.obbs || []).length} boxes · `
    + `render ${fmt(t.generate_s, 2)} s, encode ${fmt(t.encode_s, 3)} s`;
  row.node.dataset.rendered = "1";
}

async function renderRow(row) {
  let config;
  try { config = getSynthConfig(); } catch (err) { return say("#synth-preview-msg", err.message, "error"); }
  const body = { t: Number(row.slider.value), config, return_obbs: true, quality: Number($("#synth-quality").value) || 85 };
  if (row.seed.value !== "") body.seed = Number(row.seed.value);
  row.info.textContent = "rendering…";
  const started = performance.now();
  try {
    const result = await api.post("synth_preview", body);
    await showPreview(row, result);
    row.info.textContent += ` · round trip ${fmt((performance.now() - started) / 1000, 2)} s`;
    say("#synth-preview-msg", "");
  } catch (err) {
    row.info.textContent = "";
    say("#synth-preview-msg", err.message, "error");
    markInvalidFromDetail(err.message);
  }
}

async function renderAllRows() {
  if (!synth.rows.length) addPreviewRow();
  let config;
  try { config = getSynthConfig(); } catch (err) { return say("#synth-preview-msg", err.message, "error"); }
  const rows = synth.rows.map((r) => ({ id: r.id, t: Number(r.slider.value), ...(r.seed.value !== "" ? { seed: Number(r.seed.value) } : {}) }));
  say("#synth-preview-msg", `rendering ${rows.length} previews…`, "info");
  try {
    const data = await api.post("synth_preview_bulk", { rows, config, return_obbs: true, quality: Number($("#synth-quality").value) || 85 });
    for (const row of synth.rows) {
      if (!(row.id in data.images)) continue;
      const [width, height] = data.sizes[row.id];
      await showPreview(row, { image_b64: data.images[row.id], obbs: data.obbs[row.id], timings: data.timings[row.id],
        seed_used: data.seeds[row.id], width, height });
    }
    say("#synth-preview-msg", `${rows.length} previews in ${fmt(data.total_s, 2)} s on ${data.replicas.length} renderer replica(s)`, "ok");
  } catch (err) {
    say("#synth-preview-msg", err.message, "error");
    markInvalidFromDetail(err.message);
  }
}

async function startBatch() {
  let config;
  try { config = getSynthConfig(); } catch (err) { return say("#batch-msg", err.message, "error"); }
  const body = { config, n_images: Number($("#batch-n").value), out_dir: $("#batch-out").value.trim(),
    seed_base: Number($("#batch-seed").value) || 0 };
  const lo = $("#batch-lam-lo").value, hi = $("#batch-lam-hi").value;
  if (lo !== "" || hi !== "") body.lambda_range = [Number(lo), Number(hi)];
  try {
    const job = await api.post("synth_batch", body);
    synth.job = job.job_id;
    $("#batch-cancel").disabled = false;
    $("#batch-start").disabled = true;
    $("#batch-progress").className = "progress";
    say("#batch-msg", `job ${job.job_id.slice(0, 8)} → ${job.out_dir}`, "info");
    pollBatch();
  } catch (err) {
    say("#batch-msg", err.message, "error");
  }
}

async function pollBatch() {
  clearTimeout(synth.timer);
  if (!synth.job) return;
  try {
    const s = await api.get("synth_batch_status", { job_id: synth.job });
    $("#batch-progress > div").style.width = `${s.percent}%`;
    $("#batch-state").textContent = `${s.state}: ${s.done}/${s.total} images · ${fmt(s.images_per_s, 2)} images/s · ${fmt(s.elapsed_s, 1)} s`;
    if (["done", "failed", "cancelled"].includes(s.state)) {
      synth.job = null;
      $("#batch-cancel").disabled = true;
      $("#batch-start").disabled = false;
      $("#batch-progress").className = `progress ${s.state === "done" ? "done" : "failed"}`;
      if (s.state === "done") {
        say("#batch-msg", `dataset written to ${s.out_dir} (analyse ${s.out_dir}/images in the Time-lapse tab)`, "ok");
        $("#tl-path").value = `${s.out_dir}/images`;
      } else {
        say("#batch-msg", `${s.state}${s.errors.length ? ": " + s.errors.join("; ") : ""}`, s.state === "failed" ? "error" : "info");
      }
      return;
    }
  } catch (err) {
    say("#batch-msg", err.message, "error");
  }
  synth.timer = setTimeout(pollBatch, 1000);
}

async function cancelBatch() {
  if (!synth.job) return;
  try {
    await api.post("synth_batch_cancel", { job_id: synth.job });
    pollBatch();
  } catch (err) { say("#batch-msg", err.message, "error"); }
}

async function initSynthesis() {
  const [{ schema }, defaults] = await Promise.all([api.get("synth_config_schema"), api.get("synth_default_config")]);
  buildSynthForm(schema);
  setSynthConfig(defaults.config);
  say("#synth-config-msg", `loaded the ${defaults.source === "standard" ? "saved standard" : "default"} config`, "info");
  await loadSynthPresets();
  for (const t of [0.2, 0.5, 0.8]) addPreviewRow(t);

  $("#synth-preset-load").addEventListener("click", async () => {
    const name = $("#synth-preset").value;
    try {
      const data = await api.get("synth_get_preset", { name });
      setSynthConfig(data.config);
      say("#synth-config-msg", `loaded preset ${name} (${data.source})`, "ok");
    } catch (err) { say("#synth-config-msg", err.message, "error"); }
  });
  $("#synth-default").addEventListener("click", async () => {
    const data = await api.get("synth_default_config");
    setSynthConfig(data.config);
    say("#synth-config-msg", `loaded the ${data.source === "standard" ? "saved standard" : "default"} config`, "ok");
  });
  $("#synth-preset-save").addEventListener("click", async () => {
    const name = $("#synth-preset-name").value.trim();
    if (!name) return say("#synth-config-msg", "enter a preset name", "error");
    try {
      await api.post("synth_save_preset", { name, config: getSynthConfig() });
      await loadSynthPresets(name);
      say("#synth-config-msg", `saved preset ${name}`, "ok");
    } catch (err) { say("#synth-config-msg", err.message, "error"); markInvalidFromDetail(err.message); }
  });
  $("#synth-standard-save").addEventListener("click", async () => {
    try {
      await api.post("synth_save_standard", { config: getSynthConfig() });
      say("#synth-config-msg", "saved as the standard config", "ok");
    } catch (err) { say("#synth-config-msg", err.message, "error"); markInvalidFromDetail(err.message); }
  });
  $("#synth-filter").addEventListener("input", (e) => {
    const q = e.target.value.trim().toLowerCase();
    for (const details of $$("#synth-form details")) {
      let shown = 0;
      for (const field of $$(".field", details)) {
        const hit = !q || field.dataset.name.includes(q) || field.textContent.toLowerCase().includes(q);
        field.classList.toggle("hidden", !hit);
        shown += hit;
      }
      details.classList.toggle("hidden", shown === 0);
      if (q) details.open = shown > 0;
    }
  });
  $("#synth-expand").addEventListener("click", () => {
    const all = $$("#synth-form details");
    const open = !all.every((d) => d.open);
    all.forEach((d) => { d.open = open; });
    $("#synth-expand").textContent = open ? "Collapse all" : "Expand all";
  });
  $("#synth-boxes").addEventListener("change", (e) => {
    for (const row of synth.rows) { row.viewer.showPolygons = e.target.checked; row.viewer.draw(); }
  });
  $("#synth-add-row").addEventListener("click", () => addPreviewRow(Math.random()));
  $("#synth-render-all").addEventListener("click", renderAllRows);
  $("#batch-start").addEventListener("click", startBatch);
  $("#batch-cancel").addEventListener("click", cancelBatch);
}

// ================================================================ Inference ====================

const infer = { viewer: null, result: null, prediction: null };

function statBox(key, value) { return el("div", { class: "stat" }, el("div", { class: "v" }, value), el("div", { class: "k" }, key)); }

function showDetectionStats(stats, target = "#infer-stats", charts = ["#hist-length", "#hist-width", "#hist-aspect"]) {
  $(target).replaceChildren(statBox("objects", fmt(stats.count)), statBox("mean length (px)", fmt(stats.mean_length, 1)),
    statBox("mean width (px)", fmt(stats.mean_width, 1)), statBox("mean aspect ratio", fmt(stats.mean_aspect_ratio, 2)));
  histogramChart($(charts[0]), histogramOf(stats.lengths), { title: "length (px)", color: COLORS[0] });
  histogramChart($(charts[1]), histogramOf(stats.widths), { title: "width (px)", color: COLORS[1] });
  histogramChart($(charts[2]), histogramOf(stats.aspect_ratios), { title: "aspect ratio (L/W)", color: COLORS[2] });
}

function applyInferenceLayers() {
  const v = infer.viewer;
  v.showPolygons = $("#infer-show-boxes").checked;
  if (v.layers[0]) v.layers[0].visible = $("#infer-show-heat").checked;
  if (v.layers[1]) v.layers[1].visible = $("#infer-show-mask").checked;
  v.draw();
}

async function runInference() {
  if (!state.image) return;
  const modelId = $("#model-select").value;
  const model = modelById(modelId);
  say("#infer-msg", `running ${model ? model.name : modelId}…`, "info");
  try {
    const result = await api.post("inference", { image_name: state.image.name, model_id: modelId });
    infer.result = result;
    await infer.viewer.setImage(state.image.url, { keepView: true });
    infer.viewer.polygons = result.detections.map(detectionCorners);
    infer.viewer.layers = [];
    infer.prediction = null;
    $("#infer-dl-mask").classList.add("hidden");
    if (model && model.type === "segmentation") {
      const form = new FormData();
      form.append("file", state.image.file, state.image.file.name);
      const scale = $("#infer-scale").value.trim();
      const pred = await api.upload("predict/json", form, scale ? { scale } : undefined);
      const trained = pred.model_info && pred.model_info.scale;
      $("#infer-scale-hint").textContent = trained
        ? `trained at ${trained.image_size} px, silhouette radius ~${fmt(trained.silhouette_radius_px, 0)} px, dots ~${fmt(trained.dot_radius_px, 1)} px`
        : "";
      infer.prediction = pred;
      const [prob, mask] = await Promise.all([loadImage(pred.prob_b64), loadImage(pred.mask_b64)]);
      infer.viewer.layers = [{ image: heatmapCanvas(prob), visible: false }, { image: maskCanvas(mask), visible: false }];
      const link = $("#infer-dl-mask");
      link.href = pred.mask_b64;
      link.classList.remove("hidden");
    }
    applyInferenceLayers();
    showDetectionStats(result.stats);
    const link = $("#infer-dl-overlay");
    link.href = api.url(result.overlay_url);
    link.download = `${state.image.name.split("/").pop().replace(/\.[^.]+$/, "")}_overlay.jpg`;
    link.classList.remove("hidden");
    $("#infer-dl-csv").disabled = false;
    $("#infer-rerun").disabled = false;
    const t = result.timings;
    say("#infer-msg", `${result.stats.count} objects · ${result.model_info.name || modelId} · inference ${fmt(t.infer_s, 2)} s, total ${fmt(t.total_s, 2)} s`
      + (infer.prediction ? ` · mask foreground ${fmt(100 * infer.prediction.stats.foreground_fraction, 1)} %` : ""), "ok");
  } catch (err) {
    say("#infer-msg", err.message, "error");
  }
}

async function handleInferenceFile(file) {
  if (!file) return;
  say("#infer-msg", `uploading ${file.name}…`, "info");
  try {
    await uploadImage(file);
    infer.viewer.clear();
    await infer.viewer.setImage(state.image.url);
    await runInference();
  } catch (err) {
    say("#infer-msg", err.message, "error");
  }
}

async function runDelineationDemo() {
  const query = { num_dots: $("#demo-dots").value, jitter: $("#demo-jitter").value };
  if ($("#demo-noise").value) query.noise_type = $("#demo-noise").value;
  if ($("#demo-scale").value !== "") query.noise_scale = $("#demo-scale").value;
  say("#demo-msg", "synthesising and predicting…", "info");
  try {
    const d = await api.get("demo", query);
    $("#demo-images").replaceChildren(...[["input", d.input_b64], ["probability", d.prob_b64], ["predicted mask", d.mask_b64],
      ["true mask", d.true_mask_b64]].map(([label, src]) => el("figure", { style: "margin:0" },
      el("img", { src, alt: label, style: "width:100%;image-rendering:pixelated;border-radius:4px" }),
      el("figcaption", { class: "small muted" }, label))));
    say("#demo-msg", `Dice ${fmt(d.dice, 3)} · ${d.num_dots} dots · ${d.noise_type} noise, SNR ${fmt(d.snr_db, 1)} dB · `
      + `model ${d.model_info.id} · ${fmt(d.timings.total_s, 2)} s`, "ok");
  } catch (err) { say("#demo-msg", err.message, "error"); }
}

function initInference() {
  $("#demo-run").addEventListener("click", runDelineationDemo);
  infer.viewer = new Viewer("#infer-viewer", "upload an image");
  for (const id of ["#hist-length", "#hist-width", "#hist-aspect"]) emptyChart($(id), { "#hist-length": "length (px)", "#hist-width": "width (px)", "#hist-aspect": "aspect ratio (L/W)" }[id]);
  $("#infer-file").addEventListener("change", (e) => handleInferenceFile(e.target.files[0]));
  const drop = $("#infer-viewer");
  drop.addEventListener("dragover", (e) => e.preventDefault());
  drop.addEventListener("drop", (e) => { e.preventDefault(); handleInferenceFile(e.dataTransfer.files[0]); });
  $("#model-select").addEventListener("change", async (e) => {
    try {
      const data = await api.post("load_model", { model_id: e.target.value });
      state.selection = data.selected;
      showModelInfo(data.model_info);
      say("#model-msg", `using ${data.model_info.name || e.target.value}`, "ok");
      if (state.image) runInference();
    } catch (err) { say("#model-msg", err.message, "error"); }
  });
  for (const id of ["#infer-show-boxes", "#infer-show-mask", "#infer-show-heat"]) $(id).addEventListener("change", applyInferenceLayers);
  $("#infer-rerun").addEventListener("click", runInference);
  $("#infer-dl-csv").addEventListener("click", () => {
    const rows = infer.result.detections.map((d, i) => ({ index: i, ...d, angle_deg: (d.angle * 180) / Math.PI,
      length: Math.max(d.w, d.h), width: Math.min(d.w, d.h) }));
    download("detections.csv", toCSV(rows, ["index", "x", "y", "w", "h", "angle", "angle_deg", "length", "width", "confidence", "class"]));
  });
}

// ================================================================ Preprocess ===================

const pre = { a: null, b: null, cmpA: null, cmpB: null };
const PIPELINE_CONTROLS = {
  desaturate: ["#pre-desaturate", Number], clahe_enable: ["#pre-clahe", "check"], clahe_clip_limit: ["#pre-clip", Number],
  clahe_tile_grid: ["#pre-tile", Number], equalize: ["#pre-equalize", "check"], gradient_strength: ["#pre-gradient", Number],
  invert: ["#pre-invert", "check"],
};
const DEFAULT_PIPELINE = { desaturate: 0, clahe_enable: false, clahe_clip_limit: 2, clahe_tile_grid: 8, equalize: false, gradient_strength: 0, invert: false };

function getPipeline() {
  const pipeline = {};
  for (const [key, [id, kind]] of Object.entries(PIPELINE_CONTROLS)) pipeline[key] = kind === "check" ? $(id).checked : Number($(id).value);
  return pipeline;
}

function setPipeline(pipeline) {
  for (const [key, [id, kind]] of Object.entries(PIPELINE_CONTROLS)) {
    if (!(key in pipeline)) continue;
    if (kind === "check") $(id).checked = !!pipeline[key]; else $(id).value = pipeline[key];
  }
  updatePipelineLabels();
}

function updatePipelineLabels() {
  for (const span of $$("#pre-controls span[data-for]")) span.textContent = $(`#${span.dataset.for}`).value;
}

async function showOriginal() {
  if (!state.image) return;
  if (pre.a.image && pre.shown === state.image.name) return;
  await pre.a.setImage(state.image.url);
  pre.shown = state.image.name;
  pre.b.clear("processing…");
}

const previewPipeline = debounce(async () => {
  if (!state.image) return say("#pre-msg", "upload an image first", "error");
  try {
    await showOriginal();
    const data = await api.post("preproc_preview", { image_name: state.image.name, pipeline: getPipeline() });
    await pre.b.setImage(data.overlay_b64, { keepView: true });
    pre.b.copyView(pre.a);
    say("#pre-msg", "");
  } catch (err) { say("#pre-msg", err.message, "error"); }
}, 250);

function compareTable(original, processed) {
  const rows = [["objects", "count", 0], ["mean length (px)", "mean_length", 1], ["mean width (px)", "mean_width", 1],
    ["mean aspect ratio", "mean_aspect_ratio", 2], ["mean area (px²)", "mean_area", 0]];
  return el("table", {},
    el("tr", {}, el("th", {}, ""), el("th", { class: "num" }, "original"), el("th", { class: "num" }, "processed")),
    rows.map(([label, key, d]) => el("tr", {}, el("td", {}, label), el("td", { class: "num" }, fmt(original.stats[key], d)),
      el("td", { class: "num" }, fmt(processed.stats[key], d)))));
}

async function loadPreprocPresets(selected) {
  const data = await api.get("preproc_presets");
  $("#pre-preset").replaceChildren(...data.presets.map((n) => el("option", { value: n }, n)));
  if (selected) $("#pre-preset").value = selected;
}

function initPreprocess() {
  pre.a = new Viewer("#pre-viewer-a", "no image");
  pre.b = new Viewer("#pre-viewer-b", "no image");
  pre.cmpA = new Viewer("#pre-cmp-a", "original");
  pre.cmpB = new Viewer("#pre-cmp-b", "processed");
  pre.a.onView = (v) => pre.b.copyView(v);
  pre.b.onView = (v) => pre.a.copyView(v);
  pre.cmpA.onView = (v) => pre.cmpB.copyView(v);
  pre.cmpB.onView = (v) => pre.cmpA.copyView(v);
  updatePipelineLabels();
  for (const [id] of Object.values(PIPELINE_CONTROLS)) {
    $(id).addEventListener("input", () => { updatePipelineLabels(); previewPipeline(); });
  }
  $("#pre-file").addEventListener("change", async (e) => {
    const file = e.target.files[0];
    if (!file) return;
    try { await uploadImage(file); previewPipeline(); } catch (err) { say("#pre-msg", err.message, "error"); }
  });
  $("#pre-reset").addEventListener("click", () => { setPipeline(DEFAULT_PIPELINE); previewPipeline(); });
  $("#pre-compare").addEventListener("click", async () => {
    if (!state.image) return say("#pre-msg", "upload an image first", "error");
    say("#pre-msg", "running inference on both…", "info");
    try {
      const data = await api.post("inference_compare", { image_name: state.image.name, pipeline: getPipeline(), model_id: $("#model-select").value || null });
      $("#pre-compare-table").replaceChildren(compareTable(data.original, data.processed));
      await Promise.all([pre.cmpA.setImage(api.url(data.original.overlay_url), { keepView: true }),
        pre.cmpB.setImage(api.url(data.processed.overlay_url), { keepView: true })]);
      pre.cmpB.copyView(pre.cmpA);
      say("#pre-msg", `compared in ${fmt(data.timings.total_s, 2)} s with ${data.model_info.name || "the selected model"}`, "ok");
    } catch (err) { say("#pre-msg", err.message, "error"); }
  });
  $("#pre-save").addEventListener("click", async () => {
    if (!state.image) return say("#pre-msg", "upload an image first", "error");
    try {
      const data = await api.post("save_preprocessed", { image_name: state.image.name, pipeline: getPipeline() });
      const msg = $("#pre-msg");
      say(msg, `saved ${data.name} `, "ok");
      msg.append(el("a", { href: api.url(data.url), download: data.name.split("/").pop() }, "download"));
    } catch (err) { say("#pre-msg", err.message, "error"); }
  });
  $("#pre-preset-save").addEventListener("click", async () => {
    const name = $("#pre-preset-name").value.trim();
    if (!name) return say("#pre-msg", "enter a preset name", "error");
    try {
      await api.post("preproc_save_preset", { name, pipeline: getPipeline() });
      await loadPreprocPresets(name);
      say("#pre-msg", `saved preset ${name}`, "ok");
    } catch (err) { say("#pre-msg", err.message, "error"); }
  });
  $("#pre-preset-load").addEventListener("click", async () => {
    const name = $("#pre-preset").value;
    if (!name) return;
    try {
      const data = await api.get("preproc_get_preset", { name });
      setPipeline(data.pipeline);
      say("#pre-msg", `loaded preset ${name}`, "ok");
      if (state.image) previewPipeline();
    } catch (err) { say("#pre-msg", err.message, "error"); }
  });
}

// ================================================================ Time-lapse ===================

const tl = { job: null, timer: null, result: null };
const IMAGE_EXT = /\.(png|jpe?g|tiff?|bmp)$/i;

function chartTimelapse(result) {
  const per = result.per_time;
  const series = (key) => per.map((p) => [p.time, p[`mean_${key}`], p[`std_${key}`]]);
  lineChart($("#tl-chart-count"), [{ label: "count", points: per.map((p) => [p.time, p.count]) }], { title: "objects per frame", xLabel: "time" });
  // Medians (solid) next to mean ± std: a few merged or split rods move the mean, not the median.
  const median = (key) => per.map((p) => [p.time, p[`median_${key}`] ?? p[`mean_${key}`]]);
  lineChart($("#tl-chart-length"), [{ label: "length", points: series("length"), color: COLORS[0] },
    { label: "median length", points: median("length"), color: COLORS[3] }], { title: "length (px): median, mean ± std", xLabel: "time" });
  lineChart($("#tl-chart-width"), [{ label: "width", points: series("width"), color: COLORS[1] },
    { label: "median width", points: median("width"), color: COLORS[3] }], { title: "width (px): median, mean ± std", xLabel: "time" });
  lineChart($("#tl-chart-aspect"), [{ label: "aspect", points: series("aspect_ratio"), color: COLORS[2] }], { title: "aspect ratio, mean ± std", xLabel: "time" });
  const slider = $("#tl-time");
  slider.max = Math.max(0, per.length - 1);
  slider.value = 0;
  showTimeHistograms();
}

function showTimeHistograms() {
  const per = tl.result ? tl.result.per_time : [];
  const entry = per[Number($("#tl-time").value)];
  if (!entry) return;
  $("#tl-time-label").textContent = `t = ${fmt(entry.time, 2)} (${entry.frames} frame${entry.frames === 1 ? "" : "s"})`;
  histogramChart($("#tl-hist-length"), entry.hist_length, { title: "length (px)", color: COLORS[0] });
  histogramChart($("#tl-hist-width"), entry.hist_width, { title: "width (px)", color: COLORS[1] });
  histogramChart($("#tl-hist-aspect"), entry.hist_aspect_ratio, { title: "aspect ratio", color: COLORS[2] });
}

function imagesTable(images) {
  const shown = images.slice(0, 500);
  const head = el("tr", {}, ["time", "frame", "objects", "mean L", "mean W", "mean AR", "overlay"].map((h, i) => el("th", { class: i > 1 && i < 6 ? "num" : "" }, h)));
  const rows = shown.map((r) => r.error
    ? el("tr", {}, el("td", {}, fmt(r.time, 2)), el("td", { class: "mono" }, r.name), el("td", { colspan: "5", class: "small", style: "color:var(--bad)" }, r.error))
    : el("tr", {}, el("td", { class: "num" }, fmt(r.time, 2)), el("td", { class: "mono" }, r.name),
      el("td", { class: "num" }, fmt(r.stats.count)), el("td", { class: "num" }, fmt(r.stats.mean_length, 1)),
      el("td", { class: "num" }, fmt(r.stats.mean_width, 1)), el("td", { class: "num" }, fmt(r.stats.mean_aspect_ratio, 2)),
      el("td", {}, el("a", { href: api.url(r.overlay_url), target: "_blank" }, el("img", { class: "thumb", loading: "lazy", src: api.url(r.overlay_url), alt: r.name })))));
  const table = el("table", {}, head, rows);
  return images.length > shown.length ? [table, el("div", { class: "small muted" }, `first ${shown.length} of ${images.length} frames shown; the CSV has all`)] : [table];
}

async function inspectDataset() {
  const path = $("#tl-path").value.trim();
  if (!path) return say("#tl-msg", "enter or upload a dataset path", "error");
  try {
    const d = await api.get("outputs_inspect_dataset", { dataset_path: path });
    $("#tl-inspect-out").replaceChildren(
      el("span", { class: "badge ok" }, `${d.readable} readable`), " ",
      el("span", { class: d.zero_size ? "badge warn" : "badge" }, `${d.zero_size} empty`), " ",
      el("span", { class: d.unreadable ? "badge bad" : "badge" }, `${d.unreadable} unreadable`),
      el("div", { class: "small muted" }, `${d.total} image files in ${path}`));
    say("#tl-msg", "");
  } catch (err) { say("#tl-msg", err.message, "error"); }
}

async function pollTimelapse() {
  clearTimeout(tl.timer);
  if (!tl.job) return;
  try {
    const s = await api.get("outputs_run_batch_status", { job_id: tl.job });
    $("#tl-progress > div").style.width = `${s.percent}%`;
    $("#tl-state").textContent = `${s.status}: ${s.message}`;
    if (["done", "failed", "cancelled"].includes(s.status)) {
      const job = tl.job;
      tl.job = null;
      $("#tl-cancel").disabled = true;
      $("#tl-start").disabled = false;
      $("#tl-progress").className = `progress ${s.status === "done" ? "done" : "failed"}`;
      if (s.status === "done") {
        tl.result = await api.get("outputs_run_batch_result", { job_id: job });
        chartTimelapse(tl.result);
        $("#tl-images").replaceChildren(...imagesTable(tl.result.images));
        $("#tl-csv-summary").disabled = false;
        $("#tl-csv-images").disabled = false;
        say("#tl-msg", `${tl.result.processed} frames analysed${tl.result.failed ? `, ${tl.result.failed} failed` : ""}`, tl.result.failed ? "info" : "ok");
      } else {
        say("#tl-msg", s.message, s.status === "failed" ? "error" : "info");
      }
      return;
    }
  } catch (err) { say("#tl-msg", err.message, "error"); }
  tl.timer = setTimeout(pollTimelapse, 1000);
}

function initTimelapse() {
  for (const [id, title] of [["#tl-chart-count", "objects per frame"], ["#tl-chart-length", "length (px)"], ["#tl-chart-width", "width (px)"],
    ["#tl-chart-aspect", "aspect ratio"], ["#tl-hist-length", "length (px)"], ["#tl-hist-width", "width (px)"], ["#tl-hist-aspect", "aspect ratio"]]) emptyChart($(id), title, "run an analysis");
  $("#tl-folder").addEventListener("change", (e) => {
    const images = Array.from(e.target.files).filter((f) => IMAGE_EXT.test(f.name));
    $("#tl-upload").disabled = !images.length;
    say("#tl-msg", `${images.length} image files selected`, "info");
  });
  $("#tl-upload").addEventListener("click", async () => {
    const files = Array.from($("#tl-folder").files).filter((f) => IMAGE_EXT.test(f.name));
    if (!files.length) return;
    const top = (files[0].webkitRelativePath || "frames").split("/")[0];
    const form = new FormData();
    form.append("folder", top.replace(/[^A-Za-z0-9_.-]+/g, "_").replace(/^[._]+/, "") || "frames");
    for (const f of files) form.append("files", f, (f.webkitRelativePath || f.name).split("/").slice(1).join("/") || f.name);
    say("#tl-msg", `uploading ${files.length} frames…`, "info");
    try {
      const data = await api.upload("outputs_upload_folder", form);
      $("#tl-path").value = data.dataset_path;
      say("#tl-msg", `${data.saved} frames uploaded to ${data.dataset_path}`, "ok");
      inspectDataset();
    } catch (err) { say("#tl-msg", err.message, "error"); }
  });
  $("#tl-inspect").addEventListener("click", inspectDataset);
  $("#tl-start").addEventListener("click", async () => {
    const path = $("#tl-path").value.trim();
    if (!path) return say("#tl-msg", "enter or upload a dataset path", "error");
    const body = { dataset_path: path, model_folder: $("#tl-model").value || null };
    if ($("#tl-use-pipeline").checked) body.pipeline = getPipeline();
    try {
      const job = await api.post("outputs_run_batch_start", body);
      tl.job = job.job_id;
      $("#tl-cancel").disabled = false;
      $("#tl-start").disabled = true;
      $("#tl-progress").className = "progress";
      say("#tl-msg", `analysing ${job.total} frames with ${job.model_id}…`, "info");
      pollTimelapse();
    } catch (err) { say("#tl-msg", err.message, "error"); }
  });
  $("#tl-cancel").addEventListener("click", async () => {
    if (!tl.job) return;
    try { await api.post("outputs_run_batch_cancel", undefined, { job_id: tl.job }); pollTimelapse(); } catch (err) { say("#tl-msg", err.message, "error"); }
  });
  $("#tl-time").addEventListener("input", showTimeHistograms);
  $("#tl-csv-summary").addEventListener("click", () => {
    const cols = ["time", "frames", "count", "median_length", "mean_length", "std_length", "median_width", "mean_width", "std_width", "mean_aspect_ratio", "std_aspect_ratio"];
    download("timelapse_per_time.csv", toCSV(tl.result.per_time, cols));
  });
  $("#tl-csv-images").addEventListener("click", () => {
    const rows = tl.result.images.map((r) => ({ index: r.index, name: r.name, time: r.time, ...(r.stats ? {
      count: r.stats.count, mean_length: r.stats.mean_length, mean_width: r.stats.mean_width,
      mean_aspect_ratio: r.stats.mean_aspect_ratio, mean_area: r.stats.mean_area } : {}), error: r.error || "" }));
    download("timelapse_per_image.csv", toCSV(rows, ["index", "name", "time", "count", "mean_length", "mean_width", "mean_aspect_ratio", "mean_area", "error"]));
  });
}

// ================================================================ Live =========================

const live = { ws: null, viewer: null, history: [], version: 0, retry: 1000 };

function liveCharts() {
  const h = live.history;
  const t0 = h.length && h[0].time > 1e8 ? h[0].time : 0;  // epoch seconds: show seconds since the first frame
  const xLabel = t0 ? "seconds since the first frame" : "time";
  const pts = (key) => h.map((e) => [e.time - t0, e[key]]);
  lineChart($("#live-chart-count"), [{ label: "count", points: pts("count") }], { title: "objects", xLabel });
  lineChart($("#live-chart-length"), [{ label: "length", points: pts("mean_length"), color: COLORS[1] }], { title: "mean length (px)", xLabel });
  lineChart($("#live-chart-aspect"), [{ label: "aspect", points: pts("mean_aspect_ratio"), color: COLORS[2] }], { title: "mean aspect ratio", xLabel });
}

async function showLiveFrame(last, version) {
  if (!last) return;
  if (version !== undefined) {
    if (version <= live.version) return;
    live.version = version;
  }
  const s = last.stats;
  live.history.push({ time: last.time, count: s.count, mean_length: s.mean_length, mean_width: s.mean_width, mean_aspect_ratio: s.mean_aspect_ratio });
  if (live.history.length > 500) live.history.shift();
  $("#live-stats").replaceChildren(el("table", {},
    [["time", new Date(last.time * 1000).toLocaleTimeString()], ["objects", fmt(s.count)], ["mean length (px)", fmt(s.mean_length, 1)],
      ["mean width (px)", fmt(s.mean_width, 1)], ["mean aspect ratio", fmt(s.mean_aspect_ratio, 2)]]
      .map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", { class: "num" }, v)))));
  liveCharts();
  try { await live.viewer.setImage(api.url(last.overlay_url), { keepView: true }); } catch (err) { say("#live-msg", err.message, "error"); }
}

function connectLive() {
  if (live.ws && live.ws.readyState <= 1) return;
  const url = new URL(api.url("ws/live").replace(/^http/, "ws"));
  if (api.token()) url.searchParams.set("token", api.token());  // a WebSocket cannot carry headers
  const badge = $("#live-state");
  badge.textContent = "connecting"; badge.className = "badge warn";
  const ws = new WebSocket(url);
  live.ws = ws;
  ws.onopen = () => {
    badge.textContent = "connected"; badge.className = "badge ok"; live.retry = 1000;
    live.keepAlive = setInterval(() => { if (ws.readyState === 1) ws.send("ping"); }, 30000);  // the server closes idle clients
  };
  ws.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.ok && message.last) showLiveFrame(message.last, message.version);
  };
  ws.onclose = () => {
    clearInterval(live.keepAlive);
    badge.textContent = "closed — reconnecting"; badge.className = "badge bad";
    setTimeout(connectLive, live.retry);
    live.retry = Math.min(10000, live.retry * 2);
  };
}

async function initLive() {
  live.viewer = new Viewer("#live-viewer", "waiting for frames");
  for (const [id, title] of [["#live-chart-count", "objects"], ["#live-chart-length", "mean length (px)"], ["#live-chart-aspect", "mean aspect ratio"]]) emptyChart($(id), title, "waiting for frames");
  $("#live-file").addEventListener("change", async (e) => {
    const file = e.target.files[0];
    if (!file) return;
    const form = new FormData();
    form.append("file", file, file.name);
    try {
      const data = await api.upload("stream_frame", form);
      say("#live-msg", `frame sent: ${data.last.stats.count} objects`, "ok");
    } catch (err) { say("#live-msg", err.message, "error"); }
  });
  try {
    const snap = await api.get("live_stats", { history: 200 });
    live.history = snap.history.slice();
    live.version = snap.version;
    if (snap.last) {
      live.version = snap.version - 1;
      live.history.pop();  // showLiveFrame adds the last one back with its overlay
      await showLiveFrame(snap.last, snap.version);
    }
  } catch (err) { say("#live-msg", err.message, "error"); }
  connectLive();
}

// ================================================================ System =======================

const sys = { timer: null };

function kv(rows) {
  return el("table", {}, rows.map(([k, v]) => el("tr", {}, el("th", { style: "width:40%" }, k), el("td", {}, v))));
}

async function refreshSystem() {
  clearTimeout(sys.timer);
  try {
    const [health, info] = await Promise.all([api.get("health"), api.get("system_info")]);
    const sel = health.models.selected || {};
    const b = health.batching || {};
    $("#sys-health").replaceChildren(kv([
      ["status", el("span", { class: `badge ${health.status === "ok" ? "ok" : "warn"}` }, health.status)],
      ["device", health.device],
      ["detector", sel.detector || "–"],
      ["segmentation model", sel.segmentation || "(newest U-Net in the models directory)"],
      ["segmentation loaded", (health.models.segmentation_loaded || []).join(", ") || "–"],
      ["detectors loaded", (health.models.detectors_loaded || []).join(", ") || "–"],
      ["batching", `max ${b.max_batch_size}, wait ${b.batch_wait_timeout_s} s`],
      ["batch sizes seen", Object.entries(b.batch_sizes || {}).map(([k, v]) => `${k}×${v}`).join("  ") || "–"],
    ]));
    const res = info.ray.cluster_resources || {}, avail = info.ray.available_resources || {};
    const deps = Object.entries(info.deployments).sort();
    $("#sys-info").replaceChildren(
      kv([["CPU cores (this host)", info.cpu.count], ["load average", info.cpu.load_avg.map((x) => x.toFixed(2)).join("  ")],
        ["GPUs", info.gpu.count], ["Ray nodes", info.ray.nodes],
        ["Ray CPUs (available / total)", `${fmt(avail.CPU || 0, 2)} / ${fmt(res.CPU || 0)}`],
        ["Ray memory", res.memory ? `${fmt(res.memory / 2 ** 30, 1)} GiB` : "–"]]),
      el("h3", {}, "Deployments"),
      el("table", { id: "sys-deployments" }, el("tr", {}, el("th", {}, "deployment"), el("th", {}, "status"), el("th", {}, "replicas")),
        deps.map(([name, d]) => el("tr", {}, el("td", {}, name),
          el("td", {}, el("span", { class: `badge ${d.status === "HEALTHY" ? "ok" : "warn"}` }, d.status.toLowerCase())),
          el("td", {}, Object.entries(d.replicas).map(([s, n]) => `${n} ${s.toLowerCase()}`).join(", ") || "none")))));
    say("#sys-msg", "");
  } catch (err) { say("#sys-msg", err.message, "error"); }
  if (state.tab === "system" && $("#sys-auto").checked) sys.timer = setTimeout(refreshSystem, 3000);
}

// ================================================================ start ========================

function report(where) { return (err) => say(where, err.message, "error"); }

onShow.synthesis = (first) => { if (first) initSynthesis().catch(report("#synth-config-msg")); };
onShow.inference = () => { infer.viewer.draw(); };
onShow.preprocess = () => { if (state.image && pre.shown !== state.image.name) previewPipeline(); };
onShow.live = (first) => { if (first) initLive(); };
onShow.system = () => refreshSystem();

document.addEventListener("DOMContentLoaded", () => {
  initChrome();
  initInference();
  initPreprocess();
  initTimelapse();
  $("#sys-refresh").addEventListener("click", refreshSystem);
  $("#sys-auto").addEventListener("change", refreshSystem);
  loadModels().catch(report("#model-msg"));
  loadPreprocPresets().catch(report("#pre-msg"));
  showTab(location.hash.slice(1) || "synthesis");
});
