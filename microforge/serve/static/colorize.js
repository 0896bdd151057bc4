/* microforge web GUI: the Colorize tab: an uploaded gray or colour image through a CycleGAN
 * colorization artifact (POST /colorize/json), shown before/after with a wipe slider, the
 * colorized PNG downloadable. */
"use strict";

const col = { result: null, name: "" };

async function loadColorizers() {
  const data = await api.get("available_models", { task: "colorize" });
  const select = $("#col-model");
  const keep = select.value;
  select.replaceChildren(...data.models.map((m) => el("option", { value: m.id }, `${m.name} · ${m.workload || m.type}`)));
  const ready = data.models.length > 0;
  $("#col-file").disabled = !ready;
  if (!ready) {
    say("#col-msg", "no colorization artifact (task colorize, e.g. microforge train cyclegan) in the server's models directory", "info");
    return;
  }
  const ids = data.models.map((m) => m.id);
  const selected = (data.selected || {}).colorizer;
  select.value = ids.includes(keep) ? keep : ids.includes(selected) ? selected : ids[0];
}

function colorizedName(fileName) {
  const stem = fileName.replace(/\.[^.]*$/, "").replace(/[^A-Za-z0-9._-]+/g, "-") || "image";
  return `${stem}-colorized.png`;
}

/** Where the wipe divides the two images: after (colorized) on the left, before (gray) on the right. */
function setColorizeSplit(percent) {
  $("#col-after").style.clipPath = `inset(0 ${100 - percent}% 0 0)`;
  $("#col-divider").style.left = `${percent}%`;
}

function showColorized(result, fileName) {
  col.result = result;
  $("#col-before").src = result.input_b64;
  $("#col-after").src = result.image_b64;
  $("#col-compare").hidden = false;
  $("#col-empty").hidden = true;
  setColorizeSplit(Number($("#col-split").value));
  const link = $("#col-download");
  link.href = result.image_b64;
  link.download = colorizedName(fileName);
  link.hidden = false;
  const info = result.model_info;
  $("#col-model-info").textContent = [info.architecture, info.workload && `workload ${info.workload}`,
    info.invert_input ? "input inverted" : null, info.device].filter(Boolean).join(" · ");
}

async function runColorize() {
  const file = $("#col-file").files[0];
  if (!file) { say("#col-msg", "choose an image first", "error"); return; }
  const form = new FormData();
  form.append("file", file, file.name);
  $("#col-run").disabled = true;
  say("#col-msg", "colorizing…", "info");
  try {
    const result = await api.upload("colorize/json", form, { model_id: $("#col-model").value || null });
    showColorized(result, file.name);
    say("#col-msg", `${result.width}×${result.height} px · batch of ${result.batch_size} · `
      + `${fmt(result.timings.total_s, 2)} s`, "ok");
  } catch (err) {
    say("#col-msg", err.message, "error");
  } finally {
    $("#col-run").disabled = false;
  }
}

async function initColorize() {
  $("#col-file").addEventListener("change", runColorize);
  $("#col-run").addEventListener("click", runColorize);
  $("#col-split").addEventListener("input", (e) => setColorizeSplit(Number(e.target.value)));
  await loadColorizers();
}

onShow.colorize = (first) => { if (first) initColorize().catch(report("#col-msg")); };
