"""The chunkwise TFLA forward and backward on torch tensors, as a torch.autograd.Function.

`mlstm_chunkwise__xl_chunk` and `mlstm_siging_chunkwise__xl_chunk` have the signatures and
defaults of mlstm_kernels.torch.chunkwise.triton_xl_chunk(_siging) (mlstm-kernels 2.0.6), so a
model switches by changing its import. Differences, all deliberate:
- chunk_size is tfla's chunk length ("chunk" config key); chunk_size=None lets tfla pick (the
  tuned config from its cache, else its default), which is usually the fastest choice.
- The Triton tuning knobs (chunk_size_inter/intra, siz_b_*, num_warps_*, num_stages_*) have
  no meaning for tfla: accepted and ignored (a warning once when one is set). tfla's own
  kernel configuration goes in the keyword-only `config` / `backward_config`.
- recompute_states_in_bw defaults to None: tfla keeps the forward's chunk states for the
  backward (ForwardTensors::saved) whenever a backward will follow, which makes forward +
  backward about 10% faster; True recomputes them (less memory held between the passes). Where
  the backward runs the parallel form (short sequences with no states in or out), which reads
  no chunk states, none are kept, so both passes run that form.
- Inputs are used in place (no .contiguous() copies): q, k, v need a contiguous last
  dimension, the states must be contiguous float32; anything else raises TflaArgumentError.
  Gates may be float32 or the input dtype, with any strides.
- Under torch.autocast the inputs are cast to autocast_kernel_dtype as in the seed, except
  float32 gates (kept) and states (always float32).
- Gradients: dq, dk, dv, di, df and dC_initial; dn_initial and dm_initial are zeros and the
  gradients of the returned n and m are ignored, as in the seed (the normalizer and the
  stabilizer are held constant in the backward, DESIGN.md section 3).
"""

import sys
import threading
import warnings

import torch
from torch.autograd.function import once_differentiable

from . import _fast
from ._launch import _UNSET, Options, configs, forward_entry, node_record, run_backward, run_forward
from .._errors import TflaArgumentError
from ._runtime import compiled_ops, hashable_config, is_compiling, name_non_tensor

_modules = sys.modules
_grad_enabled = torch.is_grad_enabled
_autocast_enabled = torch.is_autocast_enabled  # no argument: CUDA's (a device name costs a parse)

try:  # the custom ops, registered on import: what torch.compile traces into its graph
    from . import ops  # noqa: F401
except (ImportError, AttributeError):  # torch < 2.4: eager only
    pass

_assume_constant = getattr(torch.compiler, "assume_constant_result", None) or (lambda fn: fn)

_TRITON_KNOBS = ("chunk_size_inter", "chunk_size_intra", "siz_b_L_parallel", "siz_b_L_loop",
                 "siz_b_DH_parallel", "siz_b_DH_loop", "num_warps_intra", "num_warps_inter",
                 "num_stages_intra", "num_stages_inter")
_warned = set()


def _warn_ignored(knobs):
    for name, value in knobs.items():
        if value is not None and name not in _warned:
            _warned.add(name)
            warnings.warn(f"tfla: {name}={value} is a Triton kernel setting of mlstm_kernels and is "
                          "ignored (tfla's kernel configuration: config=...)", stacklevel=3)


def _backward(ctx, dh, dC_last, dn_last, dm_last):
    q, k, v, i, f, c0, n0, m0, norm, saved = ctx.saved_tensors
    dq, dk, dv, di, df, dC0 = run_backward(ctx.entry, q, k, v, i, f, c0, n0, m0, norm, saved,
                                           dh, dC_last)
    dn0 = torch.zeros_like(n0) if n0 is not None else None
    dm0 = torch.zeros_like(m0) if m0 is not None else None
    return dq, dk, dv, di, df, dC0, dn0, dm0, None, None


_backward_once = once_differentiable(_backward)


class MlstmChunkwiseFunction(torch.autograd.Function):
    """h, C_last, n_last, m_last = apply(q, k, v, i, f, C0, n0, m0, options, need_grad);
    need_grad: whether a backward will follow (grad enabled and an input requires grad)."""

    @staticmethod
    def forward(ctx, q, k, v, i, f, c0, n0, m0, opts, need_grad):
        keep = need_grad and not opts.recompute
        e = forward_entry(q, k, v, i, f, c0, n0, m0, opts, keep)
        h, norm, C_last, n_last, m_last, saved = run_forward(e, q, k, v, i, f, c0, n0, m0, need_grad)
        ctx.entry = e
        ctx.save_for_backward(q, k, v, i, f, c0, n0, m0, norm, saved)
        ctx.set_materialize_grads(False)
        if n_last is not None:  # the gradients of n and m are ignored
            if m_last is not None:
                ctx.mark_non_differentiable(n_last, m_last)
            else:
                ctx.mark_non_differentiable(n_last)
        return h, C_last, n_last, m_last

    @staticmethod
    def backward(ctx, dh, dC_last, dn_last, dm_last):
        # once_differentiable (an error on a second differentiation) matters only when the
        # backward records a graph (create_graph=True); otherwise grad mode is off already
        if _grad_enabled():
            return _backward_once(ctx, dh, dC_last, dn_last, dm_last)
        return _backward(ctx, dh, dC_last, dn_last, dm_last)


# _apply: the C implementation of MlstmChunkwiseFunction.apply, used while no functorch
# transform is active (_functorch_active() False). torch.autograd.Function.apply is a Python
# wrapper around it that, in that state, only unwraps functorch tensors left over from a
# finished transform (passed here as they are). Where torch lacks either, always the wrapper.
_functorch_active = getattr(torch._C, "_are_functorch_transforms_active", None)
try:
    _apply = torch._C._FunctionBase.__dict__["apply"].__get__(None, MlstmChunkwiseFunction)
except (AttributeError, KeyError, TypeError):  # pragma: no cover - another torch's internals
    _apply = None
if _apply is None or _functorch_active is None:  # pragma: no cover
    _apply = MlstmChunkwiseFunction.apply
    _functorch_active = bool  # bool() is False: _apply, the wrapper, for every call


def _autocast(q, k, v, i, f, c0, n0, m0, dtype):
    """The seed's custom_fwd(cast_inputs=dtype) under autocast, keeping fp32 gates and states."""
    if not torch.is_autocast_enabled("cuda"):
        return q, k, v, i, f, c0, n0, m0
    q, k, v = (t.to(dtype) for t in (q, k, v))
    i, f = (g if g.dtype == torch.float32 else g.to(dtype) for g in (i, f))
    c0, n0, m0 = (None if s is None else s.to(torch.float32) for s in (c0, n0, m0))
    return q, k, v, i, f, c0, n0, m0


def mlstm_chunkwise(q, k, v, i, f, c_initial=None, n_initial=None, m_initial=None,
                    return_last_states=False, eps=1e-6, chunk_size=None, *, variant="exp",
                    normalize=True, qk_scale=None, config=None, backward_config=None,
                    recompute_states_in_bw=None, autocast_kernel_dtype=torch.float32, cu_seqlens=None,
                    max_seqlen=None):
    """The chunkwise mLSTM (variant "exp" or "sig") with autograd.

    q, k: (B, NH, S, Dqk); v: (B, NH, S, Dv) in bfloat16, float16 or float32; i, f: (B, NH, S)
    gate pre-activations, float32 or the input dtype; c_initial (B, NH, Dqk, Dv), n_initial
    (B, NH, Dqk), m_initial (B, NH, 1): optional float32 initial states (m ignored for "sig").
    Returns h (B, NH, S, Dv), or (h, (C, n, m)) ("exp") / (h, (C, n)) ("sig") with
    return_last_states. chunk_size pins tfla's chunk (config key "chunk"); None (the default)
    lets tfla pick its kernels and chunk for the shape (the tuned config, else its default). A
    pinned chunk runs the chunkwise form at that chunk, where tfla might have picked another chunk
    or, for short sequences, the parallel form. config/backward_config: tfla kernel configs
    ("key=value,..." or a dict), overriding chunk_size's "chunk". Runs on torch's current stream.

    Without gradients (grad mode off, or no input requiring grad) the forward runs directly,
    without an autograd node; with them through an autograd node made in C++ where the C path
    (tfla.torch._fast) is loaded, else through MlstmChunkwiseFunction (both compute the same
    gradients); under torch.compile through the custom ops (tfla.torch.ops).

    cu_seqlens (N + 1 offsets, FLA's convention) packs N sequences of variable lengths along the
    token axis of B = 1 (tfla.torch.varlen.mlstm_chunkwise_packed, where max_seqlen is
    described); the states are then per sequence, (N, NH, ...)."""
    if cu_seqlens is not None:
        from .varlen import mlstm_chunkwise_packed
        return mlstm_chunkwise_packed(q, k, v, i, f, cu_seqlens, max_seqlen, c_initial, n_initial, m_initial,
                                      return_last_states, eps, chunk_size, variant=variant, normalize=normalize,
                                      qk_scale=qk_scale, config=config, backward_config=backward_config,
                                      recompute_states_in_bw=recompute_states_in_bw)
    if max_seqlen is not None:
        raise TflaArgumentError("max_seqlen is given without cu_seqlens: it bounds packed sequences only")
    opts = options(variant, normalize, eps, qk_scale, chunk_size, config, backward_config,
                   return_last_states, recompute_states_in_bw)
    try:
        if is_compiling() or _autocast_enabled():
            h, C, n, m = _traced_or_autocast(q, k, v, i, f, c_initial, n_initial, m_initial, opts,
                                             autocast_kernel_dtype)
        elif _grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad or i.requires_grad
                                  or f.requires_grad or (c_initial is not None or n_initial is not None
                                                         or m_initial is not None)
                                  and _state_requires_grad(c_initial, n_initial, m_initial)):
            h, C, n, m = _differentiated(q, k, v, i, f, c_initial, n_initial, m_initial, opts)
        else:
            h, C, n, m = _plain(q, k, v, i, f, c_initial, n_initial, m_initial, opts)
    except AttributeError:  # an argument that is not a tensor is named; any other error stands
        name_non_tensor(("c_initial", "n_initial", "m_initial"), q=q, k=k, v=v, i=i, f=f,
                        c_initial=c_initial, n_initial=n_initial, m_initial=m_initial)
        raise
    if not return_last_states:
        return h
    return (h, (C, n, m)) if variant == "exp" else (h, (C, n))


# A thread's entries of its previous C calls without and with gradients, with their options: a
# call with the same options object (options() memoizes them) tries that entry's C path first,
# whose own check of every argument's signature stands in for forward_entry's lookup (the C
# path declines anything else, and the call then finds its entry as before). Per thread, as the
# entries: a backward that the node hands to the Python path fills its entry's ctypes struct.
_last = threading.local()
_NONE = (None, None)


def _plain(q, k, v, i, f, c0, n0, m0, opts):
    """The forward without gradients: (h, C_last, n_last, m_last)."""
    o, e = getattr(_last, "plain", _NONE)
    if o is opts and e.ext is not None:
        r = _fast.call(e.ext[0], q, k, v, i, f, c0, n0, m0)
        if r.__class__ is tuple:
            return r[0], r[2], r[3], r[4]
        if r is not None:
            e.forward.raise_status(r)
    e = forward_entry(q, k, v, i, f, c0, n0, m0, opts, False)
    h, _, C, n, m, _ = run_forward(e, q, k, v, i, f, c0, n0, m0, False)
    if e.ext is not None:
        _last.plain = (opts, e)
    return h, C, n, m


def _differentiated(q, k, v, i, f, c0, n0, m0, opts):
    """The forward with its autograd node: in C++ (one C call, tfla.torch._fast.node) where the
    extension is loaded and the arguments are those its entry was made for; else
    MlstmChunkwiseFunction. Under a functorch transform or with compiled autograd on, always the
    Function (its wrapper)."""
    if _functorch_active() or _compiled_autograd_on():
        return MlstmChunkwiseFunction.apply(q, k, v, i, f, c0, n0, m0, opts, True)
    o, e = getattr(_last, "grad", _NONE)
    if o is opts:
        rec = e.node
        if rec is not None:
            r = _fast.node(rec, e, q, k, v, i, f, c0, n0, m0)
            if r.__class__ is tuple:
                return r
            if r is not None:
                e.forward.raise_status(r)
    e = forward_entry(q, k, v, i, f, c0, n0, m0, opts, not opts.recompute)
    rec = e.node
    if rec is _UNSET:
        rec = e.node = node_record(e)
    if rec is not None:
        r = _fast.node(rec, e, q, k, v, i, f, c0, n0, m0)
        if r.__class__ is tuple:
            _last.grad = (opts, e)
            return r
        if r is not None:
            e.forward.raise_status(r)
    return _apply(q, k, v, i, f, c0, n0, m0, opts, True)


def _compiled_autograd_on():
    """Whether compiled autograd (torch._dynamo.compiled_autograd) is on in this process: its
    backward traces each node, which the C++ node cannot be, so the Function serves."""
    ca = _modules.get("torch._dynamo.compiled_autograd")
    return ca is not None and getattr(ca, "compiled_autograd_enabled", False)  # a torch without the flag: off


def _state_requires_grad(c0, n0, m0):
    return ((c0 is not None and c0.requires_grad) or (n0 is not None and n0.requires_grad)
            or (m0 is not None and m0.requires_grad))


def _traced_or_autocast(q, k, v, i, f, c0, n0, m0, opts, autocast_kernel_dtype):
    """mlstm_chunkwise under torch.compile (the custom ops) or under autocast (inputs cast)."""
    args = _autocast(q, k, v, i, f, c0, n0, m0, autocast_kernel_dtype)
    need_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in args)
    if is_compiling():
        return compiled_ops().chunkwise(*args, opts, need_grad)
    with torch.autocast("cuda", enabled=False):
        return MlstmChunkwiseFunction.apply(*args, opts, need_grad)


_options_memo = {}


@_assume_constant
def options(variant, normalize, eps, qk_scale, chunk_size, config, backward_config,
            return_last_states, recompute):
    """The Options of a call (memoized: config texts are parsed once per distinct setting)."""
    key = (variant, normalize, eps, qk_scale, chunk_size,
           config if config is None or config.__class__ is str else hashable_config(config),
           backward_config if backward_config is None or backward_config.__class__ is str
           else hashable_config(backward_config), return_last_states, recompute)
    opts = _options_memo.get(key)
    if opts is None:
        fwd_cfg, bwd_cfg = configs(chunk_size, config, backward_config)
        opts = Options(variant=variant, normalize=bool(normalize), eps=float(eps),
                       scale=0.0 if qk_scale is None else float(qk_scale), fwd_config=fwd_cfg,
                       bwd_config=bwd_cfg, return_last_states=bool(return_last_states),
                       recompute=bool(recompute))
        _options_memo[key] = opts
    return opts


def mlstm_chunkwise__xl_chunk(
    q: torch.Tensor,  # (B, NH, S, DHQK)
    k: torch.Tensor,  # (B, NH, S, DHQK)
    v: torch.Tensor,  # (B, NH, S, DHHV)
    i: torch.Tensor,  # (B, NH, S)
    f: torch.Tensor,  # (B, NH, S)
    c_initial: torch.Tensor = None,  # (B, NH, DHQK, DHHV)
    n_initial: torch.Tensor = None,  # (B, NH, DHQK)
    m_initial: torch.Tensor = None,  # (B, NH, 1)
    return_last_states: bool = False,
    eps: float = 1e-6,
    chunk_size: int = 128,
    chunk_size_inter: int = None,
    chunk_size_intra: int = None,
    siz_b_L_parallel: int = None,
    siz_b_L_loop: int = None,
    siz_b_DH_parallel: int = None,
    siz_b_DH_loop: int = None,
    num_warps_intra: int = None,
    num_warps_inter: int = None,
    num_stages_intra: int = None,
    num_stages_inter: int = None,
    recompute_states_in_bw: bool = None,
    autocast_kernel_dtype: torch.dtype = torch.float32,
    *,
    qk_scale: float = None,
    config=None,
    backward_config=None,
):
    """mLSTMexp, chunkwise (TFLA): the signature of mlstm_kernels' mlstm_chunkwise__xl_chunk.
    chunk_size, like the Triton settings after it, is the seed's kernel setting and is not used:
    tfla picks its chunk for the shape (pin one with config={"chunk": N})."""
    _warn_ignored(dict(chunk_size_inter=chunk_size_inter, chunk_size_intra=chunk_size_intra,
                       siz_b_L_parallel=siz_b_L_parallel, siz_b_L_loop=siz_b_L_loop,
                       siz_b_DH_parallel=siz_b_DH_parallel, siz_b_DH_loop=siz_b_DH_loop,
                       num_warps_intra=num_warps_intra, num_warps_inter=num_warps_inter,
                       num_stages_intra=num_stages_intra, num_stages_inter=num_stages_inter))
    return mlstm_chunkwise(q, k, v, i, f, c_initial, n_initial, m_initial, return_last_states, eps,
                           None, variant="exp", qk_scale=qk_scale, config=config,
                           backward_config=backward_config,
                           recompute_states_in_bw=recompute_states_in_bw,
                           autocast_kernel_dtype=autocast_kernel_dtype)


def mlstm_siging_chunkwise__xl_chunk(
    q: torch.Tensor,  # (B, NH, S, DHQK)
    k: torch.Tensor,  # (B, NH, S, DHQK)
    v: torch.Tensor,  # (B, NH, S, DHHV)
    i: torch.Tensor,  # (B, NH, S)
    f: torch.Tensor,  # (B, NH, S)
    c_initial: torch.Tensor = None,  # (B, NH, DHQK, DHHV)
    n_initial: torch.Tensor = None,  # (B, NH, DHQK)
    m_initial: torch.Tensor = None,  # (B, NH, 1), unused (mLSTMsig has no stabilizer)
    return_last_states: bool = False,
    eps: float = 1e-6,
    normalize: bool = True,
    chunk_size: int = 128,
    chunk_size_inter: int = None,
    chunk_size_intra: int = None,
    siz_b_L_parallel: int = None,
    siz_b_L_loop: int = None,
    siz_b_DH_parallel: int = None,
    siz_b_DH_loop: int = None,
    num_warps_intra: int = None,
    num_warps_inter: int = None,
    num_stages_intra: int = None,
    num_stages_inter: int = None,
    recompute_states_in_bw: bool = None,
    autocast_kernel_dtype: torch.dtype = torch.float32,
    *,
    qk_scale: float = None,
    config=None,
    backward_config=None,
):
    """mLSTMsig, chunkwise (TFLA): the signature of mlstm_kernels' mlstm_siging_chunkwise__xl_chunk.
    chunk_size, like the Triton settings after it, is the seed's kernel setting and is not used:
    tfla picks its chunk for the shape (pin one with config={"chunk": N})."""
    _warn_ignored(dict(chunk_size_inter=chunk_size_inter, chunk_size_intra=chunk_size_intra,
                       siz_b_L_parallel=siz_b_L_parallel, siz_b_L_loop=siz_b_L_loop,
                       siz_b_DH_parallel=siz_b_DH_parallel, siz_b_DH_loop=siz_b_DH_loop,
                       num_warps_intra=num_warps_intra, num_warps_inter=num_warps_inter,
                       num_stages_intra=num_stages_intra, num_stages_inter=num_stages_inter))
    return mlstm_chunkwise(q, k, v, i, f, c_initial, n_initial, None, return_last_states, eps,
                           None, variant="sig", normalize=normalize, qk_scale=qk_scale,
                           config=config, backward_config=backward_config,
                           recompute_states_in_bw=recompute_states_in_bw,
                           autocast_kernel_dtype=autocast_kernel_dtype)
