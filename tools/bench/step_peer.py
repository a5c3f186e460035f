#!/usr/bin/env python3
"""Times the seed's Triton step kernel, the peer of `tfla bench step`.

The peer: mlstm_kernels 2.0.6, mlstm_kernels.torch.recurrent.triton_step
.mlstm_recurrent_step__triton_fw (kernel triton/recurrent/fw_step_fused.py: one token, mLSTMexp
only, grid (1, Dv / 64, B * NH), fp32 states). It writes the new state to separate buffers (it
would race in place: its Dv-block 0 writes n while the others read it), so the timed loop
ping-pongs between two state buffers; the bytes moved are the same as tfla's in-place update.
It has no fused multi-step: T tokens are T calls.

Protocol, the same as tfla's: GPU time per call of back-to-back calls with the host's
enqueueing hidden behind a blocker kernel (torch.cuda._sleep), median over --reps; a row says
host_bound=true when the host's enqueueing took longer than the blocker (then the time is an
upper bound). Before timing, the peer's h and new state are checked against a float32 torch
evaluation of the same recurrence (rel_err_h, rel_err_C).

Output: one JSON object per line: peer, variant, B, T, NH, Dqk, Dv, us_per_call (T tokens),
us_per_token, rel_err_h, rel_err_C, host_bound; or error.
usage: step_peer.py [--batch 1,4,16,64,256] [--tokens 1,4] [--nh 8] [--dqk 256] [--dv 512] [--reps 10]
"""
import argparse
import json
import time


def reference_step(C, n, m, q, k, v, i, f, scale, eps):
    """float32 torch mLSTMexp step (DESIGN.md section 3); shapes as the Triton function's."""
    import torch
    lf = torch.nn.functional.logsigmoid(f)                       # (B, NH, 1)
    m_new = torch.maximum(lf + m, i)
    fp = torch.exp(lf + m - m_new)[..., None]                    # (B, NH, 1, 1)
    ip = torch.exp(i - m_new)[..., None]
    C_new = fp * C + ip * (k.float()[..., :, None] * v.float()[..., None, :])
    n_new = fp[..., 0] * n + ip[..., 0] * k.float()
    qs = q.float() * scale
    num = torch.einsum("bhkv,bhk->bhv", C_new, qs)
    den = torch.maximum((n_new * qs).sum(-1, keepdim=True).abs(), torch.exp(-m_new)) + eps
    return num / den, C_new, n_new, m_new


def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def bench(args, B, T):
    import torch
    from mlstm_kernels.torch.recurrent.triton_step import mlstm_recurrent_step__triton_fw as step

    NH, DQK, DV = args.nh, args.dqk, args.dv
    dev, dt = "cuda", torch.bfloat16
    g = torch.Generator(device=dev).manual_seed(B * 100 + T)
    rnd = lambda *s, dtype=torch.float32: torch.randn(*s, device=dev, dtype=dtype, generator=g)
    qs = [rnd(B, NH, DQK, dtype=dt) for _ in range(T)]
    ks = [rnd(B, NH, DQK, dtype=dt) for _ in range(T)]
    vs = [rnd(B, NH, DV, dtype=dt) for _ in range(T)]
    i_s = [rnd(B, NH, 1) for _ in range(T)]
    f_s = [3 + rnd(B, NH, 1) for _ in range(T)]
    C = [0.1 * rnd(B, NH, DQK, DV), torch.empty(B, NH, DQK, DV, device=dev)]
    n = [0.1 * rnd(B, NH, DQK), torch.empty(B, NH, DQK, device=dev)]
    m = [rnd(B, NH, 1), torch.empty(B, NH, 1, device=dev)]
    scale = DQK ** -0.5
    eps = 1e-6

    # correctness of the peer on the first token
    h, _ = step(C[0], n[0], m[0], qs[0], ks[0], vs[0], i_s[0], f_s[0],
                matC_new=C[1], vecN_new=n[1], scaM_new=m[1], qk_scale=scale, eps=eps)
    h_ref, C_ref, _, _ = reference_step(C[0], n[0], m[0], qs[0], ks[0], vs[0], i_s[0], f_s[0], scale, eps)
    torch.cuda.synchronize()
    rec = {"rel_err_h": rel(h, h_ref), "rel_err_C": rel(C[1], C_ref)}

    parity = [0]

    def call():  # T tokens, the state ping-ponging between the two buffers
        for t in range(T):
            a = parity[0]
            step(C[a], n[a], m[a], qs[t], ks[t], vs[t], i_s[t], f_s[t],
                 matC_new=C[1 - a], vecN_new=n[1 - a], scaM_new=m[1 - a], qk_scale=scale, eps=eps)
            parity[0] = 1 - a

    calls = 20
    for _ in range(3):
        call()
    torch.cuda.synchronize()
    # the blocker's length: twice the host's enqueueing time of `calls` calls, at least 2 ms
    t0 = time.perf_counter()
    for _ in range(calls):
        call()
    host_s = time.perf_counter() - t0
    torch.cuda.synchronize()
    # the blocker's clock: a warm-up sleep, then a timed one
    s0, s1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda._sleep(1_000_000)
    s0.record()
    torch.cuda._sleep(10_000_000)
    s1.record()
    torch.cuda.synchronize()
    cycles_per_ms = 10_000_000 / max(s0.elapsed_time(s1), 1e-3)
    cycles = int(max(2.0, 2e3 * host_s) * cycles_per_ms)
    times, host_bound = [], False
    for _ in range(args.reps):
        z, a, b = (torch.cuda.Event(enable_timing=True) for _ in range(3))
        z.record()
        torch.cuda._sleep(cycles)
        a.record()
        t0 = time.perf_counter()
        for _ in range(calls):
            call()
        enqueue_ms = 1e3 * (time.perf_counter() - t0)
        b.record()
        b.synchronize()
        # host-bound when the enqueueing outlasted the blocker as the GPU ran it
        host_bound = host_bound or enqueue_ms > z.elapsed_time(a)
        times.append(1e3 * a.elapsed_time(b) / calls)
    times.sort()
    us = times[len(times) // 2]
    rec.update({"us_per_call": us, "us_per_token": us / T, "host_bound": host_bound})
    return rec


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", default="1,4,16,64,256")
    ap.add_argument("--tokens", default="1,4")
    ap.add_argument("--nh", type=int, default=8)
    ap.add_argument("--dqk", type=int, default=256)
    ap.add_argument("--dv", type=int, default=512)
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()
    for B in [int(x) for x in args.batch.split(",")]:
        for T in [int(x) for x in args.tokens.split(",")]:
            rec = {"peer": "triton_step", "variant": "exp", "B": B, "T": T, "NH": args.nh,
                   "Dqk": args.dqk, "Dv": args.dv}
            try:
                rec.update(bench(args, B, T))
            except Exception as e:  # reported, not dropped
                rec["error"] = f"{type(e).__name__}: {str(e)[:300]}"
            print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
