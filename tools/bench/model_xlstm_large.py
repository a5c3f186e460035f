#!/usr/bin/env python3
"""Model-level benchmark through the xlstm package's own model (xlstm.xlstm_large.xLSTMLarge),
with its mLSTM backend swapped, side by side in one run; the companion of model.py (which builds
the same layer shapes in plain torch).

Needs the `xlstm` package and the seed's `mlstm_kernels` (which xlstm imports); without them it
says so and exits 0. The model: xLSTMLarge at the xLSTM-7B shape (embedding 4096, 8 heads,
qk_dim_factor 0.5 and v_dim_factor 1: Dqk 256, Dv 512; vocab 50304; --blocks blocks), bf16
weights, random (std 0.02, norms 1, forget-gate biases 3..6, input-gate biases -10; the same
weights in every process). Backends, each in a process of its own (model.run_children):
  tfla          xlstm's mLSTMBackend replaced by tfla.torch.backend_module.mLSTMBackend, by one
                swap of the name xlstm.xlstm_large.model.mLSTMBackend before the model is built;
                its config is made from the seed's config that xlstm passes (same kernels named,
                mode, chunk size, eps, dtypes: what a model that swaps the import gets; the
                backend leaves the chunk to tfla)
  tfla_inplace  the same with inference_states_inplace=True
  triton        xlstm's own backend: chunkwise--triton_xl_chunk (chunk 128),
                native_sequence__triton, the triton step
Reported at each B in --batch: training tokens/s (forward + backward of the cross-entropy loss,
S = --train-seq, mode "train" with the last states returned, as xLSTMLarge's layers unpack
them), prefill ms (--prompt tokens, mode "inference") and generation us per token (one token per
call through the whole model, the model's state dict carried, greedy, no host synchronization
inside the loop), with the ratio to the seed's Triton backend. First, at B = 1 and S =
--check-seq: loss, logits and every parameter's gradient of each bf16 backend against the same
weights in float32 on the seed's native kernels (relative Frobenius errors).

usage: model_xlstm_large.py [--backends tfla,tfla_inplace,triton] [--batch 1,4] [--train-seq 2048]
                            [--prompt 512] [--gen 32] [--blocks 2] [--check-seq 256] [--reps 3]
                            [--json FILE]
"""
import argparse
import json
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "tools", "python"))

D, NH, VOCAB = 4096, 8, 50304
BACKENDS = ("tfla", "tfla_inplace", "triton")


def xlstm_available():
    try:
        import xlstm.xlstm_large.model  # noqa: F401  (imports mlstm_kernels too)
    except ImportError as e:
        return str(e)
    return None


_SEED_BACKEND = []  # xlstm's own mLSTMBackend class, kept before any swap


def use_backend_class(backend):
    """The backend class xLSTMLarge's layers build: tfla's (configured from the seed's config
    each layer passes) for the tfla backends, else xlstm's own."""
    import xlstm.xlstm_large.model as xm
    if not _SEED_BACKEND:
        _SEED_BACKEND.append(xm.mLSTMBackend)
    if not backend.startswith("tfla"):
        xm.mLSTMBackend = _SEED_BACKEND[0]
        return
    from tfla.torch.backend_module import mLSTMBackend, mLSTMBackendConfig
    inplace = backend == "tfla_inplace"

    def make(config):
        return mLSTMBackend(mLSTMBackendConfig(
            chunkwise_kernel=config.chunkwise_kernel, sequence_kernel=config.sequence_kernel,
            step_kernel=config.step_kernel, mode=config.mode, chunk_size=config.chunk_size,
            return_last_states=config.return_last_states, autocast_kernel_dtype=config.autocast_kernel_dtype,
            eps=config.eps, inference_state_dtype=config.inference_state_dtype,
            inference_states_inplace=inplace))
    xm.mLSTMBackend = make


def build(backend, blocks, dtype, device):
    """xLSTMLarge with `backend`'s kernels ("native": the seed's PyTorch kernels, for the float32
    reference), the weights drawn from a fixed seed in float32 and cast to dtype."""
    import torch
    from xlstm.xlstm_large.model import xLSTMLarge, xLSTMLargeConfig
    use_backend_class(backend)
    kernels = dict(chunkwise_kernel="chunkwise--triton_xl_chunk", sequence_kernel="native_sequence__triton",
                   step_kernel="triton", chunk_size=128)
    if backend == "native":
        kernels = dict(chunkwise_kernel="chunkwise--native_autograd", sequence_kernel="native_sequence__native",
                       step_kernel="native", chunk_size=64)
    cfg = xLSTMLargeConfig(embedding_dim=D, num_heads=NH, num_blocks=blocks, vocab_size=VOCAB, mode="train",
                           return_last_states=True,
                           autocast_kernel_dtype="bfloat16" if dtype == torch.bfloat16 else "float32", **kernels)
    with torch.device(device):
        model = xLSTMLarge(cfg)
    g = torch.Generator(device="cpu").manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                w = torch.ones(p.shape)
            elif name.endswith("fgate_preact.bias"):
                w = torch.linspace(3.0, 6.0, p.numel()).view(p.shape)
            elif name.endswith("igate_preact.bias"):
                w = torch.full(p.shape, -10.0)
            else:
                w = torch.randn(p.shape, generator=g) * 0.02
            p.copy_(w)
    return model.to(dtype)


def set_mode(model, mode):
    """Train or inference mode in the model and every layer's backend (xLSTMLarge reads its
    config's return_last_states; the backends their config's mode)."""
    model.config.return_last_states = True
    for m in model.modules():
        be = getattr(m, "mlstm_backend", None)
        if be is not None:
            be.config.mode = mode
            be.config.return_last_states = True


def loss_of(model, tokens):
    import torch.nn.functional as F
    logits, _ = model(tokens[:, :-1])
    return F.cross_entropy(logits.float().reshape(-1, VOCAB), tokens[:, 1:].reshape(-1)), logits


def check(model, name, blocks, S, device, rows):
    import torch
    from model import rel
    tokens = torch.randint(0, VOCAB, (1, S + 1), generator=torch.Generator().manual_seed(1)).to(device)
    ref = build("native", blocks, torch.float32, device)
    set_mode(ref, "train")
    loss_ref, logits_ref = loss_of(ref, tokens)
    loss_ref.backward()
    grads_ref = {k: p.grad for k, p in ref.named_parameters()}
    del ref
    set_mode(model, "train")
    loss, logits = loss_of(model, tokens)
    loss.backward()
    num = sum(((p.grad.double() - grads_ref[k].double()).norm() ** 2).item() for k, p in model.named_parameters())
    den = sum((g.double().norm() ** 2).item() for g in grads_ref.values())
    model.zero_grad(set_to_none=True)
    r = {"part": "check", "backend": name, "loss": loss.item(), "loss_ref": loss_ref.item(),
         "logits_rel": rel(logits.detach().float(), logits_ref.detach()), "grads_rel": math.sqrt(num / den)}
    rows.append(r)
    print(f"correctness, B = 1, S = {S}, against the float32 model on the seed's native kernels: {name} loss "
          f"{r['loss']:.5f} (float32 {r['loss_ref']:.5f}), logits {r['logits_rel']:.1e}, gradients "
          f"{r['grads_rel']:.1e}", flush=True)


def speed(model, name, batches, args, device, rows):
    import torch
    from model import timed
    for B in batches:
        g = torch.Generator().manual_seed(B)
        tokens = torch.randint(0, VOCAB, (B, args.train_seq + 1), generator=g).to(device)
        prompt, last = tokens[:, :args.prompt], tokens[:, args.prompt - 1:args.prompt]
        r = {"part": "speed", "backend": name, "B": B}

        def part(key, fn):
            try:
                r[key] = fn()
            except Exception as e:  # recorded; the other parts still run
                r[key + "_error"] = f"{type(e).__name__}: {str(e)[:200]}"

        def train():
            loss, _ = loss_of(model, tokens)
            loss.backward()
            for p in model.parameters():
                p.grad = None

        if name != "tfla_inplace":  # the same training path as tfla
            set_mode(model, "train")
            part("train_tok_s", lambda: B * args.train_seq / timed(train, args.reps))
        set_mode(model, "inference")
        with torch.no_grad():
            part("prefill_ms", lambda: 1e3 * timed(lambda: model(prompt), args.reps))

            def gen():
                _, state = model(prompt)
                tok = last
                t0 = torch.cuda.Event(enable_timing=True)
                t1 = torch.cuda.Event(enable_timing=True)
                t0.record()
                for _ in range(args.gen):
                    logits, state = model(tok, state)
                    tok = logits[:, -1:].argmax(-1)
                t1.record()
                t1.synchronize()
                return 1e3 * t0.elapsed_time(t1) / args.gen

            part("gen_us", lambda: sorted(gen() for _ in range(args.reps))[args.reps // 2])
        rows.append(r)
        print(json.dumps(r), flush=True)


def main():
    from model import model_args
    ap = argparse.ArgumentParser(description="xLSTMLarge (the xlstm package) with its mLSTM backend swapped")
    model_args(ap, ",".join(BACKENDS), "1,4")
    args = ap.parse_args()
    names = [args.child] if args.child else args.backends.split(",")
    for n in names:
        if n not in BACKENDS:
            ap.error(f"unknown backend {n!r} ({', '.join(BACKENDS)})")
    if args.check_seq % 64:
        ap.error("--check-seq must be a multiple of 64 (the chunk of the seed's native reference kernels)")
    batches = [int(b) for b in args.batch.split(",")]
    missing = xlstm_available()
    if missing:
        print(f"model_xlstm_large.py: the xlstm package is not importable ({missing}); nothing to run")
        return
    import torch
    if not torch.cuda.is_available():
        sys.exit("model_xlstm_large.py needs a CUDA GPU: none is visible to torch")
    from model import child_argv, run_children, table
    if not args.child:
        print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}; xLSTMLarge: {args.blocks} blocks, "
              f"d {D}, NH {NH}, Dqk 256, Dv 512, vocab {VOCAB}, bf16", flush=True)
        rows = run_children(names, child_argv(sys.argv[1:]), script=os.path.abspath(__file__))
        table(rows, names, batches)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(rows, fh, indent=1)
        return
    rows = []
    name = args.child
    model = build(name, args.blocks, torch.bfloat16, "cuda")
    if args.check_seq > 0:
        try:
            check(model, name, args.blocks, args.check_seq, "cuda", rows)
        except Exception as e:
            print(f"{name}: correctness check failed: {type(e).__name__}: {str(e)[:300]}", flush=True)
            model.zero_grad(set_to_none=True)
    speed(model, name, batches, args, "cuda", rows)
    with open(args.json, "w") as fh:
        json.dump(rows, fh)


if __name__ == "__main__":
    main()
