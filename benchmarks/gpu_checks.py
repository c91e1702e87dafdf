"""End-to-end checks on the GPU machine (run through the device tool; results go to docs/).

    python benchmarks/gpu_checks.py fp --model DIR --text FILE --json OUT
        fp16 on CUDA vs fp32 on CPU: perplexity (issue: within 0.5%).
    python benchmarks/gpu_checks.py w8a8 --model QDIR --text FILE --json OUT
        the W8A8 checkpoint through the fused Triton kernels (CUDA) vs the PyTorch int8
        reference (CPU), both with their fp parts in --gpu-dtype (fp16): perplexity (within
        0.5%), 64 greedy tokens from PROMPT and from --prompts more prompts cut from the text.
        --exact: both in exact numerics (QUAMBA_NUMERICS=exact, quamba.kernels.numerics);
        the teacher-forced logits are then also compared bit for bit.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from quamba.api import load_with_tokenizer
from quamba.eval.data import eval_windows, read_text, tokenize_text
from quamba.eval.perplexity import perplexity
from quamba.models.generate import generate

PROMPT = "And God said unto Moses,"
GREEDY_TOKENS = 64


def _ppl(model, tok, text, max_windows, seq_len=1024):
    windows = eval_windows(tokenize_text(read_text(text), tok), seq_len, text, max_windows)
    start = time.perf_counter()
    result = perplexity(model, windows, batch_size=4, show_progress=False)
    return {**result.to_dict(), "seconds": time.perf_counter() - start, "device": str(model.device),
            "dtype": str(model.dtype), "backend": getattr(model, "backend", "fp")}


def _greedy(model, prompt_ids, n=GREEDY_TOKENS):
    return generate(model, torch.tensor(prompt_ids), n).tolist()


def _identical_prefix(a, b):
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), len(a))


def _more_prompts(tok, text, count, length=16):
    """count prompts of `length` tokens, evenly spaced through the text."""
    ids = tokenize_text(read_text(text), tok).tolist()
    step = len(ids) // max(count, 1)
    return [ids[i * step:i * step + length] for i in range(count)]


@torch.inference_mode()
def _teacher_forced(cpu, gpu, tok, cpu_tokens):
    """Both models read the reference's own greedy text in one forward: at each of
    its positions, do they pick the same next token, and where not, how close was
    the reference's own choice (its top-1 minus top-2 logit)? Separates near-ties
    (which any rounding difference flips, and greedy decoding then compounds) from
    real disagreement."""
    ids = torch.tensor(tok.encode(PROMPT) + cpu_tokens[:-1])[None]
    n = len(cpu_tokens)
    ref = cpu(ids).float()[0, -n:]
    got = gpu(ids.to(gpu.device)).float().cpu()[0, -n:]
    top2 = ref.topk(2, dim=-1).values
    margin = (top2[:, 0] - top2[:, 1])
    disagree = (ref.argmax(-1) != got.argmax(-1)).nonzero().flatten().tolist()
    return {"positions": n, "argmax_agree": n - len(disagree), "disagree_at": disagree,
            "ref_margin_at_disagreement": [float(margin[i]) for i in disagree],
            "ref_margin_median": float(margin.median()),
            "logits_identical": bool(torch.equal(ref, got)),
            "max_abs_logit_diff": float((ref - got).abs().max()),
            "logit_rel_err": float((ref - got).norm() / ref.norm())}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["fp", "w8a8"])
    parser.add_argument("--model", default=None)
    parser.add_argument("--text", required=True)
    parser.add_argument("--max-windows", type=int, default=None)
    parser.add_argument("--gpu-dtype", default="fp16", help="dtype of both models' fp parts (w8a8)")
    parser.add_argument("--prompts", type=int, default=0, help="more greedy prompts cut from --text (w8a8)")
    parser.add_argument("--exact", action="store_true", help="both models in exact numerics (w8a8)")
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
    if args.exact:
        os.environ["QUAMBA_NUMERICS"] = "exact"
    torch.set_num_threads(16)
    if args.what == "fp":
        cpu, tok = load_with_tokenizer(args.model, dtype="fp32", device="cpu")
        gpu, _ = load_with_tokenizer(args.model, dtype="fp16", device="cuda")
    else:
        # The same dtype on both sides: the reference then rounds where the kernels do.
        cpu, tok = load_with_tokenizer(args.model, dtype=args.gpu_dtype, device="cpu", backend="reference")
        gpu, _ = load_with_tokenizer(args.model, dtype=args.gpu_dtype, device="cuda", backend="triton")
    out = {"what": args.what, "model": args.model, "text": args.text,
           "numerics": os.environ.get("QUAMBA_NUMERICS", "fast"),
           "cpu": _ppl(cpu, tok, args.text, args.max_windows), "gpu": _ppl(gpu, tok, args.text, args.max_windows)}
    out["ppl_rel_diff"] = out["gpu"]["ppl"] / out["cpu"]["ppl"] - 1
    prompt_ids = tok.encode(PROMPT)
    cpu_tokens, gpu_tokens = _greedy(cpu, prompt_ids), _greedy(gpu, prompt_ids)
    same = _identical_prefix(cpu_tokens, gpu_tokens)
    if args.what == "w8a8":
        out["teacher_forced"] = _teacher_forced(cpu, gpu, tok, cpu_tokens)
        more = [_identical_prefix(_greedy(cpu, p), _greedy(gpu, p))
                for p in _more_prompts(tok, args.text, args.prompts)]
        out["more_prompts"] = {"count": len(more), "tokens_each": GREEDY_TOKENS, "identical_prefix": more,
                               "all_64_identical": sum(m == GREEDY_TOKENS for m in more)}
    out.update({"greedy_prompt": PROMPT, "greedy_cpu": tok.decode(cpu_tokens), "greedy_gpu": tok.decode(gpu_tokens),
                "greedy_identical_prefix": same, "greedy_tokens": len(cpu_tokens),
                "torch": torch.__version__, "device": torch.cuda.get_device_name()})
    with open(args.json, "w") as f:
        json.dump(out, f, indent=2)
    print(json.dumps({k: v for k, v in out.items() if not k.startswith("greedy_c") and not k.startswith("greedy_g")}, indent=1))


if __name__ == "__main__":
    main()
