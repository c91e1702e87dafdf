"""Decode parity: step the CPU reference and the Triton path through the same tokens.

    OUTJ=out.json python benchmarks/parity_steps.py cuda QDIR val.txt N_PROMPTS N_TOKENS"""
import os, sys, json, torch
sys.path.insert(0, os.path.dirname(__file__))
from quamba.api import load_with_tokenizer
from quamba.models.generate import generate
from gpu_checks import _more_prompts, PROMPT
DEV = sys.argv[1]; CK = sys.argv[2]; TEXT = sys.argv[3]; NP = int(sys.argv[4]); N = int(sys.argv[5])
torch.set_num_threads(16 if DEV == "cuda" else 2)
ref, tok = load_with_tokenizer(CK, dtype="fp16", device="cpu", backend="reference")
tri, _ = load_with_tokenizer(CK, dtype="fp16", device=DEV, backend="triton")
cap = {}
for name, m in (("ref", ref), ("tri", tri)):
    m.lm_head.register_forward_pre_hook(lambda mod, args, name=name: cap.__setitem__(name, args[0].detach().float().cpu()))
prompts = [tok.encode(PROMPT)] + _more_prompts(tok, TEXT, NP)
report = []
with torch.inference_mode():
    for p in prompts:
        toks = generate(ref, torch.tensor(p), N).tolist()
        cr, ct = ref.allocate_cache(1), tri.allocate_cache(1)
        seq = [p] + [[t] for t in toks[:-1]]
        first_hidden_diff = first_logit_diff = None; argmax_diff = []; margins = []
        for i, chunk in enumerate(seq):
            ids = torch.tensor([chunk])
            lr = ref(ids, cr)[0, -1].float(); hr = cap["ref"][0, -1]
            lt = tri(ids.to(DEV), ct)[0, -1].float().cpu(); ht = cap["tri"][0, -1]
            if first_hidden_diff is None and not torch.equal(hr, ht): first_hidden_diff = i
            if first_logit_diff is None and not torch.equal(lr, lt): first_logit_diff = i
            top2 = lr.topk(2).values
            if lr.argmax() != lt.argmax():
                argmax_diff.append(i); margins.append(float(top2[0] - top2[1]))
        row = {"prompt_len": len(p), "first_hidden_diff": first_hidden_diff, "first_logit_diff": first_logit_diff,
               "argmax_diff": argmax_diff, "ref_margin_there": margins}
        print(row, flush=True); report.append(row)
if os.environ.get("OUTJ"):
    json.dump(report, open(os.environ["OUTJ"], "w"), indent=1)
