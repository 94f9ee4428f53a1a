// Schema to form, on the server's own input schemas (tests/web/schemas.json, written by
// scripts/generate_client.py and checked against the server by tests/api/test_client_typed.py).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { answersWithMask, fieldsOf, initialValue, requestBody } from "../../src/retouch/web/playground/lib/schema.js";

const schemas = JSON.parse(readFileSync(new URL("./schemas.json", import.meta.url), "utf8"));
const byName = (fields) => Object.fromEntries(fields.map((field) => [field.name, field]));
const startingValues = (fields) => Object.fromEntries(fields.map((field) => [field.name, initialValue(field)]));

test("every model's form has its images first, its required fields marked, and no base64 switch", () => {
  for (const [slug, schema] of Object.entries(schemas)) {
    const fields = fieldsOf(schema);
    assert.equal(fields[0].name, "image", slug);
    assert.ok(!fields.some((field) => field.name === "base64"), `${slug}: the playground always asks for URLs`);
    for (const name of schema.required) {
      assert.ok(byName(fields)[name].required, `${slug}.${name} is required`);
    }
    assert.equal(fields.at(-1).name, "output_format", slug);
    assert.equal(fields.length, Object.keys(schema.properties).length - 1, slug);
  }
});

test("magic-eraser: a mask painter, a slider for grow_mask, a number box for the wide seed range", () => {
  const fields = byName(fieldsOf(schemas["magic-eraser"]));
  assert.equal(fields.mask.kind, "mask");
  assert.equal(fields.image.kind, "image");
  assert.deepEqual(
    [fields.grow_mask.kind, fields.grow_mask.slider, fields.grow_mask.minimum, fields.grow_mask.maximum, fields.grow_mask.default],
    ["integer", true, 0, 100, 10],
  );
  assert.equal(fields.seed.slider, false);
  assert.equal(fields.seed.minimum, -1);
  assert.equal(fields.invert_mask.kind, "boolean");
  assert.match(fields.grow_mask.description, /Dilate/);
});

test("bg-replace: the second image, the scheduler's choices with its default, float sliders", () => {
  const fields = byName(fieldsOf(schemas["bg-replace"]));
  assert.equal(fields.ref_image.kind, "image");
  assert.equal(fields.scheduler.kind, "select");
  assert.ok(fields.scheduler.options.includes("DPM2 Karras") && fields.scheduler.options.includes("UniPC"));
  assert.equal(initialValue(fields.scheduler), "DPM2 Karras");
  assert.equal(fields.prompt.kind, "textarea");
  assert.equal(fields.guidance_scale.kind, "number");
  assert.ok(fields.guidance_scale.slider);
  assert.ok(fields.guidance_scale.step > 0 && fields.guidance_scale.step <= 0.01);
  // output_format is an enum or null: "automatic" (left out of the request) comes first.
  assert.equal(fields.output_format.kind, "select");
  assert.ok(fields.output_format.nullable);
  assert.equal(initialValue(fields.output_format), "");
});

test("the body holds what was changed and the required fields, typed as the schema says", () => {
  const fields = fieldsOf(schemas["automatic-mask-generator"]);
  const values = startingValues(fields);
  values.image = "data:image/png;base64,AAAA";
  values.prompt = "sofa";
  values.threshold = "0.35";
  values.grow_mask = "10";
  values.return_alpha = true;
  const { body, missing } = requestBody(fields, values);
  assert.deepEqual(missing, []);
  assert.deepEqual(body, { image: "data:image/png;base64,AAAA", prompt: "sofa", threshold: 0.35, return_alpha: true });
});

test("required fields left empty are named, and what is not a number goes as typed for the server to refuse", () => {
  const fields = fieldsOf(schemas["magic-eraser"]);
  const values = startingValues(fields);
  values.grow_mask = "lots";
  const { body, missing } = requestBody(fields, values);
  assert.deepEqual(missing, ["image", "mask"]);
  assert.equal(body.grow_mask, "lots");
  assert.equal(requestBody(fields, { ...values, grow_mask: "1e3" }).body.grow_mask, 1000);
});

test("whether the answer is a mask follows return_mask and return_alpha, with the schema's defaults", () => {
  const eraser = fieldsOf(schemas["background-eraser"]);
  assert.equal(answersWithMask(eraser, {}), true);
  assert.equal(answersWithMask(eraser, { return_mask: false }), false);
  const generator = fieldsOf(schemas["automatic-mask-generator"]);
  assert.equal(answersWithMask(generator, { return_alpha: true }), false);
  assert.equal(answersWithMask(fieldsOf(schemas["inpaint-mask-maker"]), {}), false);
  assert.equal(answersWithMask(fieldsOf(schemas["magic-eraser"]), {}), false);
});
