#!/usr/bin/env python3
"""Host time per call of tfla's Python entry points, and a decode loop: tfla eager, tfla in a
captured CUDA graph, and the seed's Triton step (mlstm_kernels, eager, as its users run it).

Part 1, host us per call (B = 1, one token, NH 8, Dqk 256, Dv 512, bf16; the training calls at
the C++ `tfla bench overhead` shape, B = NH = 1, S = Dqk = Dv = 64): the Python time of one call
(argument handling, allocations, the library call with its launches), measured while the GPU
is held behind a long sleep kernel, so no call waits for the GPU; beside it the GPU time of the
call (back-to-back calls behind a blocker, CUDA events). Rows:
  step.inplace_out   mlstm_recurrent_step(inplace=True, out=h): what a decode loop calls
  step.inplace       mlstm_recurrent_step(inplace=True): h allocated
  step.new           mlstm_recurrent_step(): new states, the inputs left as they are (the seed's semantics)
  backend.step       mLSTMBackend(mode="inference") one token with states in and out
  backend.step_inplace  the same with inference_states_inplace=True
  fwd.nograd         mlstm_chunkwise without gradients (C++: `tfla bench overhead`'s forward, h only)
  fwd.grad_inputs    mlstm_chunkwise on inputs that require grad (the autograd node, the
                     normalizer and saved states kept; C++: the forward with the normalizer)
  fwd+bwd            forward and .backward(dh) with the inputs' grads None before each call
  bwd (difference)   fwd+bwd less fwd.grad_inputs: autograd's engine and the backward call
  native.fwd+bwd     torch.addcmul(v, q, k).backward(dh) on the same tensors: one native autograd
                     node of three leaves through torch's engine, torch's own floor of a training call
  bwd.binding        the binding's Python backward call alone (tfla.torch._launch.run_backward, what
                     MlstmChunkwiseFunction runs; C++: `tfla bench overhead`'s backward)
  bwd.node           the C++ autograd node's backward called directly (h.grad_fn(dh), no engine):
                     the binding's backward host time with the C path
  seed.triton_step   mlstm_kernels' mlstm_recurrent_step__triton
  seed.backend.step  mlstm_kernels' mLSTMBackend(mode="inference", step_kernel="triton")

With the C step path loaded (tfla.torch._fast), the step rows again, each with and without its
entry's C path in alternating samples (the ctypes path is what TFLA_TORCH_EXTENSION=0 runs; for
the training rows, MlstmChunkwiseFunction in place of the C++ autograd node).

Part 2, decode loop (B = 1 and 4, 16 tokens, one mLSTM layer's step per token, each token's
q/k/v/i/f staged in memory beforehand): wall time per token of the whole loop (host and GPU,
synchronized at the end), for the seed's Triton step eager (new states each call, as it returns
them), tfla eager (in place) and tfla with the 16 steps captured in one CUDA graph; ratios are
seed / tfla. The outputs of the three are compared first (h of the last token, final C).

Without a GPU, tools/bench/hostpath_profile.py times the same calls' Python and ctypes work
(on CPU tensors against a stub libtfla).

usage: decode_loop.py [--batch 1,4] [--tokens 16] [--reps 20] [--skip-host] [--skip-decode]
                      [--only ROW,...] [--ab-reps N] [--json FILE]
"""
import argparse
import json
import statistics
import sys
import time

import torch

NH, DQK, DV = 8, 256, 512
DEV = "cuda"


def gpu_time_us(fn, calls=50, reps=7):
    """GPU time per call of back-to-back calls, the host's enqueueing hidden behind a sleep."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    host_s = time.perf_counter() - t0
    torch.cuda.synchronize()
    cycles = int(max(2e-3, 2 * host_s) * 1.9e9)  # ~1.9 GHz: 2x the host's enqueueing time
    out = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda._sleep(cycles)
        a.record()
        for _ in range(calls):
            fn()
        b.record()
        b.synchronize()
        out.append(1e3 * a.elapsed_time(b) / calls)
    return statistics.median(out)


def host_time_us(fn, calls=40, reps=15):
    """Python time per call with the GPU held behind a sleep (no call waits on the GPU). Few
    calls per sample: the launches they queue stay well under the driver's queue depth, which
    would otherwise block the host until the GPU drains it."""
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    return statistics.median([host_sample_us(fn, calls) for _ in range(reps)])


def host_sample_us(fn, calls):
    """One sample: Python time per call of `calls` calls queued behind a GPU sleep, then a sync."""
    torch.cuda._sleep(int(0.02 * 1.9e9))
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    us = 1e6 * (time.perf_counter() - t0) / calls
    torch.cuda.synchronize()
    return us


def step_inputs(B, seed=0):
    g = torch.Generator(device=DEV).manual_seed(seed)
    r = lambda *s: torch.randn(*s, device=DEV, generator=g)
    x = [r(B, NH, DQK).bfloat16(), r(B, NH, DQK).bfloat16(), r(B, NH, DV).bfloat16(),
         r(B, NH, 1), 3 + r(B, NH, 1)]
    return x, [0.1 * r(B, NH, DQK, DV), 0.1 * r(B, NH, DQK), r(B, NH, 1)]


def seed_modules():
    try:
        from mlstm_kernels.torch.backend_module import mLSTMBackend, mLSTMBackendConfig
        from mlstm_kernels.torch.recurrent.triton_step import mlstm_recurrent_step__triton
        return mlstm_recurrent_step__triton, mLSTMBackend, mLSTMBackendConfig
    except Exception as e:  # reported, not fatal
        print(f"seed (mlstm_kernels) not importable: {e}")
        return None, None, None


def part_c_path(rows, cases, caches, reps=25, calls=40):
    """The rows with their entries' C path (tfla.torch._fast) and without it (the entries' C
    calls taken away: the ctypes path), alternating samples of `calls` calls in this process,
    the GPU held behind a sleep: (min, median) host us per call of each. caches: row (or its
    prefix before the first dot) -> the PerThreadCache of its entries."""
    try:
        from tfla.torch import _fast
    except ImportError:
        return
    if _fast.module() is None:
        return
    print(f"\nthe same entries with their C path and with the ctypes path, alternating {reps} samples of "
          f"{calls} calls: host us per call, min / median")
    print(f"{'call':<22}{'C path':>16}{'ctypes path':>16}")
    for name, fn in cases.items():
        cache = caches.get(name) or caches.get(name.split(".")[0])
        if cache is None:
            continue
        fn()
        # every entry of the cache (a forward + backward row uses the forward's and the backward's)
        held = [(e, getattr(e, "ext", None), getattr(e, "bwd_ext", None), getattr(e, "node", None))
                for e in cache.entries.values()]
        if not any(ext is not None for _, ext, _, _ in held):
            print(f"{name:<22} (no C path entry)")
            continue

        def use(on):
            for e, ext, bwd, node in held:
                e.ext = ext if on else None
                if hasattr(e, "bwd_ext"):
                    e.bwd_ext = bwd if on else None
                if hasattr(e, "node"):  # the C++ autograd node (else MlstmChunkwiseFunction)
                    e.node = node if on else None

        a, b = [], []
        try:
            for _ in range(reps):
                for on, out in ((True, a), (False, b)):
                    use(on)
                    out.append(host_sample_us(fn, calls))
        finally:
            use(True)
        rows.append({"part": "c_path", "call": name, "c_min_us": min(a), "c_median_us": statistics.median(a),
                     "ctypes_min_us": min(b), "ctypes_median_us": statistics.median(b)})
        print(f"{name:<22}{min(a):7.2f} / {statistics.median(a):6.2f}{min(b):8.2f} / {statistics.median(b):6.2f}")


def part_host(rows, only=None, ab_reps=25):
    from tfla.torch import mlstm_chunkwise, mlstm_recurrent_step
    from tfla.torch.backend_module import mLSTMBackend, mLSTMBackendConfig
    seed_step, SeedBackend, SeedConfig = seed_modules()
    x, (C, n, m) = step_inputs(1)
    h = torch.empty(1, NH, DV, device=DEV, dtype=torch.bfloat16)
    x4 = [t[:, :, None] if t.shape[-1] != 1 else t for t in x]  # (B, NH, 1, D), gates (B, NH, 1)
    cases = {}
    import tfla.torch.step as step_module
    if hasattr(step_module, "StepEntry"):  # a binding with out= (older ones swallow it in **kwargs)
        cases["step.inplace_out"] = lambda: mlstm_recurrent_step(*x, C, n, m, inplace=True, out=h)
    cases["step.inplace"] = lambda: mlstm_recurrent_step(*x, C, n, m, inplace=True)
    cases["step.new"] = lambda: mlstm_recurrent_step(*x, C, n, m)
    be = mLSTMBackend(mLSTMBackendConfig(chunkwise_kernel="chunkwise--triton_xl_chunk", mode="inference"))
    cases["backend.step"] = lambda: be(*x4, C, n, m)
    try:
        bi = mLSTMBackend(mLSTMBackendConfig(chunkwise_kernel="chunkwise--triton_xl_chunk",
                                             mode="inference", inference_states_inplace=True))
        cases["backend.step_inplace"] = lambda: bi(*x4, C, n, m)
    except TypeError:
        pass
    g = torch.Generator(device=DEV).manual_seed(1)
    small = [torch.randn(1, 1, 64, 64, device=DEV, generator=g).bfloat16() for _ in range(3)]
    small += [torch.randn(1, 1, 64, device=DEV, generator=g), 3 + torch.randn(1, 1, 64, device=DEV, generator=g)]
    cases["fwd.nograd"] = lambda: mlstm_chunkwise(*small)
    sg = [t.clone().requires_grad_(True) for t in small]
    dh = torch.randn(1, 1, 64, 64, device=DEV).bfloat16()
    cases["fwd.grad_inputs"] = lambda: mlstm_chunkwise(*sg)

    def fwd_bwd():  # as a training step after zero_grad(set_to_none=True): no accumulation kernels
        for t in sg:
            t.grad = None
        mlstm_chunkwise(*sg).backward(dh)
    cases["fwd+bwd"] = fwd_bwd

    from hostpath_profile import engine_cases  # native.fwd+bwd, bwd.node
    cases.update(engine_cases(torch, sg, dh))
    try:  # the binding's own backward call (what autograd's node runs), without torch's engine
        from tfla.torch._launch import forward_entry, run_backward, run_forward
        from tfla.torch.chunkwise import options
        opts = options("exp", True, 1e-6, None, 128, None, None, False, None)
        e = forward_entry(*small, None, None, None, opts, True)
        _, norm, _, _, _, saved = run_forward(e, *small, None, None, None, True)
        cases["bwd.binding"] = lambda: run_backward(e, *small, None, None, None, norm, saved, dh, None)
    except Exception as err:  # noqa: BLE001  (another binding's internals: reported, not fatal)
        print(f"(bwd.binding not timed: {err})")
    if seed_step is not None:
        cases["seed.triton_step"] = lambda: seed_step(*x, C, n, m)
        sb = SeedBackend(SeedConfig(chunkwise_kernel="chunkwise--triton_xl_chunk",
                                    sequence_kernel="native_sequence__triton", step_kernel="triton",
                                    mode="inference"))
        cases["seed.backend.step"] = lambda: sb(*x4, C, n, m)
    if only:
        cases = {k: v for k, v in cases.items() if k in only}
    print(f"host us per call (GPU held behind a sleep) and GPU us per call; B = 1, NH {NH}, "
          f"Dqk {DQK}, Dv {DV} bf16 (fwd at 1x1x64x64x64)")
    print(f"{'call':<22}{'host us':>9}{'GPU us':>9}")
    for name, fn in cases.items():
        try:
            hu = host_time_us(fn)
            gu = gpu_time_us(fn)
        except Exception as err:  # noqa: BLE001 - a row that fails is reported (not `e`: a row's closure uses it)
            print(f"{name:<22} failed: {type(err).__name__}: {str(err)[:200]}")
            continue
        rows.append({"part": "host", "call": name, "host_us": hu, "gpu_us": gu})
        print(f"{name:<22}{hu:9.2f}{gu:9.2f}")
    from tfla.torch import _launch
    if ab_reps > 0:
        part_c_path(rows, {k: v for k, v in cases.items() if not k.startswith("seed.")},
                    {"step": step_module._entries, "backend.step": be._entries,
                     "backend.step_inplace": bi._entries if "backend.step_inplace" in cases else None,
                     "fwd": _launch._entries, "fwd+bwd": _launch._entries, "bwd.binding": _launch._entries},
                    reps=ab_reps)
    by = {r["call"]: r["host_us"] for r in rows if r["part"] == "host"}
    if "fwd+bwd" in by and "fwd.grad_inputs" in by:  # the backward's share: autograd's engine and the call
        bwd = by["fwd+bwd"] - by["fwd.grad_inputs"]
        rows.append({"part": "host", "call": "bwd (difference)", "host_us": bwd, "gpu_us": None})
        print(f"{'bwd (difference)':<22}{bwd:9.2f}{'-':>9}")


def part_decode(rows, batches, T, reps):
    from tfla.torch import mlstm_recurrent_step
    seed_step, _, _ = seed_modules()
    print(f"\ndecode loop: {T} tokens of one mLSTM layer's step, NH {NH}, Dqk {DQK}, Dv {DV}, bf16; "
          "us per token (wall, synchronized at the end), median of reps; ratio = seed / tfla")
    print(f"{'B':>3}{'seed triton':>13}{'tfla eager':>12}{'ratio':>7}{'tfla graph':>12}{'ratio':>7}  check")
    for B in batches:
        toks = [step_inputs(B, seed=100 + t)[0] for t in range(T)]
        _, (C0, n0, m0) = step_inputs(B)

        # tfla eager, states in place, h into a per-token buffer
        C, n, m = C0.clone(), n0.clone(), m0.clone()
        hs = torch.empty(T, B, NH, DV, device=DEV, dtype=torch.bfloat16)

        def tfla_loop():
            for t in range(T):
                mlstm_recurrent_step(*toks[t], C, n, m, inplace=True, out=hs[t])

        # tfla in a CUDA graph: the T steps captured once, replayed
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            tfla_loop()
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            tfla_loop()

        def seed_loop():
            st = (C0, n0, m0)
            for t in range(T):
                h, st = seed_step(*toks[t], *st)
            return h, st

        # correctness: all three from the same start
        C.copy_(C0), n.copy_(n0), m.copy_(m0)
        tfla_loop()
        h_eager, C_eager = hs[-1].clone(), C.clone()
        C.copy_(C0), n.copy_(n0), m.copy_(m0)
        graph.replay()
        torch.cuda.synchronize()
        check = [f"graph==eager {torch.equal(hs[-1], h_eager) and torch.equal(C, C_eager)}"]
        if seed_step is not None:
            h_s, (C_s, _, _) = seed_loop()
            e_h = ((h_s.float() - h_eager.float()).norm() / h_s.float().norm()).item()
            e_C = ((C_s - C_eager).norm() / C_s.norm()).item()
            check.append(f"vs seed: h {e_h:.1e} C {e_C:.1e}")

        def timed(fn):
            fn()
            torch.cuda.synchronize()
            out = []
            for _ in range(reps):
                t0 = time.perf_counter()
                fn()
                torch.cuda.synchronize()
                out.append(1e6 * (time.perf_counter() - t0) / T)
            return statistics.median(out)

        t_eager = timed(tfla_loop)
        t_graph = timed(graph.replay)
        t_seed = timed(seed_loop) if seed_step is not None else float("nan")
        rows.append({"part": "decode", "B": B, "T": T, "seed_triton_us": t_seed, "tfla_eager_us": t_eager,
                     "tfla_graph_us": t_graph, "check": "; ".join(check)})
        print(f"{B:>3}{t_seed:13.2f}{t_eager:12.2f}{t_seed / t_eager:6.2f}x{t_graph:12.2f}"
              f"{t_seed / t_graph:6.2f}x  {'; '.join(check)}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", default="1,4")
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--skip-host", action="store_true")
    ap.add_argument("--skip-decode", action="store_true")
    ap.add_argument("--only", help="the host rows to time, comma-separated (default: all)")
    ap.add_argument("--ab-reps", type=int, default=25,
                    help="samples per path of the C-path / ctypes-path table (0: no table)")
    ap.add_argument("--json")
    args = ap.parse_args()
    try:
        batches = [int(b) for b in args.batch.split(",")]
    except ValueError:
        ap.error(f"--batch must be a comma-separated list of ints, got {args.batch!r}")
    if min(batches) < 1 or args.tokens < 1 or args.reps < 1:
        ap.error("--batch, --tokens and --reps must be >= 1")
    if not torch.cuda.is_available():
        print("decode_loop: torch sees no CUDA GPU on this machine; nothing to time", file=sys.stderr)
        return 3
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    from tfla.torch import _fast
    loaded = _fast.module() is not None
    print(f"tfla's C step path (tfla.torch._fast): {'loaded' if loaded else 'not used'}"
          f"{'' if loaded else ' (' + str(_fast.status()[1] or 'TFLA_TORCH_EXTENSION=0') + ')'}")
    rows = []
    if not args.skip_host:
        part_host(rows, args.only.split(",") if args.only else None, args.ab_reps)
    if not args.skip_decode:
        part_decode(rows, batches, args.tokens, args.reps)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
