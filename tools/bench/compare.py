#!/usr/bin/env python3
"""Merges `tfla bench --csv` files with peers.py's JSON lines into one side-by-side table:
time, TFLOP/s (tfla's FLOP model applied to every mLSTM peer), peak extra memory and the ratio
of every peer's time to tfla's (> 1 means tfla is faster).

usage: compare.py --tfla fwd.csv [fwbw.csv ...] --peers peers.jsonl [--variant sig]
"""
import argparse
import csv
import json


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tfla", nargs="+", required=True)
    ap.add_argument("--peers", required=True)
    ap.add_argument("--variant", default="sig", help="tfla variant the ratios are taken against")
    args = ap.parse_args()
    ours = {}
    for path in args.tfla:
        with open(path) as fh:
            for r in csv.DictReader(fh):
                ours[(r["op"], r["variant"], int(r["S"]))] = r
    peers = [json.loads(l) for l in open(args.peers) if l.strip().startswith("{")]
    ops = sorted({k[0] for k in ours}, key=lambda o: ["fwd", "bwd", "fwbw", "fwbw_saved"].index(o))
    for op in ops:
        seqs = sorted({k[2] for k in ours if k[0] == op})
        print(f"\n== {op}: B*S = 65536, NH = 8, Dqk = 256, Dv = 512, bf16 (ratio = peer ms / tfla-{args.variant} ms)")
        print(f"{'kernel':<22}" + "".join(f"{s:>16}" for s in seqs))
        for var in ("exp", "sig"):
            cells = []
            for s in seqs:
                r = ours.get((op, var, s))
                cells.append(f"{float(r['ms']):8.3f} ms" if r else "-")
            print(f"{'tfla ' + var:<22}" + "".join(f"{c:>16}" for c in cells))
            cells = []
            for s in seqs:
                r = ours.get((op, var, s))
                cells.append(f"{float(r['tflops']):6.0f} TF/s" if r else "-")
            print(f"{'':<22}" + "".join(f"{c:>16}" for c in cells))
            cells = []
            for s in seqs:
                r = ours.get((op, var, s))
                cells.append(f"{float(r['extra_mib']):7.0f} MiB" if r else "-")
            print(f"{'':<22}" + "".join(f"{c:>16}" for c in cells))
        names = sorted({p["peer"] for p in peers})
        for name in names:
            cells, ratios, mems = [], [], []
            for s in seqs:
                peer_op = "fwbw" if op == "fwbw_saved" else op
                hit = [p for p in peers if p["peer"] == name and p.get("op") == peer_op and p.get("S") == s]
                err = [p for p in peers if p["peer"] == name and "op" not in p]
                base = ours.get((op, args.variant, s))
                if hit and "ms" in hit[0]:
                    ms = hit[0]["ms"]
                    cells.append(f"{ms:8.3f} ms")
                    ratios.append(f"x{ms / float(base['ms']):.2f}" if base else "-")
                    mems.append(f"{hit[0].get('peak_extra_mib', 0):7.0f} MiB")
                elif hit:
                    cells.append("failed"); ratios.append(""); mems.append("")
                elif err:
                    cells.append("failed"); ratios.append(""); mems.append("")
                else:
                    cells.append("-"); ratios.append(""); mems.append("")
            print(f"{name:<22}" + "".join(f"{c:>16}" for c in cells))
            print(f"{'  ratio':<22}" + "".join(f"{c:>16}" for c in ratios))
            print(f"{'':<22}" + "".join(f"{c:>16}" for c in mems))
        for p in peers:
            if "error" in p and (p.get("op") in (op, "fwbw" if op == "fwbw_saved" else op, None)):
                print(f"  {p['peer']} {p.get('op', '')} S={p.get('S', '')}: {p['error'][:160]}")


if __name__ == "__main__":
    main()
