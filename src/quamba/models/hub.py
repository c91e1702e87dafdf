"""Where a model lives: the embedded default, a local folder, or a Hugging Face hub id."""

from __future__ import annotations

from pathlib import Path

from quamba.errors import QuambaError

__all__ = ["DEFAULT_MODEL", "resolve_model_dir", "looks_like_hub_id"]

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "assets" / "mamba1-tiny-3m"

# What a Mamba checkpoint needs; the rest of a hub repo (onnx, flax, ...) is not fetched.
_HUB_PATTERNS = ["*.json", "*.safetensors", "pytorch_model*.bin", "tokenizer*", "*.txt", "*.model"]


def looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def resolve_model_dir(path_or_id: str | Path | None) -> Path:
    """A local folder as is; ``None`` the embedded tiny model; ``owner/name`` fetched from the hub."""
    if path_or_id is None or str(path_or_id) in ("", "default"):
        return DEFAULT_MODEL
    path = Path(path_or_id).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise QuambaError(f"{path}: is a file; pass the model folder that holds config.json")
    if not looks_like_hub_id(str(path_or_id)):
        raise QuambaError(f"{path}: no such model folder (and not a hub id like 'state-spaces/mamba-130m')")
    return _download(str(path_or_id))


def _download(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover - a required dependency
        raise QuambaError("huggingface_hub is not installed; pass a local model folder") from exc
    try:
        return Path(snapshot_download(repo_id, allow_patterns=_HUB_PATTERNS))
    except Exception as exc:  # the hub client raises many types: offline, 404, auth...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise QuambaError(
            f"{repo_id}: could not fetch from the Hugging Face hub ({type(exc).__name__}: {reason[:200]}); "
            "check the id and your connection, or pass a local folder"
        ) from exc
