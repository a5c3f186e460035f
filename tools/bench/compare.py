#!/usr/bin/env python3
"""Tables and plots of a peers.py run: reads PREFIX-bench.csv and PREFIX-meta.json, writes
PREFIX-bench.md (one table per sweep and op: ms, TFLOP/s, peak extra memory and the ratio of
every kernel's time to tfla's, > 1 meaning tfla is faster) and the plots PREFIX-time.png
(time vs sequence length, forward left, forward + backward right, one line per kernel, as in
the paper's figure), PREFIX-memory.png (peak memory, same layout) and PREFIX-headdim.png.
Also prints the tables as text. Plots need matplotlib; without it the tables are still written.

Ratios: a tfla default-config row against tfla (library's choice) of its variant; the seed's
Triton kernels against tfla of their gate variant; FLA and SDPA against tfla mLSTMsig.

usage: compare.py PREFIX-bench.csv [PREFIX-meta.json]
"""

import csv
import json
import os
import sys

FIELDS = ["kernel", "label", "family", "variant", "op", "B", "NH", "S", "Dqk", "Dv", "ms", "tflops",
          "peak_extra_mib", "reps", "config", "error"]


def write_csv(path, results, mlstm_shapes, sdpa_shapes, kernels):
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS)
        w.writeheader()
        for k, recs in results.items():
            family, variant, label = kernels[k]
            for s in (sdpa_shapes if family == "sdpa" else mlstm_shapes):
                key = f"{s['op']}:{s['B']}x{s['NH']}x{s['S']}x{s['Dqk']}x{s['Dv']}"
                r = recs.get(key, {"error": "not run"})
                row = dict(kernel=k, label=label, family=family, variant=variant or "", **s)
                for f in ("ms", "tflops", "peak_extra_mib", "reps", "config", "error"):
                    v = r.get(f, "")
                    row[f] = f"{v:.4f}" if isinstance(v, float) else v
                w.writerow(row)


def load(csv_path):
    rows = list(csv.DictReader(open(csv_path)))
    for r in rows:
        for f in ("B", "NH", "S", "Dqk", "Dv"):
            r[f] = int(r[f])
        for f in ("ms", "tflops", "peak_extra_mib"):
            r[f] = float(r[f]) if r[f] not in ("", None) else None
    return rows


def reference_kernel(kernel, family, variant):
    if kernel in ("tfla_exp", "tfla_sig"):
        return None
    if family == "tfla":
        return kernel.replace("_default", "")
    if family == "triton":
        return "tfla_exp" if variant == "exp" else "tfla_sig"
    return "tfla_sig"


def _find(rows, kernel, op, s):
    for r in rows:
        if r["kernel"] == kernel and r["op"] == op and all(r[f] == s[f] for f in ("B", "NH", "S", "Dqk", "Dv")):
            return r
    return None


def tables(rows, meta):
    """(markdown, text) of every sweep table."""
    sweeps = meta["sweeps"]
    kernels = list(dict.fromkeys(r["kernel"] for r in rows))
    md, txt, notes = [], [], {}
    views = [("seq", "Sequence sweep: B*S = %d tokens, NH = 8, Dqk = 256, Dv = 512, bf16 "
              "(SDPA: NH = 32, D = 128)" % meta.get("tokens", 65536), "S"),
             ("headdim", "Head-dimension sweep: B = 8, S = 8192, NH * Dv = 4096, Dqk = Dv / 2, bf16", "head")]
    for sweep, title, col in views:
        shapes = sweeps.get(sweep, [])
        if not shapes:
            continue
        for op in sweeps["ops"]:
            heads = [f"S={s['S']}" if col == "S" else f"{s['NH']}x{s['Dqk']}x{s['Dv']}" for s in shapes]
            md.append(f"\n### {title}: {'forward' if op == 'fwd' else 'forward + backward'}\n")
            md.append("| kernel | " + " | ".join(heads) + " |")
            md.append("|---|" + "---|" * len(heads))
            txt.append(f"\n== {sweep} {op}: {title}")
            txt.append(f"{'kernel':<22}" + "".join(f"{h:>24}" for h in heads))
            for k in kernels:
                one = next(r for r in rows if r["kernel"] == k)
                family, variant = one["family"], one["variant"]
                if family == "sdpa" and sweep != "seq":
                    continue
                ref = reference_kernel(k, family, variant)
                cells, tcells = [], []
                for s in shapes:
                    s_k = s
                    if family == "sdpa":
                        s_k = next(x for x in sweeps["sdpa_seq"] if x["S"] == s["S"])
                    r = _find(rows, k, op, s_k)
                    if r is None:
                        cells.append("-"); tcells.append("-")
                        continue
                    if r["ms"] is None:
                        notes.setdefault(k, set()).add(r["error"] or "failed")
                        word = "not run" if (r["error"] or "").startswith("not run") else "failed"
                        cells.append(word); tcells.append(word)
                        continue
                    base = _find(rows, ref, op, s) if ref else None
                    ratio = f" · {r['ms'] / base['ms']:.2f}x" if base and base["ms"] else ""
                    cells.append(f"{r['ms']:.3f} ms · {r['tflops']:.0f} TF/s · {r['peak_extra_mib']:.0f} MiB{ratio}")
                    tcells.append(f"{r['ms']:.2f}ms {r['tflops']:.0f}TF {ratio.replace(' · ', '')}")
                md.append(f"| {one['label']} | " + " | ".join(cells) + " |")
                txt.append(f"{k:<22}" + "".join(f"{c:>24}" for c in tcells))
    return md, txt, notes


def _series(rows, kernel, op, shapes, field):
    ys = []
    for s in shapes:
        r = _find(rows, kernel, op, s)
        ys.append(r[field] if r and r[field] is not None else None)
    return ys


def plots(rows, meta, prefix_path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as e:
        print(f"(no plots: matplotlib not importable: {e})")
        return []
    sweeps = meta["sweeps"]
    kernels = list(dict.fromkeys(r["kernel"] for r in rows))
    label = {r["kernel"]: r["label"] for r in rows}
    family = {r["kernel"]: r["family"] for r in rows}
    style = {"tfla": "-", "triton": "--", "fla": "-.", "sdpa": ":"}
    written = []

    def figure(sweep, field, ylabel, fname, xlabels):
        shapes = sweeps.get(sweep, [])
        if not shapes:
            return
        ops = sweeps["ops"]
        fig, axes = plt.subplots(1, len(ops), figsize=(6.5 * len(ops), 5.4), squeeze=False)
        for ax, op in zip(axes[0], ops):
            x = list(range(len(shapes)))
            top = 0.0
            for k in kernels:
                if family[k] == "sdpa" and sweep != "seq":
                    continue
                sh = shapes
                if family[k] == "sdpa":
                    sh = [next(y for y in sweeps["sdpa_seq"] if y["S"] == s["S"]) for s in shapes]
                ys = _series(rows, k, op, sh, field)
                pts = [(xi, y) for xi, y in zip(x, ys) if y is not None]
                errs = [r["error"] or "" for r in (_find(rows, k, op, s) for s in sh) if r]
                why = " (not run)" if errs and all(e.startswith("not run") for e in errs) else " (failed)"
                name = label[k] + ("" if pts else why)
                if pts:
                    top = max(top, max(y for _, y in pts))
                    ax.plot(*zip(*pts), style.get(family[k], "-"), marker="o", markersize=4, linewidth=1.8, label=name)
                else:
                    ax.plot([], [], style.get(family[k], "-"), label=name)
            ax.set_xticks(x)
            ax.set_xticklabels(xlabels(shapes), rotation=0, fontsize=8)
            ax.set_title("forward" if op == "fwd" else "forward + backward")
            ax.set_ylabel(ylabel)
            ax.set_xlabel("sequence length (B*S = %d)" % meta.get("tokens", 65536) if sweep == "seq" else "NH x Dqk x Dv (B=8, S=8192)")
            ax.set_ylim(0, top * 1.12 if top > 0 else 1)
            ax.grid(alpha=0.3)
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=3, frameon=False)
        env = meta.get("env", {})
        fig.suptitle(f"mLSTM kernels, bf16, {env.get('device', '')} ({meta.get('date', '')})", fontsize=10)
        fig.tight_layout(rect=(0, 0.14, 1, 1))
        path = f"{prefix_path}-{fname}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    figure("seq", "ms", "time [ms]", "time", lambda sh: [str(s["S"]) for s in sh])
    figure("seq", "peak_extra_mib", "peak memory beyond the inputs [MiB]", "memory", lambda sh: [str(s["S"]) for s in sh])
    figure("headdim", "ms", "time [ms]", "headdim", lambda sh: [f"{s['NH']}x{s['Dqk']}x{s['Dv']}" for s in sh])
    return written


def report(csv_path, meta_path):
    rows = load(csv_path)
    meta = json.load(open(meta_path))
    prefix_path = csv_path[:-len("-bench.csv")] if csv_path.endswith("-bench.csv") else os.path.splitext(csv_path)[0]
    md_tables, txt, notes = tables(rows, meta)
    pngs = plots(rows, meta, prefix_path)
    env = meta.get("env", {})
    md = [f"# mLSTM kernel benchmark, {env.get('device', '?')}, {meta.get('date', '')}", "",
          "Written by `tools/bench/peers.py` (all kernels in one run, each in its own process) and "
          "`tools/bench/compare.py`. Cells: median time · TFLOP/s · peak memory beyond the inputs · "
          "ratio of the kernel's time to tfla's (> 1: tfla faster; default-config rows against tfla's "
          "tuned choice, Triton rows against tfla of the same gate, FLA and SDPA against tfla mLSTMsig). "
          "TFLOP/s: one FLOP count per shape for every mLSTM-like kernel, (4 Dqk Dv + 128 (Dqk + Dv)) per "
          "token and head, x3 for forward + backward; SDPA: 2 B H S^2 D causal, x3.5.", "",
          "Versions: " + ", ".join(f"{k} {v}" for k, v in env.items() if k != "device"), ""]
    if meta.get("note"):
        md.append(f"Run: {meta['note']}.\n")
    check = meta.get("check", [])
    if check:
        md.append("## Correctness (before timing)\n")
        if meta.get("check_note"):
            md.append(f"The check was {meta['check_note']}.\n")
        md.append("tfla (bf16, as benchmarked) against the seed's pure-PyTorch mLSTM in float64 "
                  f"({check[0]['reference']}); relative Frobenius errors, pass < {check[0]['tol']:g} "
                  "(df judged by its conditioned error df_cond):\n")
        names = list(check[0]["errors"])
        md.append("| variant | B, NH, S, Dqk, Dv | " + " | ".join(names) + " | |")
        md.append("|---|---|" + "---|" * len(names) + "---|")
        for c in check:
            md.append(f"| {c['variant']} | {c['B']}, {c['NH']}, {c['S']}, {c['Dqk']}, {c['Dv']} | "
                      + " | ".join(f"{c['errors'][n]:.1e}" for n in names) + f" | {'ok' if c['pass'] else 'FAIL'} |")
    if meta.get("check_error"):
        md.append(f"\nThe correctness check failed to run: {meta['check_error']}")
    md.append("\n## Results")
    md += md_tables
    same = sorted({(r['S'], r['op']) for r in rows if r['kernel'] == 'tfla_exp' and r['config'] and any(
        o['kernel'] == 'tfla_exp_default' and o['config'] == r['config'] and o['S'] == r['S'] and o['op'] == r['op']
        and o['NH'] == r['NH'] for o in rows)})
    if same:
        md.append(f"\ntfla's tuned and default rows used the same configs for {len(same)} of the measurements "
                  "(no tuned cache entry applied there).")
    if notes:
        md.append("\n## Failures\n")
        for k, errs in notes.items():
            for e in sorted(errs):
                md.append(f"- {k}: {e}")
    for p in pngs:
        md.append(f"\n![{os.path.basename(p)}]({os.path.basename(p)})")
    md_path = prefix_path + "-bench.md"
    with open(md_path, "w") as fh:
        fh.write("\n".join(md) + "\n")
    print("\n".join(txt))
    for k, errs in notes.items():
        for e in sorted(errs):
            print(f"  {k}: {e[:200]}")
    print(f"wrote {md_path}" + "".join(f", {p}" for p in pngs))


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help") or len(sys.argv) > 3:
        print(__doc__)
        sys.exit(0 if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help") else 2)
    csv_arg = sys.argv[1]
    meta_arg = sys.argv[2] if len(sys.argv) > 2 else csv_arg.replace("-bench.csv", "-meta.json")
    for path in (csv_arg, meta_arg):
        if not os.path.isfile(path):
            print(f"compare.py: {path}: no such file (usage: compare.py PREFIX-bench.csv [PREFIX-meta.json])",
                  file=sys.stderr)
            sys.exit(2)
    report(csv_arg, meta_arg)
