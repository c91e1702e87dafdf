"""Build the offline lm-eval task data in src/quamba/eval/tasks/ from held-out text.

    python scripts/build_offline_tasks.py [--val ../shared/data/val.txt]

Writes two jsonl files (deterministic for a given text and seed):

- ``quamba_lastword.jsonl`` -- LAMBADA-style: ``{"context", "target"}``; the target is the
  passage's last word (with the one space before it), alphabetic, >= 4 letters, ending a clause
  or line, and already used earlier in the passage, so a model that follows the context can
  get it (LAMBADA picks its passages by human guessability; this is the cheap proxy).
- ``quamba_cloze_mc.jsonl`` -- HellaSwag-style: ``{"context", "choices", "label"}``: a few
  sentences of one document, then 4 candidate next sentences: the true one and 3 drawn from
  other documents, each within 15% of its length in characters (so that length alone, which
  decides a sum of log-probabilities, gives little away). Whitespace is collapsed so that no
  choice stands out by its layout.

The YAML files beside them are hand-written; this script only regenerates the data.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TASKS = ROOT / "src" / "quamba" / "eval" / "tasks"
DOC_SEP = "<|endoftext|>"

WORD = re.compile(r"\S+")
TARGET = re.compile(r"([A-Za-z]{4,})[.,;:!?]?")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")


def documents(text: str) -> list[str]:
    return [d.strip() for d in text.split(DOC_SEP) if len(d.strip()) > 0]


def lastword_examples(docs: list[str], n: int, rng: random.Random) -> list[dict]:
    """At most one passage per ~1500 characters of a document, so long documents do not dominate."""
    examples = []
    for doc in docs:
        words = list(WORD.finditer(doc))
        budget = max(1, len(doc) // 1500)
        cands = []
        for j in range(30, len(words)):
            m = TARGET.fullmatch(words[j].group())
            ends_clause = m and (words[j].group() != m.group(1) or "\n" in doc[words[j].end():words[j].end() + 1])
            if not ends_clause or doc[words[j].start() - 1] != " " or doc[words[j].start() - 2].isspace():
                continue  # one plain space before the target, as in LAMBADA
            start = j - rng.randint(30, 70)
            if start < 0:
                continue
            before = {w.group().strip(".,;:!?\"'()").lower() for w in words[start:j]}
            if m.group(1).lower() in before:
                cands.append((start, j))
        rng.shuffle(cands)
        used_until = []
        for start, j in cands:
            if len(used_until) >= budget:
                break
            if any(not (j < s or start > e) for s, e in used_until):
                continue  # passages of one document do not overlap
            used_until.append((start, j))
            word_start = words[j].start()
            context = doc[words[start].start():word_start]
            sep = context[len(context.rstrip()):]
            target = TARGET.fullmatch(words[j].group()).group(1)
            examples.append({"context": context.rstrip(), "target": sep + target})
    rng.shuffle(examples)
    return examples[:n]


def sentences(doc: str) -> list[str]:
    return [s.strip() for s in SENTENCE_END.split(" ".join(doc.split())) if s.strip()]


def cloze_examples(docs: list[str], n: int, rng: random.Random) -> list[dict]:
    per_doc = [sentences(d) for d in docs]
    pool = [(k, s) for k, sents in enumerate(per_doc) for s in sents if 6 <= len(s.split()) <= 35]
    examples = []
    for k, sents in enumerate(per_doc):
        budget = max(1, len(docs[k]) // 2000)
        starts = list(range(len(sents)))
        rng.shuffle(starts)
        taken = 0
        for i in starts:
            if taken >= budget:
                break
            ctx = []
            j = i
            while j < len(sents) - 1 and len(" ".join(ctx).split()) < 25:
                ctx.append(sents[j])
                j += 1
            ending = sents[j] if j < len(sents) else ""
            n_ctx, n_end = len(" ".join(ctx).split()), len(ending.split())
            if not (25 <= n_ctx <= 90 and 6 <= n_end <= 35):
                continue
            distractors = set()
            for _ in range(2000):
                other_k, s = rng.choice(pool)
                if other_k != k and abs(len(s) - len(ending)) <= 0.15 * len(ending) and s != ending:
                    distractors.add(s)
                if len(distractors) == 3:
                    break
            if len(distractors) < 3:
                continue
            choices = sorted(distractors) + [ending]
            rng.shuffle(choices)
            examples.append({"context": " ".join(ctx), "choices": [" " + c for c in choices],
                             "label": choices.index(ending)})
            taken += 1
    rng.shuffle(examples)
    return examples[:n]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"{path.relative_to(ROOT)}: {len(rows)} examples, {path.stat().st_size / 1024:.0f} KiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--val", type=Path, default=ROOT.parent / "shared" / "data" / "val.txt")
    parser.add_argument("--lastword", type=int, default=500, help="examples of quamba_lastword")
    parser.add_argument("--cloze", type=int, default=400, help="examples of quamba_cloze_mc")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    docs = documents(args.val.read_text(encoding="utf-8"))
    write_jsonl(TASKS / "quamba_lastword.jsonl", lastword_examples(docs, args.lastword, random.Random(args.seed)))
    write_jsonl(TASKS / "quamba_cloze_mc.jsonl", cloze_examples(docs, args.cloze, random.Random(args.seed)))


if __name__ == "__main__":
    main()
