#!/usr/bin/env python3
"""Correctness check of the benchmark: tfla's outputs and gradients against the seed's
pure-PyTorch mLSTM (mlstm_kernels.torch.parallel, the `parallel--native_*` kernels) on a few
shapes, so a fast but wrong kernel cannot look good in the tables.

tfla runs in bfloat16 exactly as benchmarked (library's choice of config); the reference runs
in float64 on the same bf16-rounded inputs:
- h against parallel--native_autograd (mLSTMexp) / parallel--native_siging_autograd (mLSTMsig);
- gradients against parallel--native_custbw / native_siging_custbw, the seed's backward
  convention (normalizer held constant), which tfla's backward implements. (native_autograd
  differentiates through the normalizer too, a different gradient by design.)
Without mlstm_kernels the reference is tfla.torch.reference (float64 recurrent form), named so.
Prints one line per shape and quantity; with --json, one JSON object per line instead.
Relative error: |x - ref|_F / |ref|_F; pass below 2e-2 (bf16 inputs), df judged by its
conditioned error (df_cond, see df_conditioned) and printed plain too.
"""

import argparse
import json
import math
import os
import sys

SHAPES = [  # B, NH, S, Dqk, Dv
    (1, 2, 256, 64, 128),
    (2, 2, 512, 128, 128),
    (1, 1, 1024, 256, 512),
]
TOL = 2e-2


def rel(x, ref):
    x, ref = x.detach().double(), ref.detach().double()
    if not bool(x.isfinite().all()):
        return math.inf
    return float((x - ref).norm() / ref.norm())


def df_conditioned(df, df_ref, ref_in, ref_grads):
    """|df - ref|_F / |scale|_F, scale_t = sigmoid(-f_t) sum_{u>=t} (|q_u.dq_u| + |k_u.dk_u|)
    (src/reference/reference.hpp, df_conditioned_error): the plain relative error of df
    amplifies the rounding of bf16 dq, dk when forget gates are nearly closed."""
    import torch
    q, k, f = ref_in[0].detach(), ref_in[1].detach(), ref_in[4].detach()
    terms = (q * ref_grads[0]).sum(-1).abs() + (k * ref_grads[1]).sum(-1).abs()
    scale = torch.sigmoid(-f) * terms.flip(-1).cumsum(-1).flip(-1)
    d = df.detach().double()
    if not bool(d.isfinite().all()):
        return math.inf
    return float((d - df_ref).norm() / scale.norm())


def seed_reference(variant):
    """(forward-only fn, custom-backward fn, label) from mlstm_kernels, or None."""
    try:
        from mlstm_kernels.torch.parallel.native import (mlstm_parallel__native_autograd,
                                                         mlstm_parallel__native_custbw)
        from mlstm_kernels.torch.parallel.native_siging import (
            mlstm_siging_parallel__native_autograd, mlstm_siging_parallel__native_custbw)
    except Exception as e:  # reported, then the fallback is used
        print(f"# mlstm_kernels not importable ({type(e).__name__}: {e}); using tfla.torch.reference",
              file=sys.stderr)
        return None
    if variant == "exp":
        return (mlstm_parallel__native_autograd, mlstm_parallel__native_custbw,
                "mlstm_kernels parallel--native_autograd / native_custbw (float64)")
    return (lambda *a, **kw: mlstm_siging_parallel__native_autograd(*a, normalize=True, **kw),
            lambda *a, **kw: mlstm_siging_parallel__native_custbw(*a, normalize=True, **kw),
            "mlstm_kernels parallel--native_siging_autograd / native_siging_custbw (float64)")


def run(emit):
    import torch
    from tfla.torch import mlstm_chunkwise
    from tfla.torch.reference import mlstm_recurrent_reference

    ok = True
    for variant in ("exp", "sig"):
        seed_ref = seed_reference(variant)
        for B, NH, S, Dqk, Dv in SHAPES:
            g = torch.Generator(device="cuda").manual_seed(1000 + S)
            x = [torch.randn(B, NH, S, d, device="cuda", generator=g).bfloat16() for d in (Dqk, Dqk, Dv)]
            x.append(torch.randn(B, NH, S, device="cuda", generator=g))
            x.append(3 + torch.randn(B, NH, S, device="cuda", generator=g))
            dh = torch.randn(B, NH, S, Dv, device="cuda", generator=g).bfloat16()
            leaves = [t.clone().requires_grad_() for t in x]
            h = mlstm_chunkwise(*leaves, chunk_size=None, variant=variant)
            grads = torch.autograd.grad(h, leaves, dh)
            ref_in = [t.detach().double().requires_grad_() for t in x]
            if seed_ref is not None:
                fwd_fn, bwd_fn, label = seed_ref
                with torch.no_grad():
                    h_ref = fwd_fn(*[t.detach() for t in ref_in])
                h_bw = bwd_fn(*ref_in)
            else:
                label = "tfla.torch.reference (float64 recurrent form)"
                h_ref, _ = mlstm_recurrent_reference(*ref_in, variant=variant)
                h_bw = h_ref
            ref_grads = torch.autograd.grad(h_bw, ref_in, dh.double())
            errs = {"h": rel(h, h_ref)}
            errs.update({f"d{n}": rel(a, r) for n, a, r in zip("qkvif", grads, ref_grads)})
            errs["df_cond"] = df_conditioned(grads[4], ref_grads[4], ref_in, ref_grads)
            # df is a reverse cumulative sum of differences: judged in the units it can resolve
            passed = all(e < TOL for n, e in errs.items() if n != "df")
            ok &= passed
            emit({"variant": variant, "B": B, "NH": NH, "S": S, "Dqk": Dqk, "Dv": Dv,
                  "reference": label, "errors": errs, "tol": TOL, "pass": passed})
            del x, leaves, h, grads, ref_in, h_ref, h_bw, ref_grads
            torch.cuda.empty_cache()
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="one JSON object per line")
    args = ap.parse_args()
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))

    def emit(r):
        if args.json:
            print(json.dumps(r), flush=True)
        else:
            e = "  ".join(f"{k} {v:.2e}" for k, v in r["errors"].items())
            print(f"tfla {r['variant']:3} B={r['B']} NH={r['NH']} S={r['S']} Dqk={r['Dqk']} Dv={r['Dv']}: "
                  f"{e}  {'ok' if r['pass'] else 'FAIL'}  (vs {r['reference']})", flush=True)

    sys.exit(0 if run(emit) else 1)


if __name__ == "__main__":
    main()
