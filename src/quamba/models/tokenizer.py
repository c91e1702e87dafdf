"""Tokenizer from the model folder, or from an explicit override.

state-spaces checkpoints ship no tokenizer (they use GPT-NeoX's), so users
pass ``--tokenizer EleutherAI/gpt-neox-20b`` or a local ``tokenizer.json``;
nothing here hard-codes a tokenizer name.
"""

from __future__ import annotations

from pathlib import Path

from quamba.errors import QuambaError
from quamba.models.hub import looks_like_hub_id

__all__ = ["Tokenizer", "load_tokenizer"]

_EOS_CANDIDATES = ("<|endoftext|>", "</s>", "<eos>")


class Tokenizer:
    """A thin wrapper over ``tokenizers.Tokenizer`` with the EOS id resolved."""

    def __init__(self, backend, source: str):
        self.backend = backend
        self.source = source
        self.eos_id = next((i for t in _EOS_CANDIDATES if (i := backend.token_to_id(t)) is not None), None)

    def encode(self, text: str) -> list[int]:
        return self.backend.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=False)

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size()


def load_tokenizer(model_dir: Path, override: str | Path | None = None) -> Tokenizer:
    from tokenizers import Tokenizer as HFTokenizer

    if override is not None:
        path = Path(override).expanduser()
        if path.is_dir():
            path = path / "tokenizer.json"
        if path.is_file():
            return Tokenizer(_from_file(HFTokenizer, path), str(path))
        if not looks_like_hub_id(str(override)):
            raise QuambaError(f"{override}: no tokenizer.json there (and not a hub id)")
        try:
            return Tokenizer(HFTokenizer.from_pretrained(str(override)), str(override))
        except Exception as exc:
            raise QuambaError(f"{override}: could not fetch the tokenizer from the hub ({type(exc).__name__})") from exc
    path = Path(model_dir) / "tokenizer.json"
    if not path.is_file():
        raise QuambaError(
            f"{model_dir}: no tokenizer.json in the model folder; pass --tokenizer "
            "(state-spaces/mamba-* use EleutherAI/gpt-neox-20b)")
    return Tokenizer(_from_file(HFTokenizer, path), str(path))


def _from_file(cls, path: Path):
    try:
        return cls.from_file(str(path))
    except Exception as exc:
        raise QuambaError(f"{path}: not a valid tokenizer.json ({exc})") from exc
