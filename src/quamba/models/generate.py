"""Autoregressive generation: prefill once, then one recurrent step per token
(on CUDA, each step is one replay of a captured CUDA graph).

A Mamba model's whole past lives in a fixed-size cache (conv + SSM state), so
a step costs the same at token 10 and token 10,000 and the prefix is never re-run.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["sample_next", "generate"]


def sample_next(logits: torch.Tensor, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """logits: (batch, vocab) -> next ids (batch,). temperature 0 is greedy."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        # drop a token when the mass before it already reaches top_p (the top token always stays)
        drop = (cumulative - sorted_logits.softmax(-1)) >= top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.inference_mode()
def generate(model, prompt_ids: torch.Tensor, max_new_tokens: int, temperature: float = 0.0,
             top_k: int = 0, top_p: float = 1.0, eos_id: int | None = None, seed: int | None = None,
             on_token: Callable[[int], None] | None = None) -> torch.Tensor:
    """prompt_ids: (seqlen,) or (1, seqlen). Returns the new token ids (n,), n <= max_new_tokens;
    ``on_token`` is called with each id as it is produced (for streaming)."""
    if prompt_ids.dim() == 1:
        prompt_ids = prompt_ids.unsqueeze(0)
    if prompt_ids.shape[0] != 1:
        raise ValueError("generate() takes one prompt; batch prompts through model.forward directly")
    generator = None
    if seed is not None:
        generator = torch.Generator(device=model.device).manual_seed(seed)
    prompt_ids = prompt_ids.to(model.device)
    if model.device.type == "cuda":
        from quamba.models.cuda_graph import GraphedDecoder

        decoder = GraphedDecoder(model, 1)
        logits, step = decoder.prefill(prompt_ids), decoder.step
    else:
        cache = model.allocate_cache(1)
        logits = model(prompt_ids, cache, num_last_tokens=1)[:, -1]

        def step(ids):
            return model(ids.view(1, 1), cache)[:, -1]
    # On CUDA the next step is queued before the host reads the token it was fed: the id
    # travels to pinned memory while the GPU already runs that step, so the GPU does not
    # idle for the host's round trip each token (a proxy measured on an H100, 2.8b W8A8,
    # benchmarks/decode_queued.py: 1.86 ms a step replayed and waited for one at a time,
    # 1.78 queued back to back). After an eos the one step queued past it is wasted work;
    # the tokens and the random draws are those of a step-by-step loop.
    on_gpu = model.device.type == "cuda"
    host_id = torch.empty(1, dtype=torch.long, pin_memory=on_gpu)
    copied = torch.cuda.Event() if on_gpu else None
    out: list[int] = []
    for i in range(max_new_tokens):
        next_id = sample_next(logits, temperature, top_k, top_p, generator)
        host_id.copy_(next_id.view(1), non_blocking=on_gpu)
        if copied is not None:
            copied.record(torch.cuda.current_stream(model.device))   # the copy's stream, whatever the current device
        more = i + 1 < max_new_tokens
        if more and on_gpu:
            logits = step(next_id)
        if copied is not None:
            copied.synchronize()
        token = int(host_id[0])
        out.append(token)
        if on_token is not None:
            on_token(token)
        if eos_id is not None and token == eos_id:
            break
        if more and not on_gpu:
            logits = step(next_id)
    return torch.tensor(out, dtype=torch.long)
