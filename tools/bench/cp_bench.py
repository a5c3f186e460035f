#!/usr/bin/env python3
"""Context parallelism (tfla.torch.cp.mlstm_chunkwise_cp): the time of one sequence's forward +
backward split across the GPUs of this machine beside the same sequence on one GPU, and the
bytes each rank exchanges.

B = 1 by default and S from --seqs, paper heads (NH 8, Dqk 256, Dv 512), bf16, mLSTM --variant.
The one-GPU row runs mlstm_chunkwise on the whole sequence on GPU 0; the split row runs every
rank's shard (S / ranks tokens, the last takes the remainder) at once, timed on each rank with
CUDA events around a barrier-aligned call (median of --reps after a warm-up); the slowest rank's
time is the split's. Bytes exchanged per rank: the all_gathers' payload each rank sends (the
forward's summary and the backward's state gradient, with their float64 scalars), which does not
depend on S.

Run as is (it starts one process per GPU, --ranks of them) or under torchrun
(`torchrun --nproc_per_node 2 tools/bench/cp_bench.py`): then the launched ranks time the split
only.

usage: cp_bench.py [--seqs 131072,262144] [--ranks 2] [--nh 8] [--dqk 256] [--dv 512]
                   [--variant exp] [--reps 5]
"""
import argparse
import os
import socket
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "tools", "python"))


def make_inputs(torch, B, NH, S, Dqk, Dv, dev, seed):
    g = torch.Generator(device=dev).manual_seed(seed)
    r = lambda *s, dt=torch.bfloat16: torch.randn(*s, device=dev, generator=g, dtype=dt)
    x = [r(B, NH, S, Dqk), r(B, NH, S, Dqk), r(B, NH, S, Dv), r(B, NH, S, dt=torch.float32),
         3.0 + r(B, NH, S, dt=torch.float32)]
    return [t.requires_grad_(True) for t in x], r(B, NH, S, Dv)


def time_call(torch, fn, reps, barrier=None):
    fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(reps):
        if barrier:
            barrier()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        out.append(a.elapsed_time(b))
    return statistics.median(out)


def exchanged_bytes(B, NH, Dqk, Dv):
    fwd = B * NH * (Dqk * Dv + Dqk) * 4 + 2 * B * NH * 8
    bwd = 2 * B * NH * Dqk * Dv * 4 + 3 * B * NH * 8
    return fwd + bwd


def split_rank(rank, world, args, port, results):
    import torch
    import torch.distributed as dist
    from tfla.torch.cp import mlstm_chunkwise_cp
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    torch.cuda.set_device(rank)
    if port is not None:
        dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                                device_id=torch.device("cuda", rank))
    try:
        for S in args.seqs:
            lens = [S // world] * world
            lens[-1] += S - sum(lens)
            x, dh = make_inputs(torch, args.batch, args.nh, lens[rank], args.dqk, args.dv, f"cuda:{rank}", rank)

            def step():
                h = mlstm_chunkwise_cp(*x, variant=args.variant)
                torch.autograd.grad(h, x, dh)
            ms = time_call(torch, step, args.reps, barrier=dist.barrier)
            t = torch.tensor([ms], device=f"cuda:{rank}")
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            if rank == 0:
                results[S] = t.item()
                if port is None:  # under torchrun: print here
                    mib = exchanged_bytes(args.batch, args.nh, args.dqk, args.dv) / 2**20
                    print(f"S = {S}: {world} GPUs {t.item():.3f} ms, {mib:.2f} MiB exchanged per rank", flush=True)
    finally:
        if port is not None:
            dist.destroy_process_group()


def spawned(rank, world, args, port, path):
    results = {}
    split_rank(rank, world, args, port, results)
    if rank == 0:
        import json
        with open(path, "w") as fh:
            json.dump({str(k): v for k, v in results.items()}, fh)


def main():
    ap = argparse.ArgumentParser(description="context parallelism: the split across GPUs beside one GPU")
    ap.add_argument("--seqs", default="131072,262144")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--nh", type=int, default=8)
    ap.add_argument("--dqk", type=int, default=256)
    ap.add_argument("--dv", type=int, default=512)
    ap.add_argument("--variant", default="exp", choices=["exp", "sig"])
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    args.seqs = [int(s) for s in args.seqs.split(",")]
    import torch
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # launched by torchrun
        import torch.distributed as dist
        dist.init_process_group("nccl", device_id=torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))))
        try:
            split_rank(dist.get_rank(), dist.get_world_size(), args, None, {})
        finally:
            dist.destroy_process_group()
        return
    if torch.cuda.device_count() < args.ranks:
        sys.exit(f"cp_bench.py: --ranks {args.ranks} needs as many CUDA GPUs; {torch.cuda.device_count()} visible")
    import json
    import tempfile
    import torch.multiprocessing as mp
    from tfla.torch import mlstm_chunkwise
    print(f"context parallelism on {torch.cuda.get_device_name()}: B = {args.batch}, NH = {args.nh}, Dqk = {args.dqk}, "
          f"Dv = {args.dv}, bf16, mLSTM{args.variant}, forward + backward", flush=True)
    one = {}
    for S in args.seqs:
        x, dh = make_inputs(torch, args.batch, args.nh, S, args.dqk, args.dv, "cuda:0", 0)

        def step():
            h = mlstm_chunkwise(*x, variant=args.variant, chunk_size=None)
            torch.autograd.grad(h, x, dh)
        one[S] = time_call(torch, step, args.reps)
        del x, dh
        torch.cuda.empty_cache()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        path = fh.name
    try:
        mp.spawn(spawned, args=(args.ranks, args, port, path), nprocs=args.ranks, join=True)
        with open(path) as fh:
            split = {int(k): v for k, v in json.load(fh).items()}
    finally:
        os.unlink(path)
    mib = exchanged_bytes(args.batch, args.nh, args.dqk, args.dv) / 2**20
    print(f"{'S':>8} {'1 GPU ms':>10} {f'{args.ranks} GPUs ms':>11} {'speedup':>8} {'MiB exchanged per rank':>23}")
    for S in args.seqs:
        print(f"{S:>8} {one[S]:10.3f} {split[S]:11.3f} {one[S] / split[S]:7.2f}x {mib:23.2f}")


if __name__ == "__main__":
    main()
