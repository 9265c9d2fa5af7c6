"""Draws the Grafana dashboard's panels from the answers a real Prometheus
gave to the dashboard's own queries (the file tests/deploy.rs writes when
CLASSGRID_DASHBOARD_DATA is set; scripts/dashboard-png.sh runs both). Each
panel sits where its gridPos puts it in Grafana; a stat panel shows its
query's last value, a time series every series of every query. Nothing is
drawn that Prometheus did not answer: a query without data says so.

Usage: dashboard-png.py DATA.json OUT.png [NOTE]
"""

import datetime
import json
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# Grafana's units, as far as the dashboard uses them: (scale, label).
UNITS = {
    "percentunit": (100.0, "%"),
    "bytes": (1.0 / (1 << 20), "MiB"),
    "decbytes": (1e-6, "MB"),
    "s": (1.0, "s"),
    "ms": (1.0, "ms"),
    "reqps": (1.0, "per s"),
    "ops": (1.0, "per s"),
    "short": (1.0, ""),
    "none": (1.0, ""),
}


def unit_of(panel):
    unit = panel.get("unit") or "short"
    return UNITS.get(unit, (1.0, unit))


def legend(fmt, metric, fallback):
    """Grafana's legendFormat: {{label}} replaced by the series' label."""
    if not fmt:
        labels = ", ".join(f"{k}={v}" for k, v in sorted(metric.items()))
        return labels or fallback
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: metric.get(m.group(1), ""), fmt)


def series(panel):
    """(legend, [t], [value]) for every series every query answered."""
    scale, _ = unit_of(panel)
    out = []
    for t in panel["targets"]:
        for r in t["result"] or []:
            xs = [float(v[0]) for v in r["values"]]
            ys = [float(v[1]) * scale for v in r["values"]]
            out.append((legend(t.get("legend"), r["metric"], t["query"]), xs, ys))
    return out


def draw(data, out, note):
    panels = data["panels"]
    height = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    fig = plt.figure(figsize=(24, height * 0.42))
    grid = fig.add_gridspec(
        height, 24, hspace=2.2, wspace=2.0, top=0.965, bottom=0.025, left=0.03, right=0.99
    )
    start = data["start"]
    for p in panels:
        g = p["gridPos"]
        if p["type"] == "row":
            ax = fig.add_subplot(grid[g["y"], g["x"] : g["x"] + g["w"]])
            ax.axis("off")
            ax.text(0, 0.5, p["title"], fontsize=15, fontweight="bold", va="center")
            continue
        ax = fig.add_subplot(grid[g["y"] + 1 : g["y"] + g["h"], g["x"] : g["x"] + g["w"]])
        ax.set_title(p["title"], fontsize=11, loc="left")
        lines = series(p)
        _, unit = unit_of(p)
        if not lines:
            ax.axis("off")
            ax.text(0.5, 0.5, "no data", ha="center", va="center", color="grey")
            continue
        if p["type"] == "stat":
            ax.axis("off")
            last = [ys[-1] for _, _, ys in lines if ys]
            value = sum(last) if len(last) > 1 else last[0]
            ax.text(0.5, 0.45, f"{value:g} {unit}".strip(), ha="center", va="center",
                    fontsize=30, color="#1f6f3f")
            continue
        for name, xs, ys in lines:
            ax.plot([x - start for x in xs], ys, label=name, linewidth=1.4)
        ax.set_xlim(0, data["end"] - start)
        if unit:
            ax.set_ylabel(unit, fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    when = datetime.datetime.fromtimestamp(start, datetime.timezone.utc)
    fig.suptitle(
        f"{data['dashboard']}: Prometheus answers to the dashboard's queries, "
        f"{when:%Y-%m-%d %H:%M} UTC, {data['end'] - start:.0f} s, step {data['step_s']} s, "
        f"$__rate_interval = {data['rate_interval']}; x: seconds since Prometheus started",
        fontsize=14,
        x=0.01,
        ha="left",
    )
    fig.text(0.01, 0.004, data["setup"] + (f"; {note}" if note else ""), fontsize=10)
    fig.savefig(out, dpi=80, bbox_inches="tight")


def main():
    data_path, out = sys.argv[1], sys.argv[2]
    note = sys.argv[3] if len(sys.argv) > 3 else ""
    with open(data_path, encoding="utf-8") as f:
        data = json.load(f)
    draw(data, out, note)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
