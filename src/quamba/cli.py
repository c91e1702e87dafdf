"""The ``quamba`` command line: a thin front over the Python API.

Every command takes an optional MODEL (a folder, a hub id, or nothing for the
embedded tiny model), ``--device`` and ``--dtype``; ``--json`` prints one JSON
object on stdout for scripts, while progress and tables go to stderr/stdout.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from quamba.errors import QuambaError

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Quantize Mamba language models to W8A8 (the Quamba recipe), evaluate, generate and benchmark.\n\n"
         "MODEL is a local folder (mamba-ssm or transformers layout, or one written by `quamba quantize`), "
         "a Hugging Face id such as state-spaces/mamba-130m, or omitted for the embedded tiny model.")
console = Console()
err_console = Console(stderr=True)

ASSETS = Path(__file__).resolve().parent / "assets"
DEMO_CALIB = ASSETS / "demo-calib.txt"
DEMO_EVAL = ASSETS / "demo-eval.txt"

ModelArg = typer.Argument(None, help="Model folder or hub id; omit for the embedded mamba1-tiny-3m.", show_default=False)
DeviceOpt = typer.Option(None, "--device", help="cpu or cuda (default: cuda if available).")
DtypeOpt = typer.Option("auto", "--dtype", help="fp32, fp16 or bf16 for the floating-point parts (auto: fp16 on CUDA, fp32 on CPU).")
TokenizerOpt = typer.Option(None, "--tokenizer", help="tokenizer.json path or hub id, if the model folder has none.")
JsonOpt = typer.Option(False, "--json", help="Print one JSON object (for scripts) instead of a table.")
ExactOpt = typer.Option(False, "--exact", help="Quantized models: exact numerics (QUAMBA_NUMERICS=exact): the float "
                        "work that rounds differently on a CPU and a GPU (norms, conv, scan, rotation, head) runs "
                        "in fp64 and is rounded once, so every device gives the same tokens. Slower.")
StateDtypeOpt = typer.Option("fp32", "--state-dtype", help="fp32, fp16 or bf16: the recurrent SSM state kept between "
                             "decode steps (computed in fp32 either way; fp16 halves its memory and traffic, as "
                             "mamba-ssm's fp16 models do).")


def _state_dtype(name: str):
    from quamba.api import parse_dtype

    if name == "auto":
        raise QuambaError("--state-dtype: choose one of fp32, fp16, bf16")
    try:
        return parse_dtype(name, "cpu")
    except QuambaError as exc:
        raise QuambaError(f"--state-dtype: {exc}") from None


def _user_errors(fn):
    """Turn QuambaError into a one-line message and exit code 1, never a traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except QuambaError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1)
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130)
    return wrapper


def _load(model, device, dtype, tokenizer=None):
    from quamba.api import load_with_tokenizer

    with err_console.status(f"loading {model or 'the embedded mamba1-tiny-3m'}"):
        return load_with_tokenizer(model, dtype=dtype, device=device, tokenizer=tokenizer)


def _exact_numerics(lm, exact: bool) -> None:
    """--exact: this process computes in exact numerics (quamba.kernels.numerics)."""
    if not exact:
        return
    if not hasattr(lm, "set_fake_quant"):
        raise QuambaError("--exact applies to quantized models only: a float model's GEMMs sum floats in an "
                          "order each device chooses")
    from quamba.kernels.numerics import NUMERICS_ENV

    os.environ[NUMERICS_ENV] = "exact"


def _print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


# --------------------------------------------------------------------------------- generate

@app.command()
@_user_errors
def generate(
    model: Optional[str] = ModelArg,
    prompt: str = typer.Option("The", "--prompt", "-p", help="Text to continue."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", "-n", min=1, help="Tokens to generate at most."),
    temperature: float = typer.Option(0.0, help="0 = greedy; > 0 samples."),
    top_k: int = typer.Option(0, help="Sample from the k most likely tokens (0 = all)."),
    top_p: float = typer.Option(1.0, help="Nucleus sampling mass (1 = off)."),
    seed: Optional[int] = typer.Option(None, help="Random seed for sampling."),
    device: Optional[str] = DeviceOpt, dtype: str = DtypeOpt, tokenizer: Optional[str] = TokenizerOpt,
    state_dtype: str = StateDtypeOpt, exact: bool = ExactOpt, as_json: bool = JsonOpt,
):
    """Continue a prompt, streaming tokens as they come (prefill once, then one recurrent step per token)."""
    import torch

    from quamba.models.generate import generate as run_generate

    ssm_state_dtype = _state_dtype(state_dtype)
    lm, tok = _load(model, device, dtype, tokenizer)
    _exact_numerics(lm, exact)
    lm.ssm_state_dtype = ssm_state_dtype
    ids = torch.tensor(tok.encode(prompt), dtype=torch.long)
    if ids.numel() == 0:
        raise QuambaError("--prompt is empty after tokenization")
    printed = []

    def stream(token: int):
        printed.append(token)
        if not as_json:
            sys.stdout.write(tok.decode([token]))
            sys.stdout.flush()

    if not as_json:
        sys.stdout.write(prompt)
    start = time.perf_counter()
    new = run_generate(lm, ids, max_new_tokens, temperature, top_k, top_p, tok.eos_id, seed, on_token=stream)
    elapsed = time.perf_counter() - start
    if as_json:
        _print_json({"prompt": prompt, "completion": tok.decode(new.tolist()), "tokens": new.tolist(),
                     "seconds": elapsed, "tokens_per_s": len(new) / elapsed})
    else:
        sys.stdout.write("\n")
        err_console.print(f"[dim]{len(new)} tokens in {elapsed:.2f} s ({len(new) / elapsed:.1f} tok/s)[/]")


# -------------------------------------------------------------------------------------- ppl

@app.command()
@_user_errors
def ppl(
    model: Optional[str] = ModelArg,
    text: str = typer.Option(str(DEMO_EVAL), "--text", "-t",
                             help="Text file, or a dataset: wikitext2, pile-val, hf:path[:config[:split]] (needs `datasets`)."),
    seq_len: int = typer.Option(1024, "--seq-len", min=2, help="Window length; windows do not overlap."),
    batch_size: int = typer.Option(1, "--batch-size", min=1),
    max_windows: Optional[int] = typer.Option(None, "--max-windows", min=1, help="Evaluate only the first N windows."),
    fake_quant: bool = typer.Option(False, "--fake-quant", help="Quantized models: simulate int8 in floats."),
    device: Optional[str] = DeviceOpt, dtype: str = DtypeOpt, tokenizer: Optional[str] = TokenizerOpt,
    exact: bool = ExactOpt, as_json: bool = JsonOpt,
):
    """Perplexity over non-overlapping windows of a text (the number papers report on wikitext-2)."""
    from quamba.eval.data import eval_windows, read_text, tokenize_text
    from quamba.eval.perplexity import perplexity

    lm, tok = _load(model, device, dtype, tokenizer)
    _exact_numerics(lm, exact)
    if fake_quant:
        if not hasattr(lm, "set_fake_quant"):
            raise QuambaError("--fake-quant applies to quantized models only")
        lm.set_fake_quant(True)
    windows = eval_windows(tokenize_text(read_text(text), tok, text), seq_len, text, max_windows)
    start = time.perf_counter()
    result = perplexity(lm, windows, batch_size, show_progress=not as_json)
    elapsed = time.perf_counter() - start
    out = {**result.to_dict(), "model": str(lm.source_dir), "text": text, "device": str(lm.device),
           "dtype": str(lm.dtype).removeprefix("torch."), "seconds": elapsed,
           "ms_per_token": 1000 * elapsed / (result.windows * result.seq_len)}
    if as_json:
        _print_json(out)
    else:
        console.print(f"perplexity [bold]{result.ppl:.3f}[/] (nll {result.nll:.4f}) over {result.tokens} tokens "
                      f"in {result.windows} windows of {seq_len}; {out['ms_per_token']:.2f} ms/token on {out['device']}")


# --------------------------------------------------------------------------------- quantize

def _calibration(text_sources, tok, samples, seq_len, seed, allow_short):
    from quamba.eval.data import calibration_samples, read_text, tokenize_text

    name = ",".join(map(str, text_sources))
    return calibration_samples(tokenize_text(read_text(list(text_sources)), tok, name), samples, seq_len,
                               seed, allow_short, name)


@app.command()
@_user_errors
def quantize(
    model: Optional[str] = ModelArg,
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the quantized checkpoint to."),
    method: str = typer.Option("quamba", "--method", "-m",
                               help="quamba, w8a8-naive, w8a8-dynamic, smoothquant, quarot, quamba-no-percentile, quamba-no-hadamard."),
    calib: list[str] = typer.Option([str(DEMO_CALIB)], "--calib", "-c", help="Calibration text file(s) or dataset (repeatable)."),
    samples: int = typer.Option(512, "--samples", min=1, help="Calibration samples (the paper: 512)."),
    seq_len: int = typer.Option(512, "--seq-len", min=2, help="Tokens per calibration sample (the paper: 512)."),
    percentile: Optional[float] = typer.Option(None, "--percentile", help="Clip the SSM input at this percentile of |u| (default 0.99999)."),
    per_channel: bool = typer.Option(False, "--per-channel-weights", help="Per-output-channel weight scales (default: per-tensor, as the paper)."),
    quantize_ssm_params: bool = typer.Option(False, "--quantize-ssm-params", help="Round A_log, D, dt_bias to int8 too."),
    int8_embedding: bool = typer.Option(False, "--int8-embedding", help="Store the embedding/head as int8 too (per-row scales; "
                                        "matters for small models, where the embedding is a large share of the weights)."),
    seed: int = typer.Option(0, help="Seed of the calibration sample shuffle."),
    allow_short: bool = typer.Option(False, "--allow-short", help="Use fewer samples if the text is too short, instead of stopping."),
    batch_size: int = typer.Option(4, "--batch-size", min=1),
    force: bool = typer.Option(False, "--force", help="Replace OUT if it exists."),
    device: Optional[str] = DeviceOpt, dtype: str = DtypeOpt, tokenizer: Optional[str] = TokenizerOpt,
    as_json: bool = JsonOpt,
):
    """Calibrate and quantize a model to W8A8, and save the int8 checkpoint (about half the fp16 size)."""
    from quamba.quantization.checkpoint import save_quantized
    from quamba.quantization.config import get_method
    from quamba.quantization.quantize import quantize as run_quantize

    config = get_method(method).with_overrides(
        percentile=percentile, weight_granularity="channel" if per_channel else None,
        quantize_ssm_params=quantize_ssm_params or None, quantize_embedding=int8_embedding or None)
    if out.exists() and not force:  # fail before the long calibration, not after
        raise QuambaError(f"{out}: already exists; pass --force to replace it")
    lm, tok = _load(model, device, dtype, tokenizer)
    samples_ids = _calibration(calib, tok, samples, seq_len, seed, allow_short)
    start = time.perf_counter()
    qlm = run_quantize(lm, config, samples_ids, batch_size=batch_size, show_progress=not as_json)
    if not config.quantize:
        raise QuambaError(f"method {method!r} does not quantize; nothing to save")
    save_quantized(qlm, out, source_dir=lm.source_dir, force=force)
    size = (out / "model.safetensors").stat().st_size
    info = {"out": str(out), "method": method, "samples": int(samples_ids.shape[0]), "seq_len": seq_len,
            "seconds": time.perf_counter() - start, "safetensors_bytes": size, "config": config.to_dict()}
    if as_json:
        _print_json(info)
    else:
        console.print(f"wrote [bold]{out}[/] ({size / 2**20:.1f} MiB, method {method}, "
                      f"{info['samples']}x{seq_len} calibration tokens, {info['seconds']:.1f} s)")


# ---------------------------------------------------------------------------------- compare

@app.command()
@_user_errors
def compare(
    model: Optional[str] = ModelArg,
    methods: str = typer.Option("fp16,w8a8-naive,w8a8-dynamic,smoothquant,quarot,quamba,quamba-no-percentile,quamba-no-hadamard",
                                "--methods", help="Comma-separated methods."),
    calib: list[str] = typer.Option([str(DEMO_CALIB)], "--calib", "-c"),
    text: str = typer.Option(str(DEMO_EVAL), "--text", "-t", help="Evaluation text (perplexity)."),
    samples: int = typer.Option(512, "--samples", min=1),
    calib_seq_len: int = typer.Option(512, "--calib-seq-len", min=2),
    seq_len: int = typer.Option(1024, "--seq-len", min=2),
    max_windows: Optional[int] = typer.Option(None, "--max-windows", min=1),
    allow_short: bool = typer.Option(False, "--allow-short"),
    batch_size: int = typer.Option(4, "--batch-size", min=1),
    out_json: Optional[Path] = typer.Option(None, "--json-out", help="Also write the results to this JSON file."),
    device: Optional[str] = DeviceOpt, dtype: str = DtypeOpt, tokenizer: Optional[str] = TokenizerOpt,
    as_json: bool = JsonOpt,
):
    """Quantize with several methods and compare perplexity and size against the fp model."""
    from quamba.eval.compare import compare_methods

    lm, tok = _load(model, device, dtype, tokenizer)
    from quamba.eval.data import eval_windows, read_text, tokenize_text

    calib_ids = _calibration(calib, tok, samples, calib_seq_len, 0, allow_short)
    windows = eval_windows(tokenize_text(read_text(text), tok, text), seq_len, text, max_windows)
    result = compare_methods(lm, [m.strip() for m in methods.split(",") if m.strip()], calib_ids, windows,
                             batch_size=batch_size, show_progress=not as_json)
    result.update({"model": str(lm.source_dir), "text": text, "calib": calib, "device": str(lm.device)})
    if out_json:
        out_json.parent.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(result, indent=2) + "\n")
    if as_json:
        _print_json(result)
        return
    table = Table(title=f"{Path(str(lm.source_dir)).name}: perplexity on {Path(text).name} (seq {seq_len})")
    for col in ("method", "ppl", "vs fp", "weights MiB", "size vs fp", "seconds"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for row in result["methods"]:
        table.add_row(row["method"], f"{row['ppl']:.3f}", f"{row['ppl_ratio']:.4f}", f"{row['weight_bytes'] / 2**20:.1f}",
                      f"{row['size_ratio']:.2f}", f"{row['seconds']:.1f}")
    console.print(table)


# ---------------------------------------------------------------------------------- inspect

@app.command()
@_user_errors
def inspect(
    model: Optional[str] = ModelArg,
    method: str = typer.Option("quamba", "--method", "-m"),
    calib: list[str] = typer.Option([str(DEMO_CALIB)], "--calib", "-c"),
    text: str = typer.Option(str(DEMO_EVAL), "--text", "-t", help="Text the errors are measured on."),
    samples: int = typer.Option(64, "--samples", min=1),
    seq_len: int = typer.Option(512, "--seq-len", min=2),
    allow_short: bool = typer.Option(False, "--allow-short"),
    device: Optional[str] = DeviceOpt, dtype: str = DtypeOpt, tokenizer: Optional[str] = TokenizerOpt,
    as_json: bool = JsonOpt,
):
    """Per-layer SQNR (dB) of every quantized activation: where the accuracy goes. ~40 dB is healthy at 8 bits."""
    from quamba.eval.data import eval_windows, read_text, tokenize_text
    from quamba.quantization.config import ACTIVATION_POINTS, get_method
    from quamba.quantization.inspect import activation_sqnr
    from quamba.quantization.quantize import quantize as run_quantize

    lm, tok = _load(model, device, dtype, tokenizer)
    qlm = run_quantize(lm, get_method(method), _calibration(calib, tok, samples, seq_len, 0, allow_short),
                       show_progress=not as_json)
    windows = eval_windows(tokenize_text(read_text(text), tok, text), seq_len, text, max_windows=4)
    report = activation_sqnr(qlm, windows)
    if as_json:
        _print_json({"method": method, "sqnr_db": report})
        return
    table = Table(title=f"{method}: SQNR (dB) of each int8 activation, per layer")
    table.add_column("layer", justify="right")
    for name in ACTIVATION_POINTS:
        table.add_column(name, justify="right")
    for i, row in enumerate(report):
        table.add_row(str(i), *(f"[{'red' if row[n] < 25 else 'default'}]{row[n]:.1f}[/]" for n in ACTIVATION_POINTS))
    console.print(table)


# ------------------------------------------------------------------------------------ bench

@app.command()
@_user_errors
def bench(
    shapes: str = typer.Option("130m,1.4b,2.8b", "--shape", help="Comma-separated checkpoint shapes (130m, 370m, 790m, "
                               "1.4b, 2.8b), run with random weights: nothing is downloaded."),
    methods: str = typer.Option("fp16,w8a8", "--methods", help="Comma-separated: fp16, w8a8 (the paper's "
                                 "recipe: fp16 embedding and head) and/or w8a8-int8emb (quantize --int8-embedding: "
                                 "the embedding and head int8 too)."),
    prompt_len: str = typer.Option("1024,2048,4096", "--prompt-len", help="Prefill lengths (batch 1)."),
    batch: str = typer.Option("1,8,64", "--batch", help="Decode batch sizes."),
    reps: int = typer.Option(20, "--reps", min=3, help="Timing repeats: each prefill length and each decode loop "
                             "is timed max(3, reps/4) times, single decode replays 5*reps times; medians reported."),
    gen: int = typer.Option(64, "--gen", min=2, help="Tokens of each timed decode loop (greedy, argmax on the GPU, "
                            "no host sync between tokens, as generation runs): time per token = loop time / gen. "
                            "mamba-ssm: (t(gen) - t(1)) / (gen - 1), hence at least 2."),
    mamba_ssm: bool = typer.Option(True, "--mamba-ssm/--no-mamba-ssm", help="Also time mamba-ssm's fp16 model when installed."),
    state_dtype: str = StateDtypeOpt,
    out_json: Optional[Path] = typer.Option(None, "--json", help="Write all rows, the device and versions to this file."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a latency-vs-size PNG (needs matplotlib)."),
):
    """Time prefill (time to first token) and decode (per token, CUDA graphs) and peak memory on the GPU:
    fp16 vs W8A8, and mamba-ssm's fp16 model as the anchor. Medians of CUDA-event timings."""
    import torch

    from quamba.eval import bench as B

    ssm_state_dtype = _state_dtype(state_dtype)
    if not torch.cuda.is_available():
        raise QuambaError("quamba bench needs a CUDA GPU (the CPU path is a reference, not a speed target)")
    result = B.run_bench([s.strip() for s in shapes.split(",") if s.strip()],
                         [m.strip() for m in methods.split(",") if m.strip()],
                         [int(x) for x in prompt_len.split(",") if x], [int(x) for x in batch.split(",") if x],
                         reps, with_mamba_ssm=mamba_ssm, command=" ".join(sys.argv), state_dtype=ssm_state_dtype,
                         gen=gen, status=lambda text: err_console.print(f"[dim]{text}[/]"))
    rows = result["rows"]
    if out_json:
        out_json.parent.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(result, indent=2) + "\n")
    if plot:
        B.plot_latency(rows, plot)
    console.print(B.table(rows))

# ------------------------------------------------------------------------------------- demo

@app.command()
@_user_errors
def demo(
    model: Optional[str] = ModelArg,
    device: Optional[str] = DeviceOpt,
    samples: int = typer.Option(32, "--samples", min=1, help="Calibration samples (small: this is a demo)."),
):
    """The main job end to end on the embedded model: fp perplexity, Quamba W8A8 quantization, int8 perplexity,
    checkpoint size, and greedy generation from both."""
    import tempfile

    import torch

    from quamba.api import load
    from quamba.eval.data import eval_windows, read_text, tokenize_text
    from quamba.eval.perplexity import perplexity
    from quamba.models.generate import generate as run_generate
    from quamba.quantization.checkpoint import save_quantized
    from quamba.quantization.config import get_method
    from quamba.quantization.quantize import quantize as run_quantize

    lm, tok = _load(model, device, "fp32" if not device or device == "cpu" else "auto")
    console.rule(f"quamba demo: {Path(str(lm.source_dir)).name} on {lm.device}")
    calib_ids = _calibration([str(DEMO_CALIB)], tok, samples, 256, 0, True)
    windows = eval_windows(tokenize_text(read_text(DEMO_EVAL), tok), 512)
    fp_ppl = perplexity(lm, windows).ppl
    # int8 embedding too: in a 3.6M-parameter model the embedding is 40% of the weights
    qlm = run_quantize(lm, get_method("quamba").with_overrides(quantize_embedding=True), calib_ids)
    q_ppl = perplexity(qlm, windows).ppl
    with tempfile.TemporaryDirectory() as tmp:
        out = save_quantized(qlm, Path(tmp) / "int8", source_dir=lm.source_dir)
        q_bytes = (out / "model.safetensors").stat().st_size
        reloaded = load(out, device=str(lm.device))
    fp_bytes = sum(t.numel() * 2 for t in {id(p): p for p in lm.parameters()}.values())
    table = Table(title="fp vs Quamba W8A8 (static per-tensor int8, percentile-clipped SSM input, Hadamard SSM output; "
                        "int8 embedding)")
    for col in ("model", f"perplexity ({windows.numel()} tokens)", "weights MiB (fp16 vs int8 file)"):
        table.add_column(col)
    table.add_row("fp", f"{fp_ppl:.3f}", f"{fp_bytes / 2**20:.2f}")
    table.add_row("quamba w8a8", f"{q_ppl:.3f} ({100 * (q_ppl / fp_ppl - 1):+.2f}%)", f"{q_bytes / 2**20:.2f}")
    console.print(table)
    prompt = "And it came to pass"
    ids = torch.tensor(tok.encode(prompt))
    for name, m in (("fp", lm), ("w8a8", reloaded)):
        new = run_generate(m, ids, 32, eos_id=tok.eos_id)
        console.print(f"[bold]{name:>5}[/]: {escape(prompt)}[cyan]{escape(tok.decode(new.tolist()))}[/]", highlight=False)
    console.print("next: `quamba quantize MODEL --out DIR`, `quamba ppl DIR`, `quamba compare MODEL`, "
                  "`quamba inspect MODEL`; see --help of each.")


from quamba.cli_eval import register as _register_eval; _register_eval(app)  # noqa: E402,E702  eval, report


def main():  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
