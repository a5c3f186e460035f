"""Context parallelism (tfla.torch.cp) on two GPUs over NCCL with tfla's kernels: each rank's
shard of one sequence (bf16), against the float64 reference of the whole sequence: h, every
gradient, the initial state's gradient and the last state, both variants, shards that are not
a multiple of the chunk. Skipped without two CUDA GPUs, NCCL and libtfla."""
import os
import tempfile

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
pytestmark = pytest.mark.gpu
if not torch.cuda.is_available() or torch.cuda.device_count() < 2 or not dist.is_nccl_available():
    pytest.skip("needs two CUDA GPUs and NCCL", allow_module_level=True)

import torch.multiprocessing as mp  # noqa: E402

import cp_worker  # noqa: E402
from test_cp_cpu import whole, rel  # noqa: E402


@pytest.mark.parametrize("variant", ["exp", "sig"])
def test_two_gpus_match_the_whole_sequence(variant):
    case = dict(lens=[300, 213], variant=variant, init=True, B=1, NH=2, Dqk=64, Dv=128, seed=11)
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(cp_worker.gpu_rank_main, args=(2, case, out), nprocs=2, join=True)
        ranks = [torch.load(os.path.join(out, f"rank{r}.pt")) for r in range(2)]
    ref = whole(case)
    for key, tol in (("h", 1e-2), ("dq", 2e-2), ("dk", 2e-2), ("dv", 2e-2), ("di", 2e-2), ("df", 5e-2)):
        got = torch.cat([r[key] for r in ranks], dim=2)
        assert rel(got, ref[key]) < tol, key
    assert rel(ranks[1]["C_last"], ref["C_last"]) < 1e-2
    assert rel(ranks[0]["dC0"], ref["dC0"]) < 2e-2
