#!/usr/bin/env python3
"""Times the peers of tfla on the paper's constant-token sweep, each peer in its own
subprocess so a crash or a compiler abort is reported instead of ending the run.

Peers: the seed's Triton TFLA kernels (mlstm_kernels: mLSTMsig and mLSTMexp, xl_chunk),
flash-linear-attention's chunk_simple_gla (when importable) and torch SDPA (FlashAttention).
Output: one JSON object per line on stdout (peer, op, S, B, ms, peak_extra_mib or error).

usage: peers.py [--seqs 512,...] [--tokens 65536] [--nh 8] [--dqk 256] [--dv 512] [--ops fwd,fwbw]
"""
import argparse
import json
import subprocess
import sys

PEERS = ["triton_tfla_sig", "triton_tfla_exp", "fla_simple_gla", "torch_sdpa_flash"]


def run_peer(name, args):
    import torch
    import triton

    torch.manual_seed(0)
    dev = "cuda"
    dt = torch.bfloat16
    out = []
    for S in args.seqs:
        B = args.tokens // S
        NH, DQK, DV = args.nh, args.dqk, args.dv
        for op in args.ops:
            rec = {"peer": name, "op": op, "B": B, "S": S, "NH": NH, "Dqk": DQK, "Dv": DV}
            try:
                grad = op == "fwbw"
                if name.startswith("triton_tfla"):
                    if name.endswith("sig"):
                        from mlstm_kernels.torch.chunkwise.triton_xl_chunk_siging import (
                            mlstm_siging_chunkwise__xl_chunk as fn)
                        kw = dict(normalize=True)
                    else:
                        from mlstm_kernels.torch.chunkwise.triton_xl_chunk import (
                            mlstm_chunkwise__xl_chunk as fn)
                        kw = {}
                    q = torch.randn(B, NH, S, DQK, device=dev, dtype=dt, requires_grad=grad)
                    k = torch.randn(B, NH, S, DQK, device=dev, dtype=dt, requires_grad=grad)
                    v = torch.randn(B, NH, S, DV, device=dev, dtype=dt, requires_grad=grad)
                    i = torch.randn(B, NH, S, device=dev, dtype=dt, requires_grad=grad)
                    f = (3 + torch.randn(B, NH, S, device=dev, dtype=dt)).requires_grad_(grad)
                    call = lambda: fn(q, k, v, i, f, chunk_size=128, autocast_kernel_dtype=dt, **kw)
                elif name == "fla_simple_gla":
                    from fla.ops.simple_gla import chunk_simple_gla
                    q = torch.randn(B, S, NH, DQK, device=dev, dtype=dt, requires_grad=grad)
                    k = torch.randn(B, S, NH, DQK, device=dev, dtype=dt, requires_grad=grad)
                    v = torch.randn(B, S, NH, DV, device=dev, dtype=dt, requires_grad=grad)
                    g = torch.nn.functional.logsigmoid(3 + torch.randn(B, S, NH, device=dev, dtype=torch.float32)).requires_grad_(grad)
                    call = lambda: chunk_simple_gla(q, k, v, g)[0]
                elif name == "torch_sdpa_flash":
                    H, D = 32, 128
                    q = torch.randn(B, H, S, D, device=dev, dtype=dt, requires_grad=grad)
                    k = torch.randn(B, H, S, D, device=dev, dtype=dt, requires_grad=grad)
                    v = torch.randn(B, H, S, D, device=dev, dtype=dt, requires_grad=grad)
                    from torch.nn.attention import SDPBackend, sdpa_kernel

                    def call():
                        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                            return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
                else:
                    raise ValueError(name)
                if grad:
                    def step():
                        h = call()
                        h = h[0] if isinstance(h, tuple) else h
                        h.backward(torch.ones_like(h))
                    body = step
                else:
                    def body():
                        with torch.no_grad():
                            call()
                body()
                torch.cuda.synchronize()
                base = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
                body()
                torch.cuda.synchronize()
                rec["peak_extra_mib"] = (torch.cuda.max_memory_allocated() - base) / 2**20
                rec["ms"] = triton.testing.do_bench(body, warmup=25, rep=200, return_mode="median")
            except Exception as e:  # reported, not dropped
                rec["error"] = f"{type(e).__name__}: {str(e)[:300]}"
            print(json.dumps(rec), flush=True)
            out.append(rec)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seqs", default="512,1024,2048,4096,8192,16384,32768,65536")
    ap.add_argument("--tokens", type=int, default=65536)
    ap.add_argument("--nh", type=int, default=8)
    ap.add_argument("--dqk", type=int, default=256)
    ap.add_argument("--dv", type=int, default=512)
    ap.add_argument("--ops", default="fwd")
    ap.add_argument("--peers", default=",".join(PEERS))
    ap.add_argument("--peer", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.seqs = [int(s) for s in args.seqs.split(",")]
    args.ops = args.ops.split(",")
    if args.peer:
        run_peer(args.peer, args)
        return
    for p in args.peers.split(","):
        cmd = [sys.executable, __file__, "--peer", p, "--seqs", ",".join(map(str, args.seqs)),
               "--tokens", str(args.tokens), "--nh", str(args.nh), "--dqk", str(args.dqk),
               "--dv", str(args.dv), "--ops", ",".join(args.ops)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        sys.stdout.write(r.stdout)
        if r.returncode != 0:
            tail = (r.stderr or "").strip().splitlines()[-3:]
            print(json.dumps({"peer": p, "error": f"subprocess exited {r.returncode}: {' | '.join(tail)[:400]}"}), flush=True)


if __name__ == "__main__":
    main()
