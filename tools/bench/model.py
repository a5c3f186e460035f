#!/usr/bin/env python3
"""Model-level benchmark: a stack of xLSTM blocks at the xLSTM-7B shape in plain torch, with the
mLSTM from each backend, side by side in one run, same weights. Each backend runs in a process
of its own (the same script with --child), one after the other, so a backend that aborts its
process (a compiler assertion, a device fault) is reported as failed and the others still run;
--in-process runs them all in this one.

The model (written here with torch.nn modules): token embedding (vocab 50304, d 4096); per
block an RMSNorm, the mLSTM layer (q, k: d -> NH * 256; v and the output gate: d -> NH * 512;
input and forget gates: d -> NH with bias, soft-capped at 15; the backend's mLSTM on (B, NH, S,
D) views of the projections; a per-head RMSNorm; h * sigmoid(o); out projection) and a residual;
an RMSNorm and a SwiGLU MLP (d -> 10944 -> d) and a residual; then an RMSNorm and the LM head
with logits soft-capped at 30. NH = 8, 2 blocks (--blocks), bf16 weights, random init.

Backends (each an mLSTMBackend with the seed's interface):
  tfla          tfla.torch.backend_module.mLSTMBackend (chunk: tfla's choice)
  tfla_inplace  the same with inference_states_inplace=True (generation writes the states in place)
  triton        mlstm_kernels' mLSTMBackend: chunkwise--triton_xl_chunk (chunk 128),
                native_sequence__triton, step kernel triton
  native        mlstm_kernels' mLSTMBackend: chunkwise--native_autograd (chunk 64), native step
  floor         no mLSTM: h = v, states passed through (every other op of the model the same),
                so its times bound what any backend can reach (not checked for correctness)

Reported, at each B in --batch:
Gates are in float32 (the seed's native kernels: the model's dtype, as they take one dtype for all inputs).

  train    tokens/s of forward + backward (cross-entropy loss, no optimizer), S = --train-seq;
           with --compile, for tfla also with the model under torch.compile(fullgraph=True)
  prefill  ms for a --prompt-token prompt in inference mode (returns the states)
  gen      us per generated token (greedy, one token per call through the whole model, states
           carried; no host synchronization inside the loop), eager; for tfla_inplace also with
           the one-token model step captured in a CUDA graph (argmax into the next input inside
           the graph)
with ratios to the seed's Triton backend (> 1: faster than it).

Correctness first (B = 1, S = --check-seq): logits and the loss of a forward and the gradients of
every parameter after a backward, each bf16 backend against a float32 run of the same weights
with the seed's native backend in float32 (relative Frobenius errors); and the first generated
token's logits after a prefill against the float32 model's logits at that position.

If the xlstm package is importable, its xlstm_large model is not used here (that needs its own
config and weights); this script's model has the same layer shapes.

usage: model.py [--backends tfla,tfla_inplace,triton,native,floor] [--batch 1,4,16] [--train-seq 2048]
                [--prompt 512] [--gen 32] [--blocks 2] [--compile] [--json FILE] [--in-process]
"""
import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
from torch import nn

D, NH, DQK, DV, VOCAB, FFN = 4096, 8, 256, 512, 50304, 10944
DEV = "cuda"


def soft_cap(x, cap):
    return cap * torch.tanh(x / cap)


class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        xf = x.float()
        y = xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.float()).to(x.dtype)


class MLSTMLayer(nn.Module):
    def __init__(self, backend):
        super().__init__()
        self.q = nn.Linear(D, NH * DQK, bias=False)
        self.k = nn.Linear(D, NH * DQK, bias=False)
        self.v = nn.Linear(D, NH * DV, bias=False)
        self.o = nn.Linear(D, NH * DV, bias=False)
        self.igate = nn.Linear(D, NH)
        self.fgate = nn.Linear(D, NH)
        self.head_norm = RMSNorm(DV)
        self.out = nn.Linear(NH * DV, D, bias=False)
        self.backend = backend

    def forward(self, x, state=None, inference=False):
        B, S, _ = x.shape
        heads = lambda t, d: t.view(B, S, NH, d).transpose(1, 2)  # (B, NH, S, d), strided
        q, k, v = heads(self.q(x), DQK), heads(self.k(x), DQK), heads(self.v(x), DV)
        # gates in float32 where the backend takes them so (tfla, the seed's Triton kernels, whose
        # Triton 3.6 build aborts compiling them for bf16 gates); the seed's native kernels take
        # one dtype for all inputs, so there the model's
        gd = getattr(self.backend, "gate_dtype", torch.float32)
        i = soft_cap(self.igate(x).to(gd), 15.0).transpose(1, 2)  # (B, NH, S)
        f = soft_cap(self.fgate(x).to(gd), 15.0).transpose(1, 2)
        if inference:
            c, n, m = state if state is not None else (None, None, None)
            h, state = self.backend(q, k, v, i, f, c, n, m, mode="inference")
        else:
            h = self.backend(q, k, v, i, f, return_last_states=False, mode="train")
        h = self.head_norm(h.transpose(1, 2)).reshape(B, S, NH * DV)  # (B, S, NH * DV)
        h = h.to(x.dtype) * torch.sigmoid(self.o(x))
        return self.out(h), state


class Block(nn.Module):
    def __init__(self, backend):
        super().__init__()
        self.norm1, self.norm2 = RMSNorm(D), RMSNorm(D)
        self.mlstm = MLSTMLayer(backend)
        self.up_gate = nn.Linear(D, FFN, bias=False)
        self.up = nn.Linear(D, FFN, bias=False)
        self.down = nn.Linear(FFN, D, bias=False)

    def forward(self, x, state=None, inference=False):
        y, state = self.mlstm(self.norm1(x), state, inference)
        x = x + y
        z = self.norm2(x)
        return x + self.down(F.silu(self.up_gate(z)) * self.up(z)), state


class Model(nn.Module):
    def __init__(self, backend_factory, blocks):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, D)
        self.blocks = nn.ModuleList([Block(backend_factory()) for _ in range(blocks)])
        self.norm = RMSNorm(D)
        self.head = nn.Linear(D, VOCAB, bias=False)

    def forward(self, tokens, states=None, inference=False):
        x = self.emb(tokens)
        new = []
        for j, b in enumerate(self.blocks):
            x, s = b(x, states[j] if states is not None else None, inference)
            new.append(s)
        return soft_cap(self.head(self.norm(x)).float(), 30.0), new


def init_weights(model, seed=0):
    """Random weights, drawn on the model's device (std 0.02; norms 1; forget-gate biases
    3..6 and input-gate biases -10, as xLSTM initializes them)."""
    g = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.fill_(1.0)
            elif name.endswith("fgate.bias"):
                p.copy_(torch.linspace(3.0, 6.0, p.numel()))
            elif name.endswith("igate.bias"):
                p.fill_(-10.0)
            else:
                p.normal_(0.0, 0.02, generator=g)


def use_backend(model, name, dtype=torch.bfloat16):
    """Puts a fresh mLSTM backend of `name` into every block (the weights stay)."""
    make = backend_factory(name, dtype)
    for b in model.blocks:
        b.mlstm.backend = make()
    return model


class NoMlstm(nn.Module):
    """The `floor` backend: h = v (B, NH, S, Dv) and the states passed through, no mLSTM work;
    the model around it runs every other op."""

    def forward(self, q, k, v, i, f, c=None, n=None, m=None, return_last_states=False, mode="train"):
        h = v.contiguous()
        return (h, (c, n, m)) if mode == "inference" else h


def backend_factory(name, dtype):
    kd = "bfloat16" if dtype == torch.bfloat16 else "float32"
    if name == "floor":
        return NoMlstm
    if name.startswith("tfla"):
        from tfla.torch.backend_module import mLSTMBackend, mLSTMBackendConfig
        kw = dict(inference_states_inplace=True) if name == "tfla_inplace" else {}
        return lambda: mLSTMBackend(mLSTMBackendConfig(
            chunkwise_kernel="chunkwise--triton_xl_chunk", chunk_size=None, mode="train",
            return_last_states=False, autocast_kernel_dtype=kd, **kw))
    from mlstm_kernels.torch.backend_module import mLSTMBackend, mLSTMBackendConfig
    if name == "triton":
        cfg = dict(chunkwise_kernel="chunkwise--triton_xl_chunk", sequence_kernel="native_sequence__triton",
                   step_kernel="triton", chunk_size=128)
    else:
        cfg = dict(chunkwise_kernel="chunkwise--native_autograd", sequence_kernel="native_sequence__native",
                   step_kernel="native", chunk_size=64)
    def make():
        be = mLSTMBackend(mLSTMBackendConfig(mode="train", return_last_states=False, autocast_kernel_dtype=kd, **cfg))
        if name != "triton":
            be.gate_dtype = dtype  # the native kernels: one dtype for all inputs
        return be
    return make


def build(name, blocks, dtype=torch.bfloat16):
    with torch.device(DEV):
        model = Model(backend_factory(name, dtype), blocks).to(dtype)
    init_weights(model)
    return model


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


def loss_of(model, tokens):
    logits, _ = model(tokens[:, :-1])
    return F.cross_entropy(logits.reshape(-1, VOCAB), tokens[:, 1:].reshape(-1)), logits


def check(model, names, S, rows):
    tokens = torch.randint(0, VOCAB, (1, S + 1), device=DEV, generator=torch.Generator(device=DEV).manual_seed(1))
    with torch.device(DEV):
        ref = Model(backend_factory("native", torch.float32), len(model.blocks))
    ref.load_state_dict({k: v.float() for k, v in model.state_dict().items()})  # the same weights
    loss_ref, logits_ref = loss_of(ref, tokens)
    loss_ref.backward()
    grads_ref = {k: p.grad for k, p in ref.named_parameters()}
    del ref
    P = S // 2
    print(f"correctness vs the float32 model (seed native backend), B = 1, S = {S}; generation: "
          f"prefill {P}, the next token's logits")
    print(f"{'backend':<14}{'loss':>10}{'loss ref':>10}{'logits':>9}{'grads':>9}{'gen logits':>11}")
    for name in names:
        if name == "floor":  # no mLSTM: nothing to check
            print(f"{name:<14}no mLSTM (h = v): not checked", flush=True)
            continue
        try:
            check_one(model, name, tokens, P, loss_ref, logits_ref, grads_ref, rows)
        except Exception as e:  # reported; the other backends still run
            print(f"{name:<14}failed: {type(e).__name__}: {str(e)[:300]}", flush=True)
            model.zero_grad(set_to_none=True)
    del grads_ref, logits_ref
    torch.cuda.empty_cache()


def check_one(model, name, tokens, P, loss_ref, logits_ref, grads_ref, rows):
    """One backend's loss, logits, gradients and first generated logits against the float32 run."""
    use_backend(model, name)
    loss, logits = loss_of(model, tokens)
    loss.backward()
    num = sum(((p.grad.double() - grads_ref[k].double()).norm() ** 2).item()
              for k, p in model.named_parameters())
    den = sum((g.double().norm() ** 2).item() for g in grads_ref.values())
    model.zero_grad(set_to_none=True)
    r = {"part": "check", "backend": name, "loss": loss.item(), "loss_ref": loss_ref.item(),
         "logits_rel": rel(logits.detach(), logits_ref.detach()), "grads_rel": math.sqrt(num / den)}
    try:
        with torch.no_grad():
            _, states = model(tokens[:, :P], inference=True)
            step_logits, _ = model(tokens[:, P:P + 1], states, inference=True)
        r["gen_logits_rel"] = rel(step_logits[:, 0], logits_ref[:, P].detach())
        gen = f"{r['gen_logits_rel']:11.1e}"
    except Exception as e:  # inference this backend cannot run
        r["gen_error"] = f"{type(e).__name__}: {str(e)[:200]}"
        gen = f"  failed: {r['gen_error'][:80]}"
    rows.append(r)
    print(f"{name:<14}{r['loss']:10.5f}{r['loss_ref']:10.5f}{r['logits_rel']:9.1e}{r['grads_rel']:9.1e}"
          f"{gen}", flush=True)


def timed(fn, reps, warm=1):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def speed(model, name, batches, args, rows):
    """Training, prefill and generation times of one backend; a part that fails is recorded
    with its error (the seed's native kernels, for one, do not run bf16 inference with float32
    states) and the other parts still run."""
    use_backend(model, name)
    for B in batches:
        g = torch.Generator(device=DEV).manual_seed(B)
        tokens = torch.randint(0, VOCAB, (B, args.train_seq + 1), device=DEV, generator=g)
        prompt, last = tokens[:, :args.prompt], tokens[:, args.prompt - 1:args.prompt]
        r = {"part": "speed", "backend": name, "B": B}

        def train():
            loss, _ = loss_of(model, tokens)
            loss.backward()
            for p in model.parameters():
                p.grad = None

        def gen(states):
            tok, st = last, states
            for _ in range(args.gen):
                logits, st = model(tok, st, inference=True)
                tok = logits[:, -1:].argmax(-1)
            return tok

        def part(key, fn):
            try:
                r[key] = fn()
            except Exception as e:
                r[key + "_error"] = f"{type(e).__name__}: {str(e)[:200]}"

        if name != "tfla_inplace":  # the same training path as tfla
            part("train_tok_s", lambda: B * args.train_seq / timed(train, args.reps))
        if name == "tfla" and args.compile:
            compiled = torch.compile(model, fullgraph=True)  # tfla's custom ops stay in the graph

            def train_compiled():
                logits, _ = compiled(tokens[:, :-1])
                F.cross_entropy(logits.reshape(-1, VOCAB), tokens[:, 1:].reshape(-1)).backward()
                for p in model.parameters():
                    p.grad = None

            # two warm-up steps: the first compiles the forward, the first backward compiles its graph
            part("train_compiled_tok_s", lambda: B * args.train_seq / timed(train_compiled, args.reps, warm=2))
        with torch.no_grad():
            part("prefill_ms", lambda: 1e3 * timed(lambda: model(prompt, inference=True), args.reps))
            try:
                _, states = model(prompt, inference=True)
            except Exception:
                states = None
            if states is not None:
                part("gen_us", lambda: 1e6 * timed(lambda: gen(states), args.reps) / args.gen)
                if name == "tfla_inplace":
                    part("gen_graph_us", lambda: graph_gen(model, states, last, args))
        rows.append(r)
        print(json.dumps(r), flush=True)


def graph_gen(model, states, last, args):
    """us per token of the one-token model step captured in a CUDA graph and replayed: the
    states are updated in place (inference_states_inplace) and the argmax is written into the
    next step's input inside the graph."""
    tok = last.clone()
    st = [tuple(s.clone() for s in layer) for layer in states]
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):
            logits, _ = model(tok, st, inference=True)
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        logits, new = model(tok, st, inference=True)
        tok.copy_(logits[:, -1:].argmax(-1))
    assert all(a is b for x, y in zip(new, st) for a, b in zip(x, y)), "states not updated in place"

    def run():
        for _ in range(args.gen):
            graph.replay()

    return 1e6 * timed(run, args.reps) / args.gen


def child_argv(argv):
    """The parent's command line for its children, less its own --json file (each child writes
    its rows to a file of its own)."""
    out, skip = [], False
    for a in argv:
        if skip or a.startswith("--json="):
            skip = False
            continue
        if a == "--json":
            skip = True
            continue
        out.append(a)
    return out


def run_children(names, argv, script=None):
    """Runs each backend in its own process (`script`, this file by default, with --child NAME
    --json FILE); returns the rows they wrote. A child that fails or dies is reported with its
    exit status, as a row {"part": "failed"}, and the next one runs."""
    rows = []
    for name in names:
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
            out = fh.name
        cmd = [sys.executable, script or os.path.abspath(__file__), *argv, "--child", name, "--json", out]
        print(f"--- {name} (own process)", flush=True)
        rc = subprocess.call(cmd)
        try:
            with open(out) as fh:
                rows += json.load(fh)
        except (OSError, ValueError):
            pass  # the child died before writing its rows
        finally:
            os.unlink(out)
        if rc != 0:
            why = f"signal {signal.Signals(-rc).name}" if rc < 0 else f"exit status {rc}"
            print(f"{name}: its process failed ({why})", flush=True)
            rows.append({"part": "failed", "backend": name, "error": why})
    return rows


def model_args(ap, backends, batch):
    """The options model.py and model_xlstm_large.py share."""
    ap.add_argument("--backends", default=backends)
    ap.add_argument("--batch", default=batch)
    ap.add_argument("--train-seq", type=int, default=2048)
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--gen", type=int, default=32)
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--check-seq", type=int, default=256, help="0: no correctness check")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json")
    ap.add_argument("--child", help=argparse.SUPPRESS)  # one backend, rows to --json (run_children)


def main():
    ap = argparse.ArgumentParser()
    model_args(ap, "tfla,tfla_inplace,triton,native,floor", "1,4,16")
    ap.add_argument("--in-process", action="store_true", help="every backend in this process")
    ap.add_argument("--compile", action="store_true",
                    help="tfla: also the training step of the model under torch.compile(fullgraph=True)")
    args = ap.parse_args()
    names = [args.child] if args.child else args.backends.split(",")
    batches = [int(b) for b in args.batch.split(",")]
    if not args.child:
        print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}; model: {args.blocks} blocks, "
              f"d {D}, NH {NH}, Dqk {DQK}, Dv {DV}, FFN {FFN}, vocab {VOCAB}, bf16", flush=True)
    if not args.child and not args.in_process and len(names) > 1:
        rows = run_children(names, child_argv(sys.argv[1:]))
    else:
        rows = []
        model = build(names[0], args.blocks)
        if args.check_seq > 0:
            check(model, names, args.check_seq, rows)
        for name in names:
            try:
                speed(model, name, batches, args, rows)
            except Exception as e:
                print(f"{name}: failed: {type(e).__name__}: {str(e)[:300]}", flush=True)
    if args.child:
        with open(args.json, "w") as fh:
            json.dump(rows, fh)
        return
    table(rows, names, batches)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


def table(rows, names, batches):
    sp = {(r["backend"], r["B"]): r for r in rows if r["part"] == "speed"}
    print("\nratio = this backend over the seed's Triton backend (> 1: faster); train in tokens/s, "
          "prefill in ms, generation in us per token")
    print(f"{'backend':<14}{'B':>3}{'train tok/s':>13}{'x':>6}{'prefill ms':>12}{'x':>6}{'gen us':>9}{'x':>6}"
          f"{'graph us':>10}{'x':>6}")
    for B in batches:
        tri = sp.get(("triton", B), {})
        for name in names:
            r = sp.get((name, B))
            if not r:
                continue
            def cell(key, better_high, width):
                v = r.get(key)
                if v is None:
                    return " " * (width + 6)
                t = tri.get(key if key != "gen_graph_us" else "gen_us")
                if not t:
                    return f"{v:{width}.1f}{'-':>6}"
                return f"{v:{width}.1f}{(v / t if better_high else t / v):5.2f}x"
            print(f"{name:<14}{B:>3}{cell('train_tok_s', True, 13)}{cell('prefill_ms', False, 12)}"
                  f"{cell('gen_us', False, 9)}{cell('gen_graph_us', False, 10)}")
    for r in rows:
        if r["part"] == "failed":
            print(f"{r['backend']:<14}  failed: its process ended with {r['error']}")
    for B in batches:
        r = sp.get(("tfla", B), {})
        if "train_compiled_tok_s" in r and r.get("train_tok_s"):
            print(f"tfla, B = {B}: training under torch.compile(fullgraph=True) {r['train_compiled_tok_s']:.1f} "
                  f"tokens/s, {r['train_compiled_tok_s'] / r['train_tok_s']:.2f}x eager")
        elif "train_compiled_tok_s_error" in r:
            print(f"tfla, B = {B}: training under torch.compile failed: {r['train_compiled_tok_s_error']}")


if __name__ == "__main__":
    main()
