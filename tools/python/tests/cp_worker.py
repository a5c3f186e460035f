"""A rank of the CPU context-parallel tests (test_cp_cpu.py): torch.distributed over gloo, the
float64 reference as the kernels."""
import os

import torch
import torch.distributed as dist


def reference_kernel(variant, normalize):
    from tfla.torch.reference import mlstm_recurrent_reference

    def run(q, k, v, i, f, c0, n0, m0):
        B, NH = q.shape[:2]
        h, (C, n, m) = mlstm_recurrent_reference(q, k, v, i, f, c0, n0, None if m0 is None else m0.reshape(B, NH, 1),
                                                 variant=variant, normalize=normalize)
        return h, C, n, m.reshape(B, NH)
    return run


def inputs(case):
    """The whole sequence's inputs, dh, the initial state and the gradient of the last C, float64."""
    g = torch.Generator().manual_seed(case["seed"])
    B, NH, Dqk, Dv = case["B"], case["NH"], case["Dqk"], case["Dv"]
    S = sum(case["lens"])
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
    x = dict(q=r(B, NH, S, Dqk), k=r(B, NH, S, Dqk), v=r(B, NH, S, Dv), i=r(B, NH, S) * case.get("gate", 1.0),
             f=3.0 + r(B, NH, S) * case.get("gate", 1.0), dh=r(B, NH, S, Dv), dC=r(B, NH, Dqk, Dv))
    if case["init"]:
        x.update(C0=r(B, NH, Dqk, Dv) * 0.3, n0=r(B, NH, Dqk).abs() * 0.3, m0=r(B, NH, 1))
    return x


def rank_main(rank, world, case, out_dir):
    """A rank of the CPU test (test_cp_cpu.py): gloo, meeting through a file in out_dir (a port
    probed free could be taken by another process before the ranks bind it)."""
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"file://{os.path.join(out_dir, 'rendezvous')}", rank=rank,
                            world_size=world)
    try:
        from tfla.torch.cp import mlstm_chunkwise_cp
        x = inputs(case)
        lens = case["lens"]
        a, b = sum(lens[:rank]), sum(lens[:rank + 1])
        shard = {n: x[n][:, :, a:b].clone().requires_grad_(n != "dh") for n in ("q", "k", "v", "i", "f", "dh")}
        if case.get("bad_dv") and rank == 1:
            shard["v"] = shard["v"][..., :-1].detach().clone().requires_grad_(True)
        init = {}
        if case["init"] and rank == 0:
            init = dict(c_initial=x["C0"].clone().requires_grad_(True), n_initial=x["n0"], m_initial=x["m0"])
        try:
            h, last = mlstm_chunkwise_cp(shard["q"], shard["k"], shard["v"], shard["i"], shard["f"], **init,
                                         return_last_states=True, variant=case["variant"],
                                         kernel=reference_kernel(case["variant"], True))
        except Exception as e:  # the agreement check: every rank reports
            torch.save({"error": f"{type(e).__name__}: {e}"}, os.path.join(out_dir, f"rank{rank}.pt"))
            return
        with torch.no_grad():  # without gradients: the same h, no graph kept
            h_ng = mlstm_chunkwise_cp(shard["q"], shard["k"], shard["v"], shard["i"], shard["f"], **init,
                                      variant=case["variant"], kernel=reference_kernel(case["variant"], True))
        loss = (h * shard["dh"]).sum()
        if last is not None:
            loss = loss + (last[0] * x["dC"]).sum()
        loss.backward()
        res = {"h": h.detach(), "h_nograd": h_ng, **{"d" + n: shard[n].grad for n in ("q", "k", "v", "i", "f")}}
        if init:
            res["dC0"] = init["c_initial"].grad
        if last is not None:
            res["C_last"] = last[0].detach()
            res["n_last"] = last[1].detach()
        torch.save(res, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def gpu_rank_main(rank, world, case, out_dir):
    """A rank of the two-GPU test (test_cp_gpu.py): NCCL, tfla's kernels, bf16 shards on GPU
    `rank`, meeting through a file in out_dir as the CPU test's ranks do; h and the gradients to
    out_dir."""
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", init_method=f"file://{os.path.join(out_dir, 'rendezvous')}", rank=rank,
                            world_size=world, device_id=torch.device("cuda", rank))
    try:
        from tfla.torch.cp import mlstm_chunkwise_cp
        x = inputs(case)
        lens = case["lens"]
        a, b = sum(lens[:rank]), sum(lens[:rank + 1])
        dev = torch.device("cuda", rank)
        shard = {n: x[n][:, :, a:b].to(dev, torch.bfloat16 if n in ("q", "k", "v", "dh") else torch.float32)
                 .requires_grad_(n != "dh") for n in ("q", "k", "v", "i", "f", "dh")}
        init = {}
        if case["init"] and rank == 0:
            init = dict(c_initial=x["C0"].float().to(dev).requires_grad_(True), n_initial=x["n0"].float().to(dev),
                        m_initial=x["m0"].float().to(dev))
        h, last = mlstm_chunkwise_cp(shard["q"], shard["k"], shard["v"], shard["i"], shard["f"], **init,
                                     return_last_states=True, variant=case["variant"])
        loss = (h.float() * shard["dh"].float()).sum()
        if last is not None:
            loss = loss + (last[0] * x["dC"].float().to(dev)).sum()
        loss.backward()
        res = {"h": h.detach().cpu(), **{"d" + n: shard[n].grad.cpu() for n in ("q", "k", "v", "i", "f")}}
        if init:
            res["dC0"] = init["c_initial"].grad.cpu()
        if last is not None:
            res["C_last"] = last[0].detach().cpu()
        torch.save(res, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()
