"""The lm-eval adapter against direct computation, and `quamba eval` end to end (tiny model, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

lm_eval = pytest.importorskip("lm_eval")

from lm_eval.api.instance import Instance  # noqa: E402

from quamba.eval.lm_eval_adapter import QuambaLM  # noqa: E402



VAL_TXT = Path(__file__).resolve().parents[3] / "shared" / "data" / "val.txt"  # as in tests/conftest.py


def _requests(kind: str, args: list[tuple]) -> list[Instance]:
    return [Instance(request_type=kind, doc={}, arguments=a, idx=i) for i, a in enumerate(args)]


@pytest.fixture(scope="module")
def adapter(tiny_model, tokenizer):
    return QuambaLM(model=tiny_model, tok=tokenizer, batch_size=16, max_length=512)


@pytest.fixture(scope="module")
def val_text() -> str:
    return VAL_TXT.read_text(encoding="utf-8")


def _pairs(val_text: str, n: int) -> list[tuple[str, str]]:
    """(context, continuation) pairs of varied lengths from held-out text."""
    pairs = []
    for i in range(n):
        start = 1000 + 997 * i
        ctx_len, cont_len = 40 + 53 * (i % 7), 5 + 11 * (i % 4)
        pairs.append((val_text[start:start + ctx_len], val_text[start + ctx_len:start + ctx_len + cont_len]))
    return pairs


def test_loglikelihood_matches_direct_forward(adapter, tiny_model, val_text):
    pairs = _pairs(val_text, 5)
    pairs += [(pairs[0][0], cont) for _, cont in pairs[1:]]  # 5 choices of one context: the shared-prefill path
    results = adapter.loglikelihood(_requests("loglikelihood", pairs))
    for (ctx, cont), (ll, greedy) in zip(pairs, results):
        ctx_ids, cont_ids = adapter._encode_pair(ctx, cont)
        ids = torch.tensor([ctx_ids + cont_ids])
        with torch.inference_mode():
            logprobs = F.log_softmax(tiny_model(ids)[0].float(), -1)[len(ctx_ids) - 1:-1]
        target = torch.tensor(cont_ids)
        assert ll == pytest.approx(logprobs.gather(-1, target[:, None]).sum().item(), abs=1e-4)
        assert greedy == bool((logprobs.argmax(-1) == target).all())


def test_batch_16_scores_equal_batch_1(tiny_model, tokenizer, val_text):
    """Right padding is exact for a causal model: batching must not change any score."""
    pairs = _pairs(val_text, 20)
    requests = _requests("loglikelihood", pairs + [(pairs[0][0], cont) for _, cont in pairs[1:20:2]])
    batched = QuambaLM(model=tiny_model, tok=tokenizer, batch_size=16).loglikelihood(requests)
    single = QuambaLM(model=tiny_model, tok=tokenizer, batch_size=1).loglikelihood(requests)
    assert [g for _, g in batched] == [g for _, g in single]
    torch.testing.assert_close(torch.tensor([s for s, _ in batched]), torch.tensor([s for s, _ in single]),
                               rtol=1e-5, atol=1e-4)


def test_rolling_nll_equals_perplexity_path(adapter, tiny_model, tokenizer, val_text):
    """lm-eval's rolling loglikelihood vs quamba's perplexity() on the same windows.

    lm-eval predicts EVERY token: window k feeds max_length (L) tokens -- EOT (k = 0) or the
    last token of the previous window, then the window's own tokens but its last -- and
    scores all L outputs. `quamba ppl` feeds L-token windows and skips each window's first
    token (nothing before it to condition on). So the like-for-like reference is
    perplexity() on windows of L + 1 tokens of [EOT] + text that overlap by one token
    (the conditioning token), which predicts exactly the L tokens lm-eval predicts, from
    exactly the same inputs; the short tail window is scored the same way on its own."""
    from quamba.eval.perplexity import perplexity

    text = val_text[:12000]  # ~3.5k tokens: 7 windows of 512 and a tail
    L = adapter.max_length
    ids = torch.tensor([tokenizer.eos_id] + tokenizer.encode(text))
    n_full = (ids.numel() - 1) // L
    full = ids[: n_full * L + 1].unfold(0, L + 1, L)             # (n_full, L + 1), 1-token overlap
    tail = ids[n_full * L:].unsqueeze(0)                         # the rest, with its conditioning token
    ref_nll, ref_tokens = 0.0, 0
    for windows in (full, tail):
        if windows.shape[1] > 1:
            res = perplexity(tiny_model, windows, batch_size=4, show_progress=False)
            ref_nll += res.nll * res.tokens
            ref_tokens += res.tokens
    assert ref_tokens == ids.numel() - 1  # every token predicted once, as lm-eval does
    assert sum(len(cont) for _, cont in adapter.rolling_windows(text)) == ref_tokens
    (rolling,) = adapter.loglikelihood_rolling(_requests("loglikelihood_rolling", [(text,)]))
    assert -rolling == pytest.approx(ref_nll, rel=1e-3)


def test_generate_until_stops_at_stop_sequences(adapter, tiny_model, tokenizer):
    from quamba.models.generate import generate

    prompts = ["The quick brown fox", "In the beginning God created"]
    free = []
    for p in prompts:
        new = generate(tiny_model, torch.tensor(tokenizer.encode(p)), 24, eos_id=tokenizer.eos_id)
        free.append(tokenizer.decode([t for t in new.tolist() if t != tokenizer.eos_id]))  # EOT ends it, unprinted
    # Batched (two caches stacked), greedy, no stop: the same text as generate() one at a time.
    gen = {"until": [], "max_gen_toks": 24, "do_sample": False}
    assert adapter.generate_until(_requests("generate_until", [(p, gen) for p in prompts])) == free
    # A stop string from the middle of the free text: the output ends right before it.
    stops = [f[len(f) // 2:len(f) // 2 + 3] for f in free]
    requests = _requests("generate_until", [(p, {"until": [s], "max_gen_toks": 24}) for p, s in zip(prompts, stops)])
    for out, f, s in zip(adapter.generate_until(requests), free, stops):
        assert out == f[:f.find(s)]
    short = adapter.generate_until(_requests("generate_until", [(prompts[0], {"until": [], "max_gen_toks": 3})]))
    new = generate(tiny_model, torch.tensor(tokenizer.encode(prompts[0])), 3)
    assert short == [tokenizer.decode([t for t in new.tolist() if t != tokenizer.eos_id])]


def test_quamba_eval_offline_suite_end_to_end(tiny_dir, tmp_path):
    from typer.testing import CliRunner

    from quamba.cli import app

    out = tmp_path / "eval.json"
    result = CliRunner().invoke(app, ["eval", str(tiny_dir), "--tasks", "quamba_lastword,quamba_cloze_mc",
                                      "--limit", "6", "--device", "cpu", "--dtype", "fp32", "--json", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert set(record["metrics"]) == {"quamba_lastword", "quamba_cloze_mc"}
    assert {"acc", "perplexity"} <= set(record["metrics"]["quamba_lastword"])
    assert {"acc", "acc_norm"} <= set(record["metrics"]["quamba_cloze_mc"])
    assert 0.0 <= record["average_acc"] <= 1.0
    assert record["method"] == "fp" and record["versions"]["lm_eval"]
    assert "average accuracy" in result.output


def test_quamba_eval_unknown_task_is_a_one_line_error(tiny_dir):
    from typer.testing import CliRunner

    from quamba.cli import app

    result = CliRunner().invoke(app, ["eval", str(tiny_dir), "--tasks", "quamba_lastword,quamba_no_such_task"])
    assert result.exit_code == 1
    assert "unknown task(s) quamba_no_such_task" in result.output
