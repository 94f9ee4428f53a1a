// A model's JSON schema (from GET /v1/models) turned into form fields, and a form's values back into
// a request body. Pure functions: no DOM, so that Node's test runner checks them.

// Set by the playground itself: it always asks for URLs to fetch the outputs from.
const SET_BY_PLAYGROUND = new Set(["base64"]);

// An integer range this wide or narrower gets a slider; wider ones (seeds) a plain number box.
const SLIDER_SPAN = 1000;

function nullableEnum(property) {
  for (const choice of property.anyOf ?? []) {
    if (Array.isArray(choice.enum)) {
      return { options: choice.enum, nullable: (property.anyOf ?? []).some((other) => other.type === "null") };
    }
  }
  return null;
}

function labelOf(name, property) {
  if (property.title) {
    return property.title;
  }
  const words = name.replaceAll("_", " ");
  return words.charAt(0).toUpperCase() + words.slice(1);
}

function numberField(field, property) {
  field.minimum = property.minimum ?? property.exclusiveMinimum ?? null;
  field.maximum = property.maximum ?? property.exclusiveMaximum ?? null;
  const bounded = field.minimum !== null && field.maximum !== null;
  if (field.kind === "integer") {
    field.step = 1;
    field.slider = bounded && field.maximum - field.minimum <= SLIDER_SPAN;
  } else {
    // Floats: a hundred steps across the range, never coarser than the default's own precision.
    field.step = bounded ? Math.min(0.01, (field.maximum - field.minimum) / 100) : "any";
    field.slider = bounded;
  }
  return field;
}

/**
 * The fields of one model's input schema, in the order a person fills them in: images first, then
 * the other required fields, then the rest in the schema's order, the output format last.
 * Each field: {name, label, description, kind, required, default, ...kind-specific}.
 * kind is "image", "mask" (the mask painter), "boolean", "integer", "number", "select", "text" or "textarea".
 */
export function fieldsOf(schema) {
  const required = new Set(schema.required ?? []);
  const fields = [];
  for (const [name, property] of Object.entries(schema.properties ?? {})) {
    if (SET_BY_PLAYGROUND.has(name)) {
      continue;
    }
    const field = {
      name,
      label: labelOf(name, property),
      description: property.description ?? "",
      required: required.has(name),
      default: property.default ?? null,
    };
    const choices = nullableEnum(property);
    if (property.format === "image") {
      field.kind = name === "mask" ? "mask" : "image";
    } else if (Array.isArray(property.enum) || choices) {
      field.kind = "select";
      field.options = property.enum ?? choices.options;
      field.nullable = choices ? choices.nullable : false;
    } else if (property.type === "boolean") {
      field.kind = "boolean";
    } else if (property.type === "integer" || property.type === "number") {
      field.kind = property.type;
      numberField(field, property);
    } else {
      field.maxLength = property.maxLength ?? null;
      field.kind = (field.maxLength ?? 0) > 200 || name.endsWith("prompt") ? "textarea" : "text";
    }
    fields.push(field);
  }
  const rank = (field) => {
    if (field.kind === "image") return 0;
    if (field.kind === "mask") return 1;
    if (field.required) return 2;
    if (field.name === "output_format") return 4;
    return 3;
  };
  // Array.prototype.sort is stable: within a rank the schema's order stays.
  return fields.sort((first, second) => rank(first) - rank(second));
}

/** The value a field starts with in the form, as the form control holds it. */
export function initialValue(field) {
  if (field.kind === "boolean") {
    return field.default === true;
  }
  if (field.default === null || field.default === undefined) {
    return "";
  }
  return String(field.default);
}

function typedValue(field, raw) {
  if (field.kind === "boolean") {
    return raw === true || raw === "true";
  }
  if (field.kind === "integer" || field.kind === "number") {
    const text = String(raw).trim();
    // Anything that is not a plain number is sent as typed, for the server to name in its error.
    if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text)) {
      return text;
    }
    return Number(text);
  }
  return raw;
}

/**
 * The JSON body for `values` (field name to the form control's value; images as a URL or data URI).
 * Empty optional fields and values equal to their default are left out, so the body is the shortest
 * request that means the same; required fields always go in. `missing` lists the required fields
 * left empty, for the playground to point at before sending anything.
 */
export function requestBody(fields, values) {
  const body = {};
  const missing = [];
  for (const field of fields) {
    const raw = values[field.name];
    const empty = raw === undefined || raw === null || (typeof raw === "string" && raw.trim() === "");
    if (empty) {
      if (field.required) {
        missing.push(field.name);
      }
      continue;
    }
    const value = typedValue(field, raw);
    if (!field.required && field.default !== null && value === field.default) {
      continue;
    }
    body[field.name] = value;
  }
  return { body, missing };
}

/** Whether a request with this body answers with a mask (white = selected) rather than a picture. */
export function answersWithMask(fields, body) {
  const effective = (name) => {
    if (name in body) return body[name];
    const field = fields.find((candidate) => candidate.name === name);
    return field ? field.default : undefined;
  };
  return effective("return_mask") === true && effective("return_alpha") !== true;
}
