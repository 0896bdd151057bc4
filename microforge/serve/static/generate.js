/* microforge web GUI: the Generate tab: images from a generator artifact (POST /generate), shown
 * in a grid with their seeds, each downloadable as a PNG, or all of them as one ZIP. A GAN takes
 * truncation and bits; a diffusion model (GET /generate_options says which) takes a phase, steps,
 * guidance and a scheduler instead. */
"use strict";

const gen = { result: null, options: null };

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
  await loadOptions();
}

const isDiffusion = () => Boolean(gen.options && gen.options.sampler === "diffusion");

/** The options the selected model takes: diffusion models show phase, steps, guidance and
 * scheduler; GANs show truncation and bits. */
async function loadOptions() {
  const model = $("#gen-model").value;
  gen.options = null;
  try {
    gen.options = await api.get("generate_options", { model });
  } catch (err) {
    say("#gen-msg", err.message, "error");
  }
  if (model !== $("#gen-model").value) return;  // another model was chosen meanwhile
  const diffusion = isDiffusion();
  $("#gen-diffusion").classList.toggle("hidden", !diffusion);
  $("#gen-latent").classList.toggle("hidden", diffusion);
  $("#gen-seed").title = diffusion
    ? "the run's seed: image i has the seed and phase `microforge generate diffusion --seed` gives it; empty: random"
    : "images use seeds seed, seed+1, …; empty: a random first seed";
  if (!diffusion) return;
  const phase = $("#gen-phase");
  const keep = phase.value;
  phase.replaceChildren(...gen.options.phases.map((p) => el("option", { value: p }, p)),
    el("option", { value: "all" }, "all (cycle)"));
  if (keep && [...phase.options].some((o) => o.value === keep)) phase.value = keep;
  $("#gen-steps").max = gen.options.max_steps;
}

// As microforge.trainers.predict (the server checks again and has the last word).
const TRUNCATION_RANGE = [0.05, 4];

/** The request body from the form (empty seed: random; empty truncation: none); throws on a
 * value the server would refuse, so the message needs no round trip. */
function generateBody() {
  const body = { model: $("#gen-model").value, n: Number($("#gen-n").value) };
  const seed = $("#gen-seed").value.trim(), truncation = $("#gen-truncation").value.trim();
  if (!Number.isInteger(body.n) || body.n < 1) throw new Error("images: a whole number, at least 1");
  if (seed !== "") {
    body.seed = Number(seed);
    if (!Number.isInteger(body.seed) || body.seed < 0) throw new Error("seed: a whole number ≥ 0, or empty for a random one");
  }
  if (isDiffusion()) {
    Object.assign(body, { phase: $("#gen-phase").value, steps: Number($("#gen-steps").value),
      guidance: Number($("#gen-guidance").value), scheduler: $("#gen-scheduler").value });
    const most = gen.options.max_steps;
    if (!Number.isInteger(body.steps) || body.steps < 1 || body.steps > most) throw new Error(`steps: a whole number from 1 to ${most}`);
    if (Number.isNaN(body.guidance) || body.guidance < 0) throw new Error("guidance: a number ≥ 0");
    return body;
  }
  body.bits = Number($("#gen-bits").value);
  if (truncation !== "") {
    body.truncation = Number(truncation);
    const [lo, hi] = TRUNCATION_RANGE;
    if (Number.isNaN(body.truncation) || (body.truncation !== 0 && !(body.truncation >= lo && body.truncation <= hi))) {
      throw new Error(`truncation: between ${lo} and ${hi}, or 0 / empty for none`);
    }
  }
  return body;
}

function generatedName(result, image) {
  const model = result.model_info.id.replace(/[^A-Za-z0-9._-]+/g, "-");
  if (image.phase !== undefined) return `${model}-${image.phase.replace(/[^A-Za-z0-9]+/g, "p")}-${image.index}-seed${image.seed}.png`;
  return `${model}-seed${image.seed}${result.bits === 16 ? "-16bit" : ""}.png`;
}

function showGenerated(result) {
  gen.result = result;
  $("#gen-grid").replaceChildren(...result.images.map((image) => el("figure", { "data-seed": image.seed, "data-phase": image.phase },
    el("img", { src: image.image_b64, alt: `seed ${image.seed}`, title: `${image.width}×${image.height} px` }),
    el("figcaption", {},
      el("span", { class: "mono" }, image.phase !== undefined ? `${image.phase} · #${image.index}` : `seed ${image.seed}`),
      el("a", { href: image.image_b64, download: generatedName(result, image) }, "PNG")))));
  const info = result.model_info;
  const shape = info.sampler === "diffusion" ? `diffusion ${info.image_shape.slice(0, 2).join("×")}`
    : `latent ${info.latent_shape.join("×")}`;
  $("#gen-model-info").textContent = [`${info.architecture}`, info.workload && `workload ${info.workload}`,
    shape, info.device].filter(Boolean).join(" · ");
  $("#gen-zip").disabled = false;
}

function generatedSummary(result) {
  const time = `${fmt(result.timings.total_s, 2)} s`;
  if (result.phase !== undefined) {
    return `${result.images.length} images · phase ${result.phase} · run seed ${result.seed} · ${result.steps} steps `
      + `${result.scheduler} · guidance ${result.guidance} · ${time}`;
  }
  const seeds = result.seeds.length > 1 ? `${result.seeds[0]}–${result.seeds[result.seeds.length - 1]}` : result.seeds[0];
  const truncation = result.truncation === null ? "no truncation" : `truncation ${result.truncation}`;
  return `${result.images.length} images · seeds ${seeds} · ${truncation} · ${result.bits}-bit · ${time}`;
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
    // The seed used (a diffusion run's seed, else the first image's): Generate again repeats the images.
    $("#gen-seed").value = result.seed !== undefined ? result.seed : result.seeds[0];
    say("#gen-msg", generatedSummary(result), "ok");
  } catch (err) {
    say("#gen-msg", err.message, "error");
  } finally {
    button.disabled = false;
  }
}

function downloadGeneratedZip() {
  const result = gen.result;
  if (!result) return;
  const files = result.images.map((image) => ({ name: generatedName(result, image), bytes: dataUrlBytes(image.image_b64) }));
  download(`generated-seeds-${result.seeds[0]}-${result.seeds[result.seeds.length - 1]}.zip`, zipBlob(files));
}

async function initGenerate() {
  $("#gen-run").addEventListener("click", runGenerate);
  $("#gen-zip").addEventListener("click", downloadGeneratedZip);
  $("#gen-model").addEventListener("change", () => loadOptions().catch(report("#gen-msg")));
  await loadGenerators();
}

onShow.generate = (first) => { if (first) initGenerate().catch(report("#gen-msg")); };
