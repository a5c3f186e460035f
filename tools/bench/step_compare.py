#!/usr/bin/env python3
"""Runs `tfla bench step --json` and step_peer.py (the seed's Triton step) one after the other in
one run and prints the side-by-side table: per-token latency of each, tfla's achieved GB/s and
its share of the copy bandwidth measured in the same run (a device-to-device copy of a buffer
of the state's size), and the ratio Triton / tfla (> 1 means tfla is faster). The Triton step
exists for mLSTMexp only, one token per call: both tfla variants are compared with it, and a
fused tfla T is compared with T Triton calls.

usage: step_compare.py [--tfla build/tools/tfla] [--batch 1,4,16,64,256] [--tokens 1,4]
                       [--nh 8 --dqk 256 --dv 512] [--reps 10] [--out DIR]
"""
import argparse
import json
import os
import subprocess
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tfla", default="build/tools/tfla", help="the tfla CLI")
    ap.add_argument("--batch", default="1,4,16,64,256")
    ap.add_argument("--tokens", default="1,4")
    ap.add_argument("--nh", default="8")
    ap.add_argument("--dqk", default="256")
    ap.add_argument("--dv", default="512")
    ap.add_argument("--reps", default="10")
    ap.add_argument("--out", help="directory for the raw outputs (tfla JSON, peer JSON lines)")
    args = ap.parse_args()
    shape = ["--nh", args.nh, "--dqk", args.dqk, "--dv", args.dv, "--batch", args.batch,
             "--tokens", args.tokens, "--reps", args.reps]
    r = subprocess.run([args.tfla, "bench", "step", "--json"] + shape, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"tfla bench step failed ({r.returncode}): {r.stderr.strip()[-800:]}")
    ours = json.loads(r.stdout)
    peer_cmd = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "step_peer.py")] + shape
    p = subprocess.run(peer_cmd, capture_output=True, text=True)
    peers = [json.loads(l) for l in p.stdout.splitlines() if l.strip().startswith("{")]
    if p.returncode != 0:
        print(f"step_peer.py exited {p.returncode}: {p.stderr.strip()[-800:]}", file=sys.stderr)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "step_tfla.json"), "w") as fh:
            json.dump(ours, fh, indent=1)
        with open(os.path.join(args.out, "step_peer.jsonl"), "w") as fh:
            fh.writelines(json.dumps(x) + "\n" for x in peers)

    peer = {(x["B"], x["T"]): x for x in peers}
    dev = ours[0]["device"] if ours else "?"
    large = ours[0]["large_copy_gbps"] if ours else 0
    print(f"mLSTM step on {dev}: NH = {args.nh}, Dqk = {args.dqk}, Dv = {args.dv}, bf16 q/k/v/h, fp32 state; "
          f"1 GiB copy: {large:.0f} GB/s")
    print("times: GPU us per token of back-to-back calls (host enqueueing hidden); ratio = Triton / tfla")
    hdr = (f"{'variant':<8}{'B':>5}{'T':>3} | {'tfla us/tok':>11}{'GB/s':>7}{'copy GB/s':>10}{'% copy':>8}"
           f" | {'Triton us/tok':>14}{'ratio':>7}")
    print(hdr)
    print("-" * len(hdr))
    for row in ours:
        x = peer.get((row["B"], row["T"]))
        if x and "us_per_token" in x:
            tri = f"{x['us_per_token']:14.2f}{x['us_per_token'] / row['us_per_token']:6.2f}x"
            if x.get("host_bound"):
                tri += " (host-bound)"
        else:
            tri = f"{'failed' if x else '-':>14}{'':>7}"
        print(f"{row['variant']:<8}{row['B']:>5}{row['T']:>3} | {row['us_per_token']:11.2f}{row['gbps']:7.0f}"
              f"{row['copy_gbps']:10.0f}{row['copy_pct']:7.0f}% | {tri}")
    for x in peers:
        if "error" in x:
            print(f"  Triton B={x['B']} T={x['T']}: {x['error'][:200]}")
        elif "rel_err_h" in x and (x["rel_err_h"] > 2e-2 or x["rel_err_C"] > 1e-3):
            print(f"  Triton B={x['B']} T={x['T']}: differs from the float32 recurrence: "
                  f"h {x['rel_err_h']:.1e}, C {x['rel_err_C']:.1e}")
    errs = [x["rel_err_h"] for x in peers if "rel_err_h" in x]
    if errs:
        print(f"Triton step vs a float32 torch recurrence: max rel. error of h {max(errs):.1e}")


if __name__ == "__main__":
    main()
