// The playground: a form per model from its schema, images in by drop, paste, file or URL, a mask
// painter, a run through /v2 with its status, and the result beside the input. The pure parts live in
// lib/ (tested under Node); this module is the page's wiring.

import { answersWithMask, fieldsOf, initialValue, requestBody } from "./lib/schema.js";
import { PaintHistory, applyOperation, coverage, fitWithin, maskToRgba, rasterize, toImagePoint } from "./lib/mask.js";
import { abridged, curlCommand, describeRefusal, metricRows, pathOf, progressLine, pythonSnippet } from "./lib/requests.js";

const KEY_STORAGE = "retouch.apiKey";
const POLL_MILLISECONDS = 400;
const PAINT_COLOUR = [255, 40, 80, 150];
const OVERLAY_COLOUR = [30, 144, 255, 140];
// Longest side of what the page draws: a 12-megapixel photo is shown (never sent) at this size.
const DISPLAY_SIDE = 2048;

const element = (id) => document.getElementById(id);

const page = {
  models: [],
  model: null,
  fields: [],
  values: {},
  // Image fields: name -> {value (URL or data URI sent), preview (URL shown), width, height, label}.
  images: {},
  imageTarget: "image",
  paint: new PaintHistory(),
  stroke: null,
  baseMask: null,
  job: null,
  results: [],
  shown: 0,
};

function headers(json = false) {
  const sent = {};
  const key = element("api-key").value.trim();
  if (key) sent["x-api-key"] = key;
  if (json) sent["content-type"] = "application/json";
  return sent;
}

async function readJson(response) {
  try {
    return await response.json();
  } catch {
    return {};
  }
}

function showError(text) {
  const box = element("error");
  box.textContent = text;
  box.hidden = !text;
}

// ---- models and forms -------------------------------------------------------------------------

async function loadModels() {
  const response = await fetch("/v1/models", { headers: headers() });
  const answer = await readJson(response);
  if (!response.ok) {
    element("model-title").textContent = "The models could not be listed";
    showError(describeRefusal(response.status, answer.error, response.headers.get("retry-after")));
    return;
  }
  showError("");
  page.models = answer.models;
  const nav = element("models");
  nav.replaceChildren(
    ...page.models.map((model) => {
      const link = document.createElement("a");
      link.href = `#${model.slug}`;
      link.textContent = model.slug;
      link.dataset.slug = model.slug;
      return link;
    }),
  );
  chooseModel(location.hash.slice(1));
}

function chooseModel(slug) {
  const model = page.models.find((candidate) => candidate.slug === slug) ?? page.models[0];
  if (!model) return;
  page.model = model;
  for (const link of element("models").querySelectorAll("a")) {
    if (link.dataset.slug === model.slug) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  element("model-title").textContent = model.slug;
  element("model-summary").textContent = `${model.summary} Engine: ${model.engine}.`;
  const note = element("model-note");
  if (!model.built) {
    note.textContent = "This model has no engine in this build yet: the server answers 501.";
  } else if (model.live_workers === 0) {
    note.textContent = "No worker serves this model right now: start one with `retouch worker`, or the server refuses with 503.";
  } else {
    note.textContent = "";
  }
  note.hidden = !note.textContent;
  page.fields = fieldsOf(model.input_schema);
  page.values = Object.fromEntries(page.fields.map((field) => [field.name, initialValue(field)]));
  renderFields();
  showError("");
  clearResults();
  delete document.body.dataset.state;
  element("snippet").textContent = "";
  updatePainter();
}

function helpFor(field, control) {
  const help = document.createElement("small");
  help.className = "help";
  help.id = `help-${field.name}`;
  const range = field.minimum !== undefined && field.minimum !== null ? ` (${field.minimum} to ${field.maximum})` : "";
  help.textContent = `${field.description}${range}`;
  control.setAttribute("aria-describedby", help.id);
  return help;
}

function labelText(field) {
  const label = document.createElement("span");
  label.className = "label";
  label.textContent = field.label;
  if (field.required) {
    const mark = document.createElement("abbr");
    mark.title = "required";
    mark.textContent = " *";
    label.append(mark);
  }
  return label;
}

function numberControl(field) {
  const wrapper = document.createElement("div");
  wrapper.className = "field";
  const label = document.createElement("label");
  label.htmlFor = `field-${field.name}`;
  label.append(labelText(field));
  const box = document.createElement("input");
  box.type = "number";
  box.id = `field-${field.name}`;
  box.name = field.name;
  box.step = String(field.step);
  if (field.minimum !== null) box.min = String(field.minimum);
  if (field.maximum !== null) box.max = String(field.maximum);
  box.value = page.values[field.name];
  box.addEventListener("input", () => {
    page.values[field.name] = box.value;
    if (slider) slider.value = box.value;
  });
  let slider = null;
  const row = document.createElement("div");
  row.className = "number-row";
  if (field.slider) {
    slider = document.createElement("input");
    slider.type = "range";
    slider.min = String(field.minimum);
    slider.max = String(field.maximum);
    slider.step = String(field.step);
    slider.value = box.value;
    slider.setAttribute("aria-label", `${field.label} slider`);
    slider.addEventListener("input", () => {
      box.value = slider.value;
      page.values[field.name] = slider.value;
    });
    row.append(slider);
  }
  row.append(box);
  wrapper.append(label, row, helpFor(field, box));
  return wrapper;
}

function simpleControl(field) {
  const wrapper = document.createElement("div");
  wrapper.className = "field";
  const label = document.createElement("label");
  label.htmlFor = `field-${field.name}`;
  let control;
  if (field.kind === "boolean") {
    wrapper.classList.add("check");
    control = document.createElement("input");
    control.type = "checkbox";
    control.checked = page.values[field.name];
    control.addEventListener("change", () => {
      page.values[field.name] = control.checked;
    });
  } else if (field.kind === "select") {
    control = document.createElement("select");
    const options = field.nullable ? ["", ...field.options] : field.options;
    for (const option of options) {
      const item = document.createElement("option");
      item.value = option;
      item.textContent = option === "" ? "automatic" : option;
      control.append(item);
    }
    control.value = page.values[field.name];
    control.addEventListener("change", () => {
      page.values[field.name] = control.value;
    });
  } else {
    control = document.createElement(field.kind === "textarea" ? "textarea" : "input");
    if (field.kind === "textarea") control.rows = 2;
    else control.type = "text";
    if (field.maxLength) control.maxLength = field.maxLength;
    control.value = page.values[field.name];
    control.addEventListener("input", () => {
      page.values[field.name] = control.value;
    });
  }
  control.id = `field-${field.name}`;
  control.name = field.name;
  if (field.required) control.setAttribute("aria-required", "true");
  if (field.kind === "boolean") label.append(control, labelText(field));
  else label.append(labelText(field));
  wrapper.append(label);
  if (field.kind !== "boolean") wrapper.append(control);
  wrapper.append(helpFor(field, control));
  return wrapper;
}

function imageControl(field) {
  const wrapper = document.createElement("fieldset");
  wrapper.className = "field image-field";
  wrapper.dataset.field = field.name;
  const legend = document.createElement("legend");
  legend.append(labelText(field));
  const drop = document.createElement("div");
  drop.className = "drop";
  const picker = document.createElement("input");
  picker.type = "file";
  picker.accept = "image/*";
  picker.id = `field-${field.name}`;
  picker.setAttribute("aria-label", `${field.label}: choose a file`);
  picker.addEventListener("change", () => {
    if (picker.files[0]) setImageFile(field.name, picker.files[0]);
  });
  const hint = document.createElement("span");
  hint.className = "chosen";
  hint.textContent = page.images[field.name] ? chosenText(page.images[field.name]) : "or drop or paste an image";
  const url = document.createElement("input");
  url.type = "url";
  url.placeholder = "or an image URL (https://…)";
  url.setAttribute("aria-label", `${field.label}: image URL`);
  url.addEventListener("change", () => setImageUrl(field.name, url.value.trim()));
  const thumbnail = document.createElement("img");
  thumbnail.className = "thumbnail";
  thumbnail.alt = "";
  thumbnail.hidden = true;
  const chosen = page.images[field.name];
  if (chosen) {
    thumbnail.src = chosen.preview;
    thumbnail.hidden = field.name === "image" || !chosen.preview;
    if (chosen.value.startsWith("http")) url.value = chosen.value;
  }
  drop.append(picker, hint);
  for (const target of [drop, wrapper]) {
    target.addEventListener("focusin", () => {
      page.imageTarget = field.name;
    });
  }
  acceptDrops(drop, field.name);
  wrapper.append(legend, drop, url, thumbnail, helpFor(field, picker));
  return wrapper;
}

function maskControl(field) {
  const wrapper = document.createElement("div");
  wrapper.className = "field";
  const label = document.createElement("span");
  label.append(labelText(field));
  const text = document.createElement("p");
  text.className = "help";
  text.id = `help-${field.name}`;
  text.textContent = `${field.description} Paint it on the input image: the tools are above it.`;
  wrapper.append(label, text);
  return wrapper;
}

function renderFields() {
  const holder = element("fields");
  holder.replaceChildren(
    ...page.fields.map((field) => {
      if (field.kind === "image") return imageControl(field);
      if (field.kind === "mask") return maskControl(field);
      if (field.kind === "integer" || field.kind === "number") return numberControl(field);
      return simpleControl(field);
    }),
  );
  for (const field of page.fields) {
    if (field.kind === "image" && page.images[field.name]) page.values[field.name] = page.images[field.name].value;
  }
}

// ---- images in --------------------------------------------------------------------------------

function acceptDrops(target, name) {
  target.addEventListener("dragover", (event) => {
    event.preventDefault();
    target.classList.add("dragging");
  });
  target.addEventListener("dragleave", () => target.classList.remove("dragging"));
  target.addEventListener("drop", (event) => {
    event.preventDefault();
    event.stopPropagation();
    target.classList.remove("dragging");
    const file = [...(event.dataTransfer?.files ?? [])].find((item) => item.type.startsWith("image/"));
    if (file) setImageFile(name, file);
    else if (event.dataTransfer?.getData("text/uri-list")) setImageUrl(name, event.dataTransfer.getData("text/uri-list").split("\n")[0].trim());
  });
}

function readAsDataUri(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

function measure(url) {
  return new Promise((resolve) => {
    const probe = new Image();
    probe.onload = () => resolve({ width: probe.naturalWidth, height: probe.naturalHeight });
    probe.onerror = () => resolve(null);
    probe.src = url;
  });
}

async function displayCopy(file, size) {
  const shown = fitWithin(size.width, size.height, DISPLAY_SIDE, DISPLAY_SIDE);
  if (shown.scale === 1) return URL.createObjectURL(file);
  const bitmap = await createImageBitmap(file, { resizeWidth: shown.width, resizeHeight: shown.height, resizeQuality: "high" });
  const canvas = document.createElement("canvas");
  canvas.width = shown.width;
  canvas.height = shown.height;
  canvas.getContext("2d").drawImage(bitmap, 0, 0);
  bitmap.close();
  return new Promise((resolve) => canvas.toBlob((blob) => resolve(URL.createObjectURL(blob)), "image/jpeg", 0.9));
}

async function setImageFile(name, file) {
  const whole = URL.createObjectURL(file);
  const size = await measure(whole);
  URL.revokeObjectURL(whole);
  if (!size) {
    showError(`${file.name || "The pasted file"} is not an image this browser can read: pick a JPEG, PNG or WebP file.`);
    return;
  }
  const preview = await displayCopy(file, size);
  // The original bytes are sent, whatever size the preview is shown at.
  setImage(name, { value: await readAsDataUri(file), preview, ...size, label: file.name || "pasted image" });
}

async function setImageUrl(name, url) {
  if (!url) return;
  if (!/^https?:\/\//i.test(url)) {
    showError(`"${url}" is not an http(s) URL: give one that starts with http:// or https://, or pick a file.`);
    return;
  }
  const size = await measure(url);
  // A URL this browser cannot show may still be one the server can fetch: send it all the same.
  setImage(name, { value: url, preview: size ? url : "", width: size?.width ?? 0, height: size?.height ?? 0, label: url });
}

function chosenText(image) {
  return image.width ? `Using ${image.label} (${image.width} × ${image.height})` : `Using ${image.label}`;
}

function setImage(name, image) {
  const previous = page.images[name];
  if (previous?.preview.startsWith("blob:")) URL.revokeObjectURL(previous.preview);
  page.images[name] = image;
  page.values[name] = image.value;
  showError("");
  const fieldset = document.querySelector(`fieldset[data-field="${name}"]`);
  if (fieldset) {
    fieldset.querySelector(".chosen").textContent = chosenText(image);
    const thumbnail = fieldset.querySelector(".thumbnail");
    thumbnail.src = image.preview;
    // The input photo is shown large beside the form; other images (the reference) here.
    thumbnail.hidden = name === "image" || !image.preview;
  }
  if (name === "image") {
    page.paint.reset();
    showInput();
  }
}

function showInput() {
  const image = page.images.image;
  const stage = element("input-stage");
  const shown = element("input-image");
  if (!image) return;
  stage.classList.toggle("empty", !image.preview);
  if (image.preview) {
    shown.src = image.preview;
    shown.hidden = false;
    stage.style.aspectRatio = `${image.width} / ${image.height}`;
    element("input-size").textContent = `${image.width} × ${image.height}`;
  } else {
    shown.hidden = true;
    element("input-size").textContent = "shown by the server only";
  }
  updatePainter();
}

document.addEventListener("paste", (event) => {
  const typing = event.target.closest?.("input[type=text], input[type=url], input[type=password], textarea");
  const file = [...(event.clipboardData?.files ?? [])].find((item) => item.type.startsWith("image/"));
  if (file) {
    event.preventDefault();
    const target = page.fields.some((field) => field.name === page.imageTarget) ? page.imageTarget : "image";
    setImageFile(target, file);
  } else if (!typing) {
    const text = event.clipboardData?.getData("text/plain")?.trim() ?? "";
    if (/^https?:\/\//i.test(text)) setImageUrl(page.imageTarget, text);
  }
});

// ---- the mask painter -------------------------------------------------------------------------

function paints() {
  return page.fields.some((field) => field.kind === "mask") && Boolean(page.images.image?.width);
}

function updatePainter() {
  const active = paints();
  element("painter-tools").hidden = !active;
  element("paint-canvas").hidden = !active;
  if (active) renderMask();
}

function canvasSize() {
  const canvas = element("paint-canvas");
  const box = canvas.getBoundingClientRect();
  const image = page.images.image;
  // A backing store no larger than the image: the preview needs no more detail than the mask has.
  const ratio = Math.min(window.devicePixelRatio || 1, image.width / Math.max(1, box.width));
  return { width: Math.max(1, Math.round(box.width * ratio)), height: Math.max(1, Math.round(box.height * ratio)), box };
}

function drawMask(mask, width, height) {
  const canvas = element("paint-canvas");
  if (canvas.width !== width || canvas.height !== height) {
    canvas.width = width;
    canvas.height = height;
  }
  canvas.getContext("2d").putImageData(new ImageData(maskToRgba(mask, PAINT_COLOUR), width, height), 0, 0);
}

function renderMask() {
  if (!paints()) return;
  const { width, height } = canvasSize();
  const scale = width / page.images.image.width;
  page.baseMask = { mask: rasterize(page.paint.operations, width, height, scale), width, height, scale };
  drawMask(page.baseMask.mask, width, height);
  const full = page.paint.operations.length ? rasterize(page.paint.operations, page.images.image.width, page.images.image.height) : null;
  element("mask-coverage").textContent = full ? `${(coverage(full) * 100).toFixed(1)} % selected` : "nothing painted yet";
  element("undo").disabled = !page.paint.canUndo;
  element("redo").disabled = !page.paint.canRedo;
}

function renderStroke() {
  const { mask, width, height, scale } = page.baseMask;
  const drawn = mask.slice();
  applyOperation(drawn, width, height, page.stroke, scale);
  drawMask(drawn, width, height);
}

function pointerAt(event) {
  const image = page.images.image;
  return toImagePoint(event.clientX, event.clientY, element("paint-canvas").getBoundingClientRect(), image.width, image.height);
}

function startPainter() {
  const canvas = element("paint-canvas");
  canvas.addEventListener("pointerdown", (event) => {
    if (event.button !== 0 || !paints()) return;
    event.preventDefault();
    canvas.setPointerCapture(event.pointerId);
    const image = page.images.image;
    const box = canvas.getBoundingClientRect();
    const brush = Number(element("brush-size").value);
    const erase = document.querySelector("input[name=brush-mode]:checked").value === "erase";
    // The brush is sized on the screen; its radius is kept in the image's pixels.
    page.stroke = { type: "stroke", erase, radius: (brush / 2) * (image.width / box.width), points: [pointerAt(event)] };
    renderStroke();
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!page.stroke) return;
    const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
    for (const each of events.length ? events : [event]) page.stroke.points.push(pointerAt(each));
    renderStroke();
  });
  const finish = () => {
    if (!page.stroke) return;
    page.paint.push(page.stroke);
    page.stroke = null;
    renderMask();
  };
  canvas.addEventListener("pointerup", finish);
  canvas.addEventListener("pointercancel", finish);
  const act = (change) => () => {
    change();
    renderMask();
  };
  element("undo").addEventListener("click", act(() => page.paint.undo()));
  element("redo").addEventListener("click", act(() => page.paint.redo()));
  element("clear").addEventListener("click", act(() => page.paint.push({ type: "clear" })));
  element("invert").addEventListener("click", act(() => page.paint.push({ type: "invert" })));
  document.addEventListener("keydown", (event) => {
    if (!(event.ctrlKey || event.metaKey) || event.key.toLowerCase() !== "z" || !paints()) return;
    if (event.target.closest("input[type=text], input[type=url], input[type=number], textarea")) return;
    event.preventDefault();
    act(() => (event.shiftKey ? page.paint.redo() : page.paint.undo()))();
  });
  new ResizeObserver(() => renderMask()).observe(element("input-stage"));
}

function encodeMask() {
  const image = page.images.image;
  const mask = rasterize(page.paint.operations, image.width, image.height);
  if (!mask.some((value) => value)) return Promise.resolve("");
  const canvas = document.createElement("canvas");
  canvas.width = image.width;
  canvas.height = image.height;
  canvas.getContext("2d").putImageData(new ImageData(maskToRgba(mask), image.width, image.height), 0, 0);
  return new Promise((resolve) => {
    canvas.toBlob(async (blob) => resolve(await readAsDataUri(blob)), "image/png");
  });
}

// ---- running ----------------------------------------------------------------------------------

async function currentRequest() {
  const values = { ...page.values };
  for (const field of page.fields) {
    if (field.kind === "mask") values[field.name] = paints() ? await encodeMask() : "";
  }
  const { body, missing } = requestBody(page.fields, values);
  return { slug: page.model.slug, url: `${location.origin}/v2/${page.model.slug}`, body, missing };
}

function missingMessage(missing) {
  return missing
    .map((name) => {
      if (name === "mask") return page.images.image ? "Paint over what to select on the input image." : "Add a photo, then paint over what to select.";
      const field = page.fields.find((candidate) => candidate.name === name);
      return field.kind === "image" ? `Add ${field.label.toLowerCase()}: drop, paste or pick a file, or give a URL.` : `Fill in ${field.label.toLowerCase()}.`;
    })
    .join(" ");
}

function setRunning(running) {
  element("run").disabled = running;
  element("cancel").hidden = !running;
  element("cancel").disabled = false;
  element("progress").hidden = !running;
}

function tick() {
  const job = page.job;
  if (!job) return;
  const seconds = (performance.now() - job.started) / 1000;
  element("progress-line").textContent = progressLine(job.status, job.progress, seconds);
  const bar = element("progress");
  if (typeof job.progress === "number") bar.value = job.progress;
  else bar.removeAttribute("value");
}

async function run(event) {
  event.preventDefault();
  if (page.job) return;
  showError("");
  clearResults();
  document.body.dataset.state = "running";
  const request = await currentRequest();
  if (request.missing.length) {
    showError(missingMessage(request.missing));
    document.body.dataset.state = "refused";
    return;
  }
  setRunning(true);
  page.job = { status: "QUEUED", progress: null, started: performance.now(), slug: request.slug };
  page.job.timer = setInterval(tick, 100);
  tick();
  try {
    const response = await fetch(`/v2/${request.slug}`, { method: "POST", headers: headers(true), body: JSON.stringify(request.body) });
    const answer = await readJson(response);
    if (!response.ok) {
      page.job.status = "REFUSED";
      throw new Error(describeRefusal(response.status, answer.error, response.headers.get("retry-after"), request.slug));
    }
    page.job.id = answer.request_id;
    document.body.dataset.requestId = answer.request_id;
    await follow(pathOf(answer.status_url), pathOf(answer.response_url), request);
    document.body.dataset.state = "done";
  } catch (failure) {
    showError(failure.message);
    document.body.dataset.state = "failed";
  } finally {
    clearInterval(page.job.timer);
    tick();
    page.job = null;
    setRunning(false);
  }
}

const sleep = (milliseconds) => new Promise((resolve) => setTimeout(resolve, milliseconds));

async function follow(statusPath, resultPath, request) {
  for (;;) {
    const response = await fetch(statusPath, { headers: headers() });
    const answer = await readJson(response);
    if (response.status === 422 || answer.status === "FAILED" || answer.status === "CANCELED") {
      page.job.status = answer.status ?? "FAILED";
      throw new Error(answer.error || `The request ${page.job.status === "CANCELED" ? "was cancelled" : "failed"}.`);
    }
    if (!response.ok) throw new Error(describeRefusal(response.status, answer.error, response.headers.get("retry-after"), request.slug));
    page.job.status = answer.status;
    page.job.progress = answer.progress ?? null;
    if (answer.status === "COMPLETED") break;
    await sleep(POLL_MILLISECONDS);
  }
  const response = await fetch(resultPath, { headers: headers() });
  const result = await readJson(response);
  if (!response.ok) throw new Error(describeRefusal(response.status, result.error, null, request.slug));
  const outputs = result.outputs ?? [result.output];
  const blobs = [];
  for (const output of outputs) {
    const image = await fetch(pathOf(output), { headers: headers() });
    if (!image.ok) throw new Error(describeRefusal(image.status, (await readJson(image)).error, null, request.slug));
    blobs.push(await image.blob());
  }
  await showResults(blobs, result, request);
}

async function cancel() {
  const job = page.job;
  if (!job?.id) return;
  element("cancel").disabled = true;
  const response = await fetch(`/v2/requests/${job.id}`, { method: "DELETE", headers: headers() });
  if (!response.ok && response.status !== 409) {
    showError(describeRefusal(response.status, (await readJson(response)).error, null, job.slug));
  }
}

// ---- results ----------------------------------------------------------------------------------

function clearResults() {
  for (const old of page.results) URL.revokeObjectURL(old.url);
  page.results = [];
  page.result = null;
  const stage = element("result-stage");
  stage.classList.add("empty");
  stage.style.aspectRatio = "";
  for (const id of ["result-before", "result-image", "result-overlay", "compare", "samples", "download", "result-views"]) {
    element(id).hidden = true;
  }
  // An <svg> has no `hidden` property (it is an HTMLElement's): the attribute is set instead.
  element("result-boxes").toggleAttribute("hidden", true);
  element("metrics").replaceChildren();
}

function hasTransparency(bitmap) {
  const side = 256;
  const canvas = document.createElement("canvas");
  canvas.width = side;
  canvas.height = side;
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(bitmap, 0, 0, side, side);
  const pixels = context.getImageData(0, 0, side, side).data;
  for (let index = 3; index < pixels.length; index += 4) {
    if (pixels[index] < 250) return true;
  }
  return false;
}

async function showResults(blobs, result, request) {
  clearResults();
  const isMask = answersWithMask(page.fields, request.body);
  page.results = [];
  for (const blob of blobs) {
    const bitmap = await createImageBitmap(blob);
    page.results.push({ url: URL.createObjectURL(blob), blob, width: bitmap.width, height: bitmap.height, transparent: !isMask && hasTransparency(bitmap) });
    bitmap.close();
  }
  page.result = { metrics: result.metrics ?? {}, isMask, requestId: result.request_id, slug: request.slug };
  const detections = Array.isArray(page.result.metrics.detections);
  const views = element("result-views");
  views.hidden = false;
  views.querySelector("input[value=overlay]").parentElement.hidden = !(isMask || detections);
  const first = page.results[0];
  const view = isMask ? "overlay" : first.transparent ? "plain" : "compare";
  views.querySelector(`input[value=${view}]`).checked = true;
  renderSamples();
  showSample(0);
  const rows = metricRows(page.result.metrics);
  element("metrics").replaceChildren(
    ...rows.flatMap(([label, text]) => {
      const term = document.createElement("dt");
      term.textContent = label;
      const value = document.createElement("dd");
      value.textContent = text;
      return [term, value];
    }),
  );
}

function renderSamples() {
  const holder = element("samples");
  holder.hidden = page.results.length < 2;
  holder.replaceChildren(
    ...page.results.map((sample, index) => {
      const button = document.createElement("button");
      button.type = "button";
      button.setAttribute("aria-label", `Sample ${index + 1}`);
      const thumbnail = document.createElement("img");
      thumbnail.src = sample.url;
      thumbnail.alt = "";
      button.append(thumbnail);
      button.addEventListener("click", () => showSample(index));
      return button;
    }),
  );
}

function currentView() {
  return document.querySelector("input[name=result-view]:checked").value;
}

function showSample(index) {
  page.shown = index;
  const sample = page.results[index];
  for (const [position, button] of [...element("samples").children].entries()) {
    button.setAttribute("aria-pressed", String(position === index));
  }
  const stage = element("result-stage");
  stage.classList.remove("empty");
  stage.style.aspectRatio = `${sample.width} / ${sample.height}`;
  stage.dataset.transparent = String(sample.transparent);
  element("result-image").src = sample.url;
  element("result-image").dataset.kind = page.result.isMask ? "mask" : "image";
  const extension = { "image/png": "png", "image/jpeg": "jpg", "image/webp": "webp" }[sample.blob.type] ?? "img";
  const download = element("download");
  download.href = sample.url;
  download.download = `${page.result.slug}-${page.result.requestId}${page.results.length > 1 ? `-${index + 1}` : ""}.${extension}`;
  download.hidden = false;
  renderView();
}

function drawOverlay(sample) {
  const { width, height } = fitWithin(sample.width, sample.height, DISPLAY_SIDE, DISPLAY_SIDE);
  const canvas = element("result-overlay");
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext("2d");
  const photo = element("input-image");
  if (page.images.image?.preview && photo.complete) context.drawImage(photo, 0, 0, width, height);
  if (!page.result.isMask) return;
  const reader = document.createElement("canvas");
  reader.width = width;
  reader.height = height;
  const readContext = reader.getContext("2d", { willReadFrequently: true });
  readContext.drawImage(element("result-image"), 0, 0, width, height);
  const pixels = readContext.getImageData(0, 0, width, height).data;
  const mask = new Uint8Array(width * height);
  for (let index = 0; index < mask.length; index += 1) mask[index] = pixels[index * 4] > 127 ? 255 : 0;
  readContext.putImageData(new ImageData(maskToRgba(mask, OVERLAY_COLOUR), width, height), 0, 0);
  context.drawImage(reader, 0, 0);
}

function drawBoxes(sample) {
  const svg = element("result-boxes");
  const detections = page.result.metrics.detections ?? [];
  svg.setAttribute("viewBox", `0 0 ${sample.width} ${sample.height}`);
  const namespace = "http://www.w3.org/2000/svg";
  const size = Math.max(12, Math.round(sample.width / 45));
  svg.replaceChildren(
    ...detections.map((detection) => {
      const [x1, y1, x2, y2] = detection.box;
      const group = document.createElementNS(namespace, "g");
      const box = document.createElementNS(namespace, "rect");
      box.setAttribute("x", x1);
      box.setAttribute("y", y1);
      box.setAttribute("width", Math.max(1, x2 - x1));
      box.setAttribute("height", Math.max(1, y2 - y1));
      box.setAttribute("stroke-width", Math.max(2, size / 6));
      const label = document.createElementNS(namespace, "text");
      label.setAttribute("x", x1 + size / 4);
      label.setAttribute("y", Math.max(size, y1 - size / 4));
      label.setAttribute("font-size", size);
      label.textContent = `${detection.label} ${Number(detection.score).toFixed(2)}`;
      group.append(box, label);
      return group;
    }),
  );
}

function renderView() {
  const sample = page.results[page.shown];
  if (!sample) return;
  const view = currentView();
  const before = element("result-before");
  const output = element("result-image");
  const overlay = element("result-overlay");
  const compare = element("compare");
  before.hidden = view !== "compare" || !page.images.image?.preview;
  before.src = page.images.image?.preview ?? "";
  compare.hidden = before.hidden;
  output.hidden = view === "overlay";
  overlay.hidden = view !== "overlay";
  element("result-boxes").toggleAttribute("hidden", view !== "overlay");
  element("result-stage").classList.toggle("comparing", !before.hidden);
  setComparison();
  if (view === "overlay") {
    const draw = () => {
      drawOverlay(sample);
      drawBoxes(sample);
    };
    if (output.complete) draw();
    else output.addEventListener("load", draw, { once: true });
  }
}

function setComparison() {
  const shown = element("compare").hidden ? 100 : Number(element("compare").value);
  element("result-image").style.clipPath = `inset(0 ${100 - shown}% 0 0)`;
}

// ---- snippets ---------------------------------------------------------------------------------

async function copySnippet(kind) {
  const request = await currentRequest();
  const withKey = Boolean(element("api-key").value.trim());
  const text = kind === "curl" ? curlCommand(request.url, request.body, withKey) : pythonSnippet(request.url, request.body, withKey);
  element("snippet").textContent = abridged(text);
  element("snippet").dataset.full = text;
  let said;
  try {
    await navigator.clipboard.writeText(text);
    said = `Copied (${text.length.toLocaleString()} characters${withKey ? "; it reads your key from $RETOUCH_API_KEY" : ""}).`;
  } catch {
    said = "This browser refused the clipboard (it allows it on https or localhost only): select the text below instead.";
    element("snippet").textContent = text;
  }
  element("copied").textContent = said;
}

// ---- start ------------------------------------------------------------------------------------

function start() {
  const key = element("api-key");
  key.value = localStorage.getItem(KEY_STORAGE) ?? "";
  key.addEventListener("change", () => {
    localStorage.setItem(KEY_STORAGE, key.value.trim());
    loadModels();
  });
  element("form").addEventListener("submit", run);
  element("cancel").addEventListener("click", cancel);
  element("copy-curl").addEventListener("click", () => copySnippet("curl"));
  element("copy-python").addEventListener("click", () => copySnippet("python"));
  element("compare").addEventListener("input", setComparison);
  for (const choice of document.querySelectorAll("input[name=result-view]")) choice.addEventListener("change", renderView);
  window.addEventListener("hashchange", () => chooseModel(location.hash.slice(1)));
  acceptDrops(element("input-stage"), "image");
  startPainter();
  loadModels();
}

start();
