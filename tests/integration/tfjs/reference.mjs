// Dev-only reference run for retouch's TF.js-to-ONNX converter test (tests/integration/test_centernet_tfjs.py).
//
// Loads a TF.js graph model from its model.json and weight shards on disk, runs it once with
// TF.js's own kernels on an input given as a raw little-endian float32 file, and writes every
// output as <outdir>/<index>.f32 plus <outdir>/outputs.json ({name: {shape, dtype, file}}).
//
// usage: node reference.mjs MODEL_JSON INPUT_F32 SHAPE(comma-separated) OUTDIR [BACKEND=wasm|cpu]
import { readFile, writeFile, mkdir } from "node:fs/promises";
import path from "node:path";

import * as tf from "@tensorflow/tfjs";
import "@tensorflow/tfjs-backend-wasm";

const [modelJson, inputFile, shapeText, outDir, backend = "wasm"] = process.argv.slice(2);
if (!outDir) {
  console.error("usage: node reference.mjs MODEL_JSON INPUT_F32 SHAPE OUTDIR [wasm|cpu]");
  process.exit(2);
}

// An IOHandler reading the model's JSON and its weight shards, concatenated in manifest order.
function fileHandler(jsonPath) {
  return {
    async load() {
      const model = JSON.parse(await readFile(jsonPath, "utf8"));
      const folder = path.dirname(jsonPath);
      const weightSpecs = [];
      const shards = [];
      for (const group of model.weightsManifest) {
        weightSpecs.push(...group.weights);
        for (const shard of group.paths) shards.push(await readFile(path.join(folder, shard)));
      }
      const all = Buffer.concat(shards);
      const weightData = all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength);
      return {
        modelTopology: model.modelTopology,
        format: model.format,
        generatedBy: model.generatedBy,
        convertedBy: model.convertedBy,
        signature: model.signature,
        userDefinedMetadata: model.userDefinedMetadata,
        weightSpecs,
        weightData,
      };
    },
  };
}

if (!(await tf.setBackend(backend))) throw new Error(`TF.js backend ${backend} could not be set`);
await tf.ready();

const shape = shapeText.split(",").map(Number);
const raw = await readFile(inputFile);
const values = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
const model = await tf.loadGraphModel(fileHandler(modelJson));
const input = tf.tensor(values, shape, "float32");
const names = model.outputs.map((output) => output.name);
const results = model.execute(input, names);
const tensors = Array.isArray(results) ? results : [results];

await mkdir(outDir, { recursive: true });
const index = { backend: tf.getBackend(), tfjs: tf.version.tfjs, outputs: {} };
for (let i = 0; i < tensors.length; i++) {
  const tensor = tensors[i].dtype === "float32" ? tensors[i] : tensors[i].toFloat();
  const data = await tensor.data();
  const file = `${i}.f32`;
  await writeFile(path.join(outDir, file), Buffer.from(data.buffer, data.byteOffset, data.byteLength));
  index.outputs[names[i]] = { shape: tensors[i].shape, dtype: tensors[i].dtype, file };
}
await writeFile(path.join(outDir, "outputs.json"), JSON.stringify(index, null, 2));
console.log(JSON.stringify({ backend: index.backend, tfjs: index.tfjs, outputs: Object.keys(index.outputs) }));
