// The playground: a form per model from its schema, images in by drop, paste, file or URL, a mask
// painter, a run through /v2 with its status, and the result beside the input. The pure parts live in
// lib/ (tested under Node); this module is the page's wiring.

import { answersWithMask, fieldsOf, initialValue, requestBody } from "./lib/schema.js";
import { PaintHistory, applyOperation, coverage, fitWithin, isEmpty, maskToRgba, rasterize, toImagePoint } from "./lib/mask.js";
import { abridged, curlCommand, describeRefusal, metricRows, pathOf, progressLine, pythonSnippet } from "./lib/requests.js";

const KEY_STORAGE = "retouch.apiKey";
const POLL_MILLISECONDS = 400;
const PAINT_COLOUR = [255, 40, 80, 150];
const OVERLAY_COLOUR = [30, 144, 255, 140];
// Longest side of what the page draws: a 12-megapixel photo is shown (never sent) at this size.
const DISPLAY_SIDE = 2048;
const TYPING = "input[type=text], input[type=url], input[type=number], input[type=password], textarea, select";

const element = (id) => document.getElementById(id);

const page = {
  models: [],
  model: null,
  fields: [],
  values: {},
  // Image fields (the mask's file too): name -> {value (URL or data URI sent), preview (URL shown), width, height, label}.
  images: {},
  // Per image field, how many times it was set: a slow image that arrives after a newer choice is dropped.
  imageVersions: {},
  paint: new PaintHistory(),
  stroke: null,
  preview: null,
  job: null,
  results: [],
  result: null,
  shown: 0,
};

function currentKey() {
  return element("api-key").value.trim();
}

function headers(key, json = false) {
  const sent = {};
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
  let response;
  let answer;
  try {
    response = await fetch("/v1/models", { headers: headers(currentKey()) });
    answer = await readJson(response);
  } catch {
    element("model-title").textContent = "The server cannot be reached";
    showError("The server did not answer: check that `retouch serve` is running, then reload this page.");
    return;
  }
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
  const wanted = location.hash.slice(1) || page.model?.slug;
  const same = page.model && page.models.find((model) => model.slug === page.model.slug && model.slug === (wanted || model.slug));
  if (same) {
    // Listed again (a new key, say): the form and what was typed in it stay.
    page.model = same;
    describeModel(same);
  } else {
    chooseModel(wanted);
  }
}

function describeModel(model) {
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
  element("run").disabled = Boolean(page.job);
}

function chooseModel(slug) {
  const model = page.models.find((candidate) => candidate.slug === slug) ?? page.models[0];
  if (!model) return;
  if (page.job && page.job.slug !== model.slug) abandon(page.job);
  page.model = model;
  describeModel(model);
  page.fields = fieldsOf(model.input_schema);
  page.values = Object.fromEntries(page.fields.map((field) => [field.name, initialValue(field)]));
  renderFields();
  showError("");
  clearResults();
  delete document.body.dataset.state;
  element("snippet").textContent = "";
  element("progress-line").textContent = "";
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
  if (field.required) box.setAttribute("aria-required", "true");
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
  const isMask = field.kind === "mask";
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
  if (field.required) picker.setAttribute("aria-required", "true");
  picker.addEventListener("change", () => {
    if (picker.files[0]) setImageFile(field.name, picker.files[0]);
  });
  const hint = document.createElement("span");
  hint.className = "chosen";
  hint.textContent = page.images[field.name] ? chosenText(page.images[field.name]) : isMask ? "or drop a mask file" : "or drop or paste an image";
  const url = document.createElement("input");
  url.type = "url";
  url.id = `field-${field.name}-url`;
  url.placeholder = isMask ? "or a mask URL (https://…)" : "or an image URL (https://…)";
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
  acceptDrops(drop, field.name);
  const help = helpFor(field, picker);
  if (isMask) {
    help.textContent = `${field.description} Paint it over the input image (the tools are above it), or give a mask file or URL; what is painted wins.`;
  }
  wrapper.append(legend, drop, url, thumbnail, help);
  return wrapper;
}

function renderFields() {
  const holder = element("fields");
  holder.replaceChildren(
    ...page.fields.map((field) => {
      if (field.kind === "image" || field.kind === "mask") return imageControl(field);
      if (field.kind === "integer" || field.kind === "number") return numberControl(field);
      return simpleControl(field);
    }),
  );
  for (const field of page.fields) {
    if ((field.kind === "image" || field.kind === "mask") && page.images[field.name]) page.values[field.name] = page.images[field.name].value;
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
    if (!page.fields.some((field) => field.name === name)) return;
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
  try {
    const bitmap = await createImageBitmap(file, { resizeWidth: shown.width, resizeHeight: shown.height, resizeQuality: "high" });
    const canvas = document.createElement("canvas");
    canvas.width = shown.width;
    canvas.height = shown.height;
    canvas.getContext("2d").drawImage(bitmap, 0, 0, shown.width, shown.height);
    bitmap.close();
    // JPEG only for a JPEG: a PNG, WebP or GIF may be transparent, which JPEG would turn black.
    const type = file.type === "image/jpeg" ? "image/jpeg" : "image/png";
    return await new Promise((resolve) => canvas.toBlob((blob) => resolve(URL.createObjectURL(blob)), type, 0.9));
  } catch {
    // A picture this browser shows but cannot redraw (an SVG, say): shown as it is.
    return URL.createObjectURL(file);
  }
}

function nextVersion(name) {
  page.imageVersions[name] = (page.imageVersions[name] ?? 0) + 1;
  return page.imageVersions[name];
}

async function setImageFile(name, file) {
  const version = nextVersion(name);
  const whole = URL.createObjectURL(file);
  const size = await measure(whole);
  URL.revokeObjectURL(whole);
  if (version !== page.imageVersions[name]) return;
  if (!size) {
    showError(`${file.name || "The pasted file"} is not an image this browser can read: pick a JPEG, PNG or WebP file.`);
    return;
  }
  const preview = await displayCopy(file, size);
  // The original bytes are sent, whatever size the preview is shown at.
  const value = await readAsDataUri(file);
  if (version !== page.imageVersions[name]) {
    URL.revokeObjectURL(preview);
    return;
  }
  setImage(name, { value, preview, ...size, label: file.name || "pasted image" });
}

async function setImageUrl(name, url) {
  if (!url) return;
  if (!/^https?:\/\//i.test(url)) {
    showError(`"${url}" is not an http(s) URL: give one that starts with http:// or https://, or pick a file.`);
    return;
  }
  const version = nextVersion(name);
  // Sent at once, shown once this browser has loaded it (if it can: the server may reach what it cannot).
  setImage(name, { value: url, preview: "", width: 0, height: 0, label: url });
  const size = await measure(url);
  if (!size || version !== page.imageVersions[name]) return;
  setImage(name, { value: url, preview: url, ...size, label: url });
}

function chosenText(image) {
  return image.width ? `Using ${image.label} (${image.width} × ${image.height})` : `Using ${image.label}`;
}

function setImage(name, image) {
  const previous = page.images[name];
  if (previous?.preview.startsWith("blob:") && previous.preview !== image.preview) URL.revokeObjectURL(previous.preview);
  page.images[name] = image;
  page.values[name] = image.value;
  showError("");
  const fieldset = document.querySelector(`fieldset[data-field="${name}"]`);
  if (fieldset) {
    fieldset.querySelector(".chosen").textContent = chosenText(image);
    const thumbnail = fieldset.querySelector(".thumbnail");
    thumbnail.src = image.preview;
    // The input photo is shown large beside the form; other images (the reference, a mask file) here.
    thumbnail.hidden = name === "image" || !image.preview;
  }
  if (name === "image") {
    // A result belongs to the input it was made from: a new input clears it, and what was painted on the old one.
    if (previous?.value !== image.value) {
      page.paint.reset();
      clearResults();
    }
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
    stage.style.aspectRatio = "";
    element("input-size").textContent = "not shown here: the server fetches it";
  }
  updatePainter();
}

function pasteTarget() {
  // The image field that has the focus, else the input photo.
  const focused = document.activeElement?.closest?.("fieldset[data-field]")?.dataset.field;
  return focused && page.fields.some((field) => field.name === focused) ? focused : "image";
}

document.addEventListener("paste", (event) => {
  const typing = event.target.closest?.(TYPING);
  const text = event.clipboardData?.getData("text/plain")?.trim() ?? "";
  // Text pasted into a text box stays text, even when the clipboard also holds a picture of it (office programs).
  if (typing && text) return;
  const file = [...(event.clipboardData?.files ?? [])].find((item) => item.type.startsWith("image/"));
  if (file) {
    event.preventDefault();
    setImageFile(pasteTarget(), file);
  } else if (!typing && /^https?:\/\//i.test(text)) {
    setImageUrl(pasteTarget(), text);
  }
});

// A file dropped anywhere else would make the browser open it, and the form would be lost.
document.addEventListener("dragover", (event) => event.preventDefault());
document.addEventListener("drop", (event) => event.preventDefault());

// ---- the mask painter -------------------------------------------------------------------------

function takesMask() {
  return page.fields.some((field) => field.kind === "mask");
}

function paints() {
  return takesMask() && Boolean(page.images.image?.width);
}

function updatePainter() {
  const active = paints();
  element("painter-tools").hidden = !active;
  element("paint-canvas").hidden = !active;
  if (active) renderMask();
}

function canvasSize() {
  const box = element("paint-canvas").getBoundingClientRect();
  const image = page.images.image;
  // A backing store no larger than the image: the preview needs no more detail than the mask has.
  const ratio = Math.min(window.devicePixelRatio || 1, image.width / Math.max(1, box.width));
  return { width: Math.max(1, Math.round(box.width * ratio)), height: Math.max(1, Math.round(box.height * ratio)) };
}

function drawMask(mask, width, height) {
  const canvas = element("paint-canvas");
  if (canvas.width !== width || canvas.height !== height) {
    canvas.width = width;
    canvas.height = height;
  }
  canvas.getContext("2d").putImageData(new ImageData(maskToRgba(mask, PAINT_COLOUR), width, height), 0, 0);
}

// What was painted, drawn at the preview's size (the full-size mask is made only when it is sent).
function renderMask() {
  if (!paints()) return;
  const { width, height } = canvasSize();
  const scale = width / page.images.image.width;
  page.preview = { mask: rasterize(page.paint.operations, width, height, scale), width, height, scale };
  drawMask(page.preview.mask, width, height);
  element("mask-coverage").textContent = page.paint.operations.length ? `${(coverage(page.preview.mask) * 100).toFixed(1)} % selected` : "nothing painted yet";
  element("undo").disabled = !page.paint.canUndo;
  element("redo").disabled = !page.paint.canRedo;
}

function pointerAt(event) {
  const image = page.images.image;
  return toImagePoint(event.clientX, event.clientY, element("paint-canvas").getBoundingClientRect(), image.width, image.height);
}

function extendStroke(point) {
  const stroke = page.stroke;
  const last = stroke.points[stroke.points.length - 1];
  // Points closer than a quarter of the radius add nothing a round brush has not covered.
  if (Math.hypot(point[0] - last[0], point[1] - last[1]) < stroke.radius / 4) return;
  stroke.points.push(point);
  const { width, height, scale } = page.preview;
  applyOperation(stroke.drawn, width, height, { ...stroke, points: [last, point] }, scale);
  if (!stroke.frame) {
    stroke.frame = requestAnimationFrame(() => {
      stroke.frame = 0;
      drawMask(stroke.drawn, width, height);
    });
  }
}

function startPainter() {
  const canvas = element("paint-canvas");
  canvas.addEventListener("pointerdown", (event) => {
    // One pointer paints at a time: a second finger (a pinch) does not join the stroke.
    if (event.button !== 0 || !paints() || page.stroke) return;
    event.preventDefault();
    canvas.setPointerCapture(event.pointerId);
    const image = page.images.image;
    const box = canvas.getBoundingClientRect();
    const brush = Number(element("brush-size").value);
    const erase = document.querySelector("input[name=brush-mode]:checked").value === "erase";
    // The brush is sized on the screen; its radius is kept in the image's pixels.
    const stroke = { type: "stroke", erase, radius: (brush / 2) * (image.width / box.width), points: [pointerAt(event)] };
    const { width, height, scale } = page.preview;
    page.stroke = { ...stroke, pointerId: event.pointerId, drawn: applyOperation(page.preview.mask.slice(), width, height, stroke, scale), frame: 0 };
    drawMask(page.stroke.drawn, width, height);
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!page.stroke || event.pointerId !== page.stroke.pointerId) return;
    const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
    for (const each of events.length ? events : [event]) extendStroke(pointerAt(each));
  });
  const finish = (event) => {
    if (!page.stroke || event.pointerId !== page.stroke.pointerId) return;
    const { type, erase, radius, points, frame } = page.stroke;
    if (frame) cancelAnimationFrame(frame);
    page.paint.push({ type, erase, radius, points });
    page.stroke = null;
    renderMask();
  };
  for (const ending of ["pointerup", "pointercancel", "lostpointercapture"]) canvas.addEventListener(ending, finish);
  const act = (change) => () => {
    if (page.stroke) return;
    change();
    renderMask();
  };
  element("undo").addEventListener("click", act(() => page.paint.undo()));
  element("redo").addEventListener("click", act(() => page.paint.redo()));
  element("clear").addEventListener("click", act(() => page.paint.push({ type: "clear" })));
  element("invert").addEventListener("click", act(() => page.paint.push({ type: "invert" })));
  document.addEventListener("keydown", (event) => {
    if (!(event.ctrlKey || event.metaKey) || event.key.toLowerCase() !== "z" || !paints()) return;
    if (event.target.closest(TYPING)) return;
    event.preventDefault();
    act(() => (event.shiftKey ? page.paint.redo() : page.paint.undo()))();
  });
  new ResizeObserver(() => renderMask()).observe(element("input-stage"));
}

function encodeMask() {
  const image = page.images.image;
  const mask = rasterize(page.paint.operations, image.width, image.height);
  if (isEmpty(mask)) return Promise.resolve("");
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
    if (field.kind !== "mask") continue;
    const painted = paints() && page.paint.operations.length ? await encodeMask() : "";
    values[field.name] = painted || page.images[field.name]?.value || "";
  }
  const { body, missing } = requestBody(page.fields, values);
  return { slug: page.model.slug, fields: page.fields, url: `${location.origin}/v2/${page.model.slug}`, body, missing };
}

function missingMessage(missing) {
  return missing
    .map((name) => {
      const field = page.fields.find((candidate) => candidate.name === name);
      if (field.kind === "mask") {
        if (!page.images.image) return "Add a photo, then paint over what to select.";
        if (!paints()) return "This browser cannot show that photo, so it cannot be painted on: give a mask file or URL.";
        return "Paint over what to select on the input image, or give a mask file.";
      }
      return field.kind === "image" ? `Add ${field.label.toLowerCase()}: drop, paste or pick a file, or give a URL.` : `Fill in ${field.label.toLowerCase()}.`;
    })
    .join(" ");
}

function setRunning(running) {
  element("run").disabled = running || !page.model;
  element("cancel").hidden = !running;
  element("cancel").disabled = false;
  element("progress").hidden = !running;
}

function announce(job) {
  // Read out when the status changes; the ticking seconds are not.
  if (job.announced !== job.status) {
    job.announced = job.status;
    element("status-announcer").textContent = progressLine(job.status, null, (performance.now() - job.started) / 1000).split(" · ")[0];
  }
}

function tick(job) {
  const seconds = (performance.now() - job.started) / 1000;
  element("progress-line").textContent = progressLine(job.status, job.progress, seconds);
  const bar = element("progress");
  if (typeof job.progress === "number") bar.value = job.progress;
  else bar.removeAttribute("value");
  announce(job);
}

function isCurrent(job) {
  return page.job === job && !job.abandoned;
}

function endRun(job) {
  clearInterval(job.timer);
  if (page.job === job) {
    page.job = null;
    setRunning(false);
  }
}

// A run whose model is left: cancelled on the server (once its id is known), and never drawn.
function abandon(job) {
  job.abandoned = true;
  job.cancelWanted = true;
  if (job.id) sendCancel(job);
  endRun(job);
}

async function run(event) {
  event.preventDefault();
  if (page.job || !page.model) return;
  // Taken before anything is awaited: a second click meanwhile finds a run under way and sends nothing.
  const job = { status: "QUEUED", progress: null, started: performance.now(), slug: page.model.slug, key: currentKey() };
  page.job = job;
  setRunning(true);
  showError("");
  clearResults();
  document.body.dataset.state = "running";
  job.timer = setInterval(() => tick(job), 100);
  tick(job);
  try {
    const request = await currentRequest();
    if (!isCurrent(job)) return;
    if (request.missing.length) {
      job.status = "REFUSED";
      showError(missingMessage(request.missing));
      document.body.dataset.state = "refused";
      return;
    }
    const response = await fetch(`/v2/${request.slug}`, { method: "POST", headers: headers(job.key, true), body: JSON.stringify(request.body) });
    const answer = await readJson(response);
    if (!response.ok) {
      job.status = "REFUSED";
      throw new Error(describeRefusal(response.status, answer.error, response.headers.get("retry-after"), request.slug));
    }
    job.id = answer.request_id;
    document.body.dataset.requestId = answer.request_id;
    if (job.cancelWanted) sendCancel(job);
    await follow(job, pathOf(answer.status_url), pathOf(answer.response_url), request);
    if (isCurrent(job)) document.body.dataset.state = "done";
  } catch (failure) {
    if (isCurrent(job)) {
      if (!["REFUSED", "FAILED", "CANCELED"].includes(job.status)) job.status = "FAILED";
      showError(failure instanceof TypeError ? `The server could not be reached (${failure.message}).` : failure.message);
      document.body.dataset.state = "failed";
    }
  } finally {
    if (isCurrent(job)) tick(job);
    endRun(job);
  }
}

const sleep = (milliseconds) => new Promise((resolve) => setTimeout(resolve, milliseconds));

async function follow(job, statusPath, resultPath, request) {
  const sent = headers(job.key);
  for (;;) {
    if (!isCurrent(job)) return;
    const response = await fetch(statusPath, { headers: sent });
    const answer = await readJson(response);
    if (response.status === 422 || answer.status === "FAILED" || answer.status === "CANCELED") {
      job.status = answer.status ?? "FAILED";
      throw new Error(answer.error || `The request ${job.status === "CANCELED" ? "was cancelled" : "failed"}.`);
    }
    if (!response.ok) throw new Error(describeRefusal(response.status, answer.error, response.headers.get("retry-after"), request.slug));
    job.status = answer.status;
    job.progress = answer.progress ?? null;
    if (answer.status === "COMPLETED") break;
    await sleep(POLL_MILLISECONDS);
  }
  const response = await fetch(resultPath, { headers: sent });
  const result = await readJson(response);
  if (!response.ok) throw new Error(describeRefusal(response.status, result.error, null, request.slug));
  const blobs = [];
  for (const output of result.outputs ?? [result.output]) {
    const image = await fetch(pathOf(output), { headers: sent });
    if (!image.ok) throw new Error(describeRefusal(image.status, (await readJson(image)).error, null, request.slug));
    blobs.push(await image.blob());
  }
  if (isCurrent(job)) await showResults(blobs, result, request);
}

async function sendCancel(job) {
  try {
    const response = await fetch(`/v2/requests/${job.id}`, { method: "DELETE", headers: headers(job.key) });
    if (!response.ok && response.status !== 409 && isCurrent(job)) {
      showError(describeRefusal(response.status, (await readJson(response)).error, null, job.slug));
    }
  } catch (failure) {
    if (isCurrent(job)) showError(`The cancel did not reach the server (${failure.message}).`);
  }
}

function cancel() {
  const job = page.job;
  if (!job) return;
  element("cancel").disabled = true;
  job.cancelWanted = true;
  // Before its id is known (a large image still uploading) the cancel is sent as soon as it is.
  if (job.id) sendCancel(job);
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
  const isMask = answersWithMask(request.fields, request.body);
  const results = [];
  for (const blob of blobs) {
    const bitmap = await createImageBitmap(blob);
    results.push({ url: URL.createObjectURL(blob), blob, width: bitmap.width, height: bitmap.height, transparent: !isMask && hasTransparency(bitmap) });
    bitmap.close();
  }
  page.results = results;
  page.result = { metrics: result.metrics ?? {}, isMask, requestId: result.request_id, slug: request.slug };
  const detections = Array.isArray(page.result.metrics.detections) && page.result.metrics.detections.length > 0;
  const views = element("result-views");
  views.hidden = false;
  views.querySelector("input[value=overlay]").parentElement.hidden = !(isMask || detections);
  const view = isMask || detections ? "overlay" : results[0].transparent ? "plain" : "compare";
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
    // One handler at a time: a result that never loads leaves no pile of them behind.
    output.onload = output.complete ? null : draw;
    if (output.complete) draw();
  }
}

function setComparison() {
  const shown = element("compare").hidden ? 100 : Number(element("compare").value);
  element("result-image").style.clipPath = `inset(0 ${100 - shown}% 0 0)`;
}

// ---- snippets ---------------------------------------------------------------------------------

async function copySnippet(kind) {
  if (!page.model) return;
  const request = await currentRequest();
  const withKey = Boolean(currentKey());
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
    // The list again, for what this key may see; the form, and a run under way (it keeps its own key), stay.
    loadModels();
  });
  element("run").disabled = true;
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
