/* microforge web GUI: the Generate tab: images from a generator artifact (POST /generate), shown
 * in a grid with their seeds, each downloadable as a PNG, or all of them as one ZIP. */
"use strict";

const gen = { result: null };

async function loadGenerators() {
  const data = await api.get("available_models", { task: "generate" });
  const select = $("#gen-model");
  const keep = select.value;
  select.replaceChildren(...data.models.map((m) => el("option", { value: m.id }, `${m.name} · ${m.workload || m.type}`)));
  if (!data.models.length) {
    $("#gen-run").disabled = true;
    say("#gen-msg", "no generator artifact in the server's models directory", "info");
    return;
  }
  const ids = data.models.map((m) => m.id);
  const selected = (data.selected || {}).generator;
  select.value = ids.includes(keep) ? keep : ids.includes(selected) ? selected : ids[0];
  $("#gen-run").disabled = false;
}

// As microforge.trainers.predict (the server checks again and has the last word).
const TRUNCATION_RANGE = [0.05, 4];

/** The request body from the form (empty seed: random; empty truncation: none); throws on a
 * value the server would refuse, so the message needs no round trip. */
function generateBody() {
  const body = { model: $("#gen-model").value, n: Number($("#gen-n").value), bits: Number($("#gen-bits").value) };
  const seed = $("#gen-seed").value.trim(), truncation = $("#gen-truncation").value.trim();
  if (!Number.isInteger(body.n) || body.n < 1) throw new Error("images: a whole number, at least 1");
  if (seed !== "") {
    body.seed = Number(seed);
    if (!Number.isInteger(body.seed) || body.seed < 0) throw new Error("seed: a whole number ≥ 0, or empty for a random one");
  }
  if (truncation !== "") {
    body.truncation = Number(truncation);
    const [lo, hi] = TRUNCATION_RANGE;
    if (Number.isNaN(body.truncation) || (body.truncation !== 0 && !(body.truncation >= lo && body.truncation <= hi))) {
      throw new Error(`truncation: between ${lo} and ${hi}, or 0 / empty for none`);
    }
  }
  return body;
}

function generatedName(result, seed) {
  const model = result.model_info.id.replace(/[^A-Za-z0-9._-]+/g, "-");
  return `${model}-seed${seed}${result.bits === 16 ? "-16bit" : ""}.png`;
}

function showGenerated(result) {
  gen.result = result;
  $("#gen-grid").replaceChildren(...result.images.map((image) => el("figure", { "data-seed": image.seed },
    el("img", { src: image.image_b64, alt: `seed ${image.seed}`, title: `${image.width}×${image.height} px` }),
    el("figcaption", {},
      el("span", { class: "mono" }, `seed ${image.seed}`),
      el("a", { href: image.image_b64, download: generatedName(result, image.seed) }, "PNG")))));
  const info = result.model_info;
  $("#gen-model-info").textContent = [`${info.architecture}`, info.workload && `workload ${info.workload}`,
    `latent ${info.latent_shape.join("×")}`, info.device].filter(Boolean).join(" · ");
  $("#gen-zip").disabled = false;
}

async function runGenerate() {
  const button = $("#gen-run");
  let body;
  try { body = generateBody(); } catch (err) { say("#gen-msg", err.message, "error"); return; }
  button.disabled = true;
  say("#gen-msg", "generating…", "info");
  try {
    const result = await api.post("generate", body);
    showGenerated(result);
    $("#gen-seed").value = result.seeds[0];  // the seed used: Generate again repeats the images
    const seeds = result.seeds.length > 1 ? `${result.seeds[0]}–${result.seeds[result.seeds.length - 1]}` : result.seeds[0];
    const truncation = result.truncation === null ? "no truncation" : `truncation ${result.truncation}`;
    say("#gen-msg", `${result.images.length} images · seeds ${seeds} · ${truncation} · ${result.bits}-bit · `
      + `${fmt(result.timings.total_s, 2)} s`, "ok");
  } catch (err) {
    say("#gen-msg", err.message, "error");
  } finally {
    button.disabled = false;
  }
}

function downloadGeneratedZip() {
  const result = gen.result;
  if (!result) return;
  const files = result.images.map((image) => ({ name: generatedName(result, image.seed), bytes: dataUrlBytes(image.image_b64) }));
  download(`generated-seeds-${result.seeds[0]}-${result.seeds[result.seeds.length - 1]}.zip`, zipBlob(files));
}

async function initGenerate() {
  $("#gen-run").addEventListener("click", runGenerate);
  $("#gen-zip").addEventListener("click", downloadGeneratedZip);
  await loadGenerators();
}

onShow.generate = (first) => { if (first) initGenerate().catch(report("#gen-msg")); };
