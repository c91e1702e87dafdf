"""Latency and memory of fp16 vs W8A8 on the GPU, on the shapes of the real checkpoints.

Weights are random (nothing to download; kernels do the same work whatever the
values), scaled so activations stay in range. Timings are CUDA events around
warmed-up work, the median of repeats:

- prefill: one forward over (batch, prompt_len) tokens, logits of the last position
  (what generation needs), i.e. time to first token;
- decode: time per output token of a greedy loop of ``gen`` tokens through the
  CUDA-graphed single-token step, each token's argmax feeding the next step on the
  device with no host sync in between (how ``generate`` runs, and how mamba-ssm's own
  generation loop is timed below); the median of one replay timed alone, host launch
  gap included, is kept as ``ms_per_replay``;
- memory: after each decode batch size, the peak allocated bytes since the model
  was built (weights + states + activations of every prefill and of decoding up to
  that batch; the batch-1 row is the batch-1 workload's peak), and the weight bytes.
  Each model starts from an empty allocator (cuBLAS workspaces cleared). Allocated bytes
  leave out the private memory pools of CUDA graphs (both models decode through graphs;
  quamba also replays prefill through them), so the peak *reserved* bytes (what the
  caching allocator holds from the driver, pools and cached free blocks included) are
  recorded too.

When ``mamba_ssm`` is importable, its fp16 ``MambaLMHeadModel`` is timed in the same
run on the same shapes (prefill with ``num_last_tokens=1``; decode from its own
CUDA-graph generation loop), as the anchor the ratios refer to.
"""

from __future__ import annotations

import gc
import math
import os
import platform
import statistics
from collections.abc import Callable

import torch

from quamba.models.config import MambaConfig
from quamba.models.mamba import MambaLM

__all__ = ["run_bench", "SHAPES", "shape_config", "random_fp_model", "random_w8a8_model", "bench_model", "bench_mamba_ssm",
           "mamba_ssm_model", "environment", "median_ms", "queued_replay_ms"]

# (d_model, n_layer) of state-spaces/mamba-*; vocab 50277 padded to 50280.
SHAPES = {"mamba-130m": (768, 24), "mamba-370m": (1024, 48), "mamba-790m": (1536, 48),
          "mamba-1.4b": (2048, 48), "mamba-2.8b": (2560, 64)}


def shape_config(name: str) -> MambaConfig:
    key = name if name.startswith("mamba-") else f"mamba-{name}"
    if key not in SHAPES:
        from quamba.errors import QuambaError
        raise QuambaError(f"unknown shape {name!r}; choose from {', '.join(s.removeprefix('mamba-') for s in SHAPES)}")
    d_model, n_layer = SHAPES[key]
    return MambaConfig(d_model=d_model, n_layer=n_layer, vocab_size=50280)


@torch.no_grad()
def _init_mixer_ssm(A_log, D, dt_bias):
    d_inner, d_state = A_log.shape
    A_log.copy_(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32, device=A_log.device)).expand(d_inner, -1))
    D.fill_(1.0)
    dt = torch.exp(torch.rand(d_inner, device=dt_bias.device) * (math.log(0.1) - math.log(0.001)) + math.log(0.001))
    dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus, as mamba-ssm initialises


@torch.no_grad()
def random_fp_model(config: MambaConfig, device="cuda", dtype=torch.float16, seed: int = 0) -> MambaLM:
    torch.manual_seed(seed)
    model = MambaLM(config, device=device, dtype=dtype)
    for layer in model.backbone.layers:
        _init_mixer_ssm(layer.mixer.A_log, layer.mixer.D, layer.mixer.dt_proj.bias)
    model.backbone.embedding.weight.normal_(0, 0.02)
    return model.eval()


@torch.no_grad()
def random_w8a8_model(config: MambaConfig, device="cuda", dtype=torch.float16, method: str = "quamba", seed: int = 0,
                      int8_embedding: bool = False):
    """A W8A8 model built directly in int8 (no fp copy ever exists, as after loading a checkpoint).
    int8_embedding: the embedding and head in int8 too (``quamba quantize --int8-embedding``)."""
    from quamba.quantization.config import get_method
    from quamba.quantization.qmixer import SCAN_SCALES
    from quamba.quantization.quantize import QuantizedMambaLM

    torch.manual_seed(seed)
    qconfig = get_method(method)
    if int8_embedding:
        qconfig = qconfig.with_overrides(quantize_embedding=True)
    model = QuantizedMambaLM.empty(config, qconfig, dtype, device)
    model.to_empty(device=device)
    if not int8_embedding:   # an int8 table is drawn with the other int8 buffers below
        model.backbone.embedding.weight.normal_(0, 0.02)
    model.tie_weights()
    for name, tensor in model.named_buffers():
        if tensor.dtype == torch.int8:
            tensor.random_(-127, 128)
        elif name.endswith("weight_scale"):
            tensor.fill_(1.0 / (127 * 40))  # keeps int8 x int8 sums of a few thousand terms near 1
        elif name.endswith(("input_scale",) + SCAN_SCALES):
            tensor.fill_(0.05)
    for layer in model.backbone.layers:
        layer.norm.weight.fill_(1.0)
        ssm = layer.mixer.ssm
        _init_mixer_ssm(ssm.A_log, ssm.D, ssm.dt_bias)
        ssm.dt_scale.fill_(0.001)
        if layer.mixer.conv1d.bias is not None:
            layer.mixer.conv1d.bias.zero_()
    model.backbone.norm_f.weight.fill_(1.0)
    model.select_backend("auto")
    return model.eval()


def median_ms(fn: Callable[[], None], warmup: int, reps: int) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def queued_ms(fn: Callable[[], None], runs: int = 10, sleep_cycles: int = 50_000_000) -> float:
    """The GPU time of ``fn`` alone: enqueued behind a GPU sleep (the host enqueues all of it
    while the GPU spins, so no host gap falls inside), the median over ``runs``. The sleep
    must outlast the host's enqueueing."""
    times = []
    for _ in range(runs):
        torch.cuda._sleep(sleep_cycles)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def queued_replay_ms(decoder, runs: int = 10, replays: int = 64) -> float:
    """A CUDA-graphed decode step's GPU time alone: ``replays`` replays queued behind a GPU
    sleep (``queued_ms``), the time per replay."""
    def replay_all():
        for _ in range(replays):
            decoder.graph.replay()
    return queued_ms(replay_all, runs) / replays


def _weight_bytes(model) -> int:
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


def _measure(model, vocab: int, prompt_lens: list[int], batches: list[int], reps: int,
             decode_ms: Callable[[int], tuple[float, dict]], on_row: Callable[[dict], None] | None) -> list[dict]:
    """Prefill rows (batch 1, each prompt length), decode rows (``decode_ms(batch)``: ms a
    token and extra fields for the row), and
    after each decode batch a memory row: the peak allocated since the model was built
    (its build's transients, e.g. random initialisation, left out), i.e. weights, states
    and activations of every prefill and of decoding up to that batch."""
    weight_bytes = _weight_bytes(model)
    torch.cuda.synchronize()
    torch.cuda.empty_cache()              # the build's freed transients are not the workload's
    torch.cuda.reset_peak_memory_stats()
    rows = []

    def memory_row(batch):
        return {"kind": "memory", "batch": batch, "weight_bytes": weight_bytes,
                "peak_bytes": torch.cuda.max_memory_allocated(),
                "peak_reserved_bytes": torch.cuda.max_memory_reserved()}

    def emit(row):
        rows.append(row)
        if on_row:
            on_row(row)

    for length in prompt_lens:
        ids = torch.randint(0, vocab, (1, length), device="cuda")
        ms = median_ms(lambda: model(ids, num_last_tokens=1), 2, max(3, reps // 4))
        emit({"kind": "prefill", "batch": 1, "prompt_len": length, "ms": ms, "tokens_per_s": length / ms * 1e3})
    for batch in batches:
        ms, extra = decode_ms(batch)
        emit({"kind": "decode", "batch": batch, "ms_per_token": ms, "tokens_per_s": batch / ms * 1e3, **extra})
        emit(memory_row(batch))
    if not batches:
        emit(memory_row(None))
    return rows


def _fresh_peak() -> None:
    """Start a model's measurement from nothing: free what the last one left (cuBLAS keeps
    a workspace per stream it ran on; each model pays for its own) and reset the peak.
    Freeing the workspaces is safe only when no CUDA graph that ran cuBLAS is still alive,
    which holds between the models of a bench (each is freed before the next): do not
    call ``run_bench`` in a process that keeps other graphed models."""
    gc.collect()
    clear_workspaces = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
    if clear_workspaces is not None:
        clear_workspaces()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()


@torch.inference_mode()
def bench_model(build: Callable[[], torch.nn.Module], prompt_lens: list[int], batches: list[int],
                reps: int = 20, on_row: Callable[[dict], None] | None = None, gen: int = 64) -> list[dict]:
    """Rows of {kind: prefill|decode|memory, ...} for one model built by ``build``."""
    from quamba.models.cuda_graph import GraphedDecoder

    _fresh_peak()
    model = build()

    def decode_ms(batch):
        decoder = GraphedDecoder(model, batch)
        ids = torch.randint(0, model.config.vocab_size, (batch,), device="cuda")
        per_replay = median_ms(lambda: decoder.step(ids), 5, reps * 5)

        def greedy_tokens():
            for _ in range(gen):
                decoder.step(decoder.logits.argmax(dim=-1))
        return median_ms(greedy_tokens, 1, max(3, reps // 4)) / gen, {"ms_per_replay": per_replay, "gen": gen}

    rows = _measure(model, model.config.vocab_size, prompt_lens, batches, reps, decode_ms, on_row)
    del model
    _fresh_peak()
    return rows


def mamba_ssm_model(config: MambaConfig):
    """mamba-ssm's fp16 MambaLMHeadModel of ``config``'s shape, random weights, on CUDA."""
    from mamba_ssm.models.config_mamba import MambaConfig as SsmConfig
    from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel

    torch.manual_seed(0)
    return MambaLMHeadModel(SsmConfig(d_model=config.d_model, n_layer=config.n_layer, vocab_size=config.vocab_size,
                                      pad_vocab_size_multiple=8), device="cuda", dtype=torch.float16).eval()


@torch.inference_mode()
def bench_mamba_ssm(config: MambaConfig, prompt_lens: list[int], batches: list[int], reps: int = 20,
                    gen: int = 64, on_row: Callable[[dict], None] | None = None) -> list[dict]:
    """mamba-ssm's fp16 MambaLMHeadModel on the same shape (the speed anchor)."""
    _fresh_peak()
    model = mamba_ssm_model(config)

    def decode_ms(batch):
        # per-token time = (generate N+gen) - (generate N+1), over gen-1 tokens, CUDA graphs on
        ids = torch.randint(0, config.vocab_size, (batch, 16), device="cuda")

        def run(n):
            return lambda: model.generate(ids, max_length=16 + n, cg=True, enable_timing=False)
        long_ms = median_ms(run(gen), 2, max(3, reps // 4))
        short_ms = median_ms(run(1), 2, max(3, reps // 4))
        return (long_ms - short_ms) / (gen - 1), {"gen": gen}

    rows = _measure(model, config.vocab_size, prompt_lens, batches, reps, decode_ms, on_row)
    del model
    _fresh_peak()
    return rows


def environment() -> dict:
    import datetime

    env = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version()}
    if torch.cuda.is_available():
        env["device"] = torch.cuda.get_device_name()
    for name in ("triton", "mamba_ssm", "causal_conv1d"):
        try:
            env[name] = __import__(name).__version__
        except Exception:
            env[name] = None
    # The kernel switches (docs/kernels.md) a run was made with: the command alone does not say.
    env["switches"] = {k: v for k, v in sorted(os.environ.items()) if k.startswith("QUAMBA_")}
    return env


def _key(row: dict) -> tuple:
    return (row["shape"], row["kind"], row.get("batch"), row.get("prompt_len"))


def _metric(row: dict) -> float:
    return {"prefill": row.get("ms"), "decode": row.get("ms_per_token"), "memory": row.get("peak_bytes")}[row["kind"]]


def ratios(rows: list[dict], anchor: str = "mamba-ssm-fp16") -> list[dict]:
    """Each method's time (or peak memory) over the anchor's on the same shape and setting;
    without mamba-ssm, over quamba's own fp16."""
    methods = {r["method"] for r in rows}
    if anchor not in methods:
        anchor = "fp16"
    base = {_key(r): _metric(r) for r in rows if r["method"] == anchor}
    out = []
    for r in rows:
        if r["method"] == anchor or _key(r) not in base or not base[_key(r)]:
            continue
        out.append({"shape": r["shape"], "kind": r["kind"], "batch": r.get("batch"), "prompt_len": r.get("prompt_len"),
                    "method": r["method"], "vs": anchor, "ratio": _metric(r) / base[_key(r)]})
    return out


def table(rows: list[dict]):
    from rich.table import Table

    t = Table(title="quamba bench (medians; ratio = time or memory / anchor)")
    for col in ("shape", "setting", "method", "value", "ratio"):
        t.add_column(col, justify="left" if col in ("shape", "setting", "method") else "right")
    rat = {(_key(r), r["method"]): r["ratio"] for r in ratios(rows)}
    for r in rows:
        if r["kind"] == "prefill":
            setting, value = f"prefill {r['prompt_len']}", f"{r['ms']:.2f} ms"
        elif r["kind"] == "decode":
            setting, value = f"decode b={r['batch']}", f"{r['ms_per_token']:.3f} ms/tok"
        else:
            setting = "peak memory" + ("" if r.get("batch") is None else f" to b={r['batch']}")
            value = f"{r['peak_bytes'] / 2**30:.2f} GiB (weights {r['weight_bytes'] / 2**30:.2f}"
            value += f", reserved {r['peak_reserved_bytes'] / 2**30:.2f})" if "peak_reserved_bytes" in r else ")"
        ratio = rat.get((_key(r), r["method"]))
        t.add_row(r["shape"], setting, r["method"], value, "" if ratio is None else f"{ratio:.2f}x")
    return t


def plot_latency(rows: list[dict], path) -> None:
    """Decode latency (batch 1) and prefill (longest prompt) vs model size, one line per method."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from quamba.errors import QuambaError
        raise QuambaError("--plot needs matplotlib: pip install quamba[plot]") from None
    sizes = {"mamba-130m": 0.13, "mamba-370m": 0.37, "mamba-790m": 0.79, "mamba-1.4b": 1.4, "mamba-2.8b": 2.8}

    def size(shape):
        return sizes.get(shape if shape.startswith("mamba-") else f"mamba-{shape}", 0)

    longest = max((r["prompt_len"] for r in rows if r["kind"] == "prefill"), default=None)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for method in sorted({r["method"] for r in rows}):
        dec = sorted((size(r["shape"]), r["ms_per_token"]) for r in rows
                     if r["method"] == method and r["kind"] == "decode" and r["batch"] == 1)
        pre = sorted((size(r["shape"]), r["ms"]) for r in rows
                     if r["method"] == method and r["kind"] == "prefill" and r["prompt_len"] == longest)
        for ax, pts in ((axes[0], dec), (axes[1], pre)):
            if pts:
                ax.plot(*zip(*pts), marker="o", label=method)
    axes[0].set(title="decode, batch 1", xlabel="parameters (B)", ylabel="ms per token")
    axes[1].set(title=f"prefill of {longest} tokens, batch 1", xlabel="parameters (B)", ylabel="ms")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# quamba's rows: its fp16 path, the paper's W8A8 (fp16 embedding and head), and W8A8 with the
# embedding and head in int8 too (``quamba quantize --int8-embedding``).
METHODS = ("fp16", "w8a8", "w8a8-int8emb")


def run_bench(shapes: list[str], methods: list[str], prompt_lens: list[int], batches: list[int], reps: int = 20,
              with_mamba_ssm: bool = True, command: str = "", status: Callable[[str], None] = print,
              state_dtype: torch.dtype = torch.float32, gen: int = 64) -> dict:
    """Every (shape, method) row, the ratios against the anchor, the environment.
    gen: the tokens of each timed decode loop (at least 2: mamba-ssm's time is the difference
    of a gen-token and a one-token generation).
    state_dtype: quamba's decode-state dtype (mamba-ssm keeps its own: fp16 for fp16 models).
    Frees cuBLAS's workspaces between models (``_fresh_peak``): run it in a process of its
    own (as ``quamba bench`` does), not beside other models' live CUDA graphs."""
    from quamba.errors import QuambaError

    if not torch.cuda.is_available():
        raise QuambaError("quamba bench needs a CUDA GPU (the CPU path is a reference, not a speed target)")
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise QuambaError(f"--methods: unknown {', '.join(unknown)} ({', '.join(METHODS)})")
    if gen < 2:
        raise QuambaError(f"--gen {gen}: time at least 2 tokens a decode loop")
    if with_mamba_ssm:
        try:
            import mamba_ssm  # noqa: F401
        except ImportError:
            status("mamba_ssm is not installed: no anchor timings")
            with_mamba_ssm = False
    rows = []
    for shape in shapes:
        config = shape_config(shape)
        def with_state(model):
            model.ssm_state_dtype = state_dtype
            return model
        builders = {"fp16": lambda: with_state(random_fp_model(config)),
                    "w8a8": lambda: with_state(random_w8a8_model(config)),
                    "w8a8-int8emb": lambda: with_state(random_w8a8_model(config, int8_embedding=True))}
        runs = [(m, lambda m=m: bench_model(builders[m], prompt_lens, batches, reps, gen=gen)) for m in methods]
        if with_mamba_ssm:
            runs.append(("mamba-ssm-fp16", lambda: bench_mamba_ssm(config, prompt_lens, batches, reps, gen=gen)))
        for method, run in runs:
            status(f"{shape} {method}")
            state = "float16" if method == "mamba-ssm-fp16" else str(state_dtype).removeprefix("torch.")
            rows.extend({"shape": shape, "method": method, "state_dtype": state, **row} for row in run())
    return {"environment": environment(), "command": command, "rows": rows, "ratios": ratios(rows)}
