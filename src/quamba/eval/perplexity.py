"""Perplexity over non-overlapping windows (the number papers report for wikitext-2)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from quamba.progress import progress_bar

__all__ = ["PerplexityResult", "perplexity"]


@dataclass
class PerplexityResult:
    ppl: float
    nll: float       # mean negative log-likelihood per predicted token (nats)
    tokens: int      # predicted tokens
    windows: int
    seq_len: int

    def to_dict(self) -> dict:
        return asdict(self)


@torch.inference_mode()
def perplexity(model, windows: torch.Tensor, batch_size: int = 1, show_progress: bool = True) -> PerplexityResult:
    """windows: (n, seq_len) token ids. Each window predicts its tokens 1..seq_len-1."""
    total_nll = 0.0
    total_tokens = 0
    n, seq_len = windows.shape
    with progress_bar(show_progress) as bar:
        task = bar.add_task("perplexity", total=n)
        for start in range(0, n, batch_size):
            batch = windows[start:start + batch_size].to(model.device)
            logits = model(batch)
            nll = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                                  batch[:, 1:].reshape(-1), reduction="sum")
            total_nll += nll.item()
            total_tokens += batch[:, 1:].numel()
            bar.advance(task, batch.shape[0])
    mean = total_nll / total_tokens
    return PerplexityResult(ppl=math.exp(mean), nll=mean, tokens=total_tokens, windows=n, seq_len=seq_len)
