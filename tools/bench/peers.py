#!/usr/bin/env python3
"""The paper benchmark: tfla and its peers on the mLSTM kernel sweeps, in one run.

Sweeps (bf16): the constant-token sweep B*S = 65536, S = 512 ... 65536, NH = 8, Dqk = 256,
Dv = 512; and a head-dimension sweep at S = 8192, B = 8 with NH * Dv = 4096, Dqk = Dv / 2
(NH = 32, 16, 8, 4). Each forward and forward + backward (torch.autograd.grad of h with a
random dh, so no gradient accumulation is timed).

Kernels, each in its own subprocess (a crash, a compiler abort or a refusal is reported in the
table, never dropped): tfla mLSTMexp and mLSTMsig through the Python binding, with the
library's choice of config (tuned cache entry if any, "tfla_*"; --tune runs `tfla tune` first)
and with the analytic default (TFLA_TUNED=0, "tfla_*_default"); the seed's Triton kernels from
mlstm-kernels (TFLA mLSTMexp, mLSTMsig, limit-chunk); flash-linear-attention's
chunk_simple_gla and chunk_gla; torch SDPA with the FlashAttention backend (NH = 32, D = 128,
causal; sequence sweep only).

Two phases. Compiling: the Triton-based peers JIT-compile every shape (S, B, NH are
compile-time constants of the seed's kernels) and FLA autotunes, which takes far longer than
running them, so one process per (peer, shape) compiles it into Triton's disk cache
(autotuning results too: TRITON_CACHE_AUTOTUNING=1). Each such process holds its inputs (and
gradients) on the GPU while it compiles, so they run --warm-jobs at most at a time and only as
many as fit in --warm-mem-frac of the GPU's free memory by an estimate of each one's peak
(task_memory), largest first; one that runs out of memory beside others is retried alone at
the end of the phase. Timing: one process
per kernel, one kernel at a time: CUDA events, warm-up, median of >= 5 repetitions (about
0.15 s per measurement). Peak memory: torch.cuda.max_memory_allocated during one call, minus
what was allocated before it (inputs, dh), so outputs, gradients and workspaces count.
--deadline (default 480 s) bounds the whole run: compiling gets its first 60 %, and whatever
does not fit is recorded as "not run" with the reason, never silently dropped.

Before timing, check.py compares tfla's outputs and gradients with the seed's pure-PyTorch
mLSTM (float64) and the report shows the result.

Outputs in --out (default docs/benchmarks): PREFIX-bench.csv (one row per measurement),
PREFIX-meta.json (sweeps, device, versions, check), PREFIX-bench.md (tables with ms,
TFLOP/s, peak memory and the ratio of every peer to tfla) and PNG plots (compare.py).

usage: peers.py [--prefix NAME] [--out DIR] [--quick] [--kernels a,b] [--ops fwd,fwbw]
                [--seqs 512,...] [--heads NHxDqkxDv,...|none] [--tune BUDGET] [--warm-jobs N]
                [--warm-mem-frac F] [--warm-timeout S] [--kernel-timeout S] [--deadline S] [--no-check]
                [--check-from META]
       peers.py --worker KERNEL --shapes FILE [--warm]   (internal)
"""

import argparse
import datetime
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
T0 = time.time()
REPO = os.path.dirname(os.path.dirname(HERE))
PYTHON_PKG = os.path.join(REPO, "tools", "python")

KERNELS = {  # name -> (family, gate variant or None, label)
    "tfla_exp": ("tfla", "exp", "tfla mLSTMexp"),
    "tfla_sig": ("tfla", "sig", "tfla mLSTMsig"),
    "tfla_exp_default": ("tfla", "exp", "tfla mLSTMexp (default config)"),
    "tfla_sig_default": ("tfla", "sig", "tfla mLSTMsig (default config)"),
    "triton_xl_exp": ("triton", "exp", "Triton TFLA mLSTMexp (mlstm-kernels)"),
    "triton_xl_sig": ("triton", "sig", "Triton TFLA mLSTMsig (mlstm-kernels)"),
    "triton_limit_chunk": ("triton", "exp", "Triton limit-chunk mLSTMexp (mlstm-kernels)"),
    "fla_simple_gla": ("fla", None, "FLA chunk_simple_gla"),
    "fla_gla": ("fla", None, "FLA chunk_gla"),
    "torch_sdpa_flash": ("sdpa", None, "torch SDPA FlashAttention (NH=32, D=128)"),
}
TOKENS = 65536
FULL_SEQS = [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536]
QUICK_SEQS = [2048, 8192, 32768]
FULL_HEADS = [(32, 64, 128), (16, 128, 256), (8, 256, 512), (4, 512, 1024)]  # NH, Dqk, Dv
QUICK_HEADS = [(32, 64, 128), (8, 256, 512)]


def mlstm_flops(op, B, NH, S, Dqk, Dv):
    """tfla's FLOP model with a fixed L = 128, the same count for every mLSTM-like kernel of a
    shape: (4 Dqk Dv + 128 (Dqk + Dv)) per token and head; forward + backward = 3x."""
    f = B * NH * S * (4.0 * Dqk * Dv + 128.0 * (Dqk + Dv))
    return f if op == "fwd" else 3 * f


def sdpa_flops(op, B, NH, S, D):
    """Causal attention: 2 B H S^2 D forward; forward + backward 3.5x (FlashAttention's count)."""
    f = 2.0 * B * NH * S * S * D
    return f if op == "fwd" else 3.5 * f


def shape_key(s):
    return f"{s['op']}:{s['B']}x{s['NH']}x{s['S']}x{s['Dqk']}x{s['Dv']}"


def sweep_shapes(seqs, heads, ops):
    """The unique measurements of the mLSTM sweeps and the SDPA sweep, and the sweep tables."""
    seq_sweep = [dict(B=TOKENS // S, NH=8, S=S, Dqk=256, Dv=512) for S in seqs]
    head_sweep = [dict(B=8, NH=nh, S=8192, Dqk=dqk, Dv=dv) for nh, dqk, dv in heads]
    sdpa_sweep = [dict(B=TOKENS // S, NH=32, S=S, Dqk=128, Dv=128) for S in seqs]
    mlstm, sdpa = {}, {}
    for op in ops:
        for s in seq_sweep + head_sweep:
            d = dict(s, op=op)
            mlstm[shape_key(d)] = d
        for s in sdpa_sweep:
            d = dict(s, op=op)
            sdpa[shape_key(d)] = d
    sweeps = {"seq": seq_sweep, "headdim": head_sweep, "sdpa_seq": sdpa_sweep, "ops": ops}
    # the paper's reference point first, so a run cut short by a time limit still has it
    def order(d):
        paper = d["S"] == 8192 and (d["NH"], d["Dqk"]) in ((8, 256), (32, 128))
        return (not paper, d["S"], d["NH"], ops.index(d["op"]))
    return sorted(mlstm.values(), key=order), sorted(sdpa.values(), key=order), sweeps


# ---- worker side (one kernel, in its own process) ------------------------------------------------

def _inputs_bnsd(torch, B, NH, S, Dqk, Dv, grad, gate_dtype):
    dt = torch.bfloat16
    q = torch.randn(B, NH, S, Dqk, device="cuda", dtype=dt, requires_grad=grad)
    k = torch.randn(B, NH, S, Dqk, device="cuda", dtype=dt, requires_grad=grad)
    v = torch.randn(B, NH, S, Dv, device="cuda", dtype=dt, requires_grad=grad)
    i = torch.randn(B, NH, S, device="cuda", dtype=gate_dtype).requires_grad_(grad)
    f = (3 + torch.randn(B, NH, S, device="cuda", dtype=gate_dtype)).requires_grad_(grad)
    return [q, k, v, i, f]


def make_call(kernel, s, grad):
    """(call() -> output tensor, leaves) for one kernel and shape."""
    import torch
    family, variant, _ = KERNELS[kernel]
    B, NH, S, Dqk, Dv = s["B"], s["NH"], s["S"], s["Dqk"], s["Dv"]
    if family == "tfla":
        from tfla.torch import mlstm_chunkwise
        x = _inputs_bnsd(torch, B, NH, S, Dqk, Dv, grad, torch.float32)
        return (lambda: mlstm_chunkwise(*x, chunk_size=None, variant=variant)), x
    if kernel in ("triton_xl_exp", "triton_xl_sig", "triton_limit_chunk"):
        x = _inputs_bnsd(torch, B, NH, S, Dqk, Dv, grad, torch.bfloat16)
        if kernel == "triton_xl_sig":
            from mlstm_kernels.torch.chunkwise.triton_xl_chunk_siging import mlstm_siging_chunkwise__xl_chunk as fn
            kw = dict(normalize=True, chunk_size=128)
        elif kernel == "triton_xl_exp":
            from mlstm_kernels.torch.chunkwise.triton_xl_chunk import mlstm_chunkwise__xl_chunk as fn
            kw = dict(chunk_size=128)
        else:
            from mlstm_kernels.torch.chunkwise.triton_limit_chunk import mlstm_chunkwise__limit_chunk as fn
            kw = dict(chunk_size=64)
        return (lambda: fn(*x, autocast_kernel_dtype=torch.bfloat16, **kw)), x
    if family == "fla":
        dt = torch.bfloat16
        q = torch.randn(B, S, NH, Dqk, device="cuda", dtype=dt, requires_grad=grad)
        k = torch.randn(B, S, NH, Dqk, device="cuda", dtype=dt, requires_grad=grad)
        v = torch.randn(B, S, NH, Dv, device="cuda", dtype=dt, requires_grad=grad)
        if kernel == "fla_simple_gla":
            from fla.ops.simple_gla import chunk_simple_gla as fn
            fpre = (3 + torch.randn(B, S, NH, device="cuda")).requires_grad_(grad)
        else:
            from fla.ops.gla import chunk_gla as fn
            fpre = (3 + torch.randn(B, S, NH, Dqk, device="cuda")).requires_grad_(grad)
        return (lambda: fn(q, k, v, torch.nn.functional.logsigmoid(fpre))[0]), [q, k, v, fpre]
    if family == "sdpa":
        from torch.nn.attention import SDPBackend, sdpa_kernel
        x = [torch.randn(B, NH, S, Dqk, device="cuda", dtype=torch.bfloat16, requires_grad=grad) for _ in range(3)]

        def call():
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                return torch.nn.functional.scaled_dot_product_attention(*x, is_causal=True)
        return call, x
    raise ValueError(f"unknown kernel {kernel}")


def time_ms(torch, body, min_s=0.15, min_reps=5, max_reps=30):
    """Median of per-call CUDA-event times after a warm-up."""
    body()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    body()
    torch.cuda.synchronize()
    est = max(time.perf_counter() - t0, 1e-6)
    reps = int(min(max_reps, max(min_reps, min_s / est)))
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
    for a, b in events:
        a.record()
        body()
        b.record()
    torch.cuda.synchronize()
    times = sorted(a.elapsed_time(b) for a, b in events)
    return times[len(times) // 2], reps


def configs_used(kernel, s):
    if KERNELS[kernel][0] != "tfla":
        return ""
    import tfla
    p = tfla.problem(s["B"], s["NH"], s["S"], s["Dqk"], s["Dv"], variant=KERNELS[kernel][1])
    fwd = tfla.forward_config(p)
    text = "fwd: " + ",".join(f"{k}={v}" for k, v in sorted(fwd.items()))
    if s["op"] == "fwbw":
        bwd = tfla.backward_config(p)
        text += "; bwd: " + ",".join(f"{k}={v}" for k, v in sorted(bwd.items()))
    return text


def timed_body(torch, call, leaves, grad):
    """What one timed repetition runs: call() without gradients, or with them
    torch.autograd.grad of its output for the leaves with a random dh (no accumulation)."""
    if not grad:
        def body():
            with torch.no_grad():
                call()
        return body
    out = call()
    dh = torch.randn_like(out)
    del out

    def body():
        torch.autograd.grad(call(), leaves, dh)
    return body


def peak_and_time(torch, body):
    """(peak extra MiB of one call, median ms, repetitions) of a warm body: the peak is
    torch.cuda.max_memory_allocated during one call minus what was allocated before it."""
    body()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    body()
    torch.cuda.synchronize()
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    ms, reps = time_ms(torch, body)
    return peak, ms, reps


def measure(kernel, s, warm_only):
    import torch
    grad = s["op"] == "fwbw"
    call, leaves = make_call(kernel, s, grad)
    body = timed_body(torch, call, leaves, grad)
    if warm_only:
        body()
        torch.cuda.synchronize()
        return {}
    peak, ms, reps = peak_and_time(torch, body)
    if KERNELS[kernel][0] == "sdpa":
        flops = sdpa_flops(s["op"], s["B"], s["NH"], s["S"], s["Dqk"])
    else:
        flops = mlstm_flops(s["op"], s["B"], s["NH"], s["S"], s["Dqk"], s["Dv"])
    return {"ms": ms, "tflops": flops / (ms * 1e9), "peak_extra_mib": peak, "reps": reps,
            "config": configs_used(kernel, s)}


FATAL = ("CUDA error", "illegal memory access", "unspecified launch failure", "TFLA_ERROR_CUDA")


def worker(kernel, shapes, warm_only):
    sys.path.insert(0, PYTHON_PKG)
    import torch
    torch.manual_seed(0)
    for s in shapes:
        print(json.dumps({"event": "begin", "key": shape_key(s)}), flush=True)
        rec = {"event": "result", "key": shape_key(s)}
        try:
            rec.update(measure(kernel, s, warm_only))
        except Exception as e:  # a refusal, an import error, OOM: reported per shape
            rec["error"] = f"{type(e).__name__}: {' '.join(str(e).split())[:400]}"
        print(json.dumps(rec), flush=True)
        torch.cuda.empty_cache()
        if "error" in rec and any(m in rec["error"] for m in FATAL):
            sys.exit(3)  # the context may be broken: the parent restarts a fresh process


def env_versions():
    out = {}
    for mod in ("torch", "triton", "mlstm_kernels", "fla", "matplotlib"):
        try:
            m = __import__(mod)
            out[mod] = getattr(m, "__version__", "?")
        except Exception as e:
            out[mod] = f"not importable ({type(e).__name__})"
    try:
        import torch
        out["device"] = torch.cuda.get_device_name(0)
    except Exception as e:
        out["device"] = f"unknown ({type(e).__name__})"
    try:
        sys.path.insert(0, PYTHON_PKG)
        import tfla
        out["tfla"] = f"{tfla.library_version()} ({tfla.library_path()})"
    except Exception as e:
        out["tfla"] = f"not loadable ({type(e).__name__}: {e})"
    print(json.dumps(out))


# ---- parent side ----------------------------------------------------------------------------------

def _reader(stream, q):
    for line in stream:
        q.put(line)
    q.put(None)


def run_kernel(kernel, shapes, warm_only, deadline_s, log):
    """Runs a kernel's worker over shapes, restarting it after a crash (the crashed shape is
    recorded with the process's exit status and stderr tail); after two crashes in a row the
    rest is recorded as not run. Returns {key: record}."""
    results, remaining, crashes = {}, list(shapes), 0
    env = dict(os.environ)
    env.setdefault("TRITON_CACHE_AUTOTUNING", "1")  # autotuning results reused across processes
    if kernel.endswith("_default"):
        env["TFLA_TUNED"] = "0"
    start = time.time()
    while remaining:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
            json.dump(remaining, fh)
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", kernel, "--shapes", fh.name]
        if warm_only:
            cmd.append("--warm")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        lines, errs = queue.Queue(), queue.Queue()
        threading.Thread(target=_reader, args=(proc.stdout, lines), daemon=True).start()
        threading.Thread(target=_reader, args=(proc.stderr, errs), daemon=True).start()
        current, timed_out = None, False
        while True:
            left = deadline_s - (time.time() - start)
            try:
                line = lines.get(timeout=max(left, 0.1))
            except queue.Empty:
                timed_out = True
                proc.kill()
                break
            if line is None:
                break
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if msg.get("event") == "begin":
                current = msg["key"]
            elif msg.get("event") == "result":
                current = None
                results[msg["key"]] = msg
                crashes = 0
                log(kernel, msg, warm_only)
        rc = proc.wait()
        os.unlink(fh.name)
        tail = []
        while True:
            try:
                e = errs.get(timeout=1)
            except queue.Empty:
                break
            if e is None:
                break
            tail.append(e.rstrip())
        tail = [t for t in tail if t.strip()]
        last = tail[-1].strip() if tail else "no output on stderr"
        tail = f"{last} [stderr tail: {' | '.join(tail)[-500:]}]"
        remaining = [s for s in remaining if shape_key(s) not in results]
        if timed_out:
            for s in remaining:
                results[shape_key(s)] = {"key": shape_key(s), "error": f"not run: the kernel's time limit of {deadline_s:.0f} s was reached"
                                         + (" during this shape" if shape_key(s) == current else "")}
                log(kernel, results[shape_key(s)], warm_only)
            break
        if not remaining:
            break
        how = f"signal {-rc}" if rc < 0 else f"exit code {rc}"
        if current is None:  # died outside a shape (import-time crash)
            current = shape_key(remaining[0])
        results[current] = {"key": current, "error": f"worker process died ({how}): {tail}"}
        log(kernel, results[current], warm_only)
        crashes += 1
        remaining = [s for s in remaining if shape_key(s) != current]
        if crashes >= 2:
            for s in remaining:
                results[shape_key(s)] = {"key": shape_key(s), "error": "not run: the worker crashed on two shapes in a row"}
            break
    return results


def print_progress(kernel, rec, warm_only):
    what = "compiled" if warm_only else f"{rec.get('ms', 0):9.3f} ms {rec.get('tflops', 0):6.1f} TFLOP/s {rec.get('peak_extra_mib', 0):8.0f} MiB"
    status = f"FAILED: {rec['error'][:160]}" if "error" in rec else what
    print(f"  [{time.time() - T0:5.0f} s] {kernel:<20} {rec['key']:<28} {status}", flush=True)


# ---- compile phase: memory model and scheduler ---------------------------------------------------

MiB = 2**20
# Per process beyond its tensors: the CUDA context, torch's and Triton's modules, and the 256 MiB
# buffer Triton's do_bench allocates to flush L2 while autotuning (about 600 MiB, rounded up).
PROCESS_OVERHEAD = 768 * MiB
ALLOC_MARGIN = 1.10  # the caching allocator's rounding and fragmentation on top of the tensors
# The kernel's own intermediates, in copies of its chunk states as fp32 (B * NH chunk states of
# Dqk x Dv each per chunk of `chunk` tokens; the seed's kernels keep S / L + 1 of them, FLA S / L)
# plus fp32 buffers of one (token, head, Dqk) each. Calibrated on peak_extra_mib of
# docs/benchmarks/h100-2026-11-22-paper-bench.csv and -paper-long-bench.csv (H100), rounded up:
# triton_xl_sig measures 1.0 state copy forward and 2.0 forward + backward, triton_limit_chunk
# 1.0 and 2.5 - 2.6 (2.62 at Dqk = 512); fla_simple_gla's forward keeps its states in bf16 (0.5).
# FLA's backward was not measured (refused or out of memory): its source recomputes the states
# and their gradients in fp32 (2.0) beside fp32 dq, dk (two copies each), dg, and for chunk_gla
# the gate's cumsum and logsigmoid's output and gradient, so 2.5 and 4 or 8 buffers; chunk_gla's
# forward keeps the cumsum and logsigmoid's output (2), and its gate is per key (B*S*NH*Dqk fp32).
PEER_MEMORY = {
    "triton_xl_exp": dict(chunk=128, extra_states=1, fwd=1.0, fwbw=2.25),
    "triton_xl_sig": dict(chunk=128, extra_states=1, fwd=1.0, fwbw=2.25),
    "triton_limit_chunk": dict(chunk=64, extra_states=1, fwd=1.0, fwbw=2.75),
    "fla_simple_gla": dict(chunk=64, extra_states=0, fwd=0.5, fwbw=2.5, fwbw_buffers=4),
    "fla_gla": dict(chunk=64, extra_states=0, fwd=0.5, fwbw=2.5, fwd_buffers=2, fwbw_buffers=8, key_gate=True),
}
DEFAULT_MEMORY = dict(chunk=64, extra_states=1, fwd=1.0, fwbw=2.75, fwd_buffers=1, fwbw_buffers=4)


def shape_memory(kernel, s):
    """Estimated peak GPU memory (bytes) of the tensors of one kernel on one shape s (with its
    op): inputs q, k (B*NH*S*Dqk) and v and the output h (B*NH*S*Dv) in bf16, the gates in fp32;
    for forward + backward also dh and the gradients of all inputs; plus the kernel's chunk
    states and buffers (PEER_MEMORY); times ALLOC_MARGIN."""
    m = PEER_MEMORY.get(kernel, DEFAULT_MEMORY)
    B, NH, S, Dqk, Dv = s["B"], s["NH"], s["S"], s["Dqk"], s["Dv"]
    tokens = B * NH * S
    gates = tokens * 4 * (Dqk if m.get("key_gate") else 2)
    tensors = tokens * (2 * Dqk + 2 * Dv) * 2 + gates  # q, k, v, h, gates
    fwbw = s["op"] == "fwbw"
    if fwbw:
        tensors *= 2  # dq, dk, dv, dh, dgates
    states = B * NH * (-(-S // m["chunk"]) + m["extra_states"]) * Dqk * Dv * 4
    tensors += m["fwbw" if fwbw else "fwd"] * states
    tensors += m.get("fwbw_buffers" if fwbw else "fwd_buffers", 0) * tokens * Dqk * 4
    return int(tensors * ALLOC_MARGIN)


def task_memory(kernel, shapes):
    """Estimated peak GPU memory (bytes) of a compile process of kernel over shapes: they run one
    after another (the worker empties torch's cache between them), so the largest one, plus the
    process's own PROCESS_OVERHEAD."""
    return max(shape_memory(kernel, s) for s in shapes) + PROCESS_OVERHEAD


def gpu_free_bytes():
    """Free memory (bytes) of the GPU the workers use (device 0 under CUDA_VISIBLE_DEVICES), or
    None if it cannot be measured. torch.cuda.mem_get_info runs in a short subprocess, so this
    process never holds a CUDA context of its own; nvidia-smi is the fallback (the first entry of
    CUDA_VISIBLE_DEVICES if set: the same GPU unless CUDA orders the devices differently)."""
    try:
        r = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.mem_get_info(0)[0])"],
                           capture_output=True, text=True, timeout=120)
        if r.returncode == 0:
            return int(r.stdout.split()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        pass
    dev = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip()
    if not dev:
        return None  # CUDA_VISIBLE_DEVICES="" hides every GPU
    try:
        r = subprocess.run(["nvidia-smi", "-i", dev, "--query-gpu=memory.free", "--format=csv,noheader,nounits"],
                           capture_output=True, text=True, timeout=60)
        if r.returncode == 0:
            return int(r.stdout.split()[0]) * MiB
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        pass
    return None


def run_within_memory(tasks, estimate, budget, max_jobs, run, retry_of=None):
    """Runs run(task) for every task, each on its own thread, and returns [(task, result)] in the
    order they finished. Tasks start largest estimate(task) (bytes) first (ties keep their order),
    so what is left at the end is small and packs well. A task starts when fewer than max_jobs
    run and the estimates of the running tasks plus its own stay within budget (bytes; None: no
    memory limit, max_jobs alone); when the next one does not fit, a smaller one that does may
    start before it. A task starts whenever nothing runs, so one larger than the whole budget
    still runs, alone. A task that had others running beside it at any time is passed to
    retry_of(task, result) when it ends: a task returned from it (e.g. its shapes that ran out
    of memory) runs once more, alone, after all the others; its result is the final one. An
    exception from run is raised here once every task has ended."""
    pending = sorted(tasks, key=estimate, reverse=True)  # sorted() is stable
    alone = []  # retries: each runs with nothing beside it, after the pending tasks
    running = {}  # id -> [estimate, others ran beside it]
    done, errors = [], []
    cond = threading.Condition()

    def body(n, task, retry):
        result = again = None
        try:
            result = run(task)
            with cond:
                shared = running[n][1]
            if retry_of and shared and not retry:
                again = retry_of(task, result)
        except BaseException as e:  # raised again in the calling thread, once all tasks ended
            errors.append(e)
        finally:
            with cond:  # always, so the loop below never waits for a task that is gone
                del running[n]
                if again is not None:
                    alone.append(again)
                else:
                    done.append((task, result))
                cond.notify_all()

    def start(n, task, est, retry):
        for entry in running.values():
            entry[1] = True
        running[n] = [est, bool(running)]
        threading.Thread(target=body, args=(n, task, retry), daemon=True).start()

    count = 0
    with cond:
        while pending or alone or running:
            used = sum(e[0] for e in running.values())
            pick = None
            if len(running) < max(1, max_jobs):
                for i, task in enumerate(pending):
                    est = estimate(task)
                    if not running or budget is None or used + est <= budget:
                        pick = i
                        break
            if pick is not None:
                task = pending.pop(pick)
                start(count, task, estimate(task), False)
            elif not pending and alone and not running:
                task = alone.pop(0)
                start(count, task, estimate(task), True)
            else:
                cond.wait()
                continue
            count += 1
    if errors:
        raise errors[0]
    return done


def is_oom(error):
    return "out of memory" in error.lower() or "OutOfMemoryError" in error


def compile_peers(kernels, shapes_of, results, args, budget):
    """Compiles the Triton-based peers before timing, one process per (kernel, shape) with its
    forward and forward + backward (Triton JIT-compiles each shape: S, B and NH are
    compile-time constants of the seed's kernels; compiled kernels and, with
    TRITON_CACHE_AUTOTUNING=1, autotuning results land in Triton's disk cache, which the timing
    processes then read). Each process holds its inputs and gradients on the GPU, so the tasks
    run through run_within_memory: --warm-jobs at most at a time, within --warm-mem-frac of
    the GPU's free memory at the start of the phase by task_memory's estimate, largest first
    (ties go round-robin over the kernels, so a kernel that crashes, e.g. a compiler abort, is
    seen early and its other shapes are recorded as not run). A shape that ran out of memory
    beside other tasks is retried alone at the end of the phase; out of memory alone, or a
    retry that no longer fits the deadline, is reported as it was. Other failures are final:
    those shapes are not timed again."""
    groups = {}
    for k in kernels:
        by_shape = {}
        for s in shapes_of(k):
            by_shape.setdefault((s["B"], s["NH"], s["S"], s["Dqk"], s["Dv"]), []).append(s)
        groups[k] = list(by_shape.values())
    tasks = [(k, groups[k][i], False) for i in range(max(len(g) for g in groups.values()))
             for k in kernels if i < len(groups[k])]  # (kernel, shapes, is a retry alone)
    lock = threading.Lock()
    crashes = {k: 0 for k in kernels}

    def estimate(t):
        return task_memory(t[0], t[1])

    sizes = [estimate(t) for t in tasks]
    free = gpu_free_bytes() if args.warm_mem_frac > 0 else None
    mem_budget = args.warm_mem_frac * free if free else None
    if mem_budget:
        within = (f"within {mem_budget / 2**30:.1f} GiB ({args.warm_mem_frac:g} of the GPU's "
                  f"{free / 2**30:.1f} GiB free)")
    elif args.warm_mem_frac > 0:
        within = "with no memory budget (the GPU's free memory could not be measured)"
    else:
        within = "with no memory budget (--warm-mem-frac 0)"
    print(f"== compiling {len(kernels)} peers: {len(tasks)} (kernel, shape) tasks, up to {args.warm_jobs} at a time "
          f"{within}; estimated {min(sizes) / 2**30:.1f} - {max(sizes) / 2**30:.1f} GiB per task", flush=True)

    def log(*a):
        with lock:
            print_progress(*a)

    def task(t):
        k, group, retry = t
        with lock:
            skip = crashes[k] >= 2
        left = budget(args.warm_timeout, 0.6)
        if (skip or left < 5) and retry:
            return {}  # the first attempt's out-of-memory records stand
        if skip or left < 5:
            why = "the worker crashed on two shapes" if skip else "the compile phase's share of --deadline was used up"
            res = {shape_key(s): {"key": shape_key(s), "error": f"not run: {why}"} for s in group}
        else:
            res = run_kernel(k, group, True, left, log)
        with lock:
            crashes[k] += sum(1 for r in res.values() if r.get("error", "").startswith("worker process died"))
            for key, rec in res.items():
                if "error" in rec:
                    results[k][key] = rec
                else:
                    results[k].pop(key, None)  # a retry that worked replaces the first attempt's record
        return res

    def retry_of(t, res):
        """The shapes of a task that ran out of memory while other tasks ran, to retry alone."""
        k, group, _ = t
        oom = [s for s in group if is_oom(res.get(shape_key(s), {}).get("error", ""))]
        with lock:
            for s in oom:
                print(f"  [{time.time() - T0:5.0f} s] {k:<20} {shape_key(s):<28} out of memory beside other "
                      f"compile tasks: retrying it alone at the end of the phase", flush=True)
        return (k, oom, True) if oom else None

    run_within_memory(tasks, estimate, mem_budget, args.warm_jobs, task, retry_of)


def run_tune(budget):
    cli = os.environ.get("TFLA_CLI") or shutil.which("tfla")
    lib = os.environ.get("TFLA_LIBRARY")
    cands = [cli] if cli else []
    if lib:
        cands.append(os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(lib))), "bin", "tfla"))
    cands += [os.path.join(REPO, "build", "tools", "tfla")]
    cli = next((c for c in cands if c and os.path.isfile(c)), None)
    if cli is None:
        print("tune: no tfla CLI found (set TFLA_CLI); the tuned rows use whatever the cache holds", flush=True)
        return
    cmd = [cli, "tune", "--op", "fwbw", "--variant", "exp,sig", "--dtype", "bf16", "--dqk", "256",
           "--dv", "512", "--bh", "64", "--seq", "8192", "--budget", str(budget)]
    print("tune:", " ".join(cmd), flush=True)
    r = subprocess.run(cmd, text=True, capture_output=True)
    print("\n".join((r.stdout + r.stderr).strip().splitlines()[-8:]), flush=True)


def main():
    ap = argparse.ArgumentParser(description="tfla's paper benchmark (see the module docstring)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--shapes", help=argparse.SUPPRESS)
    ap.add_argument("--warm", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--env", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=os.path.join(REPO, "docs", "benchmarks"))
    ap.add_argument("--prefix", default="bench-" + datetime.date.today().isoformat())
    ap.add_argument("--quick", action="store_true", help=f"S = {QUICK_SEQS}, two head configs")
    ap.add_argument("--seqs", help="comma-separated sequence lengths (default: the paper's 512 ... 65536)")
    ap.add_argument("--ops", default="fwd,fwbw")
    ap.add_argument("--kernels", default=",".join(KERNELS))
    ap.add_argument("--tune", type=int, default=0, metavar="BUDGET",
                    help="run `tfla tune --op fwbw` at the paper shape (S=8192) with this budget first")
    ap.add_argument("--warm-jobs", type=int, default=8,
                    help="at most this many compile processes at a time for the Triton-based peers "
                         "(each holds its inputs on the GPU)")
    ap.add_argument("--warm-mem-frac", type=float, default=0.85,
                    help="compile processes run only as many at a time as their estimated peak memory fits "
                         "in this fraction of the GPU's free memory (0: no memory budget, --warm-jobs alone)")
    ap.add_argument("--heads", help="head configs NHxDqkxDv,... for the head-dimension sweep, or 'none'")
    ap.add_argument("--kernel-timeout", type=float, default=240.0, help="seconds per kernel for timing")
    ap.add_argument("--warm-timeout", type=float, default=240.0, help="seconds per (peer, shape) compile task")
    ap.add_argument("--check-from", metavar="META",
                    help="take the correctness check from an earlier run's PREFIX-meta.json (same build)")
    ap.add_argument("--deadline", type=float, default=480.0,
                    help="seconds for the whole run; what does not fit is recorded as not run (0: no limit)")
    ap.add_argument("--no-check", action="store_true")
    args = ap.parse_args()
    if args.env:
        return env_versions()
    if args.worker:
        with open(args.shapes) as fh:
            return worker(args.worker, json.load(fh), args.warm)

    t0 = time.time()
    seqs = [int(s) for s in args.seqs.split(",")] if args.seqs else (QUICK_SEQS if args.quick else FULL_SEQS)
    heads = QUICK_HEADS if args.quick else FULL_HEADS
    if args.heads:
        heads = [] if args.heads == "none" else [tuple(int(x) for x in h.split("x")) for h in args.heads.split(",")]
    ops = args.ops.split(",")
    kernels = args.kernels.split(",")
    for k in kernels:
        if k not in KERNELS:
            sys.exit(f"unknown kernel {k}; known: {', '.join(KERNELS)}")
    mlstm_shapes, sdpa_shapes, sweeps = sweep_shapes(seqs, heads, ops)
    os.makedirs(args.out, exist_ok=True)
    meta = {"prefix": args.prefix, "date": datetime.date.today().isoformat(), "tokens": TOKENS,
            "sweeps": sweeps, "kernels": {k: KERNELS[k][2] for k in kernels}}
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "--env"], capture_output=True, text=True)
    meta["env"] = json.loads(r.stdout) if r.returncode == 0 and r.stdout.strip() else {"error": r.stderr[-400:]}
    print("== environment:", json.dumps(meta["env"]), flush=True)
    if args.tune:
        run_tune(args.tune)

    meta["check"] = []
    if args.check_from:
        with open(args.check_from) as fh:
            earlier = json.load(fh)
        meta["check"] = earlier.get("check", [])
        meta["check_note"] = (f"taken from an earlier run of the same library build "
                              f"({os.path.basename(args.check_from)}, {earlier.get('env', {}).get('tfla', '?')})")
        print("== correctness: " + meta["check_note"], flush=True)
    elif not args.no_check:
        print("== correctness: tfla vs the seed's pure-PyTorch mLSTM (float64)", flush=True)
        r = subprocess.run([sys.executable, os.path.join(HERE, "check.py"), "--json"], capture_output=True, text=True)
        for line in r.stdout.splitlines():
            if line.startswith("{"):
                c = json.loads(line)
                meta["check"].append(c)
                e = "  ".join(f"{k} {v:.1e}" for k, v in c["errors"].items())
                print(f"  {c['variant']} B={c['B']} NH={c['NH']} S={c['S']} Dqk={c['Dqk']} Dv={c['Dv']}: {e}  "
                      f"{'ok' if c['pass'] else 'FAIL'}", flush=True)
        if r.returncode not in (0, 1) or not meta["check"]:
            meta["check_error"] = f"check.py exited {r.returncode}: {r.stderr.strip()[-400:]}"
            print("  " + meta["check_error"], flush=True)

    def budget(limit, share=1.0):
        """Seconds a task may take: its limit within the run's deadline (compiling gets the
        first 60% of it, so the timing of every kernel still fits)."""
        if not args.deadline:
            return limit
        return min(limit, args.deadline * share - (time.time() - t0))

    def shapes_of(k):
        return sdpa_shapes if KERNELS[k][0] == "sdpa" else mlstm_shapes

    results = {k: {} for k in kernels}
    warm = [k for k in kernels if KERNELS[k][0] in ("triton", "fla")]
    if warm:
        compile_peers(warm, shapes_of, results, args, budget)
    print("== timing", flush=True)
    for k in kernels:
        todo = [s for s in shapes_of(k) if shape_key(s) not in results[k]]
        if todo and args.deadline and time.time() - t0 > args.deadline - 5:
            for s in todo:
                results[k][shape_key(s)] = {"key": shape_key(s), "error": "not run: the benchmark's --deadline was reached"}
        elif todo:
            results[k].update(run_kernel(k, todo, False, max(1.0, budget(args.kernel_timeout)), print_progress))

    import compare
    csv_path = os.path.join(args.out, f"{args.prefix}-bench.csv")
    compare.write_csv(csv_path, results, mlstm_shapes, sdpa_shapes, KERNELS)
    meta["elapsed_s"] = round(time.time() - t0, 1)
    with open(os.path.join(args.out, f"{args.prefix}-meta.json"), "w") as fh:
        json.dump(meta, fh, indent=1)
    print(f"== wrote {csv_path} ({meta['elapsed_s']} s)", flush=True)
    compare.report(csv_path, os.path.join(args.out, f"{args.prefix}-meta.json"))


if __name__ == "__main__":
    sys.path.insert(0, HERE)
    main()
