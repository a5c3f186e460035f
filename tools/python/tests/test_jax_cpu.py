"""tfla.jax without a GPU: the module imports, libtfla_jax loads and registers its FFI targets,
and the calls' argument checks raise TflaArgumentError naming the problem. Skipped where JAX is
not installed or libtfla_jax was not built (tools/check_jax.sh builds and runs them in CI)."""

import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

import tfla  # noqa: E402
import tfla.jax as tj  # noqa: E402
from jaxpr_walk import ffi_calls  # noqa: E402
from tfla import TflaArgumentError, TflaLibraryNotFoundError  # noqa: E402

try:
    tj.load_jax_library()
except TflaLibraryNotFoundError as e:  # pragma: no cover
    pytest.skip(f"libtfla_jax not available: {e}", allow_module_level=True)


def _inputs(B=1, NH=2, S=8, Dqk=64, Dv=64, dtype=jnp.bfloat16, gate=jnp.float32):
    z = jnp.zeros
    return (z((B, NH, S, Dqk), dtype), z((B, NH, S, Dqk), dtype), z((B, NH, S, Dv), dtype),
            z((B, NH, S), gate), z((B, NH, S), gate))


@pytest.fixture
def on_gpu(monkeypatch):
    """Makes the backend check pass, so the argument checks behind it run on this machine."""
    monkeypatch.setattr(tj, "_check_backend", lambda: None)


def test_targets_registered_for_cuda():
    lib = tj.load_jax_library()
    assert lib is tj.load_jax_library()  # once per process
    assert lib.tfla_jax_abi_version() == tfla._library.ABI_VERSION
    # the CUDA registrations: pending in xla_client until a CUDA plugin loads (none here), or
    # in the plugin's table (JAX internals: skipped where they differ)
    from jax._src.lib import xla_client as xc
    pending = getattr(xc, "_custom_callback", None)
    if not isinstance(pending, dict):
        pytest.skip("this JAX keeps its FFI registrations elsewhere")
    names = {entry[0] for entry in pending.get("CUDA", [])}
    try:
        names |= set(xc.custom_call_targets("CUDA"))
    except Exception:  # noqa: BLE001  (no CUDA platform)
        pass
    if not names and jax.default_backend() == "gpu":
        pytest.skip("the CUDA plugin keeps the registrations (test_jax_gpu.py runs the targets)")
    assert {"tfla_mlstm_forward", "tfla_mlstm_backward", "tfla_mlstm_step"} <= names

def test_cpu_backend_is_refused_by_name():
    if jax.default_backend() == "gpu":
        pytest.skip("this machine's JAX has a GPU")
    with pytest.raises(TflaArgumentError, match="CUDA GPUs.*default backend is 'cpu'"):
        tj.mlstm_chunkwise(*_inputs())
    with pytest.raises(TflaArgumentError, match="CUDA GPUs"):
        q, k, v, i, f = _inputs(S=1)
        tj.mlstm_recurrent_step(q[:, :, 0], k[:, :, 0], v[:, :, 0], i[:, :, 0], f[:, :, 0],
                                jnp.zeros((1, 2, 64, 64)), jnp.zeros((1, 2, 64)), jnp.zeros((1, 2, 1)))


@pytest.mark.parametrize("change, message", [
    (lambda a: (a[0][..., :32],) + a[1:], "k has shape"),
    (lambda a: (a[0].astype(jnp.int8),) + a[1:], "dtype int8"),
    (lambda a: a[:2] + (a[2].astype(jnp.float16),) + a[3:], "must share one dtype"),
    (lambda a: a[:3] + (a[3][..., :4],) + a[4:], "gates are"),
    (lambda a: a[:3] + (a[3].astype(jnp.float16), a[4].astype(jnp.float16)), "gates must be float32 or the input dtype"),
    (lambda a: (a[0][0],) + a[1:], "must be 4-D"),
    (lambda a: tuple(x[:, :, :0] for x in a), "empty"),
    (lambda a: (None,) + a[1:], "q is None"),
    (lambda a: ([[1.0]],) + a[1:], "must be a JAX array"),
])
def test_chunkwise_argument_errors(on_gpu, change, message):
    with pytest.raises(TflaArgumentError, match=message):
        tj.mlstm_chunkwise(*change(_inputs()))


def test_chunkwise_option_and_state_errors(on_gpu):
    args = _inputs()
    with pytest.raises(TflaArgumentError, match="variant"):
        tj.mlstm_chunkwise(*args, variant="lin")
    with pytest.raises(TflaArgumentError, match="normalize=False exists only"):
        tj.mlstm_chunkwise(*args, normalize=False)
    with pytest.raises(TflaArgumentError, match="eps"):
        tj.mlstm_chunkwise(*args, eps=-1.0)
    with pytest.raises(TflaArgumentError, match="c_initial has shape"):
        tj.mlstm_chunkwise(*args, c_initial=jnp.zeros((1, 2, 64, 32)))
    with pytest.raises(TflaArgumentError, match="float32"):
        tj.mlstm_chunkwise(*args, n_initial=jnp.zeros((1, 2, 64), jnp.bfloat16))
    with pytest.raises(TflaArgumentError, match="chunk_size must be an int"):
        tj.mlstm_chunkwise(*args, chunk_size=64.5)
    with pytest.raises(TflaArgumentError, match="config"):
        tj.mlstm_chunkwise(*args, config=3)


def test_step_argument_errors(on_gpu):
    q, k, v, i, f = (x[:, :, 0] for x in _inputs(S=1))
    C, n, m = jnp.zeros((1, 2, 64, 64)), jnp.zeros((1, 2, 64)), jnp.zeros((1, 2, 1))
    with pytest.raises(TflaArgumentError, match="m is None"):
        tj.mlstm_recurrent_step(q, k, v, i, f, C, n, None)
    with pytest.raises(TflaArgumentError, match="c has shape"):
        tj.mlstm_recurrent_step(q, k, v, i, f, C[..., :32], n, m)
    with pytest.raises(TflaArgumentError, match="float32"):
        tj.mlstm_recurrent_step(q, k, v, i, f, C.astype(jnp.bfloat16), n, m)
    with pytest.raises(TflaArgumentError, match="one-token gates"):
        tj.mlstm_recurrent_step(q, k, v, i[:, :1], f, C, n, m)


def test_missing_library_is_named(monkeypatch, tmp_path):
    monkeypatch.setattr(tj, "_jax_lib", None)
    monkeypatch.setenv("TFLA_JAX_LIBRARY", str(tmp_path / "libtfla_jax.so"))
    with pytest.raises(TflaLibraryNotFoundError, match="TFLA_JAX_LIBRARY"):
        tj.load_jax_library()


# ---- the traced calls (jax.eval_shape / make_jaxpr: no lowering, no GPU; the library answers the
# size queries without a driver)

B, NH, S, DQK, DV = 1, 2, 300, 64, 128


def _specs(dtype=jnp.bfloat16):
    sds = jax.ShapeDtypeStruct
    return (sds((B, NH, S, DQK), dtype), sds((B, NH, S, DQK), dtype), sds((B, NH, S, DV), dtype),
            sds((B, NH, S), jnp.float32), sds((B, NH, S), jnp.float32))


def _ffi_calls(fn, *args):
    """(target, result shapes, number of operands) of each FFI call in fn's jaxpr."""
    out = []
    for eqn in jax.make_jaxpr(fn)(*args).eqns:
        if eqn.primitive.name == "ffi_call":
            avals = eqn.params.get("result_avals")
            if avals is None:
                pytest.skip("this JAX names ffi_call's parameters differently")
            out.append((eqn.params["target_name"], [tuple(a.shape) for a in avals], len(eqn.invars)))
    return out


@pytest.mark.parametrize("variant, last", [("exp", False), ("exp", True), ("sig", True)])
def test_chunkwise_traces_to_the_documented_results(on_gpu, variant, last):
    out = jax.eval_shape(lambda *a: tj.mlstm_chunkwise(*a, variant=variant, return_last_states=last), *_specs())
    if not last:
        assert (out.shape, out.dtype) == ((B, NH, S, DV), jnp.bfloat16)
        return
    h, states = out
    assert h.shape == (B, NH, S, DV)
    want = [(B, NH, DQK, DV), (B, NH, DQK)] + ([(B, NH, 1)] if variant == "exp" else [])
    assert [s.shape for s in states] == want
    assert all(s.dtype == jnp.float32 for s in states)


def test_gradients_keep_the_forward_states_unless_told_to_recompute(on_gpu):
    def loss(recompute):
        def f(q, k, v, i, f, C0):
            h, (C, _, _) = tj.mlstm_chunkwise(q, k, v, i, f, C0, return_last_states=True,
                                              recompute_states_in_bw=recompute)
            return jnp.sum(h.astype(jnp.float32)) + jnp.sum(C)
        return jax.grad(f, argnums=(0, 1, 2, 3, 4, 5))

    C0 = jax.ShapeDtypeStruct((B, NH, DQK, DV), jnp.float32)
    grads = jax.eval_shape(loss(None), *_specs(), C0)
    assert [g.shape for g in grads] == [(B, NH, S, DQK), (B, NH, S, DQK), (B, NH, S, DV), (B, NH, S), (B, NH, S),
                                        (B, NH, DQK, DV)]
    assert [g.dtype for g in grads] == [jnp.bfloat16] * 3 + [jnp.float32] * 3
    (fwd, fwd_res, fwd_in), (bwd, bwd_res, bwd_in) = _ffi_calls(loss(None), *_specs(), C0)
    assert (fwd, bwd) == ("tfla_mlstm_forward", "tfla_mlstm_backward")
    plan = tfla.make_plan(B, NH, S, DQK, DV)
    saved = tfla._binding.saved_size(plan)
    # h, norm, m, C_last, n_last, m_last, the saved states, the workspace
    assert fwd_res[:6] == [(B, NH, S, DV), (B, NH, S), (B, NH, S), (B, NH, DQK, DV), (B, NH, DQK), (B, NH, 1)]
    assert fwd_res[6] == (saved,) and len(fwd_res) == 8 and fwd_in == 8
    # q, k, v, i, f, norm, dh, C0, n0, m0, dC_last, saved -> dq, dk, dv, di, df, dC0, workspace
    assert bwd_in == 12 and len(bwd_res) == 7 and bwd_res[5] == (B, NH, DQK, DV)
    (_, fwd_res, _), (_, bwd_res, bwd_in) = _ffi_calls(loss(True), *_specs(), C0)
    assert len(fwd_res) == 7 and bwd_in == 11  # no saved states either way
    workspace = max(tfla._binding.backward_workspace_size(plan), 256)
    assert bwd_res[-1] == (workspace,)


def test_short_stateless_gradients_keep_no_states_where_the_backward_runs_parallel(on_gpu):
    """At S = 128 a call without states resolves its backward to the parallel form, which reads no
    chunk states: the forward saves none (a saved buffer would move both passes to the chunkwise
    form), as with recompute_states_in_bw=True; with last states it keeps them."""
    S_ = 128
    sds = jax.ShapeDtypeStruct
    specs = (sds((B, NH, S_, DQK), jnp.bfloat16), sds((B, NH, S_, DQK), jnp.bfloat16),
             sds((B, NH, S_, DV), jnp.bfloat16), sds((B, NH, S_), jnp.float32), sds((B, NH, S_), jnp.float32))
    plan = tfla.make_plan(B, NH, S_, DQK, DV)
    assert tfla._binding.kernel_config(plan, "bwd", None).get("parallel") == 1

    def grad(last, recompute=None):
        def f(*a):
            out = tj.mlstm_chunkwise(*a, return_last_states=last, recompute_states_in_bw=recompute)
            h = out[0] if last else out
            return jnp.sum(h.astype(jnp.float32))
        return jax.grad(f, argnums=(0, 1, 2, 3, 4))

    # no states in or out: the same FFI calls as recomputing (no saved-states result or operand)
    assert _ffi_calls(grad(False), *specs) == _ffi_calls(grad(False, True), *specs)
    # with last states the forward keeps them: one more result and one more backward operand
    (_, kept_res, _), (_, _, kept_in) = _ffi_calls(grad(True), *specs)
    (_, rec_res, _), (_, _, rec_in) = _ffi_calls(grad(True, True), *specs)
    assert (len(kept_res), kept_in) == (len(rec_res) + 1, rec_in + 1)
    assert tfla._binding.saved_size(plan) in [r[0] for r in kept_res if len(r) == 1]


def test_a_shape_is_sized_once(on_gpu, monkeypatch):
    calls = []
    real = tfla._binding.saved_size
    monkeypatch.setattr(tfla._binding, "saved_size", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(tj, "_resolved_memo", {})
    specs = _specs()
    for _ in range(3):
        jax.eval_shape(lambda *a: tj.mlstm_chunkwise(*a), *specs)
    assert len(calls) == 1


def test_a_forward_without_backward_leaves_norm_and_m_unwritten(on_gpu):
    (eqn,) = ffi_calls(jax.make_jaxpr(lambda *a: tj.mlstm_chunkwise(*a))(*_specs()).jaxpr)
    avals = eqn.params.get("result_avals")
    if avals is None:
        pytest.skip("this JAX names ffi_call's parameters differently")
    assert [tuple(a.shape) for a in avals[:3]] == [(B, NH, S, DV), (0,), (0,)]


def _configs_of(fn, *args):
    """{target: [config attribute of each call]} of fn's jaxpr, nested ones (custom_vjp) too."""
    out = {}
    for eqn in ffi_calls(jax.make_jaxpr(fn)(*args).jaxpr):
        attrs = eqn.params.get("attributes")
        if attrs is None:
            pytest.skip("this JAX keeps ffi_call's attributes elsewhere")
        out.setdefault(eqn.params["target_name"], []).append(dict(attrs)["config"])
    return out


def test_configs_are_resolved_at_trace_time(on_gpu):
    """Each call carries its whole config, as the library resolves it for this shape (pins on
    top); the backward from saved states runs at the saving forward's chunk."""
    plan = tfla.make_plan(B, NH, S, DQK, DV)
    resolved = lambda op, pin=None: tfla._binding.config_text(tfla._binding.kernel_config(plan, op, pin))  # noqa: E731
    got = _configs_of(lambda *a: tj.mlstm_chunkwise(*a), *_specs())
    assert got == {"tfla_mlstm_forward": [resolved("fwd")]}

    def loss(chunk, bwd):
        return jax.grad(lambda *a: jnp.sum(tj.mlstm_chunkwise(*a, chunk_size=chunk, backward_config=bwd)
                                           .astype(jnp.float32)), argnums=(0,))
    got = _configs_of(loss(64, "chunk=128"), *_specs())
    (fwd,), (bwd,) = got["tfla_mlstm_forward"], got["tfla_mlstm_backward"]
    assert fwd == resolved("fwd", "chunk=64")
    assert tfla._binding.parse_config(fwd)["chunk"] == 64
    assert tfla._binding.parse_config(fwd)["parallel"] == 0
    assert tfla._binding.parse_config(bwd)["chunk"] == 64  # the saved states' chunk, not the pin
    assert bwd == resolved("bwd", "chunk=64")
    # unpinned, this shape's forward is the parallel form, which saves no states: the saving
    # forward is the chunkwise default, and the backward runs at its chunk
    assert tfla._binding.parse_config(resolved("fwd"))["parallel"] == 1
    (fwd,), (bwd,) = _configs_of(loss(None, None), *_specs()).values()
    assert fwd == resolved("fwd", "parallel=0")
    assert tfla._binding.parse_config(bwd)["chunk"] == tfla._binding.parse_config(fwd)["chunk"]
    assert tfla._binding.parse_config(bwd)["parallel"] == 0
    # the parallel form pinned where states are kept: named at trace time
    with pytest.raises(TflaArgumentError, match="pins parallel=1"):
        _configs_of(jax.grad(lambda *a: jnp.sum(tj.mlstm_chunkwise(*a, config="parallel=1").astype(jnp.float32))),
                    *_specs())
    with pytest.raises(TflaArgumentError, match="pins parallel=1"):
        _configs_of(lambda *a: tj.mlstm_chunkwise(*a, config="parallel=1", return_last_states=True), *_specs())
    _configs_of(jax.grad(lambda *a: jnp.sum(tj.mlstm_chunkwise(*a, config="parallel=1",
                                                               recompute_states_in_bw=True).astype(jnp.float32))),
                *_specs())
    got = _configs_of(lambda *a: tj.mlstm_chunkwise(*a, chunk_size=None, config={"chunk": 128}), *_specs())
    assert tfla._binding.parse_config(got["tfla_mlstm_forward"][0])["chunk"] == 128
    sds = jax.ShapeDtypeStruct
    one = (sds((B, NH, DQK), jnp.bfloat16), sds((B, NH, DQK), jnp.bfloat16), sds((B, NH, DV), jnp.bfloat16),
           sds((B, NH), jnp.float32), sds((B, NH), jnp.float32))
    st = (sds((B, NH, DQK, DV), jnp.float32), sds((B, NH, DQK), jnp.float32), sds((B, NH, 1), jnp.float32))
    (step,) = _configs_of(tj.mlstm_recurrent_step, *one, *st)["tfla_mlstm_step"]
    splan = tfla._binding.make_plan(B, NH, 1, DQK, DV)
    assert step == tfla._binding.config_text(tfla._binding.kernel_config(splan, "step"))


@pytest.mark.parametrize("tokens", [1, 4])
def test_step_traces_to_new_states_in_place(on_gpu, tokens):
    sds = jax.ShapeDtypeStruct
    bf, f32 = jnp.bfloat16, jnp.float32
    if tokens == 1:
        x = (sds((B, NH, DQK), bf), sds((B, NH, DQK), bf), sds((B, NH, DV), bf), sds((B, NH), f32), sds((B, NH), f32))
    else:
        x = (sds((B, NH, tokens, DQK), bf), sds((B, NH, tokens, DQK), bf), sds((B, NH, tokens, DV), bf),
             sds((B, NH, tokens), f32), sds((B, NH, tokens), f32))
    st = (sds((B, NH, DQK, DV), f32), sds((B, NH, DQK), f32), sds((B, NH, 1), f32))
    h, (C, n, m) = jax.eval_shape(tj.mlstm_recurrent_step, *x, *st)
    assert h.shape == ((B, NH, DV) if tokens == 1 else (B, NH, tokens, DV)) and h.dtype == bf
    assert (C.shape, n.shape, m.shape) == ((B, NH, DQK, DV), (B, NH, DQK), (B, NH, 1))
    jaxpr = jax.make_jaxpr(tj.mlstm_recurrent_step)(*x, *st)
    (eqn,) = [e for e in jaxpr.eqns if e.primitive.name == "ffi_call"]
    assert tuple(eqn.params.get("input_output_aliases", ())) == ((5, 1), (6, 2), (7, 3))


def test_bshd_layout_traces_in_place(on_gpu):
    sds = jax.ShapeDtypeStruct
    bf, f32 = jnp.bfloat16, jnp.float32
    x = (sds((B, S, NH, DQK), bf), sds((B, S, NH, DQK), bf), sds((B, S, NH, DV), bf), sds((B, S, NH), f32),
         sds((B, S, NH), f32))
    h = jax.eval_shape(lambda *a: tj.mlstm_chunkwise(*a, layout="bshd"), *x)
    assert h.shape == (B, S, NH, DV)

    def loss(*a):
        return jnp.sum(tj.mlstm_chunkwise(*a, layout="bshd").astype(jnp.float32))
    grads = jax.eval_shape(jax.grad(loss, argnums=(0, 1, 2, 3, 4)), *x)
    assert [g.shape for g in grads] == [a.shape for a in x]
    # no transposes around the calls: the jaxpr holds the two FFI calls and the loss's own ops
    prims = {e.primitive.name for e in jax.make_jaxpr(jax.grad(loss, argnums=(0,)))(*x).eqns}
    assert "transpose" not in prims
    with pytest.raises(TflaArgumentError, match="layout must be"):
        tj.mlstm_chunkwise(*_inputs(), layout="bnsd")
    with pytest.raises(TflaArgumentError, match="k has shape"):  # read as (B, S, NH, D): NH differs
        q, k, v, i, f = _inputs(NH=2, S=8)
        tj.mlstm_chunkwise(q, k.reshape(1, 2, 8, 64)[:, :1], v, i, f, layout="bshd")


def test_calls_pass_exactly_the_handlers_attributes(on_gpu):
    """The attribute names of each traced call are those libtfla_jax's bindings decode (an extra
    or a missing one fails only when XLA runs the call, on a GPU)."""
    options = {"variant", "normalize", "eps", "scale", "config"}
    want = {"tfla_mlstm_forward": options | {"has_initial", "want_last", "keep", "layout"},
            "tfla_mlstm_backward": options | {"has_initial", "has_dc_last", "has_saved", "layout"},
            "tfla_mlstm_step": options}

    def loss(*a):
        return jnp.sum(tj.mlstm_chunkwise(*a).astype(jnp.float32))
    sds = jax.ShapeDtypeStruct
    st = (sds((B, NH, DQK, DV), jnp.float32), sds((B, NH, DQK), jnp.float32), sds((B, NH, 1), jnp.float32))
    one = (sds((B, NH, DQK), jnp.bfloat16), sds((B, NH, DQK), jnp.bfloat16), sds((B, NH, DV), jnp.bfloat16),
           sds((B, NH), jnp.float32), sds((B, NH), jnp.float32))
    seen = {}
    for jaxpr in (jax.make_jaxpr(jax.grad(loss, argnums=(0,)))(*_specs()),
                  jax.make_jaxpr(tj.mlstm_recurrent_step)(*one, *st)):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "ffi_call":
                attrs = eqn.params.get("attributes")
                if attrs is None:
                    pytest.skip("this JAX keeps ffi_call's attributes elsewhere")
                seen[eqn.params["target_name"]] = {name for name, _ in attrs}
    assert seen == want
