"""``quamba eval`` (lm-eval tasks) and ``quamba report`` (Markdown + plots), added to the CLI by
``register(app)``. Thin fronts: the work is in quamba.eval.lm_eval_adapter and quamba.eval.report.
"""

from __future__ import annotations

import datetime
import json
import platform
import time
from pathlib import Path
from typing import Optional

import typer

__all__ = ["register"]


def _require_lm_eval():
    from quamba.errors import QuambaError

    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise QuambaError("`quamba eval` needs lm-eval: pip install quamba[eval]") from None


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("quamba", "lm_eval", "torch"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def register(app: typer.Typer) -> None:
    from quamba import cli

    @app.command("eval")
    @cli._user_errors
    def eval_command(
        model: Optional[str] = cli.ModelArg,
        tasks: str = typer.Option("quamba_lastword,quamba_cloze_mc", "--tasks",
                                  help="Comma-separated lm-eval tasks. Offline (shipped): quamba_lastword, "
                                       "quamba_cloze_mc (tag quamba_offline); lm-eval's own, e.g. lambada_openai, "
                                       "hellaswag, download their data from the Hugging Face hub."),
        limit: Optional[float] = typer.Option(None, "--limit", help="Examples per task (< 1: a fraction)."),
        num_fewshot: Optional[int] = typer.Option(None, "--num-fewshot", min=0),
        batch_size: int = typer.Option(16, "--batch-size", min=1),
        max_length: int = typer.Option(2048, "--max-length", min=2, help="Tokens of context at most (longer: left-truncated)."),
        bootstrap_iters: int = typer.Option(1000, "--bootstrap-iters", min=0,
                                            help="Bootstrap samples for the stderr of non-mean metrics (perplexity)."),
        out_json: Optional[Path] = typer.Option(None, "--json", help="Write results, model, device and versions to this JSON file."),
        device: Optional[str] = cli.DeviceOpt, dtype: str = cli.DtypeOpt, tokenizer: Optional[str] = cli.TokenizerOpt,
    ):
        """Accuracy on lm-eval tasks (the offline suite by default), for fp and quantized models alike."""
        _require_lm_eval()
        from rich.table import Table

        from quamba.eval.compare import weight_bytes
        from quamba.eval.lm_eval_adapter import QuambaLM, check_tasks, evaluate

        names = [t.strip() for t in tasks.split(",") if t.strip()]
        if limit is not None and limit >= 1:
            limit = int(limit)
        manager = check_tasks(names)  # a wrong task name fails before the model loads
        lm, tok = cli._load(model, device, dtype, tokenizer)
        adapter = QuambaLM(model=lm, tok=tok, batch_size=batch_size, max_length=max_length)
        start = time.perf_counter()
        out = evaluate(adapter, names, limit=limit, num_fewshot=num_fewshot, bootstrap_iters=bootstrap_iters,
                       manager=manager)
        elapsed = time.perf_counter() - start
        qconfig = getattr(lm, "quant_config", None)
        record = {
            "model": str(lm.source_dir), "method": qconfig.method if qconfig is not None else "fp",
            "device": str(lm.device), "dtype": str(lm.dtype).removeprefix("torch."), "tasks": names,
            "limit": limit, "num_fewshot": num_fewshot, "batch_size": batch_size, "max_length": max_length,
            "weight_bytes": weight_bytes(lm), "seconds": elapsed,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "versions": _versions(),
            "average_acc": out["average_acc"],
            "metrics": {t: {m: {"value": v, "stderr": s} for m, (v, s) in row.items()} for t, row in out["metrics"].items()},
            "n_samples": out.get("n-samples"), "results": out["results"],
        }
        table = Table(title=f"{Path(record['model']).name} ({record['method']}) on {record['device']}, "
                            f"{elapsed:.0f} s" + (f", limit {limit}" if limit else ""))
        for col in ("task", "metric", "value", "stderr"):
            table.add_column(col, justify="left" if col in ("task", "metric") else "right")
        for task, row in record["metrics"].items():
            for metric, cell in row.items():
                stderr = "" if cell["stderr"] is None else f"{cell['stderr']:.4f}"
                table.add_row(task, metric, f"{cell['value']:.4f}", stderr)
        cli.console.print(table)
        if record["average_acc"] is not None:
            cli.console.print(f"average accuracy: [bold]{record['average_acc']:.4f}[/]")
        if out_json:
            out_json.parent.mkdir(parents=True, exist_ok=True)
            out_json.write_text(json.dumps(record, indent=2, default=str) + "\n")
            cli.err_console.print(f"[dim]wrote {out_json}[/]")

    @app.command("report")
    @cli._user_errors
    def report_command(
        out: Path = typer.Option(..., "--out", "-o", help="Folder for report.md and the PNG plots."),
        compare: list[Path] = typer.Option([], "--compare", help="JSON of `quamba compare --json-out` (repeatable)."),
        evals: list[Path] = typer.Option([], "--eval", help="JSON of `quamba eval --json`, one per method (repeatable)."),
        bench: list[Path] = typer.Option([], "--bench", help="JSON of `quamba bench --json` (repeatable)."),
        title: str = typer.Option("Quamba: accuracy, latency and memory", "--title"),
    ):
        """Markdown report with tables and plots (accuracy or perplexity vs latency with the Pareto front,
        memory vs model size) from the JSON outputs of compare, eval and bench."""
        from quamba.errors import QuambaError
        from quamba.eval.report import write_report

        if not (compare or evals or bench):
            raise QuambaError("nothing to report: pass --compare, --eval and/or --bench JSON files")
        result = write_report(out, compare=compare, evals=evals, bench=bench, title=title)
        cli.console.print(f"wrote [bold]{result.markdown}[/]" + "".join(f"\n  {p}" for p in result.plots))
        for note in result.notes:
            cli.err_console.print(f"[dim]{note}[/]")
