"""GPU tests of tfla.torch against the float64 reference (tfla.torch.reference), through torch.

Fresh random inputs every run (the seed is printed on failure; TFLA_TEST_SEED=N replays it); outputs come from torch's
allocator after it was filled with NaN (poison), so an element the kernels never wrote fails.
Relative Frobenius errors: bf16/fp16 inputs < 2e-2, fp32 < 1e-4 (forward) and 2e-4 (gradients);
df under the conditioned measure of src/reference (a reverse cumulative sum of differences).
"""

import math
import os
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

from tfla.torch import (mlstm_chunkwise, mlstm_chunkwise__xl_chunk, mlstm_recurrent_step,  # noqa: E402
                        mlstm_siging_chunkwise__xl_chunk)
from tfla.torch.backend_module import mLSTMBackend, mLSTMBackendConfig  # noqa: E402
from tfla.torch.reference import mlstm_recurrent_reference  # noqa: E402

pytestmark = pytest.mark.gpu
DEV = "cuda"
TOL_FWD = {torch.bfloat16: 2e-2, torch.float16: 2e-2, torch.float32: 1e-4}
TOL_BWD = {torch.bfloat16: 2e-2, torch.float16: 2e-2, torch.float32: 2e-4}


def rel(out, ref):
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    if not torch.isfinite(out).all() or not torch.isfinite(ref).all():
        return math.inf
    den = ref.norm()
    return float((out - ref).norm() / den) if den > 0 else float(out.norm())


def df_conditioned(df, ref_df, q, k, dq_ref, dk_ref, f, last=None):
    """|df - ref|_F / |scale|_F, scale_t = sigmoid(-f_t) (sum_{u>=t} (|q_u.dq_u| + |k_u.dk_u|) + s):
    the terms df_t sums (d log f_t = the sum over u >= t of q_u.dq_u - k_u.dk_u, plus <C_S, dC_S>
    where the loss takes the last state, which every f_t decays), so where they cancel (few
    tokens) the error is judged against their size. last: ((C_S, dC_S), ...) of the reference,
    s = the sum of |<X, dX>| per head (0 where the loss does not take the last states)."""
    df, ref_df = df.detach().double().cpu(), ref_df.detach().double().cpu()
    if not torch.isfinite(df).all():
        return math.inf
    terms = ((q.double() * dq_ref).sum(-1).abs() + (k.double() * dk_ref).sum(-1).abs()).cpu()
    cum = terms.flip(-1).cumsum(-1).flip(-1)
    for x, dx in last or ():
        if x is not None and dx is not None:
            dims = tuple(range(2, x.dim()))
            cum = cum + (x.detach().double() * dx.detach().double()).sum(dims).abs().cpu().unsqueeze(-1)
    scale = torch.sigmoid(-f.double().cpu()) * cum
    return float((df - ref_df).norm() / scale.norm())


def df_elementwise(df, ref_df, q, k, dq_ref, dk_ref, f, last=None):
    """df_conditioned with each dot product's terms in absolute value (sum_e |q_e dq_e| +
    |k_e dk_e|, |C_S * dC_S| summed): where a token's q.dq or k.dk cancels within itself (one token,
    S = 1, where k.dk was 0.15 against terms summing to 226 in absolute value), the error against
    the size of the products df is made of. About sqrt(Dqk) times smaller than df_conditioned
    otherwise: held to a quarter of the tolerance, as di_conditioned."""
    df, ref_df = df.detach().double().cpu(), ref_df.detach().double().cpu()
    if not torch.isfinite(df).all():
        return math.inf
    terms = ((q.double() * dq_ref).abs().sum(-1) + (k.double() * dk_ref).abs().sum(-1)).cpu()
    cum = terms.flip(-1).cumsum(-1).flip(-1)
    for x, dx in last or ():
        dims = tuple(range(2, x.dim()))
        cum = cum + (x.detach().double() * dx.detach().double()).abs().sum(dims).cpu().unsqueeze(-1)
    return float((df - ref_df).norm() / (torch.sigmoid(-f.double().cpu()) * cum).norm())


def di_conditioned(di, ref_di, k, dk_ref, i, variant):
    """|di - ref|_F / |scale|_F, scale_t = g_t sum_e |k_te dk_te|: di_t is the dot product
    g_t k_t . dk_t (g = 1 for mLSTMexp, sigmoid(-i_t) for mLSTMsig), so this is its error against
    the size of its terms, where a plain relative error blows up if they cancel (one token). About
    sqrt(Dqk) times smaller than the plain error otherwise: the tests hold it to a quarter of the
    tolerance."""
    di, ref_di = di.detach().double().cpu(), ref_di.detach().double().cpu()
    if not torch.isfinite(di).all():
        return math.inf
    scale = (k.double() * dk_ref).abs().sum(-1).cpu()
    if variant == "sig":
        scale = scale * torch.sigmoid(-i.double().cpu())
    return float((di - ref_di).norm() / scale.norm())


def poison():
    """Fill the allocator's cached blocks with NaN, so fresh outputs start poisoned."""
    torch.cuda.synchronize()
    blocks = []
    for mib in (64, 16, 4, 1):
        for _ in range(4):
            blocks.append(torch.full((mib << 18,), float("nan"), device=DEV))  # mib MiB of fp32
    del blocks  # back to the cache, NaN-filled


def make_inputs(B, NH, S, Dqk, Dv, dtype, gate_dtype=torch.float32, seed=None, strided=False):
    # a fresh seed per call, or TFLA_TEST_SEED (the seed= of a failure's message) to replay one
    if seed is None:
        seed = int(os.environ["TFLA_TEST_SEED"]) if os.environ.get("TFLA_TEST_SEED") else random.randrange(1 << 30)
    g = torch.Generator(device=DEV).manual_seed(seed)
    if strided:  # the xLSTM layout: (B, S, NH, D) projections viewed as (B, NH, S, D)
        q = torch.randn(B, S, NH, Dqk, device=DEV, generator=g).to(dtype).transpose(1, 2)
        k = torch.randn(B, S, NH, Dqk, device=DEV, generator=g).to(dtype).transpose(1, 2)
        v = torch.randn(B, S, NH, Dv, device=DEV, generator=g).to(dtype).transpose(1, 2)
        i = torch.randn(B, S, NH, device=DEV, generator=g).to(gate_dtype).transpose(1, 2)
        f = (3 + torch.randn(B, S, NH, device=DEV, generator=g)).to(gate_dtype).transpose(1, 2)
    else:
        q = torch.randn(B, NH, S, Dqk, device=DEV, generator=g).to(dtype)
        k = torch.randn(B, NH, S, Dqk, device=DEV, generator=g).to(dtype)
        v = torch.randn(B, NH, S, Dv, device=DEV, generator=g).to(dtype)
        i = torch.randn(B, NH, S, device=DEV, generator=g).to(gate_dtype)
        f = (3 + torch.randn(B, NH, S, device=DEV, generator=g)).to(gate_dtype)
    return seed, [q, k, v, i, f]


def make_states(B, NH, Dqk, Dv, variant, seed):
    g = torch.Generator(device=DEV).manual_seed(seed + 1)
    C = torch.randn(B, NH, Dqk, Dv, device=DEV, generator=g)
    n = torch.randn(B, NH, Dqk, device=DEV, generator=g)
    m = 2 * torch.randn(B, NH, 1, device=DEV, generator=g) if variant == "exp" else torch.zeros(B, NH, 1, device=DEV)
    return [C, n, m]


CASES = [
    # variant, normalize, dtype, (B, NH, S, Dqk, Dv), chunk_size, initial states, last states
    ("exp", True, torch.bfloat16, (2, 2, 100, 64, 48), 64, False, False),
    ("exp", True, torch.bfloat16, (1, 3, 20, 32, 64), 128, True, True),      # S < chunk
    ("exp", True, torch.float32, (2, 1, 130, 64, 64), 64, True, True),       # S % chunk != 0
    ("exp", True, torch.float16, (1, 2, 64, 16, 32), None, False, True),     # tfla's choice
    ("exp", True, torch.bfloat16, (1, 1, 1, 64, 64), 128, True, True),       # S = 1
    ("sig", True, torch.bfloat16, (2, 2, 96, 64, 32), 32, True, True),
    ("sig", False, torch.float32, (1, 2, 70, 32, 32), 64, False, True),
    ("sig", True, torch.bfloat16, (1, 1, 256, 128, 128), None, False, False),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-norm{int(c[1])}-{str(c[2])[6:]}-{'x'.join(map(str, c[3]))}-chunk{c[4]}-init{int(c[5])}-last{int(c[6])}")
@pytest.mark.parametrize("recompute", [None, True], ids=["saved", "recompute"])
def test_forward_backward_match_float64_reference(case, recompute):
    variant, normalize, dtype, (B, NH, S, Dqk, Dv), chunk, initial, last = case
    seed, x = make_inputs(B, NH, S, Dqk, Dv, dtype, strided=(S % 2 == 0))
    states = make_states(B, NH, Dqk, Dv, variant, seed) if initial else [None, None, None]
    if variant == "sig":
        states[2] = None
    leaves = [t.detach().clone().requires_grad_() for t in x]
    st_leaves = [s.detach().clone().requires_grad_() if s is not None else None for s in states]
    poison()
    out = mlstm_chunkwise(*leaves, *st_leaves, return_last_states=last, chunk_size=chunk,
                          variant=variant, normalize=normalize, recompute_states_in_bw=recompute)
    h, last_states = (out if last else (out, None))
    g = torch.Generator(device=DEV).manual_seed(seed + 2)
    W = torch.randn(h.shape, device=DEV, generator=g).to(dtype)
    loss = (h.float() * W.float()).sum()
    if last:
        Wc = torch.randn(last_states[0].shape, device=DEV, generator=g)
        loss = loss + (last_states[0] * Wc).sum()
    poison()
    loss.backward()

    ref_in = [t.detach().double().requires_grad_() for t in x]
    ref_st = [s.detach().double().requires_grad_() if s is not None else None for s in states]
    h_ref, (C_ref, n_ref, m_ref) = mlstm_recurrent_reference(*ref_in, *ref_st, variant=variant,
                                                             normalize=normalize)
    ref_loss = (h_ref * W.double()).sum()
    if last:
        ref_loss = ref_loss + (C_ref * Wc.double()).sum()
    ref_loss.backward()

    tag = f"seed={seed}"
    tf, tb = TOL_FWD[dtype], TOL_BWD[dtype]
    assert h.dtype == dtype and h.shape == (B, NH, S, Dv)
    assert rel(h, h_ref) < tf, f"h {rel(h, h_ref):.3g} {tag}"
    if last:
        assert rel(last_states[0], C_ref) < tf, f"C_last {tag}"
        assert rel(last_states[1], n_ref) < tf, f"n_last {tag}"
        if variant == "exp":
            assert last_states[2].shape == (B, NH, 1)
            assert rel(last_states[2], m_ref) < 1e-5, f"m_last {tag}"
        else:
            assert len(last_states) == 2
    for name, a, r in zip("qkv", leaves[:3], ref_in[:3]):
        assert a.grad is not None and a.grad.dtype == a.dtype and a.grad.shape == a.shape
        assert rel(a.grad, r.grad) < tb, f"d{name} {rel(a.grad, r.grad):.3g} {tag}"
    di = leaves[3].grad
    assert di is not None and di.dtype == leaves[3].dtype and di.shape == leaves[3].shape
    # relative error, or where di's terms cancel (a plain relative error of a few numbers) its
    # error against the size of those terms, at a quarter of the tolerance
    e_i, e_ic = rel(di, ref_in[3].grad), di_conditioned(di, ref_in[3].grad, ref_in[1].detach(), ref_in[1].grad,
                                                         x[3], variant)
    assert e_i < tb or e_ic < tb / 4, f"di {e_i:.3g} (against its terms {e_ic:.3g}) {tag}"
    df_args = (leaves[4].grad, ref_in[4].grad, ref_in[0].detach(), ref_in[1].detach(), ref_in[0].grad,
               ref_in[1].grad, x[4], ((C_ref, Wc),) if last else None)
    e_f, e_fe = df_conditioned(*df_args), df_elementwise(*df_args)
    assert e_f < tb or e_fe < tb / 4, f"df {e_f:.3g} (against its products {e_fe:.3g}) {tag}"
    if initial:
        assert rel(st_leaves[0].grad, ref_st[0].grad) < tb, f"dC0 {tag}"
        assert torch.count_nonzero(st_leaves[1].grad) == 0  # dn0 = 0, as in the seed


def test_seed_signatures_and_gate_dtypes():
    seed, (q, k, v, i, f) = make_inputs(2, 2, 64, 64, 64, torch.bfloat16, gate_dtype=torch.bfloat16)
    h = mlstm_chunkwise__xl_chunk(q, k, v, i, f)
    h_ref, _ = mlstm_recurrent_reference(q, k, v, i, f)
    assert rel(h, h_ref) < 2e-2, f"seed={seed}"
    h, (C, n) = mlstm_siging_chunkwise__xl_chunk(q, k, v, i, f, return_last_states=True, normalize=False)
    h_ref, (C_ref, _, _) = mlstm_recurrent_reference(q, k, v, i, f, variant="sig", normalize=False)
    assert rel(h, h_ref) < 2e-2 and rel(C, C_ref) < 2e-2, f"seed={seed}"
    with pytest.warns(UserWarning, match="siz_b_L_loop"):
        mlstm_chunkwise__xl_chunk(q, k, v, i, f, siz_b_L_loop=64)


def test_prefill_then_steps_equal_the_whole_sequence():
    B, NH, S, T, Dqk, Dv = 2, 2, 50, 6, 64, 32
    seed, x = make_inputs(B, NH, S + T, Dqk, Dv, torch.float32)
    q, k, v, i, f = x
    h_ref, (C_ref, n_ref, m_ref) = mlstm_recurrent_reference(q, k, v, i, f)
    h0, (C, n, m) = mlstm_chunkwise(q[:, :, :S], k[:, :, :S], v[:, :, :S], i[:, :, :S], f[:, :, :S],
                                    return_last_states=True, chunk_size=32)
    hs = []
    C_passed, C_start = C, C.clone()
    for t in range(S, S + T - 2):  # one token at a time: (B, NH, D) and (B, NH, 1) gates
        h, (C, n, m) = mlstm_recurrent_step(q[:, :, t], k[:, :, t], v[:, :, t], i[:, :, t, None],
                                            f[:, :, t, None], C, n, m)
        hs.append(h[:, :, None])
    assert torch.equal(C_passed, C_start)  # the default copies: the caller's states are untouched
    C_before = C.clone()
    h2, (C2, n2, m2) = mlstm_recurrent_step(q[:, :, -2:], k[:, :, -2:], v[:, :, -2:], i[:, :, -2:],
                                            f[:, :, -2:], C, n, m, inplace=True)  # fused 2 tokens
    assert C2.data_ptr() == C.data_ptr() and not torch.equal(C_before, C)
    h_all = torch.cat([h0] + hs + [h2], dim=2)
    assert rel(h_all, h_ref) < 1e-4, f"seed={seed}"
    assert rel(C2, C_ref) < 1e-4 and rel(n2, n_ref) < 1e-4 and rel(m2, m_ref) < 1e-6, f"seed={seed}"


@pytest.mark.parametrize("variant", ["exp", "sig"])
def test_step_into_new_states_equals_the_step_in_place(variant):
    """The default (new tensors), c_new/n_new/m_new apart from the inputs and the backend module
    without inference_states_inplace all read c, n, m and write elsewhere: the same bits as the
    step in place, the inputs untouched."""
    B, NH, T, Dqk, Dv = 2, 3, 3, 64, 128
    seed, (q, k, v, i, f) = make_inputs(B, NH, T, Dqk, Dv, torch.bfloat16)
    g = torch.Generator(device="cpu").manual_seed(seed)
    C = torch.randn(B, NH, Dqk, Dv, generator=g).to(DEV)
    n = torch.randn(B, NH, Dqk, generator=g).to(DEV)
    m = (torch.randn(B, NH, 1, generator=g) if variant == "exp" else torch.zeros(B, NH, 1)).to(DEV)
    C0, n0, m0 = C.clone(), n.clone(), m.clone()
    kw = dict(variant=variant)
    h_in, (C_in, n_in, m_in) = mlstm_recurrent_step(q, k, v, i, f, C0.clone(), n0.clone(), m0.clone(),
                                                    inplace=True, **kw)
    h_new, (C_new, n_new, m_new) = mlstm_recurrent_step(q, k, v, i, f, C, n, m, **kw)
    assert C_new.data_ptr() != C.data_ptr() and n_new.data_ptr() != n.data_ptr()
    bufs = (torch.full_like(C, float("nan")), torch.full_like(n, float("nan")), torch.full_like(m, float("nan")))
    h_buf, (C_buf, n_buf, m_buf) = mlstm_recurrent_step(q, k, v, i, f, C, n, m, c_new=bufs[0], n_new=bufs[1],
                                                        m_new=bufs[2], **kw)
    assert C_buf is bufs[0]
    for got in ((h_new, C_new, n_new, m_new), (h_buf, C_buf, n_buf, m_buf)):
        for a, b in zip(got, (h_in, C_in, n_in, m_in)):
            assert torch.equal(a, b), f"seed={seed}"
    assert torch.equal(C, C0) and torch.equal(n, n0) and torch.equal(m, m0)
    with pytest.raises(tfla.TflaArgumentError, match="C_src overlaps C"):
        part = torch.empty(B * NH * Dqk * Dv + 4, device=DEV)
        part[4:].copy_(C.flatten())
        mlstm_recurrent_step(q, k, v, i, f, part[4:].view_as(C), n, m, c_new=part[:-4].view_as(C), **kw)
    h_ref, (C_ref, n_ref, _) = mlstm_recurrent_reference(q, k, v, i, f, C0, n0, m0, variant=variant)
    assert rel(h_new, h_ref) < 2e-2 and rel(C_new, C_ref) < 1e-4 and rel(n_new, n_ref) < 1e-4, f"seed={seed}"
    # the backend module in inference mode, new states (no inference_states_inplace)
    kernel = "chunkwise--triton_xl_chunk" + ("_siging" if variant == "sig" else "")
    inf = mLSTMBackend(mLSTMBackendConfig(chunkwise_kernel=kernel, mode="inference"))
    h_b, (C_b, n_b, m_b) = inf(q, k, v, i, f, C, n, m)
    for a, b in zip((h_b, C_b, n_b, m_b), (h_in, C_in, n_in, m_in)):
        assert torch.equal(a, b), f"seed={seed}"
    assert torch.equal(C, C0) and torch.equal(n, n0) and torch.equal(m, m0)


def test_backend_module_train_and_inference():
    B, NH, S, Dqk, Dv = 1, 2, 40, 64, 64
    seed, x = make_inputs(B, NH, S, Dqk, Dv, torch.bfloat16)
    cfg = mLSTMBackendConfig(chunkwise_kernel="chunkwise--triton_xl_chunk", mode="train",
                             chunk_size=64, return_last_states=True)
    backend = mLSTMBackend(cfg)
    h, (C, n, m) = backend(*x)
    h_ref, (C_ref, _, _) = mlstm_recurrent_reference(*x)
    assert rel(h, h_ref) < 2e-2 and rel(C, C_ref) < 2e-2, f"seed={seed}"
    inf = mLSTMBackend(mLSTMBackendConfig(chunkwise_kernel="chunkwise--triton_xl_chunk_siging",
                                          mode="inference", chunk_size=64))
    for s in (5, S):  # 5 tokens: the fused step kernel; 40: chunkwise
        xs = [t[:, :, :s] for t in x]
        h, (C, n, m) = inf(*xs)
        h_ref, (C_ref, n_ref, _) = mlstm_recurrent_reference(*xs, variant="sig")
        assert rel(h, h_ref) < 2e-2 and rel(C, C_ref) < 2e-2 and rel(n, n_ref) < 2e-2, f"s={s} seed={seed}"
        assert m.shape == (B, NH, 1)


def test_python_errors_on_real_tensors():
    _, (q, k, v, i, f) = make_inputs(1, 1, 64, 64, 64, torch.bfloat16)  # S = Dqk: a transpose keeps the shape
    with pytest.raises(tfla.TflaArgumentError, match="q is on cpu"):
        mlstm_chunkwise__xl_chunk(q.cpu(), k, v, i, f)
    with pytest.raises(tfla.TflaArgumentError, match="q has dtype float64"):
        mlstm_chunkwise__xl_chunk(q.double(), k.double(), v.double(), i, f)
    with pytest.raises(tfla.TflaArgumentError, match="last dimension must be contiguous"):
        mlstm_chunkwise__xl_chunk(q.transpose(2, 3), k, v, i, f)
    with pytest.raises(tfla.TflaArgumentError, match="Dqk = 24 is unsupported"):
        mlstm_chunkwise__xl_chunk(q[..., :24], k[..., :24], v, i, f)
    with pytest.raises(tfla.TflaArgumentError, match="c_initial has dtype bfloat16"):
        mlstm_chunkwise__xl_chunk(q, k, v, i, f, c_initial=torch.zeros(1, 1, 64, 64, device=DEV, dtype=torch.bfloat16))


def test_autocast_stream_and_memory_accounting():
    _, (q, k, v, i, f) = make_inputs(2, 2, 256, 64, 64, torch.float32)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        h = mlstm_chunkwise__xl_chunk(q, k, v, i, f, autocast_kernel_dtype=torch.bfloat16)
    assert h.dtype == torch.bfloat16
    h_ref, _ = mlstm_recurrent_reference(q.bfloat16(), k.bfloat16(), v.bfloat16(), i, f)
    assert rel(h, h_ref) < 2e-2
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        h2 = mlstm_chunkwise__xl_chunk(q.bfloat16(), k.bfloat16(), v.bfloat16(), i, f)
    s.synchronize()
    assert rel(h2, h) < 1e-3
    # workspaces come from torch's allocator: the peak grows by at least the reported workspace
    p = tfla.problem(2, 2, 256, 64, 64, dtype="bfloat16")
    ws = tfla.forward_workspace_size(p, "chunk=64")
    qb, kb, vb = q.bfloat16(), k.bfloat16(), v.bfloat16()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    mlstm_chunkwise(qb, kb, vb, i, f, chunk_size=64)  # pinned: the workspace of "chunk=64"
    torch.cuda.synchronize()
    assert torch.cuda.max_memory_allocated() - base >= ws


def test_kernel_config_lookup_matches_what_runs():
    p = tfla.problem(8, 8, 8192, 256, 512)
    assert tfla.forward_config(p, {"chunk": 256})["chunk"] == 256
    assert tfla.step_config(tfla.problem(8, 8, 1, 256, 512))  # non-empty
