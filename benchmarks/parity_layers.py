"""Per-layer int8 intermediates: CPU reference vs the Triton path on DEV, same inputs per layer.

    OUTJ=out.json python benchmarks/parity_layers.py cuda QDIR val.txt 1024
    (DEV cpu runs the kernels under TRITON_INTERPRET=1.)"""
import os, sys, json, torch
from quamba.api import load_with_tokenizer
from quamba.kernels import triton as tk
from quamba.quantization import qmixer
from quamba.quantization.qmixer import _rotation
from quamba.kernels.quantize_ref import quantize_ref
from quamba.eval.data import read_text, tokenize_text
DEV = sys.argv[1]; CK = sys.argv[2]; TEXT = sys.argv[3]; NTOK = int(sys.argv[4])
torch.set_num_threads(16 if DEV == "cuda" else 2)
ref, tok = load_with_tokenizer(CK, dtype="fp16", device="cpu", backend="reference")
tri, _ = load_with_tokenizer(CK, dtype="fp16", device=DEV, backend="triton")
ids = tokenize_text(read_text(TEXT), tok)[:NTOK][None]
rec_ref, rec_tri = {}, {}
orig_quant = qmixer.QMambaMixer._quant
def q(self, name, x, scale):
    out = orig_quant(self, name, x, scale); rec_ref[name] = (out[0], x.clone()); return out
qmixer.QMambaMixer._quant = q
def wrap(fn, key):
    def w(*a, **k):
        out = fn(*a, **k); rec_tri.setdefault(key, []).append(out); return out
    return w
for name in ["rmsnorm_quant", "int8_linear_quant", "causal_conv1d_int8", "selective_scan_int8", "hadamard_quant", "int8_linear"]:
    setattr(tk, name, wrap(getattr(tk, name), name))
def cnt(a, b):
    a = a.cpu().reshape(b.shape).to(torch.int32); b = b.cpu().to(torch.int32)
    return int(((a - b) != 0).sum())
rows = []
with torch.inference_mode():
    h = ref.backbone.embedding(ids); res = None
    for L, layer in enumerate(ref.backbone.layers):
        rec_ref.clear(); rec_tri.clear()
        ro, rr = layer(h, res)
        tb = tri.backbone.layers[L]
        to, tr = tb._forward_kernels(h.to(DEV), None if res is None else res.to(DEV))
        m = layer.mixer; d, r, n = m.config.d_inner, m.config.dt_rank, m.config.d_state
        xz = rec_tri["int8_linear_quant"][0]; dbl = rec_tri["int8_linear_quant"][1]
        y_tri = rec_tri["selective_scan_int8"][0][0].cpu().float()
        R = _rotation(d, torch.device("cpu"))
        y_ref16 = (rec_ref["y"][1].double() @ R.double().T).float().half().float()  # unrotate: ref's fp16 y (to fp32 association)
        row = {"layer": L, "n": int(xz[..., :d].numel()),
               "hq": cnt(rec_ref["in_proj_input"][0], rec_tri["rmsnorm_quant"][0][0]),
               "x": cnt(rec_ref["x"][0], xz[..., :d]), "z": cnt(rec_ref["z"][0], xz[..., d:]),
               "u": cnt(rec_ref["u"][0], rec_tri["causal_conv1d_int8"][0][0]),
               "dt_low": cnt(rec_ref["dt_low"][0], dbl[..., :r]), "B": cnt(rec_ref["B"][0], dbl[..., r:r + n]),
               "C": cnt(rec_ref["C"][0], dbl[..., r + n:]),
               "y16_rel": float((y_tri - y_ref16).norm() / y_ref16.norm()),
               "y16_neq": int((y_tri.reshape(y_ref16.shape) != y_ref16).sum()),
               "y": cnt(rec_ref["y"][0], rec_tri["hadamard_quant"][0]),
               "yq_from_tri_y16": cnt(rec_ref["y"][0], quantize_ref(y_tri.reshape(y_ref16.shape) @ R, m.out_proj.input_scale)),
               "res_eq": bool(torch.equal(rr, tr.cpu())),
               "out_rel": float((ro.float() - to.cpu().float()).norm() / ro.float().norm())}
        rows.append(row); print(row, flush=True)
        h, res = ro, rr
out = os.environ.get("OUTJ")
if out:
    json.dump(rows, open(out, "w"), indent=1)
