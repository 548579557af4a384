// Dashboard charts of the S3 API's request rate and mean latency, drawn as SVG with no library.
// CSP-clean: elements made with createElementNS and plain attributes (no style attributes, no innerHTML, no eval).
// The server gives cumulative totals (/api/metrics); a point is the difference of two polls.

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 300;
const HEIGHT = 80;
const POINTS = 40; // points kept per chart (a 2 s poll: the last 80 s)

function svgElement(name, attributes) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  return node;
}

class Chart {
  constructor(figure) {
    this.figure = figure;
    this.values = [];
    this.svg = svgElement("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, class: "chart-svg", "aria-hidden": "true",
                                    preserveAspectRatio: "none" });
    this.axis = svgElement("line", { x1: 0, y1: HEIGHT - 1, x2: WIDTH, y2: HEIGHT - 1, class: "chart-axis" });
    this.line = svgElement("polyline", { points: "", class: "chart-line" });
    this.svg.append(this.axis, this.line);
    figure.querySelector(".chart-plot").append(this.svg);
    this.latest = figure.querySelector(".chart-latest");
  }

  push(value, label) {
    this.values.push(value);
    if (this.values.length > POINTS) this.values.shift();
    const top = Math.max(...this.values, 1e-9);
    const step = WIDTH / (POINTS - 1);
    const offset = (POINTS - this.values.length) * step;
    const points = this.values.map((v, i) => {
      const x = offset + i * step;
      const y = HEIGHT - 2 - (v / top) * (HEIGHT - 6);
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    });
    this.line.setAttribute("points", points.join(" "));
    this.figure.dataset.points = String(this.values.length);
    this.figure.dataset.latest = String(value);
    this.latest.textContent = label;
  }
}

export function startCharts(root) {
  const rate = new Chart(root.querySelector('[data-chart="rate"]'));
  const latency = new Chart(root.querySelector('[data-chart="latency"]'));
  const total = root.querySelector(".chart-total");
  const interval = Number(root.dataset.interval) || 2000;
  let previous = null;
  let stopped = false;

  async function poll() {
    if (stopped || !root.isConnected) return;
    try {
      const answer = await fetch(root.dataset.source, { credentials: "same-origin", cache: "no-store" });
      if (!answer.ok) throw new Error(`metrics: ${answer.status}`);
      const now = await answer.json();
      if (!now.enabled) {
        total.textContent = "Request metrics are off (S4_METRICS_ENABLED).";
        stopped = true;
        return;
      }
      total.textContent = `${Math.round(now.requests)} S3 requests counted, ${Math.round(now.errors)} server errors`;
      root.dataset.requests = String(now.requests);
      if (previous !== null && now.at > previous.at) {
        const seconds = now.at - previous.at;
        const requests = Math.max(0, now.requests - previous.requests);
        const count = Math.max(0, now.count - previous.count);
        const sum = Math.max(0, now.sum - previous.sum);
        const perSecond = requests / seconds;
        const meanMs = count > 0 ? (sum / count) * 1000 : 0;
        rate.push(perSecond, `${perSecond.toFixed(1)} requests/s`);
        latency.push(meanMs, count > 0 ? `${meanMs.toFixed(1)} ms mean` : "no requests");
      }
      previous = now;
    } catch (error) {
      total.textContent = "Request metrics unavailable; retrying.";
    }
    setTimeout(poll, interval);
  }
  poll();
}
