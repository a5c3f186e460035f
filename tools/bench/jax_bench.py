#!/usr/bin/env python3
"""tfla through JAX (tfla.jax, XLA FFI) beside tfla through PyTorch and jax-linear-attention's
Mosaic GPU mLSTM, in one process on one GPU: forward and forward + backward times (ms, the
median of --samples timings of --reps calls each, each call a jitted function dispatched from
Python; "in-jit": the same calls in one jitted loop, no dispatch between them), tfla's TFLOP/s and GB/s (by the least
traffic of the pass, io_bytes), peak device memory of the JAX calls and the ratios.

usage: tools/bench/jax_bench.py [--seqs 1024,8192,65536] [--tokens 65536] [--nh 8] [--dqk 256]
                                [--dv 512] [--reps 10] [--samples 5] [--no-torch] [--no-jla]
B = tokens / S. mLSTMexp with its normalizer in all three (jax-linear-attention's mlstm: the
same cell with the log forget gate as g), bf16 inputs, float32 gates; tfla through both bindings
with the library's config (chunk_size=None: tfla.torch's default pins chunk 128). Forward +
backward: the forward and the vector-Jacobian product with a fixed random dh of h's dtype
(jax.vjp; torch.autograd.grad), gradients of q, k, v, i and f, no loss kernel.
jax-linear-attention runs where `import jla` works (its wheel unpacked on PYTHONPATH).
"""
import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # leave room for torch
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "tools", "python"))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402


def flops(B, NH, S, Dqk, Dv, chunk=64):
    """The chunkwise forward's matmul FLOPs (states, intra-chunk scores and outputs)."""
    tokens = B * NH * S
    return 2 * tokens * (2 * Dqk * Dv + chunk * (Dqk + Dv))


def io_bytes(B, NH, S, Dqk, Dv, backward, eb=2):
    """The least traffic of a pass: q, k, v, i, f read and h written (forward); with the backward
    also dh, q, k, v, i, f read again and dq, dk, dv, di, df written (no chunk states)."""
    tokens = B * NH * S
    fwd = tokens * ((2 * Dqk + 2 * Dv) * eb + 8)
    return fwd + (tokens * ((2 * Dqk + Dv) * eb * 2 + Dv * eb + 16) if backward else 0)


def time_jax(fn, args, reps, samples):
    """Host wall-clock time of reps calls and the wait for the last, per call (ms): the median
    of samples such timings, after a warm call."""
    out = fn(*args)
    jax.block_until_ready(out)
    ts = []
    for _ in range(samples):
        t0 = time.perf_counter()
        for _ in range(reps):
            out = fn(*args)
        jax.block_until_ready(out)
        ts.append((time.perf_counter() - t0) / reps * 1e3)
    return statistics.median(ts)


def peak_jax_bytes():
    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use", 0)


def time_torch(torch, fn, reps, samples):
    """As time_jax: host wall-clock time of reps calls and the wait for the last, per call."""
    fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(samples):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
        ts.append((time.perf_counter() - t0) / reps * 1e3)
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seqs", default="1024,8192,65536")
    ap.add_argument("--tokens", type=int, default=65536)
    ap.add_argument("--nh", type=int, default=8)
    ap.add_argument("--dqk", type=int, default=256)
    ap.add_argument("--dv", type=int, default=512)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--no-jla", action="store_true")
    a = ap.parse_args()
    try:
        seqs = [int(s) for s in a.seqs.split(",")]
    except ValueError:
        ap.error(f"--seqs must be a comma-separated list of ints, got {a.seqs!r}")
    if min(seqs) < 1 or a.tokens < 1 or a.reps < 1 or a.samples < 1 or min(a.nh, a.dqk, a.dv) < 1:
        ap.error("--seqs, --tokens, --reps, --samples, --nh, --dqk and --dv must be >= 1")
    if jax.default_backend() != "gpu":
        print("jax_bench: JAX has no GPU on this machine; nothing to time", file=sys.stderr)
        return 3
    import tfla.jax as tj

    torch = tmlstm = None
    if not a.no_torch:
        try:
            import torch
            from tfla.torch import mlstm_chunkwise as tmlstm
        except ImportError as e:
            print(f"(no torch: {e})")
    jla = None
    if not a.no_jla:
        try:
            from jla.ops.mosaic_gpu import mlstm as jla
        except ImportError as e:
            print(f"(no jax-linear-attention: {e})")

    print(f"{'S':>6} {'B':>3} {'pass':>5} {'tfla.jax ms':>11} {'in-jit ms':>9} {'TFLOP/s':>8} {'IO GB/s':>8} "
          f"{'peak GB':>8} {'tfla.torch':>10} {'jax/torch':>9} {'jla ms':>8} {'jla/jax':>8}")
    f32 = jnp.float32
    for S in seqs:
        B = max(1, a.tokens // S)
        rng = np.random.default_rng(S)
        shp = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
        q, k = jnp.asarray(shp(B, a.nh, S, a.dqk), jnp.bfloat16), jnp.asarray(shp(B, a.nh, S, a.dqk), jnp.bfloat16)
        v = jnp.asarray(shp(B, a.nh, S, a.dv), jnp.bfloat16)
        i, f = jnp.asarray(shp(B, a.nh, S)), jnp.asarray(3.0 + shp(B, a.nh, S))
        w = jnp.asarray(shp(B, a.nh, S, a.dv), jnp.bfloat16)  # dh of every backward
        args = (q, k, v, i, f)
        mlstm = tj.mlstm_chunkwise

        def fwbw_of(fn, dh):
            def run(*x):
                _, vjp = jax.vjp(fn, *x)
                return vjp(dh)
            return run

        def in_jit(fn, reps):
            """reps calls of fn in one jitted loop (the input gate moves by a zero that XLA cannot
            fold, so no call is hoisted or merged): the calls' time inside a compiled program."""
            def run(*x):
                def body(j, acc):
                    out = fn(x[0], x[1], x[2], x[3] + j.astype(f32) * 0.0, x[4])
                    return acc + sum(o.ravel()[0].astype(f32) for o in jax.tree_util.tree_leaves(out))
                return jax.lax.fori_loop(0, reps, body, f32(0))
            return run

        rows = {}
        for name, fn in (("fwd", mlstm), ("fwbw", fwbw_of(mlstm, w))):
            ms = time_jax(jax.jit(fn), args, a.reps, a.samples)
            loop_ms = time_jax(jax.jit(in_jit(fn, a.reps)), args, 1, a.samples) / a.reps
            rows[name] = {"jax": ms, "loop": loop_ms, "peak": peak_jax_bytes() / 1e9}
        if tmlstm is not None:
            tq, tk, tv = (torch.from_dlpack(x).requires_grad_(True) for x in (q, k, v))
            ti, tf = (torch.from_dlpack(x).requires_grad_(True) for x in (i, f))
            tw = torch.from_dlpack(w)
            with torch.no_grad():
                rows["fwd"]["torch"] = time_torch(torch, lambda: tmlstm(tq, tk, tv, ti, tf, chunk_size=None),
                                                  a.reps, a.samples)

            def torch_fwbw():
                torch.autograd.grad(tmlstm(tq, tk, tv, ti, tf, chunk_size=None), (tq, tk, tv, ti, tf), tw)
            rows["fwbw"]["torch"] = time_torch(torch, torch_fwbw, a.reps, a.samples)
        if jla is not None:
            tr = lambda x: jnp.swapaxes(x, 1, 2)  # noqa: E731  (B, NH, S, D) -> (B, S, NH, D)
            jargs = (tr(q), tr(k), tr(v), jnp.swapaxes(jax.nn.log_sigmoid(f), 1, 2), jnp.swapaxes(i, 1, 2))
            jh = lambda q, k, v, g, i: jla.mlstm(q, k, v, g, i)[0]  # noqa: E731
            for name, fn in (("fwd", jh), ("fwbw", fwbw_of(jh, tr(w)))):
                try:
                    rows[name]["jla"] = time_jax(jax.jit(fn), jargs, a.reps, a.samples)
                except Exception as e:  # noqa: BLE001  (a peer's failure is reported, not fatal)
                    print(f"(jax-linear-attention {name} at S={S} failed: {type(e).__name__}: {str(e)[:200]})")
        fl = flops(B, a.nh, S, a.dqk, a.dv)
        for name in ("fwd", "fwbw"):
            r = rows[name]
            ms, t_ms, j_ms = r["jax"], r.get("torch"), r.get("jla")
            tflops = fl * (1 if name == "fwd" else 3) / (ms * 1e-3) / 1e12
            gbs = io_bytes(B, a.nh, S, a.dqk, a.dv, name == "fwbw") / (ms * 1e-3) / 1e9
            print(f"{S:>6} {B:>3} {name:>5} {ms:>11.3f} {r['loop']:>9.3f} {tflops:>8.1f} {gbs:>8.0f} "
                  f"{r['peak']:>8.2f} {(f'{t_ms:.3f}' if t_ms else '-'):>10} "
                  f"{(f'{ms / t_ms:.3f}' if t_ms else '-'):>9} {(f'{j_ms:.3f}' if j_ms else '-'):>8} "
                  f"{(f'{j_ms / ms:.2f}x' if j_ms else '-'):>8}")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
