"""Context parallelism (tfla.torch.cp) on the CPU: ranks of a gloo process group, each with its
shard of one sequence and the float64 reference as the kernels, against the whole sequence run
in one process: h, every gradient, the initial state's gradient and the last state, for both
variants, uneven shards (down to one token), 2 to 4 ranks, an initial state and a gradient on
the last state; and the error every rank raises when the ranks disagree on Dv."""
import os
import tempfile

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

import torch.multiprocessing as mp  # noqa: E402

import cp_worker  # noqa: E402


def run_ranks(case):
    world = len(case["lens"])
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(cp_worker.rank_main, args=(world, case, out), nprocs=world, join=True)
        return [torch.load(os.path.join(out, f"rank{r}.pt")) for r in range(world)]


def whole(case):
    from tfla.torch.reference import mlstm_recurrent_reference
    x = cp_worker.inputs(case)
    leaves = {n: x[n].clone().requires_grad_(True) for n in ("q", "k", "v", "i", "f")}
    kw = {}
    if case["init"]:
        kw = dict(c_initial=x["C0"].clone().requires_grad_(True), n_initial=x["n0"], m_initial=x["m0"])
    h, (C, n, m) = mlstm_recurrent_reference(*(leaves[n] for n in ("q", "k", "v", "i", "f")), **kw,
                                             variant=case["variant"])
    ((h * x["dh"]).sum() + (C * x["dC"]).sum()).backward()
    out = {"h": h.detach(), **{"d" + n: leaves[n].grad for n in leaves}, "C_last": C.detach(), "n_last": n.detach()}
    if case["init"]:
        out["dC0"] = kw["c_initial"].grad
    return out


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


CASES = [
    dict(lens=[5, 7], variant="exp", init=True),
    dict(lens=[4, 1, 6], variant="sig", init=True),
    dict(lens=[3, 3, 2, 4], variant="exp", init=False, gate=4.0),  # large gates: the stabilizer moves
    dict(lens=[6, 6], variant="sig", init=False),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['variant']}-{'x'.join(map(str, c['lens']))}")
def test_context_parallel_equals_the_whole_sequence(case):
    case = dict(case, B=2, NH=2, Dqk=4, Dv=3, seed=7)
    ranks = run_ranks(case)
    ref = whole(case)
    for key in ("h", "dq", "dk", "dv", "di", "df"):
        got = torch.cat([r[key] for r in ranks], dim=2)
        assert rel(got, ref[key]) < 1e-5, key
    assert rel(ranks[-1]["C_last"], ref["C_last"]) < 1e-5
    assert rel(ranks[-1]["n_last"], ref["n_last"]) < 1e-5
    if case["init"]:
        assert rel(ranks[0]["dC0"], ref["dC0"]) < 1e-5
    assert all("C_last" not in r for r in ranks[:-1])
    assert all(torch.equal(r["h_nograd"], r["h"]) and not r["h_nograd"].requires_grad for r in ranks)


def test_ranks_that_disagree_on_a_dim_are_refused_by_name():
    case = dict(lens=[3, 4], variant="exp", init=False, B=1, NH=2, Dqk=4, Dv=3, seed=1, bad_dv=True)
    ranks = run_ranks(case)
    for r in ranks:
        assert "error" in r and "disagree on Dv" in r["error"] and "rank 1: Dv=2" in r["error"]
