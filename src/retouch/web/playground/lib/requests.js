// What the playground says about requests: the exact request as curl and as Python, what a refusal
// means for the person at the keyboard, and how far a job is. Pure: no DOM, no fetch.

function shellQuote(text) {
  return `'${String(text).replaceAll("'", "'\\''")}'`;
}

/**
 * The curl command that makes this request. The body goes in through a here-document, so that a
 * large base64 image fits; the key is read from $RETOUCH_API_KEY rather than written out.
 */
export function curlCommand(url, body, withKey) {
  const lines = [`curl -sS -X POST ${shellQuote(url)}`, "  -H 'content-type: application/json'"];
  if (withKey) {
    lines.push('  -H "x-api-key: $RETOUCH_API_KEY"');
  }
  lines.push("  --data-binary @- <<'JSON'");
  return `${lines.join(" \\\n")}\n${JSON.stringify(body)}\nJSON\n`;
}

function pythonLiteral(value) {
  if (value === true) return "True";
  if (value === false) return "False";
  if (value === null) return "None";
  return JSON.stringify(value);
}

/** The same request in Python with httpx, polling status_url until it ends, then saving the outputs. */
export function pythonSnippet(url, body, withKey) {
  const fields = Object.entries(body)
    .map(([name, value]) => `    ${JSON.stringify(name)}: ${pythonLiteral(value)},`)
    .join("\n");
  const headers = withKey ? '{"x-api-key": os.environ["RETOUCH_API_KEY"]}' : "{}";
  return [
    "import os",
    "import time",
    "",
    "import httpx",
    "",
    `headers = ${headers}`,
    "body = {",
    fields,
    "}",
    `job = httpx.post(${JSON.stringify(url)}, json=body, headers=headers, timeout=60).raise_for_status().json()`,
    'while (status := httpx.get(job["status_url"], headers=headers).json())["status"] in ("QUEUED", "PROCESSING"):',
    "    time.sleep(0.5)",
    'result = httpx.get(job["response_url"], headers=headers).json()',
    'if result["status"] != "COMPLETED":',
    '    raise SystemExit(result.get("error", result["status"]))',
    'for number, output in enumerate(result["outputs"]):',
    "    image = httpx.get(output, headers=headers)",
    '    extension = {"image/jpeg": "jpg", "image/webp": "webp"}.get(image.headers["content-type"], "png")',
    '    with open(f"output-{number}.{extension}", "wb") as file:',
    "        file.write(image.content)",
    "",
  ].join("\n");
}

/** A snippet shortened for showing on the page: long base64 strings cut to their first characters. */
export function abridged(text, keep = 48) {
  return text.replace(/(data:image\/[a-z+]+;base64,)?([A-Za-z0-9+/=]{200,})/g, (whole, prefix, data) => {
    return `${prefix ?? ""}${data.slice(0, keep)}…(${data.length - keep} more characters)`;
  });
}

/**
 * What a refused request means and what to do about it, for the status codes a person can act on;
 * the server's own `error` follows it.
 */
export function describeRefusal(status, error, retryAfter = null, slug = "") {
  const said = error ? ` The server says: ${error}` : "";
  switch (status) {
    case 401:
      return `This server needs an API key: paste one into the API key field (an operator makes one with \`retouch keys create NAME\`).${said}`;
    case 403:
      return `This API key may not use ${slug || "this model"}: use a key that is allowed it.${said}`;
    case 406:
      return `This API key has no credits left: an operator adds some with \`retouch keys credit NAME AMOUNT\`.${said}`;
    case 429:
      return `Too many requests for now${retryAfter ? `: try again in ${retryAfter} s` : ""}.${said}`;
    case 413:
      return `The request is too large for this server: try a smaller image.${said}`;
    default:
      return error || `The server answered ${status}.`;
  }
}

/** The line shown while a job runs: its status, how far it is when the engine says, and the time so far. */
export function progressLine(status, progress, elapsedSeconds) {
  const word = { QUEUED: "Queued", PROCESSING: "Processing", COMPLETED: "Done", FAILED: "Failed", CANCELED: "Cancelled", REFUSED: "Refused" }[status] ?? status;
  const share = typeof progress === "number" && status === "PROCESSING" ? ` ${Math.round(progress * 100)} %` : "";
  return `${word}${share} · ${elapsedSeconds.toFixed(1)} s`;
}

/** The metrics worth showing, in order, as [label, text] pairs. */
export function metricRows(metrics) {
  const rows = [];
  const seconds = (value) => `${Number(value).toFixed(2)} s`;
  if (metrics.engine) rows.push(["Engine", String(metrics.engine)]);
  if (metrics.model) rows.push(["Weights", String(metrics.model)]);
  if (metrics.inference_time !== undefined && metrics.inference_time !== null) rows.push(["Inference", seconds(metrics.inference_time)]);
  if (metrics.queue_time !== undefined && metrics.queue_time !== null) rows.push(["Queued", seconds(metrics.queue_time)]);
  if (metrics.total_time !== undefined && metrics.total_time !== null) rows.push(["Total", seconds(metrics.total_time)]);
  if (Array.isArray(metrics.seeds) && metrics.seeds.length > 1) {
    rows.push(["Seeds", metrics.seeds.join(", ")]);
  } else if (metrics.seed !== undefined && metrics.seed !== null) {
    rows.push(["Seed", String(metrics.seed)]);
  }
  if (Array.isArray(metrics.detections)) rows.push(["Detections", String(metrics.detections.length)]);
  return rows;
}

/** The same-origin path of an absolute URL the server gave (status_url, outputs): the page may call only its own origin. */
export function pathOf(url) {
  const parsed = new URL(url, "http://placeholder.invalid");
  return parsed.pathname + parsed.search;
}
