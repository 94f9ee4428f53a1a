// The exact request as curl and Python, what a refusal means, and the progress line.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { test } from "node:test";

import { abridged, curlCommand, describeRefusal, metricRows, pathOf, progressLine, pythonSnippet } from "../../src/retouch/web/playground/lib/requests.js";

const body = { image: `data:image/png;base64,${"A".repeat(5000)}`, prompt: "it's a sofa", return_mask: false, seed: 7, scheduler: null };

test("the curl command sends the exact body through a here-document, and the key from the environment", () => {
  const command = curlCommand("http://127.0.0.1:8000/v2/inpaint-mask-maker", body, true);
  assert.match(command, /^curl -sS -X POST 'http:\/\/127\.0\.0\.1:8000\/v2\/inpaint-mask-maker'/);
  assert.match(command, /-H "x-api-key: \$RETOUCH_API_KEY"/);
  const sent = command.split("<<'JSON'\n")[1].split("\nJSON\n")[0];
  assert.deepEqual(JSON.parse(sent), body);
  assert.doesNotMatch(curlCommand("http://h/v2/x", {}, false), /x-api-key/);
});

test("the curl command is one a shell reads: bash parses it and gets the body on standard input", () => {
  const command = curlCommand("http://127.0.0.1:9/v2/magic-eraser", { prompt: "a 'quoted' word" }, true);
  // A shell function in curl's place prints the arguments it was given, then what came on standard input.
  const script = `curl() { printf '%s\\n' "$@"; cat; }\nRETOUCH_API_KEY=rt_test\n${command}`;
  const lines = execFileSync("bash", ["-c", script], { encoding: "utf8" }).trim().split("\n");
  assert.deepEqual(lines.slice(0, 9), [
    "-sS", "-X", "POST", "http://127.0.0.1:9/v2/magic-eraser", "-H", "content-type: application/json", "-H", "x-api-key: rt_test", "--data-binary",
  ]);
  assert.deepEqual(JSON.parse(lines.at(-1)), { prompt: "a 'quoted' word" });
});

test("the Python snippet holds the same values as Python literals", () => {
  const snippet = pythonSnippet("http://127.0.0.1:8000/v2/bg-replace", body, false);
  assert.match(snippet, /"return_mask": False,/);
  assert.match(snippet, /"scheduler": None,/);
  assert.match(snippet, /"seed": 7,/);
  assert.match(snippet, /"prompt": "it's a sofa",/);
  assert.match(snippet, /headers = \{\}/);
  assert.match(pythonSnippet("http://h/v2/x", {}, true), /os\.environ\["RETOUCH_API_KEY"\]/);
});

test("long base64 is abridged for showing, never for copying", () => {
  const shown = abridged(curlCommand("http://h/v2/x", body, false));
  assert.ok(shown.length < 600);
  assert.match(shown, /data:image\/png;base64,A{48}…\(4952 more characters\)/);
});

test("refusals say what to do: a key for 401, another key for 403, credits for 406, when to retry for 429", () => {
  assert.match(describeRefusal(401, "x-api-key is missing"), /API key field.*The server says: x-api-key is missing/);
  assert.match(describeRefusal(403, "no", null, "bg-replace"), /may not use bg-replace/);
  assert.match(describeRefusal(406, ""), /no credits left/);
  assert.match(describeRefusal(429, "slow down", "7"), /try again in 7 s/);
  assert.equal(describeRefusal(400, "grow_mask: 500 is out of range 0 to 100"), "grow_mask: 500 is out of range 0 to 100");
  assert.equal(describeRefusal(502, ""), "The server answered 502.");
});

test("the progress line shows the status, the share done while processing, and the seconds", () => {
  assert.equal(progressLine("QUEUED", null, 0.25), "Queued · 0.3 s");
  assert.equal(progressLine("PROCESSING", 0.456, 3), "Processing 46 % · 3.0 s");
  assert.equal(progressLine("PROCESSING", null, 3), "Processing · 3.0 s");
});

test("metrics: engine, times, the seed or every seed, and how many detections", () => {
  const rows = metricRows({ engine: "composite", model: "u2net.onnx", inference_time: 0.5, queue_time: 0.01, seed: 3, seeds: [3, 4], detections: [{}, {}] });
  assert.deepEqual(rows, [
    ["Engine", "composite"],
    ["Weights", "u2net.onnx"],
    ["Inference", "0.50 s"],
    ["Queued", "0.01 s"],
    ["Seeds", "3, 4"],
    ["Detections", "2"],
  ]);
  assert.deepEqual(metricRows({ seed: 9 }), [["Seed", "9"]]);
});

test("the server's absolute URLs are called on the page's own origin", () => {
  assert.equal(pathOf("https://api.example.test/v2/requests/abc/status"), "/v2/requests/abc/status");
  assert.equal(pathOf("/v2/requests/abc/output/0?x=1"), "/v2/requests/abc/output/0?x=1");
});
