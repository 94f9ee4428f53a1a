// The mask painter's model: what was painted, as operations in the image's own pixels, with undo and
// redo; and the mask those operations make at any resolution. Pure: no DOM, so that Node's test runner
// checks them. A mask is a Uint8Array of width × height, row by row, 255 = selected, 0 = not.

/**
 * Where a pointer at (clientX, clientY) falls on an image of imageWidth × imageHeight shown in the
 * element whose bounding box is `box` ({left, top, width, height}), in the image's pixels.
 */
export function toImagePoint(clientX, clientY, box, imageWidth, imageHeight) {
  const x = ((clientX - box.left) / box.width) * imageWidth;
  const y = ((clientY - box.top) / box.height) * imageHeight;
  return [Math.min(Math.max(x, 0), imageWidth), Math.min(Math.max(y, 0), imageHeight)];
}

/** The size that fits width × height within maxWidth × maxHeight, never enlarged, and its scale. */
export function fitWithin(width, height, maxWidth, maxHeight) {
  const scale = Math.min(1, maxWidth / width, maxHeight / height);
  return { width: Math.max(1, Math.round(width * scale)), height: Math.max(1, Math.round(height * scale)), scale };
}

function paintSegment(mask, width, height, from, to, radius, value) {
  const [x0, y0] = from;
  const [x1, y1] = to;
  const left = Math.max(0, Math.floor(Math.min(x0, x1) - radius));
  const right = Math.min(width - 1, Math.ceil(Math.max(x0, x1) + radius));
  const top = Math.max(0, Math.floor(Math.min(y0, y1) - radius));
  const bottom = Math.min(height - 1, Math.ceil(Math.max(y0, y1) + radius));
  const dx = x1 - x0;
  const dy = y1 - y0;
  const lengthSquared = dx * dx + dy * dy;
  const radiusSquared = radius * radius;
  for (let row = top; row <= bottom; row += 1) {
    // Pixel centres: the pixel (column, row) covers [column, column + 1).
    const py = row + 0.5;
    for (let column = left; column <= right; column += 1) {
      const px = column + 0.5;
      let along = lengthSquared === 0 ? 0 : ((px - x0) * dx + (py - y0) * dy) / lengthSquared;
      along = Math.min(1, Math.max(0, along));
      const ex = px - (x0 + along * dx);
      const ey = py - (y0 + along * dy);
      if (ex * ex + ey * ey <= radiusSquared) {
        mask[row * width + column] = value;
      }
    }
  }
}

/**
 * The mask that `operations` make on a width × height image. Operations (in image pixels):
 * {type: "stroke", erase: bool, radius, points: [[x, y], ...]}, {type: "clear"}, {type: "invert"}.
 * `scale` draws the same operations at another resolution (0.25 for a quarter-size preview).
 */
export function rasterize(operations, width, height, scale = 1) {
  const mask = new Uint8Array(width * height);
  for (const operation of operations) {
    applyOperation(mask, width, height, operation, scale);
  }
  return mask;
}

/** Draws one operation onto `mask` (width × height), in place: what `rasterize` does for each. */
export function applyOperation(mask, width, height, operation, scale = 1) {
  if (operation.type === "clear") {
    mask.fill(0);
  } else if (operation.type === "invert") {
    for (let index = 0; index < mask.length; index += 1) {
      mask[index] = 255 - mask[index];
    }
  } else if (operation.type === "stroke") {
    const value = operation.erase ? 0 : 255;
    // Half a pixel at least: a thin brush on a small preview still leaves a mark.
    const radius = Math.max(0.5, operation.radius * scale);
    const points = operation.points.map(([x, y]) => [x * scale, y * scale]);
    if (points.length === 1) {
      paintSegment(mask, width, height, points[0], points[0], radius, value);
    }
    for (let index = 1; index < points.length; index += 1) {
      paintSegment(mask, width, height, points[index - 1], points[index], radius, value);
    }
  }
  return mask;
}

/** Whether nothing is selected. */
export function isEmpty(mask) {
  return mask.every((value) => value === 0);
}

/** The share of the image selected, 0..1. */
export function coverage(mask) {
  let selected = 0;
  for (const value of mask) {
    if (value) selected += 1;
  }
  return mask.length ? selected / mask.length : 0;
}

/** RGBA bytes (for an ImageData) of a mask: grey levels, or `colour` [r, g, b, a] where selected and clear elsewhere. */
export function maskToRgba(mask, colour = null) {
  const rgba = new Uint8ClampedArray(mask.length * 4);
  for (let index = 0; index < mask.length; index += 1) {
    const offset = index * 4;
    if (colour === null) {
      rgba[offset] = rgba[offset + 1] = rgba[offset + 2] = mask[index];
      rgba[offset + 3] = 255;
    } else if (mask[index]) {
      rgba[offset] = colour[0];
      rgba[offset + 1] = colour[1];
      rgba[offset + 2] = colour[2];
      rgba[offset + 3] = colour[3];
    }
  }
  return rgba;
}

/** The painted operations with undo and redo: a new operation forgets what was undone. */
export class PaintHistory {
  constructor() {
    this.done = [];
    this.undone = [];
  }

  get operations() {
    return this.done;
  }

  get canUndo() {
    return this.done.length > 0;
  }

  get canRedo() {
    return this.undone.length > 0;
  }

  push(operation) {
    this.done.push(operation);
    this.undone = [];
  }

  undo() {
    if (this.canUndo) {
      this.undone.push(this.done.pop());
    }
  }

  redo() {
    if (this.canRedo) {
      this.done.push(this.undone.pop());
    }
  }

  reset() {
    this.done = [];
    this.undone = [];
  }
}
