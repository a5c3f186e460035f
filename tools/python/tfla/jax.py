"""tfla's mLSTM kernels in JAX: XLA FFI custom calls (libtfla_jax) with gradients.

    from tfla.jax import mlstm_chunkwise, mlstm_recurrent_step
    h = mlstm_chunkwise(q, k, v, i, f)                  # under jax.jit too
    dq, dk = jax.grad(loss, argnums=(0, 1))(q, k, ...)  # the backward kernels

Layout as tfla.torch: q, k (B, NH, S, Dqk), v (B, NH, S, Dv) in bfloat16, float16 or float32;
gates i, f (B, NH, S) in float32 or the inputs' dtype; states in float32: C (B, NH, Dqk, Dv),
n (B, NH, Dqk), m (B, NH, 1). The calls run on XLA's CUDA stream; their workspace is a temporary
result XLA allocates. Shapes are static per trace: the argument checks, the kernel config
and the saved-states size are settled when a function is traced, not per call.

Gradients (jax.custom_vjp): dq, dk, dv, di, df and dC_initial; dn_initial and dm_initial are
zeros and the gradients of the returned n and m are ignored, as in tfla.torch and the seed
(the normalizer and the stabilizer are held constant in the backward). The forward under
differentiation keeps its chunk states for the backward (a uint8 residual), unless
recompute_states_in_bw=True, or unless the call has no initial or last states and its backward
runs the parallel form (short sequences), which reads no chunk states.

The FFI targets (tfla_mlstm_forward, tfla_mlstm_backward, tfla_mlstm_step) are registered for
the CUDA platform on import; that needs libtfla and libtfla_jax (built beside libtfla when
jaxlib is importable at configure time; $TFLA_JAX_LIBRARY names it explicitly), not a GPU.
"""

import ctypes
import functools
import os
import threading
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _binding
from ._checks import TensorInfo, check_forward, check_step, contiguous_strides
from ._errors import TflaArgumentError, TflaLibraryNotFoundError
from ._library import ABI_VERSION, load_library

__all__ = ["mlstm_chunkwise", "mlstm_recurrent_step", "load_jax_library"]

_TARGETS = (("tfla_mlstm_forward", "tfla_jax_forward"), ("tfla_mlstm_backward", "tfla_jax_backward"),
            ("tfla_mlstm_step", "tfla_jax_step"))
_lock = threading.Lock()
_jax_lib = None


def _jax_library_path(libtfla_path):
    env = os.environ.get("TFLA_JAX_LIBRARY")
    if env:
        return env, "$TFLA_JAX_LIBRARY"
    return os.path.join(os.path.dirname(os.path.realpath(libtfla_path)), "libtfla_jax.so"), "next to libtfla"


def load_jax_library():
    """Loads libtfla (with its ABI check) and libtfla_jax, and registers the FFI targets for
    CUDA (once per process). Returns the libtfla_jax handle."""
    global _jax_lib
    with _lock:
        if _jax_lib is not None:
            return _jax_lib
        lib = load_library()
        path, where = _jax_library_path(lib.path)
        try:
            cdll = ctypes.CDLL(path)
        except OSError as e:
            raise TflaLibraryNotFoundError(
                f"could not load libtfla_jax ({where}: {path}): {e}. It is built beside libtfla when "
                "jaxlib is importable at configure time (cmake -DTFLA_JAX=ON, or pip install "
                "./tools/python with jax installed); set TFLA_JAX_LIBRARY to its path.") from None
        try:
            got = cdll.tfla_jax_abi_version()
        except AttributeError:
            got = None
        if got != ABI_VERSION:
            raise TflaLibraryNotFoundError(
                f"{path} was built for tfla C ABI version {got}, this binding needs {ABI_VERSION}: "
                "rebuild libtfla_jax from this checkout")
        for target, symbol in _TARGETS:
            jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(cdll, symbol)), platform="CUDA")
        _jax_lib = cdll
        return cdll


_LAYOUTS = {"bhsd": 0, "bshd": 1}


def _info(name, x, none_ok=False, bshd=False):
    """The binding's TensorInfo of a JAX array (or tracer), row-major on the GPU. With bshd, a
    4-D (B, S, NH, D) or 3-D (B, S, NH) array is described as the (B, NH, S, ...) view the
    checks read, with the strides that view has."""
    if x is None:
        if none_ok:
            return None
        raise TflaArgumentError(f"{name} is None: an array is required")
    try:
        shape = tuple(int(s) for s in x.shape)
        dtype = str(np.dtype(x.dtype))
    except (AttributeError, TypeError):
        raise TflaArgumentError(f"{name} must be a JAX array, got {type(x).__name__}") from None
    strides = contiguous_strides(shape)
    if bshd and len(shape) in (3, 4):
        shape = (shape[0], shape[2], shape[1]) + shape[3:]
        strides = (strides[0], strides[2], strides[1]) + strides[3:]
    return TensorInfo(name, shape, strides, dtype, "cuda", 0, 0)


def _check_backend():
    backend = jax.default_backend()
    if backend != "gpu":
        raise TflaArgumentError(
            f"tfla.jax runs on CUDA GPUs; JAX's default backend is {backend!r} (install jax with CUDA "
            "and run on a GPU machine)")


class _Static(NamedTuple):
    """What a trace of mlstm_chunkwise fixes: options, the kernel configs resolved at trace time
    (pinned keys, else the tuned cache entry for this GPU, else the default, every key spelled
    out so the call runs exactly these) and the sizes they imply."""
    variant: int
    normalize: int
    eps: float
    scale: float
    fwd_config: str            # the forward without saved states
    keep_config: str           # the forward that saves its states (chunkwise)
    bwd_config: str            # for a backward that recomputes the states
    saved_bwd_config: str      # for a backward that reads the saved states (the forward's chunk)
    saved_bytes: int           # 0: no saved states (recompute_states_in_bw=True)
    ws: tuple                  # workspace bytes: forward, forward with saved states, backward,
                               # backward from saved states
    layout: int                # libtfla_jax's layout code (_LAYOUTS)
    dims: tuple                # (B, NH, S, Dqk, Dv)
    want_last: bool
    has_initial: bool


def _attrs(st, config):
    return dict(variant=np.int64(st.variant), normalize=np.int64(st.normalize), eps=np.float32(st.eps),
                scale=np.float32(st.scale), config=config or "")


_resolved_memo = {}


def _resolve(plan, op, pinned, chunkwise):
    """The whole config `op` ("fwd" or "bwd") runs with `pinned` on top, as text. chunkwise: the
    call keeps or reads states (initial or last states, a saved-states buffer), which the parallel
    form has none of; where the resolved form is parallel and the caller did not pin it, the
    library's own choice for such a call is the chunkwise form with the caller's other pins, and
    so is this."""
    cfg = _binding.kernel_config(plan, op, pinned)
    if chunkwise and cfg.get("parallel") == 1:
        if "parallel" in _binding.parse_config(pinned):
            which = "config" if op == "fwd" else "backward_config"
            raise TflaArgumentError(
                f"{which} pins parallel=1, the parallel form, which keeps no chunk states, but this call "
                "has initial or last states or saves its states for the backward: pin parallel=0, leave "
                "the form to the library, or pass recompute_states_in_bw=True")
        chunkwise = _binding.parse_config(pinned)
        chunkwise["parallel"] = 0
        cfg = _binding.kernel_config(plan, op, _binding.config_text(chunkwise))
    return _binding.config_text(cfg)


def _configs(plan_key, plan, fwd_pinned, bwd_pinned, keep, has_initial, want_last):
    """(forward config, saving forward config, backward config, saved backward config,
    saved-states bytes, workspace bytes of the forward, the saving forward, the backward and
    the backward from saved states), memoized per shape, pins and call kind. The configs are
    resolved here, at trace time; the workspace is a result of each call (libtfla_jax)."""
    key = (plan_key, fwd_pinned, bwd_pinned, keep, has_initial, want_last)
    hit = _resolved_memo.get(key)
    if hit is None:
        states = has_initial or want_last
        fwd = _resolve(plan, "fwd", fwd_pinned, states)
        bwd = _resolve(plan, "bwd", bwd_pinned, states)
        keep_cfg, saved_bwd, saved = fwd, bwd, 0
        ws = [_binding.forward_workspace_size(plan, fwd), 0, _binding.backward_workspace_size(plan, bwd), 0]
        if keep:
            keep_cfg = _resolve(plan, "fwd", fwd_pinned, True)
            saved = _binding.saved_size(plan, keep_cfg)
            # the caller's backward pins at the saved states' chunk (the chunkwise form)
            pins = _binding.parse_config(_binding.saved_backward_config(plan, keep_cfg, bwd_pinned))
            pins.setdefault("chunk", _binding.parse_config(keep_cfg)["chunk"])
            saved_bwd = _resolve(plan, "bwd", _binding.config_text(pins), True)
            ws[1] = _binding.forward_workspace_size(plan, keep_cfg, saved=True)
            ws[3] = _binding.backward_workspace_size(plan, saved_bwd, saved=True)
        hit = (fwd, keep_cfg, bwd, saved_bwd, saved, tuple(ws))
        with _lock:
            _resolved_memo[key] = hit
    return hit


def _keeps_states(plan, bwd_pinned, recompute, has_initial, want_last):
    """Whether the differentiated forward saves its chunk states for the backward: unless told
    to recompute them, and not where the call has no states in or out and its backward runs the
    parallel form (short sequences), which reads no chunk states; a saved buffer would move both
    passes to the chunkwise form."""
    if recompute:
        return False
    if has_initial or want_last:
        return True
    return _binding.kernel_config(plan, "bwd", bwd_pinned).get("parallel") != 1


def _workspace(nbytes):
    return jax.ShapeDtypeStruct((max(int(nbytes), 256),), jnp.uint8)


def _forward_call(st, q, k, v, i, f, c0, n0, m0, keep, want_norm=True):
    """The forward FFI call: (h, norm, C_last, n_last, m_last, saved). want_norm=False: no
    backward follows, so norm and m are (0,) results the library does not write."""
    B, NH, S, Dqk, Dv = st.dims
    f32 = jnp.float32
    h_shape = (B, S, NH, Dv) if st.layout == _LAYOUTS["bshd"] else (B, NH, S, Dv)
    rows = (B, NH, S) if want_norm else (0,)
    outs = [jax.ShapeDtypeStruct(h_shape, q.dtype), jax.ShapeDtypeStruct(rows, f32),
            jax.ShapeDtypeStruct(rows, f32)]
    if st.want_last:
        outs += [jax.ShapeDtypeStruct((B, NH, Dqk, Dv), f32), jax.ShapeDtypeStruct((B, NH, Dqk), f32),
                 jax.ShapeDtypeStruct((B, NH, 1), f32)]
    if keep:
        outs.append(jax.ShapeDtypeStruct((st.saved_bytes,), jnp.uint8))
    outs.append(_workspace(st.ws[1] if keep else st.ws[0]))
    args = [q, k, v, i, f] + ([c0, n0, m0] if st.has_initial else [])
    res = jax.ffi.ffi_call("tfla_mlstm_forward", outs)(
        *args, **_attrs(st, st.keep_config if keep else st.fwd_config), has_initial=np.int64(st.has_initial),
        want_last=np.int64(st.want_last), keep=np.int64(keep), layout=np.int64(st.layout))
    h, norm = res[0], res[1]
    C = n = m = None
    if st.want_last:
        C, n, m = res[3], res[4], res[5]
    saved = res[-2] if keep else None
    return h, norm, C, n, m, saved


@functools.partial(jax.custom_vjp, nondiff_argnums=(8,))
def _chunkwise(q, k, v, i, f, c0, n0, m0, st):
    h, _, C, n, m, _ = _forward_call(st, q, k, v, i, f, c0, n0, m0, keep=False, want_norm=False)
    return h, C, n, m


def _chunkwise_fwd(q, k, v, i, f, c0, n0, m0, st):
    keep = st.saved_bytes > 0
    h, norm, C, n, m, saved = _forward_call(st, q, k, v, i, f, c0, n0, m0, keep=keep)
    return (h, C, n, m), (q, k, v, i, f, c0, n0, m0, norm, saved)


def _chunkwise_bwd(st, res, cts):
    q, k, v, i, f, c0, n0, m0, norm, saved = res
    dh, dC_last = cts[0], cts[1]
    outs = [jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct(k.shape, k.dtype),
            jax.ShapeDtypeStruct(v.shape, v.dtype), jax.ShapeDtypeStruct(i.shape, i.dtype),
            jax.ShapeDtypeStruct(f.shape, f.dtype)]
    if st.has_initial:
        outs.append(jax.ShapeDtypeStruct(c0.shape, jnp.float32))
    args = [q, k, v, i, f, norm, dh.astype(q.dtype)]
    if st.has_initial:
        args += [c0, n0, m0]
    has_dc_last = st.want_last and dC_last is not None
    if has_dc_last:
        args.append(dC_last.astype(jnp.float32))
    if saved is not None:
        args.append(saved)
    config = st.saved_bwd_config if saved is not None else st.bwd_config
    outs.append(_workspace(st.ws[3] if saved is not None else st.ws[2]))
    grads = jax.ffi.ffi_call("tfla_mlstm_backward", outs)(
        *args, **_attrs(st, config), has_initial=np.int64(st.has_initial), has_dc_last=np.int64(has_dc_last),
        has_saved=np.int64(saved is not None), layout=np.int64(st.layout))
    dq, dk, dv, di, df = grads[:5]
    dC0 = grads[5] if st.has_initial else None
    dn0 = None if n0 is None else jnp.zeros_like(n0)
    dm0 = None if m0 is None else jnp.zeros_like(m0)
    return dq, dk, dv, di, df, dC0, dn0, dm0


_chunkwise.defvjp(_chunkwise_fwd, _chunkwise_bwd)


def mlstm_chunkwise(q, k, v, i, f, c_initial=None, n_initial=None, m_initial=None, return_last_states=False,
                    eps=1e-6, chunk_size=None, *, variant="exp", normalize=True, qk_scale=None, config=None,
                    backward_config=None, recompute_states_in_bw=None, layout="bhsd"):
    """The chunkwise mLSTM (variant "exp" or "sig") on JAX arrays, differentiable with jax.grad.

    Arguments and results as tfla.torch.mlstm_chunkwise: returns h (B, NH, S, Dv), or
    (h, (C, n, m)) ("exp") / (h, (C, n)) ("sig") with return_last_states. Initial states are
    optional; given one, the others default to zeros. config / backward_config: tfla kernel
    configs ("key=value,..." or a dict); chunk_size pins the forward's "chunk". layout="bshd"
    takes q, k (B, S, NH, Dqk), v (B, S, NH, Dv), gates (B, S, NH) and returns h (B, S, NH, Dv)
    (JAX's attention layout; read and written in place, no transposes); states stay
    (B, NH, ...)."""
    _check_backend()
    load_jax_library()
    if layout not in _LAYOUTS:
        raise TflaArgumentError(f"layout must be 'bhsd' (B, NH, S, D) or 'bshd' (B, S, NH, D), got {layout!r}")
    bshd = layout == "bshd"
    has_initial = c_initial is not None or n_initial is not None or m_initial is not None
    qi, ki, vi, ii, fi = (_info(n, x, bshd=bshd) for n, x in (("q", q), ("k", k), ("v", v), ("i", i), ("f", f)))
    ci, ni, mi = (_info(n, x, none_ok=True) for n, x in (("c_initial", c_initial), ("n_initial", n_initial),
                                                          ("m_initial", m_initial)))
    plan = check_forward(qi, ki, vi, ii, fi, ci, ni, mi if variant == "exp" else None, variant=variant,
                         normalize=normalize, eps=eps, scale=qk_scale)
    B, NH, Dqk, Dv = plan.B, plan.NH, plan.Dqk, plan.Dv
    if has_initial:
        f32 = jnp.float32
        c_initial = jnp.zeros((B, NH, Dqk, Dv), f32) if c_initial is None else c_initial
        n_initial = jnp.zeros((B, NH, Dqk), f32) if n_initial is None else n_initial
        m_initial = jnp.zeros((B, NH, 1), f32) if m_initial is None or variant != "exp" else m_initial
        if variant == "exp" and m_initial.shape == (B, NH):
            m_initial = m_initial[..., None]
    fwd_cfg, bwd_cfg = _binding.chunk_configs(chunk_size, config, backward_config)
    key = (B, NH, plan.S, Dqk, Dv, plan.dtype, plan.gate_dtype, plan.variant, plan.normalize, plan.eps,
           plan.scale)
    fwd, keep_cfg, bwd, saved_bwd, saved_bytes, ws = _configs(
        key, plan, fwd_cfg, bwd_cfg, _keeps_states(plan, bwd_cfg, recompute_states_in_bw, has_initial,
                                                   return_last_states),
        has_initial, bool(return_last_states))
    st = _Static(variant=0 if variant == "exp" else 1, normalize=1 if (normalize or variant == "exp") else 0,
                 eps=float(plan.eps), scale=float(plan.scale), fwd_config=fwd, keep_config=keep_cfg,
                 bwd_config=bwd, saved_bwd_config=saved_bwd, saved_bytes=int(saved_bytes), ws=ws,
                 layout=_LAYOUTS[layout], dims=(B, NH, plan.S, Dqk, Dv), want_last=bool(return_last_states),
                 has_initial=has_initial)
    h, C, n, m = _chunkwise(q, k, v, i, f, c_initial, n_initial, m_initial, st)
    if not return_last_states:
        return h
    return (h, (C, n, m)) if variant == "exp" else (h, (C, n))


def mlstm_recurrent_step(q, k, v, i, f, c, n, m=None, *, variant="exp", normalize=True, eps=1e-6,
                         qk_scale=None, config=None):
    """Generation steps: q, k (B, NH, Dqk), v (B, NH, Dv), gates (B, NH) or (B, NH, 1) for one
    token, or q, k (B, NH, T, Dqk), v (B, NH, T, Dv), gates (B, NH, T) for T tokens; states c
    (B, NH, Dqk, Dv), n (B, NH, Dqk), m (B, NH, 1) or (B, NH) in float32 (m may be None for
    "sig"). Returns (h, (c', n', m')), h (B, NH, Dv) or (B, NH, T, Dv). The new states may take
    the buffers of c, n, m (jax.jit(..., donate_argnums=...) lets XLA update them in place)."""
    _check_backend()
    load_jax_library()
    if m is None:
        if variant == "exp":
            raise TflaArgumentError("m is None: mLSTMexp needs the stabilizer state (B, NH, 1)")
        m = jnp.zeros(tuple(c.shape[:2]) + (1,), jnp.float32)
    infos = [_info(nm, x) for nm, x in (("q", q), ("k", k), ("v", v), ("i", i), ("f", f), ("c", c), ("n", n),
                                          ("m", m))]
    plan = check_step(*infos, variant=variant, normalize=normalize, eps=eps, scale=qk_scale)
    B, NH, T, Dqk, Dv = plan.B, plan.NH, plan.S, plan.Dqk, plan.Dv
    one = len(q.shape) == 3
    if one:
        q, k, v = q.reshape(B, NH, 1, Dqk), k.reshape(B, NH, 1, Dqk), v.reshape(B, NH, 1, Dv)
        i, f = i.reshape(B, NH, 1), f.reshape(B, NH, 1)
    st = _Static(variant=0 if variant == "exp" else 1, normalize=1 if (normalize or variant == "exp") else 0,
                 eps=float(plan.eps), scale=float(plan.scale), fwd_config=None, keep_config=None,
                 bwd_config=None, saved_bwd_config=None, saved_bytes=0, ws=(), layout=0,
                 dims=(B, NH, T, Dqk, Dv), want_last=True, has_initial=True)
    f32 = jnp.float32
    outs = [jax.ShapeDtypeStruct((B, NH, T, Dv), q.dtype), jax.ShapeDtypeStruct((B, NH, Dqk, Dv), f32),
            jax.ShapeDtypeStruct((B, NH, Dqk), f32), jax.ShapeDtypeStruct(tuple(m.shape), f32)]
    h, c2, n2, m2 = jax.ffi.ffi_call("tfla_mlstm_step", outs, input_output_aliases={5: 1, 6: 2, 7: 3})(
        q, k, v, i, f, c, n, m, **_attrs(st, _step_config(plan, config)))
    return (h.reshape(B, NH, Dv) if one else h), (c2, n2, m2)


def _step_config(plan, pinned):
    """The step's whole config for this plan, resolved at trace time (memoized)."""
    text = _binding.config_text(pinned)
    key = ("step", plan.B, plan.NH, plan.S, plan.Dqk, plan.Dv, plan.dtype, plan.gate_dtype, plan.variant,
           plan.normalize, plan.eps, plan.scale, text)
    hit = _resolved_memo.get(key)
    if hit is None:
        hit = _binding.config_text(_binding.kernel_config(plan, "step", text))
        with _lock:
            _resolved_memo[key] = hit
    return hit


def _register_on_import():
    """Registers the targets when the libraries are there; a missing library is reported at the
    first call instead (so `import tfla.jax` works for inspection without them)."""
    try:
        load_jax_library()
    except TflaLibraryNotFoundError:
        pass


_register_on_import()
