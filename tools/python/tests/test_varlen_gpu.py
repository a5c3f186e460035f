"""GPU tests of packed sequences (cu_seqlens) through tfla.torch: outputs, last states and every
gradient (q, k, v, i, f, c_initial) against the float64 reference run sequence by sequence, and
against tfla's own unpacked calls; the FLA layout (1, T, NH, D) through transposed views; the
backend module with packed documents; argument errors that name the bad offset."""

import random

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)

import tfla  # noqa: E402

try:
    tfla.library_path()
except tfla.TflaLibraryNotFoundError as e:  # pragma: no cover
    pytest.skip(f"libtfla not found: {e}", allow_module_level=True)

from tfla.torch import mlstm_chunkwise  # noqa: E402
from tfla.torch.backend_module import mLSTMBackend, mLSTMBackendConfig  # noqa: E402
from tfla.torch.reference import mlstm_recurrent_reference  # noqa: E402

from test_gpu import TOL_BWD, TOL_FWD, df_conditioned, poison, rel  # noqa: E402

pytestmark = pytest.mark.gpu
DEV = "cuda"


def packed_inputs(lens, NH, Dqk, Dv, dtype, seed, fla_layout=False):
    g = torch.Generator(device=DEV).manual_seed(seed)
    T = sum(lens)
    if fla_layout:  # (1, T, NH, D) tensors viewed as (1, NH, T, D)
        q = torch.randn(1, T, NH, Dqk, device=DEV, generator=g).to(dtype).transpose(1, 2)
        k = torch.randn(1, T, NH, Dqk, device=DEV, generator=g).to(dtype).transpose(1, 2)
        v = torch.randn(1, T, NH, Dv, device=DEV, generator=g).to(dtype).transpose(1, 2)
        i = torch.randn(1, T, NH, device=DEV, generator=g).transpose(1, 2)
        f = (3 + torch.randn(1, T, NH, device=DEV, generator=g)).transpose(1, 2)
    else:
        q = torch.randn(1, NH, T, Dqk, device=DEV, generator=g).to(dtype)
        k = torch.randn(1, NH, T, Dqk, device=DEV, generator=g).to(dtype)
        v = torch.randn(1, NH, T, Dv, device=DEV, generator=g).to(dtype)
        i = torch.randn(1, NH, T, device=DEV, generator=g)
        f = 3 + torch.randn(1, NH, T, device=DEV, generator=g)
    N = len(lens)
    C = torch.randn(N, NH, Dqk, Dv, device=DEV, generator=g)
    n = torch.randn(N, NH, Dqk, device=DEV, generator=g)
    m = 2 * torch.randn(N, NH, 1, device=DEV, generator=g)
    return [q, k, v, i, f], [C, n, m]


CASES = [
    # variant, dtype, lengths, NH, Dqk, Dv, initial states, offsets dtype, max_seqlen given, FLA layout
    ("exp", torch.bfloat16, [37, 0, 1, 64, 65, 200, 3], 2, 64, 64, True, torch.int32, False, False),
    ("sig", torch.bfloat16, [100, 1, 0, 130], 2, 64, 128, True, torch.int64, True, False),
    ("exp", torch.float32, [50, 9, 128], 1, 32, 32, False, torch.int32, True, True),
    ("sig", torch.float16, [257, 3], 2, 128, 64, True, torch.int32, False, True),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{str(c[1])[6:]}-n{len(c[2])}-init{int(c[6])}-fla{int(c[9])}")
@pytest.mark.parametrize("recompute", [None, True], ids=["saved", "recompute"])
def test_packed_forward_backward_match_the_reference_per_sequence(case, recompute):
    variant, dtype, lens, NH, Dqk, Dv, init, cu_dtype, give_max, fla = case
    seed = random.randrange(1 << 30)
    ins, states = packed_inputs(lens, NH, Dqk, Dv, dtype, seed, fla)
    cu = torch.tensor([0] + [sum(lens[:j + 1]) for j in range(len(lens))], dtype=cu_dtype, device=DEV)
    leaves = [x.detach().clone().requires_grad_(True) for x in ins]
    c0 = states[0].clone().requires_grad_(True) if init else None
    n0, m0 = (states[1], states[2]) if init else (None, None)
    poison()
    h, st = mlstm_chunkwise(*leaves, c0, n0, m0, return_last_states=True, variant=variant,
                            cu_seqlens=cu, max_seqlen=max(lens) if give_max else None, chunk_size=None,
                            recompute_states_in_bw=recompute)
    g = torch.Generator(device=DEV).manual_seed(seed + 5)
    dh = torch.randn(h.shape, device=DEV, generator=g).to(dtype)
    dC = torch.randn(st[0].shape, device=DEV, generator=g)
    torch.autograd.backward([h, st[0]], [dh, dC])

    tol_f, tol_b = TOL_FWD[dtype], TOL_BWD[dtype]
    t0 = 0
    for j, L in enumerate(lens):
        t1 = t0 + L
        C_ref_init = states[0][j:j + 1] if init else None
        if L == 0:  # nothing runs: the last state is the initial one, its gradient passes through
            want = C_ref_init if init else torch.zeros_like(st[0][j:j + 1])
            assert rel(st[0][j:j + 1], want) == 0.0, f"seed {seed}: empty sequence {j}"
            if init:
                assert rel(c0.grad[j:j + 1], dC[j:j + 1]) == 0.0, f"seed {seed}: empty sequence {j}"
            continue
        ref_in = [x.detach()[:, :, t0:t1].double().requires_grad_(True) for x in ins]
        ref_states = None
        if init:
            ref_states = [states[0][j:j + 1].double().requires_grad_(True), states[1][j:j + 1], states[2][j:j + 1]]
        hr, (Cr, nr, mr) = mlstm_recurrent_reference(*ref_in, *(ref_states or (None, None, None)), variant=variant)
        torch.autograd.backward([hr, Cr], [dh[:, :, t0:t1].double(), dC[j:j + 1].double()])
        what = f"seed {seed}, sequence {j} (length {L})"
        assert rel(h[:, :, t0:t1], hr) < tol_f, what
        assert rel(st[0][j:j + 1], Cr) < tol_f, what
        assert rel(st[1][j:j + 1], nr) < tol_f, what
        for name, a, b in (("dq", leaves[0], ref_in[0]), ("dk", leaves[1], ref_in[1]), ("dv", leaves[2], ref_in[2])):
            assert rel(a.grad[:, :, t0:t1], b.grad) < tol_b, f"{what}: {name}"
        assert rel(leaves[3].grad[:, :, t0:t1], ref_in[3].grad) < tol_b, f"{what}: di"
        assert df_conditioned(leaves[4].grad[:, :, t0:t1], ref_in[4].grad, ref_in[0].detach(), ref_in[1].detach(),
                              ref_in[0].grad, ref_in[1].grad, ref_in[4].detach()) < tol_b, f"{what}: df"
        if init:
            assert rel(c0.grad[j:j + 1], ref_states[0].grad) < tol_b, f"{what}: dC0"
        t0 = t1


def test_packed_equals_unpacked_calls_and_the_backend_module():
    lens = [90, 1, 200, 33]
    ins, states = packed_inputs(lens, 2, 64, 64, torch.bfloat16, 7)
    cu = [0, 90, 91, 291, 324]
    cfg = "chunk=64,engine=0,parallel=0"
    with torch.no_grad():
        h, (C, n, m) = mlstm_chunkwise(*ins, *states, return_last_states=True, cu_seqlens=cu, config=cfg)
        for j in range(len(lens)):
            a, b = cu[j], cu[j + 1]
            hj, (Cj, nj, mj) = mlstm_chunkwise(*(x[:, :, a:b] for x in ins), *(s[j:j + 1] for s in states),
                                               return_last_states=True, config=cfg + ",st_seg=1")
            assert torch.equal(h[:, :, a:b], hj)
            assert torch.equal(C[j:j + 1], Cj) and torch.equal(m[j:j + 1], mj)
    backend = mLSTMBackend(mLSTMBackendConfig(chunkwise_kernel="chunkwise--triton_xl_chunk", mode="train",
                                              config=cfg))
    hb, (Cb, nb, mb) = backend(*ins, cu_seqlens=torch.tensor(cu, device=DEV, dtype=torch.int32), c_initial=states[0],
                               n_initial=states[1], m_initial=states[2])  # return_last_states: the config's True
    assert torch.equal(hb, h) and torch.equal(Cb, C) and torch.equal(mb, m)


@pytest.mark.parametrize("recompute", [None, True], ids=["saved", "recompute"])
def test_packed_call_under_torch_compile_equals_eager(recompute):
    """torch.compile(fullgraph=True) of a packed call (cu_seqlens on the GPU, max_seqlen given):
    the custom ops tfla::mlstm_fwd_varlen / mlstm_bwd_varlen, outputs, last states and every
    gradient equal to the eager call's, bit for bit (the same kernels)."""
    lens = [300, 1, 0, 129, 77]
    cu = torch.tensor([0, 300, 301, 301, 430, 507], device=DEV, dtype=torch.int32)

    def run(fn):
        ins, states = packed_inputs(lens, 2, 128, 128, torch.bfloat16, 11)
        for x in ins + states[:1]:
            x.requires_grad_(True)
        h, (C, n, m) = fn(*ins, *states, cu)
        (h.float().square().sum() + C.square().sum()).backward()
        return [h, C, n, m] + [x.grad for x in ins + states[:1]]

    def call(q, k, v, i, f, C0, n0, m0, cu):
        return mlstm_chunkwise(q, k, v, i, f, C0, n0, m0, return_last_states=True, cu_seqlens=cu,
                               max_seqlen=300, recompute_states_in_bw=recompute)

    torch._dynamo.reset()
    eager = run(call)
    compiled = run(torch.compile(call, fullgraph=True))
    for a, b in zip(eager, compiled):
        assert torch.equal(a, b)


def test_packed_argument_errors_name_the_problem():
    ins, _ = packed_inputs([10, 20], 1, 32, 32, torch.bfloat16, 3)
    with pytest.raises(tfla.TflaArgumentError, match=r"cu_seqlens\[N\] = 25 is not the packed token count T = 30"):
        mlstm_chunkwise(*ins, cu_seqlens=[0, 10, 25])
    with pytest.raises(tfla.TflaArgumentError, match=r"cu_seqlens\[2\] = 5 is below cu_seqlens\[1\] = 12"):
        mlstm_chunkwise(*ins, cu_seqlens=torch.tensor([0, 12, 5, 30], device=DEV))
    with pytest.raises(tfla.TflaArgumentError, match="max_seqlen = 15 is below the longest sequence"):
        mlstm_chunkwise(*ins, cu_seqlens=[0, 10, 30], max_seqlen=15)
    with pytest.raises(tfla.TflaArgumentError, match="offsets are int32 or int64"):
        mlstm_chunkwise(*ins, cu_seqlens=torch.tensor([0.0, 10.0, 30.0], device=DEV))
    with pytest.raises(tfla.TflaArgumentError, match="packed sequences take B = 1"):
        mlstm_chunkwise(*(torch.cat([x, x]) for x in ins), cu_seqlens=[0, 10, 30])
    with pytest.raises(tfla.TflaArgumentError, match=r"c_initial has shape \(1, 1, 32, 32\); expected \(2, 1, 32, 32\)"):
        mlstm_chunkwise(*ins, torch.zeros(1, 1, 32, 32, device=DEV), cu_seqlens=[0, 10, 30])
    with pytest.raises(tfla.TflaArgumentError, match="max_seqlen is given without cu_seqlens"):
        mlstm_chunkwise(*ins, max_seqlen=30)
    with pytest.raises(tfla.TflaArgumentError, match="st_seg=4 is not available"):
        mlstm_chunkwise(*ins, cu_seqlens=[0, 10, 30], config="st_seg=4")
