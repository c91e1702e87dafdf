"""lm-evaluation-harness adapter: any quamba model (fp or W8A8) as lm-eval's ``quamba`` model.

    from quamba.eval.lm_eval_adapter import QuambaLM   # also registers "quamba" with lm-eval
    lm = QuambaLM(pretrained="/tmp/q-quamba", batch_size=16)
    lm_eval.simple_evaluate(model=lm, tasks=["quamba_lastword"])

model_args (``--model_args pretrained=DIR,dtype=fp32,...``): ``pretrained`` (a folder, a hub id, or
omitted for the embedded tiny model), ``device``, ``dtype``, ``batch_size``, ``tokenizer``, ``max_length``.

How the three request types map onto a recurrent model:

- ``loglikelihood``: context + continuation in one forward. Batches are RIGHT-padded: Mamba
  is causal (conv and scan only look back), so the logits at real positions do not depend on
  the padding after them and a batch of 16 scores what 16 batches of 1 score. Continuations
  that share a context (multiple-choice) share its prefill through the recurrent state.
- ``loglikelihood_rolling``: lm-eval's disjoint rolling windows of ``max_length`` tokens (the
  first conditioned on EOT, each later one on the last token of the previous window),
  scored as loglikelihood pairs.
- ``generate_until``: every prompt is prefilled once into its own cache (not padded: padding
  would run through the recurrence and change the state), the caches are stacked into one
  batch and decoding steps the whole batch one token at a time; the prefix is never re-run.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F

try:
    from lm_eval import utils as lm_utils
    from lm_eval.api.model import LM
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    from quamba.errors import QuambaError

    raise QuambaError("the lm-eval adapter needs lm-eval: pip install quamba[eval]") from exc

from quamba.errors import QuambaError
from quamba.models.generate import sample_next

__all__ = ["QuambaLM", "register", "evaluate", "check_tasks", "task_manager", "TASKS_DIR", "OFFLINE_TASKS", "main"]

TASKS_DIR = Path(__file__).resolve().parent / "tasks"  # the offline task suite (YAML + jsonl)
DEFAULT_BATCH_SIZE = 16
DEFAULT_MAX_GEN_TOKS = 256


class QuambaLM(LM):
    """lm-eval's LM interface over :func:`quamba.api.load_with_tokenizer`.

    ``model``/``tok`` take an already loaded model and tokenizer instead of ``pretrained``
    (the ``quamba eval`` command and the tests use this to load once).
    """

    def __init__(self, pretrained: str | None = None, device: str | None = None, dtype: str | None = None,
                 batch_size: int | str | None = DEFAULT_BATCH_SIZE, tokenizer: str | None = None,
                 max_length: int | str = 2048, max_gen_toks: int | str = DEFAULT_MAX_GEN_TOKS,
                 seed: int | str = 1234, model=None, tok=None, **_lm_eval_extras):
        # lm-eval also passes max_batch_size (and, from its CLI, strings): nothing else is accepted silently.
        unknown = set(_lm_eval_extras) - {"max_batch_size"}
        if unknown:
            raise QuambaError(f"quamba model_args: unknown {', '.join(sorted(unknown))}; accepted: "
                              "pretrained, device, dtype, batch_size, tokenizer, max_length, max_gen_toks, seed")
        super().__init__()
        if model is None:
            from quamba.api import load_with_tokenizer

            model, tok = load_with_tokenizer(pretrained, dtype=dtype, device=device, tokenizer=tokenizer)
        elif tok is None:
            raise QuambaError("QuambaLM(model=...) needs tok= as well")
        if tok.eos_id is None:
            raise QuambaError(f"{tok.source}: the tokenizer has no end-of-text token (<|endoftext|>, </s>, <eos>); "
                              "lm-eval needs one as the prefix of rolling windows and as the default stop")
        self.model = model.eval()
        self.tok = tok
        self.eot_id = int(tok.eos_id)
        self.batch_size = _parse_batch_size(batch_size)
        self.max_length = int(max_length)
        self.max_gen_toks = int(max_gen_toks)
        self.seed = int(seed)
        if self.max_length < 2:
            raise QuambaError(f"quamba model_args: max_length={max_length} must be at least 2")

    @property
    def device(self):
        return self.model.device

    @property
    def tokenizer_name(self) -> str:
        return str(self.tok.source).replace("/", "__")

    # ------------------------------------------------------------------------- scoring

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Token ids of (context, continuation), split where the whole string's tokens split.

        Trailing spaces of the context move to the continuation (BPE attaches a space to the
        word after it); an empty context becomes EOT so the first token has a condition."""
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
        if not context:
            return [self.eot_id], self.tok.encode(continuation)
        whole = self.tok.encode(context + continuation)
        ctx = self.tok.encode(context)
        return ctx, whole[len(ctx):]

    @torch.inference_mode()
    def score_pairs(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """(context ids, continuation ids) -> (sum of log p(continuation | context), all greedy?).

        Continuations of one context (the choices of a multiple-choice question) share its
        prefill: the context runs once into a cache, which then feeds every continuation.
        Inputs longer than ``max_length`` keep their last ``max_length`` tokens."""
        results: list[tuple[float, bool] | None] = [None] * len(pairs)
        by_context = defaultdict(list)
        for i, (ctx, cont) in enumerate(pairs):
            if not cont:
                results[i] = (0.0, True)
            else:
                by_context[tuple(ctx)].append(i)
        plain = []
        for ctx, idxs in by_context.items():
            fits = all(len(ctx) + len(pairs[i][1]) <= self.max_length + 1 for i in idxs)
            if len(idxs) > 1 and len(ctx) > 1 and fits:
                for start in range(0, len(idxs), self.batch_size):
                    chunk = idxs[start:start + self.batch_size]
                    for i, res in zip(chunk, self._score_shared_context(list(ctx), [pairs[i][1] for i in chunk])):
                        results[i] = res
            else:
                plain += idxs
        # Longest first: batches of similar lengths pad little; running out of memory shows at once.
        plain.sort(key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
        for start in range(0, len(plain), self.batch_size):
            rows = []
            for i in plain[start:start + self.batch_size]:
                ctx, cont = pairs[i]
                full = (list(ctx) + list(cont))[-(self.max_length + 1):]
                rows.append((i, full[:-1], full[len(full) - min(len(cont), len(full) - 1):]))
            for (i, _, _), res in zip(rows, self._score_rows([(inp, tgt) for _, inp, tgt in rows])):
                results[i] = res
        return results  # type: ignore[return-value]

    def _score_rows(self, rows: list[tuple[list[int], list[int]]], cache=None) -> list[tuple[float, bool]]:
        """rows of (input ids, target ids): the targets are predicted by the last len(target)
        inputs. RIGHT padding: a causal model's outputs at real positions ignore what follows."""
        width = max(len(inp) for inp, _ in rows)
        batch = torch.full((len(rows), width), self.eot_id, dtype=torch.long)
        for r, (inp, _) in enumerate(rows):
            batch[r, :len(inp)] = torch.tensor(inp, dtype=torch.long)
        hidden = self.model.hidden_states(batch.to(self.device), cache)
        out = []
        for r, (inp, target) in enumerate(rows):
            # The head only on the scored positions: (n, vocab), not (batch, width, vocab).
            logits = self.model.logits(hidden[r, len(inp) - len(target):len(inp)])
            logprobs = F.log_softmax(logits.float(), dim=-1)
            target_t = torch.tensor(target, dtype=torch.long, device=logprobs.device)
            out.append((logprobs.gather(-1, target_t[:, None]).sum().item(),
                        bool((logprobs.argmax(-1) == target_t).all())))
        return out

    def _score_shared_context(self, ctx: list[int], conts: list[list[int]]) -> list[tuple[float, bool]]:
        """Prefill ctx[:-1] once, copy the state into one row per continuation, then run
        [ctx[-1]] + continuation[:-1] from it (the cache after the batch is discarded, so its
        padded rows do not matter)."""
        own = self.model.allocate_cache(1)
        self.model.hidden_states(torch.tensor([ctx[:-1]], device=self.device), own)
        cache = self.model.allocate_cache(len(conts))
        for r in range(len(conts)):
            _copy_cache_row(cache, own, r)
        return self._score_rows([([ctx[-1]] + cont[:-1], cont) for cont in conts], cache)

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        pairs = [self._encode_pair(*req.args) for req in requests]
        results = self.score_pairs(pairs)
        for req, res in zip(requests, results):
            self.cache_hook.add_partial("loglikelihood", req.args, res)
        return results

    def rolling_windows(self, text: str) -> list[tuple[list[int], list[int]]]:
        """lm-eval's disjoint windows: every token is predicted once; each window's input is
        ``max_length`` tokens (EOT or the previous window's last token, then the window)."""
        return [lm_utils.make_disjoint_window(w) for w in lm_utils.get_rolling_token_windows(
            token_list=self.tok.encode(text), prefix_token=self.eot_id, max_seq_len=self.max_length,
            context_len=1)]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        pairs, owner = [], []
        for k, req in enumerate(requests):
            for window in self.rolling_windows(req.args[0]):
                pairs.append(window)
                owner.append(k)
        totals = [0.0] * len(requests)
        for k, (ll, _) in zip(owner, self.score_pairs(pairs)):
            totals[k] += ll
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    # ----------------------------------------------------------------------- generation

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        results: list[str | None] = [None] * len(requests)
        groups = defaultdict(list)  # one batch shares its stop sequences and sampling settings
        for i, req in enumerate(requests):
            groups[repr(sorted(req.args[1].items()))].append(i)
        for idxs in groups.values():
            settings = self._gen_settings(requests[idxs[0]].args[1])
            for start in range(0, len(idxs), self.batch_size):
                chunk = idxs[start:start + self.batch_size]
                texts = self.generate_batch([requests[i].args[0] for i in chunk], **settings)
                for i, text in zip(chunk, texts):
                    results[i] = text
                    self.cache_hook.add_partial("generate_until", requests[i].args, text)
        return results  # type: ignore[return-value]

    def _gen_settings(self, gen_kwargs: dict) -> dict:
        kwargs = dict(gen_kwargs)
        until = kwargs.pop("until", None)
        until = [until] if isinstance(until, str) else list(until or [])
        temperature = float(kwargs.pop("temperature", 0.0) or 0.0)
        do_sample = kwargs.pop("do_sample", None)
        if do_sample is False:
            temperature = 0.0
        elif do_sample and temperature == 0.0:
            temperature = 1.0
        settings = dict(until=until, max_gen_toks=int(kwargs.pop("max_gen_toks", self.max_gen_toks)),
                        temperature=temperature, top_k=int(kwargs.pop("top_k", 0) or 0),
                        top_p=float(kwargs.pop("top_p", 1.0) or 1.0))
        if kwargs:
            raise QuambaError(f"generate_until: unsupported generation settings {sorted(kwargs)}")
        return settings

    @torch.inference_mode()
    def generate_batch(self, contexts: list[str], until: list[str], max_gen_toks: int,
                       temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0) -> list[str]:
        """Continue each context until a stop string, EOT or ``max_gen_toks`` tokens; the
        returned text ends before the first stop string (lm-eval's convention)."""
        keep = max(1, self.max_length - max_gen_toks)
        prompts = [self.tok.encode(c)[-keep:] or [self.eot_id] for c in contexts]
        batch = len(prompts)
        cache = self.model.allocate_cache(batch)
        first = []
        for r, ids in enumerate(prompts):
            own = self.model.allocate_cache(1)
            first.append(self.model(torch.tensor([ids], device=self.device), own)[:, -1])
            _copy_cache_row(cache, own, r)
        logits = torch.cat(first)
        generator = torch.Generator(device=self.device).manual_seed(self.seed) if temperature > 0 else None
        generated: list[list[int]] = [[] for _ in range(batch)]
        done = [False] * batch
        for _ in range(max_gen_toks):
            next_ids = sample_next(logits, temperature, top_k, top_p, generator)
            for r, token in enumerate(next_ids.tolist()):
                if done[r]:
                    continue
                if token == self.eot_id:
                    done[r] = True
                    continue
                generated[r].append(token)
                # Only the newest few tokens can complete a stop string first seen now.
                tail = self.tok.decode(generated[r][-_STOP_TAIL_TOKENS:])
                done[r] = any(s in tail for s in until)
            if all(done):
                break
            logits = self.model(next_ids.view(batch, 1), cache)[:, -1]
        return [_cut_at_stop(self.tok.decode(ids), until) for ids in generated]


_STOP_TAIL_TOKENS = 32  # a stop string up to ~32 tokens long is detected as soon as it appears


def _cut_at_stop(text: str, until: list[str]) -> str:
    cut = min((text.find(s) for s in until if s and s in text), default=len(text))
    return text[:cut]


def _copy_cache_row(batched, single, row: int) -> None:
    """Copy a batch-1 inference cache into row ``row`` of a batched one (every state tensor)."""
    for layer_b, layer_1 in zip(batched.layers, single.layers):
        for field in dataclasses.fields(layer_b):
            getattr(layer_b, field.name)[row:row + 1].copy_(getattr(layer_1, field.name))
    batched.seqlen_offset = max(batched.seqlen_offset, single.seqlen_offset)


def _parse_batch_size(value) -> int:
    if value is None or str(value).startswith("auto"):
        return DEFAULT_BATCH_SIZE  # no memory probing: a recurrent model's memory is flat in length
    try:
        size = int(value)
    except ValueError:
        raise QuambaError(f"quamba model_args: batch_size={value!r} is not an integer") from None
    if size < 1:
        raise QuambaError(f"quamba model_args: batch_size={value} must be at least 1")
    return size


def register() -> None:
    """Register :class:`QuambaLM` as lm-eval's ``quamba`` model (idempotent).

    lm-eval 0.4.13 does not read the ``lm_eval.models`` entry-point group, so importing this
    module is what makes ``--model quamba`` resolvable (``python -m quamba.eval.lm_eval_adapter``)."""
    import lm_eval.models  # noqa: F401  (lm-eval registers its own models lazily, only into an empty registry)
    from lm_eval.api.registry import model_registry, register_model

    if model_registry.get("quamba", None) is not QuambaLM:
        if "quamba" in model_registry:
            model_registry._objs.pop("quamba", None)  # a placeholder or an older class of a reloaded module
        register_model("quamba")(QuambaLM)


register()


OFFLINE_TASKS = ("quamba_lastword", "quamba_cloze_mc")
OFFLINE_TAG = "quamba_offline"


def task_manager(tasks: list[str]):
    """lm-eval's TaskManager with the offline suite; lm-eval's own ~10k task YAMLs are indexed
    (~10 s) only when a name outside the quamba_* namespace is asked for."""
    from lm_eval.tasks import TaskManager

    offline_only = all(t.startswith("quamba_") for t in tasks)
    return TaskManager(include_path=str(TASKS_DIR), include_defaults=not offline_only)


def check_tasks(tasks: list[str]):
    """The TaskManager for ``tasks``, after checking every name (before any model is loaded)."""
    manager = task_manager(tasks)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise QuambaError(f"unknown task(s) {', '.join(unknown)}; offline: {', '.join(OFFLINE_TASKS)} (or the tag "
                          f"{OFFLINE_TAG}); lm-eval's own (e.g. lambada_openai, hellaswag) download their data")
    return manager


def evaluate(lm: QuambaLM, tasks: list[str], limit: int | float | None = None, num_fewshot: int | None = None,
             bootstrap_iters: int = 1000, manager=None) -> dict:
    """Run lm-eval tasks on ``lm``; returns lm-eval's output dict plus ``metrics``:
    {task: {metric: (value, stderr or None)}} and ``average_acc`` (mean ``acc`` over the tasks)."""
    import lm_eval

    manager = manager or check_tasks(tasks)
    try:
        out = lm_eval.simple_evaluate(model=lm, tasks=tasks, limit=limit, num_fewshot=num_fewshot,
                                      task_manager=manager, bootstrap_iters=bootstrap_iters, log_samples=False)
    except (OSError, ConnectionError) as exc:
        raise QuambaError(f"could not load the data of {', '.join(tasks)} ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}); lm-eval's tasks need the Hugging Face hub, "
                          f"the offline suite does not ({OFFLINE_TAG})") from None
    metrics = {}
    for task, res in sorted(out["results"].items()):
        row = {}
        for key, value in res.items():
            name, _, filt = key.partition(",")
            if not filt or "_stderr" in name or not isinstance(value, (int, float)):
                continue
            stderr = res.get(f"{name}_stderr,{filt}")
            row[name if filt == "none" else key] = (float(value), float(stderr) if isinstance(stderr, (int, float)) else None)
        metrics[task] = row
    accs = [row["acc"][0] for row in metrics.values() if "acc" in row]
    out["metrics"] = metrics
    out["average_acc"] = sum(accs) / len(accs) if accs else None
    return out


def main() -> None:
    """lm-eval's own command line with ``quamba`` registered and the offline tasks included:
    ``python -m quamba.eval.lm_eval_adapter --model quamba --model_args pretrained=DIR --tasks ...``."""
    import sys

    from lm_eval.__main__ import cli_evaluate

    if len(sys.argv) > 1 and not {"--include_path", "-h", "--help"} & set(sys.argv):
        sys.argv += ["--include_path", str(TASKS_DIR)]
    cli_evaluate()


if __name__ == "__main__":
    main()
