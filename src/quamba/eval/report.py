"""A Markdown report (tables + PNG plots) from the JSON outputs of compare, eval and bench.

Inputs, each optional:

- ``quamba compare --json-out``: ``{fp_ppl, model, methods: [{method, ppl, ppl_ratio, weight_bytes, size_ratio}]}``;
- ``quamba eval --json`` (one file per model/method): ``{model, method, metrics: {task: {metric:
  {value, stderr}}}, average_acc, weight_bytes, ...}``;
- ``quamba bench --json``: a list of rows ``{model or shape, method, prefill_ms, decode_ms_per_token,
  peak_mem_bytes, weight_bytes}`` (or an object holding such a list under ``rows``/``results``).

Plots (matplotlib, the ``plot`` extra; without it the report has tables only):
quality (average accuracy, else perplexity) vs decode latency and vs weight size, with the
Pareto front (no other method is both faster/smaller and better) highlighted; peak memory vs
weight size. A plot whose inputs are missing is skipped with a note, never an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from quamba.errors import QuambaError

__all__ = ["write_report", "ReportResult", "pareto_front", "read_bench"]

_FP_NAMES = {"fp", "fp16", "fp32", "bf16", "float16", "float32", "bfloat16"}
MIB = 2 ** 20


@dataclass
class ReportResult:
    markdown: Path
    plots: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _method_key(name) -> str:
    name = str(name or "fp").lower()
    return "fp" if name in _FP_NAMES else name


def _read_json(path: Path, what: str):
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise QuambaError(f"{path}: no such {what} JSON file") from None
    except json.JSONDecodeError as exc:
        raise QuambaError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def read_compare(path: Path) -> dict:
    data = _read_json(path, "compare")
    if not isinstance(data, dict) or not isinstance(data.get("methods"), list):
        raise QuambaError(f"{path}: not a `quamba compare --json-out` file (no 'methods' list)")
    return data


def read_eval(path: Path) -> dict:
    data = _read_json(path, "eval")
    if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
        raise QuambaError(f"{path}: not a `quamba eval --json` file (no 'metrics')")
    return data


def read_bench(path: Path) -> list[dict]:
    """Rows {model, method, prefill_ms, decode_ms_per_token, peak_mem_bytes, weight_bytes}, one per
    (model or shape, method). Accepts such rows as they are, or ``quamba bench``'s long form
    (rows tagged ``kind``: memory / prefill / decode), folded to batch-1 decode, the
    longest batch-1 prefill and the batch-1 peak memory."""
    data = _read_json(path, "bench")
    if isinstance(data, dict):
        data = next((data[k] for k in ("rows", "results", "benchmarks") if isinstance(data.get(k), list)), None)
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise QuambaError(f"{path}: not a `quamba bench --json` file (expected a list of rows)")
    rows = [{**r, "model": str(r.get("model") or r.get("shape") or "?")} for r in data]
    if not any("kind" in r for r in rows):
        return rows
    folded: dict[tuple[str, str], dict] = {}
    for r in rows:
        row = folded.setdefault((r["model"], str(r.get("method"))), {"model": r["model"], "method": r.get("method")})
        kind = r.get("kind")
        if kind == "memory" and (r.get("batch") in (None, 1) or "peak_mem_bytes" not in row):
            # the batch-1 workload's peak when the bench has one per decode batch
            row["peak_mem_bytes"] = r.get("peak_bytes", r.get("peak_mem_bytes"))
            row["weight_bytes"] = r.get("weight_bytes")
        elif kind == "decode" and r.get("batch", 1) == 1:
            row["decode_ms_per_token"] = r.get("ms_per_token")
        elif kind == "prefill" and r.get("batch", 1) == 1 and r.get("prompt_len", 0) >= row.get("prompt_len", 0):
            row["prefill_ms"], row["prompt_len"] = r.get("ms"), r.get("prompt_len", 0)
    return list(folded.values())


def _cost_for(method: str, costs: dict[str, float]) -> float | None:
    """A method's latency: its own row, else (any quantized method) the bench's generic w8a8 row --
    every W8A8 method runs the same int8 kernels, only the scales and transforms differ."""
    if method in costs:
        return costs[method]
    return costs.get("w8a8") if method != "fp" else None


def pareto_front(points: list[tuple[float, float]], higher_is_better: bool = True) -> list[int]:
    """Indices of the points (cost, quality) that no other point beats: lower-or-equal cost and
    better-or-equal quality, strictly better in one."""
    sign = 1 if higher_is_better else -1
    front = []
    for i, (ci, qi) in enumerate(points):
        dominated = any((cj <= ci and sign * qj >= sign * qi) and (cj < ci or sign * qj > sign * qi)
                        for j, (cj, qj) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return front


# ----------------------------------------------------------------------------- tables

def _fmt(value, digits=4) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _accuracy_table(evals: list[dict]) -> list[str]:
    tasks = sorted({t for e in evals for t, row in e["metrics"].items() if "acc" in row})
    fp = next((e for e in evals if _method_key(e.get("method")) == "fp"), None)
    header = ["method", *tasks, "average", "drop vs fp"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for e in evals:
        cells = [str(e.get("method", "?"))]
        for t in tasks:
            cell = e["metrics"].get(t, {}).get("acc")
            cells.append("" if cell is None else f"{cell['value']:.4f} ± {cell['stderr'] or 0:.4f}")
        avg = e.get("average_acc")
        cells.append(_fmt(avg))
        drop = None if fp is None or avg is None or fp.get("average_acc") is None else fp["average_acc"] - avg
        cells.append("" if drop is None else f"{100 * drop:+.2f} pts")
        lines.append("| " + " | ".join(cells) + " |")
    other = sorted({(t, m) for e in evals for t, row in e["metrics"].items() for m in row if m != "acc"})
    if other:
        lines += ["", "Other metrics (acc_norm: per-byte normalized; perplexity: of the target word):", ""]
        header = ["method", *(f"{t} {m}" for t, m in other)]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for e in evals:
            cells = [str(e.get("method", "?"))]
            for t, m in other:
                cell = e["metrics"].get(t, {}).get(m)
                cells.append("" if cell is None else _fmt(cell["value"], 2 if m == "perplexity" else 4))
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def _compare_table(data: dict) -> list[str]:
    lines = [f"fp perplexity {data.get('fp_ppl', float('nan')):.3f} ({Path(str(data.get('model', '?'))).name}, "
             f"{data.get('tokens', '?')} tokens of {Path(str(data.get('text', '?'))).name})", "",
             "| method | perplexity | vs fp | weights MiB | size vs fp |", "|---|---|---|---|---|"]
    for row in data["methods"]:
        lines.append(f"| {row.get('method')} | {_fmt(row.get('ppl'), 3)} | {_fmt(row.get('ppl_ratio'))} | "
                     f"{_fmt((row.get('weight_bytes') or 0) / MIB, 1)} | {_fmt(row.get('size_ratio'), 2)} |")
    return lines


def _bench_table(rows: list[dict]) -> list[str]:
    lines = ["| model | method | prefill ms | decode ms/token | peak memory MiB | weights MiB |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        mem = r.get("peak_mem_bytes")
        wb = r.get("weight_bytes")
        lines.append(f"| {r['model']} | {r.get('method', '?')} | {_fmt(r.get('prefill_ms'), 2)} | "
                     f"{_fmt(r.get('decode_ms_per_token'), 3)} | {'' if mem is None else f'{mem / MIB:.1f}'} | "
                     f"{'' if wb is None else f'{wb / MIB:.1f}'} |")
    return lines


# ------------------------------------------------------------------------------ plots

def _quality_points(evals: list[dict], compares: list[dict]) -> tuple[str, bool, dict[str, float]]:
    """(label, higher_is_better, {method: quality}): average accuracy if any eval file, else perplexity."""
    if evals:
        return "average accuracy", True, {_method_key(e.get("method")): e["average_acc"] for e in evals
                                          if e.get("average_acc") is not None}
    quality = {}
    for c in compares:
        quality.update({_method_key(r.get("method")): r["ppl"] for r in c["methods"] if r.get("ppl") is not None})
    return "perplexity", False, quality


def _scatter_pareto(plt, out: Path, costs: dict[str, float], quality: dict[str, float], xlabel: str,
                    ylabel: str, higher_is_better: bool, title: str) -> Path | None:
    names = [m for m in quality if _cost_for(m, costs) is not None]
    if not names:
        return None
    points = [(_cost_for(m, costs), quality[m]) for m in names]
    front = set(pareto_front(points, higher_is_better))
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for i, (m, (x, y)) in enumerate(zip(names, points)):
        on = i in front
        ax.scatter([x], [y], s=70 if on else 40, color="tab:red" if on else "tab:gray", zorder=3,
                   edgecolor="black" if on else "none")
        ax.annotate(m, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=9)
    ordered = sorted((points[i] for i in front), key=lambda p: p[0])
    if len(ordered) > 1:
        ax.plot(*zip(*ordered), color="tab:red", linestyle="--", linewidth=1, label="Pareto front", zorder=2)
        ax.legend(loc="best", fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel + ("" if higher_is_better else " (lower is better)"))
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    # the front reads better with some room around the points
    ax.margins(x=0.15, y=0.15)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def _memory_plot(plt, out: Path, rows: list[dict]) -> Path | None:
    rows = [r for r in rows if r.get("peak_mem_bytes") is not None and r.get("weight_bytes") is not None]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for method in sorted({_method_key(r.get("method")) for r in rows}):
        mine = sorted((r for r in rows if _method_key(r.get("method")) == method), key=lambda r: r["weight_bytes"])
        ax.plot([r["weight_bytes"] / MIB for r in mine], [r["peak_mem_bytes"] / MIB for r in mine],
                marker="o", label=method)
    lo, hi = min(r["weight_bytes"] for r in rows) / MIB, max(r["weight_bytes"] for r in rows) / MIB
    ax.plot([lo, hi], [lo, hi], color="gray", linestyle=":", linewidth=1, label="weights only")
    ax.set_xlabel("weights (MiB)")
    ax.set_ylabel("peak memory (MiB)")
    ax.set_title("Peak memory vs model size", fontsize=11)
    if hi / max(lo, 1e-9) > 20:
        from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(ScalarFormatter())
            axis.set_minor_formatter(NullFormatter())
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


# ----------------------------------------------------------------------------- report

def write_report(out: str | Path, compare=(), evals=(), bench=(), title: str = "Quamba report") -> ReportResult:
    """Write ``out/report.md`` and its PNGs; returns the paths and notes on what was skipped."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    compares = [read_compare(p) for p in compare]
    eval_data = [read_eval(p) for p in evals]
    bench_rows = [r for p in bench for r in read_bench(p)]
    result = ReportResult(markdown=out / "report.md")
    md = [f"# {title}", ""]
    sources = [f"`{Path(p).name}`" for p in [*compare, *evals, *bench]]
    md += [f"Inputs: {', '.join(sources)}.", ""]

    if eval_data:
        models = sorted({Path(str(e.get("model", "?"))).name for e in eval_data})
        md += ["## Accuracy (lm-eval)", "", f"Model(s): {', '.join(models)}; accuracy ± stderr; drop in "
               "percentage points of the average, fp minus method.", "", *_accuracy_table(eval_data), ""]
    for c in compares:
        md += ["## Perplexity and size (`quamba compare`)", "", *_compare_table(c), ""]
    if bench_rows:
        md += ["## Latency and memory (`quamba bench`)", "", *_bench_table(bench_rows), ""]

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        plt = None
        result.notes.append("matplotlib is not installed (pip install quamba[plot]): tables only, no plots")
    if plt is not None:
        label, higher, quality = _quality_points(eval_data, compares)
        plots = []
        # latency: one model per plot (the first in the bench file that has the methods we score)
        latency_models = [m for m in dict.fromkeys(r["model"] for r in bench_rows)]
        for model in latency_models:
            costs = {_method_key(r.get("method")): r["decode_ms_per_token"] for r in bench_rows
                     if r["model"] == model and r.get("decode_ms_per_token") is not None}
            if any(_cost_for(m, costs) is not None for m in quality):
                safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(model))
                plots.append(("Quality vs decode latency", _scatter_pareto(
                    plt, out / f"quality_vs_latency_{safe}.png", costs, quality, "decode ms per token",
                    label, higher, f"{label} vs decode latency ({model})")))
        if not any(p for _, p in plots):
            result.notes.append("no bench rows matching the scored methods: quality-vs-latency plot skipped")
        sizes = {_method_key(e.get("method")): e["weight_bytes"] / MIB for e in eval_data if e.get("weight_bytes")}
        for c in compares:
            sizes.update({_method_key(r.get("method")): r["weight_bytes"] / MIB for r in c["methods"]
                          if r.get("weight_bytes")})
        if sizes and quality:
            plots.append(("Quality vs weight size", _scatter_pareto(
                plt, out / "quality_vs_size.png", sizes, quality, "weights (MiB)", label, higher,
                f"{label} vs weight size")))
        mem = _memory_plot(plt, out / "memory_vs_size.png", bench_rows)
        if mem is None:
            result.notes.append("no bench rows with peak_mem_bytes and weight_bytes: memory plot skipped")
        else:
            plots.append(("Peak memory vs model size", mem))
        plots = [(t, p) for t, p in plots if p is not None]
        if plots:
            md += ["## Plots", "", "Red: the Pareto front (no other method is both cheaper and better).", ""]
            for heading, path in plots:
                md += [f"### {heading}", "", f"![{heading}]({path.name})", ""]
                result.plots.append(path)
    if result.notes:
        md += ["## Notes", "", *(f"- {n}" for n in result.notes), ""]
    result.markdown.write_text("\n".join(md))
    return result
