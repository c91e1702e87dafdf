"""Datasets of the offline quamba_* tasks, read from the jsonl files beside this file.

The YAMLs name these functions as ``custom_dataset: !function offline_data.<name>``; lm-eval
resolves ``!function`` relative to the YAML, and these resolve the data relative to
themselves, so the tasks work from any current directory and from an installed wheel
(``datasets.load_dataset("json", data_files=...)`` would resolve a relative path against
the current directory instead). Nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _read(name: str):
    import datasets

    path = HERE / f"{name}.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def lastword(**_metadata):
    return _read("quamba_lastword")


def cloze_mc(**_metadata):
    return _read("quamba_cloze_mc")
