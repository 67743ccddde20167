// A small time chart of one numeric property, drawn as inline SVG; at most MAX_POINTS points.

const SVG = "http://www.w3.org/2000/svg";
export const MAX_POINTS = 300;
const WIDTH = 300;
const HEIGHT = 70;

export class Series {
  constructor() {
    this.points = []; // [time ms, value], sorted by time
  }

  add(time, value) {
    if (!Number.isFinite(time) || typeof value !== "number" || !Number.isFinite(value)) return;
    let i = this.points.length;
    while (i > 0 && this.points[i - 1][0] > time) i--;
    const same = this.points[i - 1];
    if (same && same[0] === time && same[1] === value) return; // seen through history and the feed
    this.points.splice(i, 0, [time, value]);
    if (this.points.length > MAX_POINTS) this.points.splice(0, this.points.length - MAX_POINTS);
  }
}

function el(name, attrs = {}) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  return node;
}

// A <figure> with the property's name, the line and its range; built with textContent only.
export function drawChart(name, series) {
  const figure = document.createElement("figure");
  figure.className = "chart";
  figure.dataset.property = name;
  const title = document.createElement("h4");
  title.textContent = name;
  figure.append(title);
  const points = series.points;
  const svg = el("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, preserveAspectRatio: "none", role: "img" });
  if (points.length) {
    const t0 = points[0][0];
    const t1 = points[points.length - 1][0];
    let lo = Infinity;
    let hi = -Infinity;
    for (const [, v] of points) {
      lo = Math.min(lo, v);
      hi = Math.max(hi, v);
    }
    const x = (t) => (t1 === t0 ? WIDTH / 2 : ((t - t0) / (t1 - t0)) * WIDTH);
    const y = (v) => (hi === lo ? HEIGHT / 2 : HEIGHT - 4 - ((v - lo) / (hi - lo)) * (HEIGHT - 8));
    const coords = points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`);
    if (coords.length === 1) coords.push(`${(x(t0) + 1).toFixed(1)},${y(points[0][1]).toFixed(1)}`);
    svg.append(el("polyline", { points: coords.join(" ") }));
    const range = document.createElement("div");
    range.className = "range";
    const last = points[points.length - 1][1];
    range.textContent = `last ${last} · min ${lo} · max ${hi} · ${points.length} points`;
    figure.append(svg, range);
  } else {
    figure.append(svg);
  }
  return figure;
}
