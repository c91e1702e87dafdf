"""Text sources for perplexity and calibration: local files or Hugging Face datasets."""

from __future__ import annotations

import random
from pathlib import Path

import torch

from quamba.errors import QuambaError

__all__ = ["read_text", "tokenize_text", "eval_windows", "calibration_samples", "DATASET_ALIASES"]

# name -> (dataset path, config, split, text column): the sets papers report.
DATASET_ALIASES = {
    "wikitext2": ("wikitext", "wikitext-2-raw-v1", "test", "text"),
    "pile-val": ("monology/pile-uncopyrighted", None, "validation", "text"),
}


def read_text(source: str | Path | list) -> str:
    """Concatenate the text of one or more files, or of a dataset (alias or ``hf:path[:config[:split]]``)."""
    if isinstance(source, (list, tuple)):
        return "".join(read_text(s) for s in source)
    path = Path(source).expanduser()
    if path.is_file():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise QuambaError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        if not text.strip():
            raise QuambaError(f"{path}: the file is empty")
        return text
    name = str(source)
    if name in DATASET_ALIASES or name.startswith("hf:"):
        return _read_dataset(name)
    raise QuambaError(f"{path}: no such text file (datasets: {', '.join(DATASET_ALIASES)} or hf:path[:config[:split]])")


def _read_dataset(name: str) -> str:
    if name in DATASET_ALIASES:
        path, config, split, column = DATASET_ALIASES[name]
    else:
        parts = name[3:].split(":")
        path, config, split, column = parts[0], (parts[1] or None) if len(parts) > 1 else None, \
            parts[2] if len(parts) > 2 else "test", "text"
    try:
        import datasets
    except ImportError:
        raise QuambaError(f"{name}: reading a hub dataset needs `pip install datasets` (or quamba[eval])") from None
    try:
        ds = datasets.load_dataset(path, config, split=split)
    except Exception as exc:
        raise QuambaError(f"{name}: could not load dataset {path!r} ({type(exc).__name__}); offline? pass a text file") from None
    return "\n\n".join(ds[column])


def tokenize_text(text: str, tokenizer, source: str = "text") -> torch.Tensor:
    ids = tokenizer.encode(text)
    if not ids:
        raise QuambaError(f"{source}: no tokens after tokenization")
    return torch.tensor(ids, dtype=torch.long)


def eval_windows(ids: torch.Tensor, seq_len: int, source: str = "text", max_windows: int | None = None) -> torch.Tensor:
    """Non-overlapping windows (n, seq_len); the incomplete tail is dropped."""
    n = ids.numel() // seq_len
    if n == 0:
        raise QuambaError(f"{source}: {ids.numel()} tokens is shorter than one window of {seq_len}; "
                          "use a longer text or a smaller --seq-len")
    if max_windows is not None:
        n = min(n, max_windows)
    return ids[: n * seq_len].view(n, seq_len)


def calibration_samples(ids: torch.Tensor, n_samples: int, seq_len: int, seed: int = 0,
                        allow_short: bool = False, source: str = "calibration text") -> torch.Tensor:
    """``n_samples`` distinct windows of ``seq_len`` tokens, picked by a seeded shuffle (deterministic)."""
    available = ids.numel() // seq_len
    if available == 0:
        raise QuambaError(f"{source}: {ids.numel()} tokens is shorter than one sample of {seq_len} tokens")
    if available < n_samples:
        if not allow_short:
            raise QuambaError(
                f"{source}: has {ids.numel()} tokens = {available} samples of {seq_len}, fewer than the "
                f"{n_samples} requested; lower --samples/--seq-len or pass --allow-short to use {available}")
        n_samples = available
    order = list(range(available))
    random.Random(seed).shuffle(order)
    windows = ids[: available * seq_len].view(available, seq_len)
    return windows[sorted(order[:n_samples])]
