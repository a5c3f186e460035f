"""GPU tests of tfla.jax against the float64 reference (tfla.torch.reference, run by torch on
the CPU): outputs and gradients of mlstm_chunkwise under jax.jit, both variants, bf16, fp16 and
fp32, initial and last states, the backward from saved states and from recomputed ones; the step.
At the paper's and the seed's head dims (the Hopper kernels), tfla.jax against tfla.torch on the
same inputs with the same configs: the same bits.
Fresh random inputs every run (the seed is printed on failure). Tolerances as test_gpu.py's:
relative Frobenius errors < 2e-2 for 16-bit inputs, 1e-4 / 2e-4 (gradients) for float32; df
under the conditioned measure."""

import math
import random

import pytest

jax = pytest.importorskip("jax")
torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")
if jax.default_backend() != "gpu":
    pytest.skip("JAX has no GPU here", allow_module_level=True)

import jax.numpy as jnp  # noqa: E402

import tfla.jax as tj  # noqa: E402
from jaxpr_walk import ffi_calls  # noqa: E402
import tfla.torch as tfla_torch  # noqa: E402
from tfla.torch.reference import mlstm_recurrent_reference  # noqa: E402

pytestmark = pytest.mark.gpu
TOL_FWD = {jnp.bfloat16: 2e-2, jnp.float16: 2e-2, jnp.float32: 1e-4}
TOL_BWD = {jnp.bfloat16: 2e-2, jnp.float16: 2e-2, jnp.float32: 2e-4}


def rel(out, ref):
    out = torch.from_numpy(np.asarray(out, dtype=np.float64))
    ref = ref.detach().double()
    if not torch.isfinite(out).all():
        return math.inf
    den = ref.norm()
    return float((out - ref).norm() / den) if den > 0 else float(out.norm())


def df_conditioned(df, ref_df, q, k, dq_ref, dk_ref, f, last=None):
    """As test_gpu.py's: scale_t = sigmoid(-f_t) (sum_{u>=t} (|q_u.dq_u| + |k_u.dk_u|) + the sum of
    |<X, dX>| over last's (last state, its loss weight) pairs)."""
    df = torch.from_numpy(np.asarray(df, dtype=np.float64))
    cum = ((q * dq_ref).sum(-1).abs() + (k * dk_ref).sum(-1).abs()).flip(-1).cumsum(-1).flip(-1)
    for x, dx in last or ():
        cum = cum + (x.detach() * dx).sum(tuple(range(2, x.dim()))).abs().unsqueeze(-1)
    scale = torch.sigmoid(-f) * cum
    return float((df - ref_df).norm() / scale.norm())


def di_conditioned(di, ref_di, k, dk_ref, i, variant):
    """As test_gpu.py's: di's error against the size of the terms of its dot product
    g_t k_t . dk_t (g = 1 for mLSTMexp, sigmoid(-i_t) for mLSTMsig), for where they cancel; held
    to a quarter of the tolerance."""
    di = torch.from_numpy(np.asarray(di, dtype=np.float64))
    if not torch.isfinite(di).all():
        return math.inf
    scale = (k.double() * dk_ref).abs().sum(-1)
    if variant == "sig":
        scale = scale * torch.sigmoid(-i.double())
    return float((di - ref_di).norm() / scale.norm())


def make(seed, B, NH, S, Dqk, Dv, dtype, states):
    rng = np.random.default_rng(seed)
    arrs = [rng.standard_normal(s).astype(np.float32) for s in
            ((B, NH, S, Dqk), (B, NH, S, Dqk), (B, NH, S, Dv))]
    i = rng.standard_normal((B, NH, S)).astype(np.float32)
    f = (3.0 + rng.standard_normal((B, NH, S))).astype(np.float32)
    x = [jnp.asarray(a, dtype) for a in arrs] + [jnp.asarray(i), jnp.asarray(f)]
    st = None
    if states:
        st = [jnp.asarray(0.1 * rng.standard_normal((B, NH, Dqk, Dv)), jnp.float32),
              jnp.asarray(0.1 * rng.standard_normal((B, NH, Dqk)), jnp.float32),
              jnp.asarray(rng.standard_normal((B, NH, 1)), jnp.float32)]
    return x, st


def as_torch(a, grad=False):
    t = torch.from_numpy(np.asarray(a, dtype=np.float64))
    return t.requires_grad_(grad)


@pytest.mark.parametrize("variant, normalize", [("exp", True), ("sig", True), ("sig", False)])
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
@pytest.mark.parametrize("states, recompute", [(False, None), (True, None), (True, True)])
def test_chunkwise_matches_reference(variant, normalize, dtype, states, recompute):
    seed = random.randrange(1 << 30)
    B, NH, S, Dqk, Dv = 1, 2, 300, 64, 128
    x, st = make(seed, B, NH, S, Dqk, Dv, dtype, states)
    w = jnp.asarray(np.random.default_rng(seed + 1).standard_normal((B, NH, S, Dv)), jnp.float32)
    wC = jnp.asarray(np.random.default_rng(seed + 2).standard_normal((B, NH, Dqk, Dv)), jnp.float32)
    st_args = st if st is not None else [None, None, None]

    def loss(q, k, v, i, f, C0, n0, m0):
        h, last = tj.mlstm_chunkwise(q, k, v, i, f, C0, n0, m0, return_last_states=True, variant=variant,
                                     normalize=normalize, recompute_states_in_bw=recompute)
        return jnp.sum(h.astype(jnp.float32) * w) + jnp.sum(last[0] * wC), (h, last)

    argnums = (0, 1, 2, 3, 4, 5) if states else (0, 1, 2, 3, 4)
    (_, (h, last)), grads = jax.jit(jax.value_and_grad(loss, argnums=argnums, has_aux=True))(*x, *st_args)
    tq, tk, tv, ti, tf = (as_torch(a, True) for a in x)
    tst = [as_torch(a, j == 0) for j, a in enumerate(st)] if states else [None, None, None]
    h_ref, (C_ref, n_ref, m_ref) = mlstm_recurrent_reference(tq, tk, tv, ti, tf, *tst, variant=variant,
                                                             normalize=normalize)
    ((h_ref * as_torch(w)).sum() + (C_ref * as_torch(wC)).sum()).backward()
    tol, gtol = TOL_FWD[dtype], TOL_BWD[dtype]
    msg = f"seed {seed}"
    assert rel(h, h_ref) < tol, msg
    assert rel(last[0], C_ref) < tol, msg
    assert rel(last[1], n_ref) < tol, msg
    if variant == "exp":
        assert rel(last[2], m_ref) < 1e-4, msg
    for name, g, t in zip("qkv", grads[:3], (tq, tk, tv)):
        assert rel(g, t.grad) < gtol, f"d{name}: {msg}"
    assert (rel(grads[3], ti.grad) < gtol
            or di_conditioned(grads[3], ti.grad, tk.detach(), tk.grad, ti.detach(), variant) < gtol / 4), f"di: {msg}"
    assert df_conditioned(grads[4], tf.grad, tq.detach(), tk.detach(), tq.grad, tk.grad, tf.detach(),
                          ((C_ref, as_torch(wC)),)) < gtol, msg
    if states:
        assert rel(grads[5], tst[0].grad) < gtol, f"dC0: {msg}"


@pytest.mark.parametrize("variant", ["exp", "sig"])
@pytest.mark.parametrize("S", [64, 128, 200])
def test_short_stateless_gradients_match_reference(variant, S):
    """Short sequences without states: the backward runs the parallel form where the library
    picks it (and the forward then keeps no chunk states), else the chunkwise form from saved
    states; gradients against the float64 reference."""
    seed = random.randrange(1 << 30)
    B, NH, Dqk, Dv = 2, 2, 64, 128
    x, _ = make(seed, B, NH, S, Dqk, Dv, jnp.bfloat16, False)
    w = jnp.asarray(np.random.default_rng(seed + 1).standard_normal((B, NH, S, Dv)), jnp.float32)

    def loss(q, k, v, i, f):
        return jnp.sum(tj.mlstm_chunkwise(q, k, v, i, f, variant=variant).astype(jnp.float32) * w)

    grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3, 4)))(*x)
    tq, tk, tv, ti, tf = (as_torch(a, True) for a in x)
    h_ref, _ = mlstm_recurrent_reference(tq, tk, tv, ti, tf, variant=variant)
    (h_ref * as_torch(w)).sum().backward()
    msg = f"seed {seed}"
    for name, g, t in zip("qkv", grads[:3], (tq, tk, tv)):
        assert rel(g, t.grad) < TOL_BWD[jnp.bfloat16], f"d{name}: {msg}"
    assert (rel(grads[3], ti.grad) < TOL_BWD[jnp.bfloat16]
            or di_conditioned(grads[3], ti.grad, tk.detach(), tk.grad, ti.detach(), variant)
            < TOL_BWD[jnp.bfloat16] / 4), f"di: {msg}"
    assert df_conditioned(grads[4], tf.grad, tq.detach(), tk.detach(), tq.grad, tk.grad, tf.detach(),
                          ()) < TOL_BWD[jnp.bfloat16], msg


def test_chunkwise_without_last_states_and_eager():
    x, _ = make(7, 2, 2, 130, 128, 64, jnp.bfloat16, False)
    h = tj.mlstm_chunkwise(*x)
    assert h.shape == (2, 2, 130, 64) and h.dtype == jnp.bfloat16
    h_jit = jax.jit(lambda *a: tj.mlstm_chunkwise(*a))(*x)
    assert np.array_equal(np.asarray(h, np.float32), np.asarray(h_jit, np.float32))
    h_ref, _ = mlstm_recurrent_reference(*(as_torch(a) for a in x))
    assert rel(h, h_ref) < 2e-2


@pytest.mark.parametrize("variant", ["exp", "sig"])
@pytest.mark.parametrize("tokens", [1, 5])
def test_step_matches_reference(variant, tokens):
    seed = random.randrange(1 << 30)
    B, NH, Dqk, Dv = 2, 2, 64, 128
    x, st = make(seed, B, NH, tokens, Dqk, Dv, jnp.bfloat16, True)
    if tokens == 1:
        args = [a[:, :, 0] for a in x]
    else:
        args = x
    step = jax.jit(lambda *a: tj.mlstm_recurrent_step(*a, variant=variant))
    h, (C, n, m) = step(*args, *st)
    h_ref, (C_ref, n_ref, m_ref) = mlstm_recurrent_reference(*(as_torch(a) for a in x), *(as_torch(a) for a in st),
                                                             variant=variant)
    if tokens == 1:
        h_ref = h_ref[:, :, 0]
    assert rel(h, h_ref) < 2e-2, f"seed {seed}"
    assert rel(C, C_ref) < 2e-2, f"seed {seed}"
    assert rel(n, n_ref) < 2e-2, f"seed {seed}"
    if variant == "exp":
        assert rel(m, m_ref) < 1e-4, f"seed {seed}"


@pytest.mark.parametrize("variant", ["exp", "sig"])
def test_bshd_layout_matches_reference(variant):
    """layout="bshd": (B, S, NH, D) inputs and h, (B, S, NH) gates, gradients in that layout."""
    seed = random.randrange(1 << 30)
    B, NH, S, Dqk, Dv = 2, 3, 200, 64, 128
    x, _ = make(seed, B, NH, S, Dqk, Dv, jnp.bfloat16, False)
    xs = [jnp.swapaxes(a, 1, 2) for a in x]  # (B, S, NH, ...)
    w = jnp.asarray(np.random.default_rng(seed + 1).standard_normal((B, S, NH, Dv)), jnp.float32)

    def loss(q, k, v, i, f):
        h = tj.mlstm_chunkwise(q, k, v, i, f, variant=variant, layout="bshd")
        return jnp.sum(h.astype(jnp.float32) * w), h

    (_, h), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3, 4), has_aux=True))(*xs)
    tq, tk, tv, ti, tf = (as_torch(a, True) for a in x)
    h_ref, _ = mlstm_recurrent_reference(tq, tk, tv, ti, tf, variant=variant)
    (h_ref * as_torch(jnp.swapaxes(w, 1, 2))).sum().backward()
    msg = f"seed {seed}"
    assert h.shape == (B, S, NH, Dv)
    assert rel(jnp.swapaxes(h, 1, 2), h_ref) < 2e-2, msg
    for name, g, t in zip("qkv", grads[:3], (tq, tk, tv)):
        assert rel(jnp.swapaxes(g, 1, 2), t.grad) < 2e-2, f"d{name}: {msg}"
    di = jnp.swapaxes(grads[3], 1, 2)
    assert (rel(di, ti.grad) < 2e-2
            or di_conditioned(di, ti.grad, tk.detach(), tk.grad, ti.detach(), variant) < 5e-3), f"di: {msg}"
    assert df_conditioned(jnp.swapaxes(grads[4], 1, 2), tf.grad, tq.detach(), tk.detach(), tq.grad, tk.grad,
                          tf.detach()) < 2e-2, msg


@pytest.mark.parametrize("variant", ["exp", "sig"])
@pytest.mark.parametrize("B, NH, S, Dqk, Dv", [(1, 2, 1000, 256, 512), (2, 4, 700, 128, 256)])
def test_same_bits_as_torch_at_large_heads(variant, B, NH, S, Dqk, Dv):
    """The kernels tfla.jax runs are tfla.torch's: with the configs JAX resolved at trace time
    pinned in tfla.torch, h, the last states and every gradient are equal bit for bit."""
    seed = random.randrange(1 << 30)
    x, st = make(seed, B, NH, S, Dqk, Dv, jnp.bfloat16, True)
    w = jnp.asarray(np.random.default_rng(seed + 1).standard_normal((B, NH, S, Dv)), jnp.bfloat16)

    def fwd(*a):
        return tj.mlstm_chunkwise(*a, return_last_states=True, variant=variant)

    configs = {}
    cts = tuple(jnp.zeros_like(s) for s in st[:2 if variant == "sig" else 3])
    for eqn in ffi_calls(jax.make_jaxpr(lambda *a: jax.vjp(fwd, *a)[1]((w, cts)))(*x, *st).jaxpr):
        configs[eqn.params["target_name"]] = dict(eqn.params["attributes"])["config"]
    h, vjp = jax.jit(lambda *a: jax.vjp(fwd, *a))(*x, *st)
    out, last = h
    zeros = tuple(jnp.zeros_like(s) for s in last)
    grads = jax.jit(lambda ct: vjp(ct))((w, zeros))

    to_t = lambda a: torch.from_dlpack(a).clone()  # noqa: E731
    tx = [to_t(a).requires_grad_(True) for a in x]
    tst = [to_t(a).requires_grad_(j == 0) for j, a in enumerate(st)]
    th, tlast = tfla_torch.mlstm_chunkwise(*tx, *tst, return_last_states=True, variant=variant,
                                          config=configs["tfla_mlstm_forward"],
                                          backward_config=configs["tfla_mlstm_backward"])
    th.backward(to_t(w))
    msg = f"seed {seed}, configs {configs}"
    same = lambda a, t: torch.equal(torch.from_dlpack(a).cpu(), t.detach().cpu())  # noqa: E731
    assert same(out, th), msg
    for a, t in zip(last, tlast):
        assert same(a, t), msg
    for name, g, t in zip(["q", "k", "v", "i", "f", "C0"], grads, tx + tst[:1]):
        assert same(g, t.grad), f"d{name}: {msg}"
