#!/usr/bin/env python3
"""Packed sequences (cu_seqlens) beside equal lengths, for tfla and FLA, in one process.

N sequences of random lengths (uniform in [1, 2 T / N - 1], adjusted to sum to T; the same
lengths as `tfla bench --varlen N`) packed along the token axis of B = 1, and the same T tokens
as N equal sequences (B = N, S = T / N). Kernels: tfla mLSTMexp / mLSTMsig through the Python
binding (`mlstm_chunkwise(..., cu_seqlens=, max_seqlen=)`, the library's config) and
flash-linear-attention's chunk_simple_gla with its `cu_seqlens` (fla-core), both bf16 at the
same head dims. Forward (no grad) and forward + backward (torch.autograd.grad of the output
with a random dh). Times: CUDA events, median after a warm-up (peers.time_ms); peak memory:
torch.cuda.max_memory_allocated during one call minus what was allocated before it.

Prints per kernel and op the packed and equal times, packed / equal, and tfla's ratio to FLA
on the packed batch; --json writes the rows to a file.

usage: varlen_peers.py [--seqs 64] [--tokens 65536] [--heads 8x256x512] [--ops fwd,fwbw]
                       [--kernels tfla_exp,tfla_sig,fla_simple_gla] [--json FILE]
"""

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "tools", "python"))

from peers import mlstm_flops, peak_and_time, timed_body  # noqa: E402

LABELS = {"tfla_exp": "tfla mLSTMexp", "tfla_sig": "tfla mLSTMsig", "fla_simple_gla": "FLA chunk_simple_gla"}


def packed_lengths(n, tokens):
    """The lengths `tfla bench --varlen n` uses (tools/cli/cmd_bench.cpp): xorshift64 draws
    uniform in [1, 2 mean - 1], then spread one by one until they sum to tokens."""
    mean = tokens // n
    state, lens = 0x2545F4914F6CDD1D, []
    mask = (1 << 64) - 1
    for _ in range(n):
        state ^= (state << 13) & mask
        state ^= state >> 7
        state ^= (state << 17) & mask
        lens.append(1 + state % (2 * mean - 1) if mean > 1 else 1)
    total, j = sum(lens), 0
    while total != tokens:
        step = 1 if total < tokens else -1
        if 1 <= lens[j] + step <= 2 * mean - 1:
            lens[j] += step
            total += step
        j = (j + 1) % n
    return lens


def make_call(torch, kernel, lens, packed, NH, Dqk, Dv, grad):
    """(call() -> output, leaves) for the packed batch (packed) or its equal-length twin."""
    T, N = sum(lens), len(lens)
    B, S = (1, T) if packed else (N, T // N)
    dt = torch.bfloat16
    offs = [0]
    for n in lens:
        offs.append(offs[-1] + n)
    if kernel.startswith("tfla"):
        from tfla.torch import mlstm_chunkwise
        variant = kernel.split("_")[1]
        q = torch.randn(B, NH, S, Dqk, device="cuda", dtype=dt, requires_grad=grad)
        k = torch.randn(B, NH, S, Dqk, device="cuda", dtype=dt, requires_grad=grad)
        v = torch.randn(B, NH, S, Dv, device="cuda", dtype=dt, requires_grad=grad)
        i = torch.randn(B, NH, S, device="cuda").requires_grad_(grad)
        f = (3 + torch.randn(B, NH, S, device="cuda")).requires_grad_(grad)
        kw = dict(variant=variant, chunk_size=None)
        if packed:
            kw.update(cu_seqlens=torch.tensor(offs, device="cuda", dtype=torch.int32), max_seqlen=max(lens))
        return (lambda: mlstm_chunkwise(q, k, v, i, f, **kw)), [q, k, v, i, f]
    from fla.ops.simple_gla import chunk_simple_gla
    q = torch.randn(B, S, NH, Dqk, device="cuda", dtype=dt, requires_grad=grad)
    k = torch.randn(B, S, NH, Dqk, device="cuda", dtype=dt, requires_grad=grad)
    v = torch.randn(B, S, NH, Dv, device="cuda", dtype=dt, requires_grad=grad)
    fpre = (3 + torch.randn(B, S, NH, device="cuda")).requires_grad_(grad)
    kw = {}
    if packed:
        kw["cu_seqlens"] = torch.tensor(offs, device="cuda", dtype=torch.int64)
    return (lambda: chunk_simple_gla(q, k, v, torch.nn.functional.logsigmoid(fpre), **kw)[0]), [q, k, v, fpre]


def measure(torch, kernel, lens, packed, op, NH, Dqk, Dv):
    grad = op == "fwbw"
    call, leaves = make_call(torch, kernel, lens, packed, NH, Dqk, Dv, grad)
    peak, ms, _ = peak_and_time(torch, timed_body(torch, call, leaves, grad))
    del call, leaves
    torch.cuda.empty_cache()
    return ms, peak


def main():
    ap = argparse.ArgumentParser(description="packed sequences beside equal lengths: tfla and FLA")
    ap.add_argument("--seqs", type=int, default=64, help="sequences in the packed batch")
    ap.add_argument("--tokens", type=int, default=65536)
    ap.add_argument("--heads", default="8x256x512", help="NHxDqkxDv")
    ap.add_argument("--ops", default="fwd,fwbw")
    ap.add_argument("--kernels", default="tfla_exp,tfla_sig,fla_simple_gla")
    ap.add_argument("--json", help="write the rows to this file")
    a = ap.parse_args()
    if a.seqs < 1 or a.tokens % a.seqs:
        ap.error("--seqs must be >= 1 and divide --tokens (the equal-length twin is B = seqs, S = tokens / seqs)")
    try:
        NH, Dqk, Dv = (int(x) for x in a.heads.lower().split("x"))
    except ValueError:
        ap.error(f"--heads takes NHxDqkxDv, got {a.heads!r}")
    ops = a.ops.split(",")
    kernels = a.kernels.split(",")
    for o in ops:
        if o not in ("fwd", "fwbw"):
            ap.error(f"--ops takes fwd and fwbw, got {o!r}")
    for k in kernels:
        if k not in LABELS:
            ap.error(f"unknown kernel {k!r} ({', '.join(LABELS)})")
    import torch
    if not torch.cuda.is_available():
        sys.exit("varlen_peers.py needs a CUDA GPU: none is visible to torch")
    lens = packed_lengths(a.seqs, a.tokens)
    print(f"packed: {a.seqs} sequences of {min(lens)} to {max(lens)} tokens ({a.tokens} in all) beside "
          f"{a.seqs} x {a.tokens // a.seqs}; NH = {NH}, Dqk = {Dqk}, Dv = {Dv}, bf16, on {torch.cuda.get_device_name()}")
    print(f"{'kernel':<22} {'op':<5} {'packed ms':>10} {'equal ms':>9} {'packed/equal':>13} {'TFLOP/s':>8} "
          f"{'peak MiB':>9}")
    rows = []
    for op in ops:
        for kernel in kernels:
            row = {"kernel": kernel, "op": op, "seqs": a.seqs, "tokens": a.tokens, "NH": NH, "Dqk": Dqk, "Dv": Dv}
            try:
                row["packed_ms"], row["packed_peak_mib"] = measure(torch, kernel, lens, True, op, NH, Dqk, Dv)
                row["equal_ms"], row["equal_peak_mib"] = measure(torch, kernel, lens, False, op, NH, Dqk, Dv)
            except Exception as e:  # a refusal or a crash is a row, not a dropped kernel
                row["error"] = f"{type(e).__name__}: {e}".splitlines()[0][:200]
                print(f"{LABELS[kernel]:<22} {op:<5} not run: {row['error']}")
                rows.append(row)
                continue
            flops = mlstm_flops(op, a.seqs, NH, a.tokens // a.seqs, Dqk, Dv)
            row["packed_tflops"] = flops / (row["packed_ms"] * 1e9)
            print(f"{LABELS[kernel]:<22} {op:<5} {row['packed_ms']:10.3f} {row['equal_ms']:9.3f} "
                  f"{row['packed_ms'] / row['equal_ms']:12.3f}x {row['packed_tflops']:8.1f} "
                  f"{row['packed_peak_mib']:9.1f}")
            rows.append(row)
    fla = {r["op"]: r for r in rows if r["kernel"] == "fla_simple_gla" and "error" not in r}
    for r in rows:
        if r["kernel"].startswith("tfla") and "error" not in r and r["op"] in fla:
            ratio = fla[r["op"]]["packed_ms"] / r["packed_ms"]
            r["speedup_vs_fla_packed"] = ratio
            print(f"{LABELS[r['kernel']]} {r['op']} packed: {ratio:.2f}x FLA chunk_simple_gla's speed "
                  f"({r['packed_ms']:.3f} vs {fla[r['op']]['packed_ms']:.3f} ms)")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"lengths": lens, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
