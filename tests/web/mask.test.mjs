// The mask painter's pure parts: strokes kept in the image's pixels and rasterised at full resolution.
import assert from "node:assert/strict";
import { test } from "node:test";

import { PaintHistory, coverage, fitWithin, isEmpty, maskToRgba, rasterize, toImagePoint } from "../../src/retouch/web/playground/lib/mask.js";

const at = (mask, width, x, y) => mask[y * width + x];

test("a point on a preview maps to the image's own pixels, whatever the preview's size", () => {
  const box = { left: 100, top: 50, width: 400, height: 300 };
  assert.deepEqual(toImagePoint(300, 200, box, 4000, 3000), [2000, 1500]);
  assert.deepEqual(toImagePoint(100, 50, box, 4000, 3000), [0, 0]);
  // A pointer dragged past the edge stays on the image.
  assert.deepEqual(toImagePoint(900, -20, box, 4000, 3000), [4000, 0]);
});

test("a stroke is rasterised at the image's full resolution, as a capsule of its radius", () => {
  const width = 400;
  const height = 300;
  const stroke = { type: "stroke", erase: false, radius: 10, points: [[100, 150], [300, 150]] };
  const mask = rasterize([stroke], width, height);
  assert.equal(mask.length, width * height);
  assert.equal(at(mask, width, 200, 150), 255);
  assert.equal(at(mask, width, 200, 159), 255);
  assert.equal(at(mask, width, 200, 161), 0);
  // Round caps: past the ends by less than the radius, not further.
  assert.equal(at(mask, width, 92, 150), 255);
  assert.equal(at(mask, width, 88, 150), 0);
  assert.equal(at(mask, width, 100, 139), 0, "a corner outside the cap stays unselected");
  // Only 0 and 255: the server reads white as selected, with no grey fringe to guess at.
  assert.ok(mask.every((value) => value === 0 || value === 255));
  const expected = (200 * 20 + Math.PI * 100) / (width * height);
  assert.ok(Math.abs(coverage(mask) - expected) < 0.002, `coverage ${coverage(mask)} against ${expected}`);
});

test("one click paints a disc, and the same strokes drawn at a quarter scale cover the same share", () => {
  const click = { type: "stroke", erase: false, radius: 40, points: [[200, 200]] };
  const full = rasterize([click], 800, 800);
  const quarter = rasterize([click], 200, 200, 0.25);
  assert.equal(at(full, 800, 200, 200), 255);
  assert.ok(Math.abs(coverage(full) - coverage(quarter)) < 0.002);
  assert.ok(Math.abs(coverage(full) - (Math.PI * 1600) / 640000) < 0.001);
});

test("the eraser, clear and invert apply in order", () => {
  const paint = { type: "stroke", erase: false, radius: 5, points: [[10, 10], [50, 10]] };
  const erase = { type: "stroke", erase: true, radius: 5, points: [[30, 10]] };
  const mask = rasterize([paint, erase], 64, 32);
  assert.equal(at(mask, 64, 15, 10), 255);
  assert.equal(at(mask, 64, 30, 10), 0);
  const inverted = rasterize([paint, { type: "invert" }], 64, 32);
  assert.equal(at(inverted, 64, 15, 10), 0);
  assert.equal(at(inverted, 64, 5, 30), 255);
  assert.ok(isEmpty(rasterize([paint, { type: "clear" }], 64, 32)));
  assert.ok(!isEmpty(rasterize([paint, { type: "clear" }, { type: "invert" }], 64, 32)));
});

test("undo and redo step through the operations, and a new one forgets what was undone", () => {
  const history = new PaintHistory();
  assert.ok(!history.canUndo && !history.canRedo);
  history.push({ type: "invert" });
  history.push({ type: "clear" });
  history.undo();
  assert.deepEqual(history.operations, [{ type: "invert" }]);
  assert.ok(history.canRedo);
  history.redo();
  assert.equal(history.operations.length, 2);
  history.undo();
  history.push({ type: "stroke", erase: false, radius: 1, points: [[0, 0]] });
  assert.ok(!history.canRedo);
  assert.deepEqual(history.operations.map((operation) => operation.type), ["invert", "stroke"]);
  history.undo();
  history.undo();
  history.undo();
  assert.equal(history.operations.length, 0);
});

test("a mask becomes grey RGBA for the PNG sent, or a colour over clear for the overlay", () => {
  const mask = Uint8Array.from([0, 255]);
  assert.deepEqual([...maskToRgba(mask)], [0, 0, 0, 255, 255, 255, 255, 255]);
  assert.deepEqual([...maskToRgba(mask, [10, 20, 30, 40])], [0, 0, 0, 0, 10, 20, 30, 40]);
});

test("a large image fits the preview without being enlarged", () => {
  assert.deepEqual(fitWithin(4000, 3000, 800, 800), { width: 800, height: 600, scale: 0.2 });
  assert.deepEqual(fitWithin(300, 200, 800, 800), { width: 300, height: 200, scale: 1 });
});
