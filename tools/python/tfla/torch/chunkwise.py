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
  backward about 10% faster; True recomputes them (less memory held between the passes).
- Inputs are used in place (no .contiguous() copies): q, k, v need a contiguous last
  dimension, the states must be contiguous float32; anything else raises TflaArgumentError.
  Gates may be float32 or the input dtype, with any strides.
- Under torch.autocast the inputs are cast to autocast_kernel_dtype as in the seed, except
  float32 gates (kept) and states (always float32).
- Gradients: dq, dk, dv, di, df and dC_initial; dn_initial and dm_initial are zeros and the
  gradients of the returned n and m are ignored, as in the seed (the normalizer and the
  stabilizer are held constant in the backward, DESIGN.md section 3).
"""

import threading
import warnings
from dataclasses import dataclass

import torch
from torch.autograd.function import once_differentiable

from .. import _binding
from .._checks import check_forward, seq_strides
from .._errors import TflaArgumentError
from ._runtime import device_guard, info, ptr, scratch, stream_handle, usable

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


@dataclass(frozen=True)
class _Options:
    variant: str
    normalize: bool
    eps: float
    scale: float
    fwd_config: str  # "key=value,..." or None
    bwd_config: str
    return_last_states: bool
    recompute: bool  # True: never keep the forward's states for the backward


def _configs(chunk_size, config, backward_config):
    """Forward and backward config texts: chunk_size pins "chunk" unless a config sets it;
    the backward follows the forward's pinned chunk."""
    fwd = _binding.parse_config(_binding.config_text(config))
    bwd = _binding.parse_config(_binding.config_text(backward_config))
    if chunk_size is not None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
            raise TflaArgumentError(f"chunk_size must be an int or None, got {chunk_size!r}")
        fwd.setdefault("chunk", chunk_size)
    if "chunk" in fwd:
        bwd.setdefault("chunk", fwd["chunk"])
    return _binding.config_text(fwd), _binding.config_text(bwd)


# ---- sizes, memoized per shape and config (the library's lookups are memoized per process too)
_memo_lock = threading.Lock()
_memo = {}


def _plan_key(plan):
    return (plan.B, plan.NH, plan.S, plan.Dqk, plan.Dv, plan.dtype, plan.gate_dtype, plan.variant,
            plan.normalize)


def _sizes(plan, opts, keep):
    """(forward workspace or saved bytes, backward config text, backward workspace bytes) for
    this call."""
    key = (_plan_key(plan), opts.fwd_config, opts.bwd_config, keep)
    with _memo_lock:
        hit = _memo.get(key)
    if hit is not None:
        return hit
    bwd_cfg = opts.bwd_config
    if not keep:
        out = (_binding.forward_workspace_size(plan, opts.fwd_config), bwd_cfg,
               _binding.backward_workspace_size(plan, bwd_cfg))
    else:
        chunk = _binding.kernel_config(plan, "fwd", opts.fwd_config)["chunk"]
        if _binding.kernel_config(plan, "bwd", bwd_cfg).get("chunk") != chunk:
            # the saved states are laid out by the forward's chunk: the backward must use it
            bwd_cfg = f"chunk={chunk}"
        out = (_binding.saved_size(plan, opts.fwd_config), bwd_cfg,
               _binding.backward_workspace_size(plan, bwd_cfg, saved=True))
    with _memo_lock:
        _memo[key] = out
    return out


class MlstmChunkwiseFunction(torch.autograd.Function):
    """h, C_last, n_last, m_last = apply(q, k, v, i, f, C0, n0, m0, options, need_grad);
    need_grad: whether a backward will follow (grad enabled and an input requires grad)."""

    @staticmethod
    def forward(ctx, q, k, v, i, f, c0, n0, m0, opts, need_grad):
        exp = opts.variant == "exp"
        plan = check_forward(info("q", q), info("k", k), info("v", v), info("i", i), info("f", f),
                             None if c0 is None else info("c_initial", c0),
                             None if n0 is None else info("n_initial", n0),
                             None if m0 is None else info("m_initial", m0),
                             variant=opts.variant, normalize=opts.normalize, eps=opts.eps,
                             scale=opts.scale)
        keep = need_grad and not opts.recompute
        dev = q.device
        B, NH, S, Dqk, Dv = plan.B, plan.NH, plan.S, plan.Dqk, plan.Dv
        h = torch.empty((B, NH, S, Dv), dtype=q.dtype, device=dev)
        norm = torch.empty((B, NH, S), dtype=torch.float32, device=dev) if need_grad else None
        C_last = n_last = m_last = None
        if opts.return_last_states:
            C_last = torch.empty((B, NH, Dqk, Dv), dtype=torch.float32, device=dev)
            n_last = torch.empty((B, NH, Dqk), dtype=torch.float32, device=dev)
            if exp:
                m_last = torch.empty((B, NH, 1), dtype=torch.float32, device=dev)
        p = dict(q=ptr(q), k=ptr(k), v=ptr(v), i=ptr(i), f=ptr(f), h=ptr(h), norm=ptr(norm),
                 C0=ptr(c0), n0=ptr(n0), m0=ptr(m0) if exp else 0, C_last=ptr(C_last),
                 n_last=ptr(n_last), m_last=ptr(m_last))
        saved = None
        with device_guard(dev):
            fwd_bytes, _, _ = _sizes(plan, opts, keep)
            stream = stream_handle(dev)
            if keep:
                saved = scratch(fwd_bytes, dev)
                p["saved"], p["saved_bytes"] = ptr(saved), fwd_bytes
                _binding.forward(plan, p, stream, 0, 0, opts.fwd_config)
            else:
                ws = scratch(fwd_bytes, dev)
                _binding.forward(plan, p, stream, ptr(ws), fwd_bytes, opts.fwd_config)
        ctx.plan, ctx.opts, ctx.keep = plan, opts, keep
        ctx.save_for_backward(q, k, v, i, f, c0, n0, m0, norm, saved)
        ctx.set_materialize_grads(False)
        fixed = [t for t in (n_last, m_last) if t is not None]  # their gradients are ignored
        if fixed:
            ctx.mark_non_differentiable(*fixed)
        return h, C_last, n_last, m_last

    @staticmethod
    @once_differentiable
    def backward(ctx, dh, dC_last, dn_last, dm_last):
        q, k, v, i, f, c0, n0, m0, norm, saved = ctx.saved_tensors
        plan, opts, keep = ctx.plan, ctx.opts, ctx.keep
        dev = q.device
        B, NH, S, Dqk, Dv = plan.B, plan.NH, plan.S, plan.Dqk, plan.Dv
        if dh is None:
            dh = torch.zeros((B, NH, S, Dv), dtype=q.dtype, device=dev)
        dh = usable(dh.to(q.dtype), "dh")
        dh_strides = seq_strides(info("dh", dh))
        if dC_last is not None:
            dC_last = dC_last.to(torch.float32).contiguous()
        dq = torch.empty((B, NH, S, Dqk), dtype=q.dtype, device=dev)
        dk = torch.empty((B, NH, S, Dqk), dtype=q.dtype, device=dev)
        dv = torch.empty((B, NH, S, Dv), dtype=q.dtype, device=dev)
        di = torch.empty((B, NH, S), dtype=i.dtype, device=dev)
        df = torch.empty((B, NH, S), dtype=f.dtype, device=dev)
        dC0 = torch.empty((B, NH, Dqk, Dv), dtype=torch.float32, device=dev) if c0 is not None else None
        p = dict(q=ptr(q), k=ptr(k), v=ptr(v), i=ptr(i), f=ptr(f), dh=ptr(dh), norm=ptr(norm),
                 C0=ptr(c0), n0=ptr(n0), m0=ptr(m0) if opts.variant == "exp" else 0,
                 dC_last=ptr(dC_last), dq=ptr(dq), dk=ptr(dk), dv=ptr(dv), di=ptr(di), df=ptr(df),
                 dC0=ptr(dC0), saved=ptr(saved),
                 saved_bytes=saved.numel() if saved is not None else 0)
        with device_guard(dev):
            _, bwd_cfg, bwd_bytes = _sizes(plan, opts, keep)
            ws = scratch(bwd_bytes, dev)
            _binding.backward(plan, p, stream_handle(dev), ptr(ws), bwd_bytes, bwd_cfg, dh_strides)
        dn0 = torch.zeros_like(n0) if n0 is not None else None
        dm0 = torch.zeros_like(m0) if m0 is not None else None
        return dq, dk, dv, di, df, dC0, dn0, dm0, None, None


def _autocast(q, k, v, i, f, c0, n0, m0, dtype):
    """The seed's custom_fwd(cast_inputs=dtype) under autocast, keeping fp32 gates and states."""
    if not torch.is_autocast_enabled("cuda"):
        return q, k, v, i, f, c0, n0, m0
    q, k, v = (t.to(dtype) for t in (q, k, v))
    i, f = (g if g.dtype == torch.float32 else g.to(dtype) for g in (i, f))
    c0, n0, m0 = (None if s is None else s.to(torch.float32) for s in (c0, n0, m0))
    return q, k, v, i, f, c0, n0, m0


def mlstm_chunkwise(q, k, v, i, f, c_initial=None, n_initial=None, m_initial=None,
                    return_last_states=False, eps=1e-6, chunk_size=128, *, variant="exp",
                    normalize=True, qk_scale=None, config=None, backward_config=None,
                    recompute_states_in_bw=None, autocast_kernel_dtype=torch.float32):
    """The chunkwise mLSTM (variant "exp" or "sig") with autograd.

    q, k: (B, NH, S, Dqk); v: (B, NH, S, Dv) in bfloat16, float16 or float32; i, f: (B, NH, S)
    gate pre-activations, float32 or the input dtype; c_initial (B, NH, Dqk, Dv), n_initial
    (B, NH, Dqk), m_initial (B, NH, 1): optional float32 initial states (m ignored for "sig").
    Returns h (B, NH, S, Dv), or (h, (C, n, m)) ("exp") / (h, (C, n)) ("sig") with
    return_last_states. config/backward_config: tfla kernel configs ("key=value,..." or a
    dict), overriding chunk_size's "chunk". Runs on torch's current stream."""
    fwd_cfg, bwd_cfg = _configs(chunk_size, config, backward_config)
    opts = _Options(variant=variant, normalize=bool(normalize), eps=float(eps),
                    scale=0.0 if qk_scale is None else float(qk_scale), fwd_config=fwd_cfg,
                    bwd_config=bwd_cfg, return_last_states=bool(return_last_states),
                    recompute=bool(recompute_states_in_bw))
    args = _autocast(q, k, v, i, f, c_initial, n_initial, m_initial, autocast_kernel_dtype)
    need_grad = torch.is_grad_enabled() and any(getattr(t, "requires_grad", False) for t in args)
    with torch.autocast("cuda", enabled=False):
        h, C, n, m = MlstmChunkwiseFunction.apply(*args, opts, need_grad)
    if not return_last_states:
        return h
    return (h, (C, n, m)) if variant == "exp" else (h, (C, n))


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
    """mLSTMexp, chunkwise (TFLA): the signature of mlstm_kernels' mlstm_chunkwise__xl_chunk."""
    _warn_ignored(dict(chunk_size_inter=chunk_size_inter, chunk_size_intra=chunk_size_intra,
                       siz_b_L_parallel=siz_b_L_parallel, siz_b_L_loop=siz_b_L_loop,
                       siz_b_DH_parallel=siz_b_DH_parallel, siz_b_DH_loop=siz_b_DH_loop,
                       num_warps_intra=num_warps_intra, num_warps_inter=num_warps_inter,
                       num_stages_intra=num_stages_intra, num_stages_inter=num_stages_inter))
    return mlstm_chunkwise(q, k, v, i, f, c_initial, n_initial, m_initial, return_last_states, eps,
                           chunk_size, variant="exp", qk_scale=qk_scale, config=config,
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
    """mLSTMsig, chunkwise (TFLA): the signature of mlstm_kernels' mlstm_siging_chunkwise__xl_chunk."""
    _warn_ignored(dict(chunk_size_inter=chunk_size_inter, chunk_size_intra=chunk_size_intra,
                       siz_b_L_parallel=siz_b_L_parallel, siz_b_L_loop=siz_b_L_loop,
                       siz_b_DH_parallel=siz_b_DH_parallel, siz_b_DH_loop=siz_b_DH_loop,
                       num_warps_intra=num_warps_intra, num_warps_inter=num_warps_inter,
                       num_stages_intra=num_stages_intra, num_stages_inter=num_stages_inter))
    return mlstm_chunkwise(q, k, v, i, f, c_initial, n_initial, None, return_last_states, eps,
                           chunk_size, variant="sig", normalize=normalize, qk_scale=qk_scale,
                           config=config, backward_config=backward_config,
                           recompute_states_in_bw=recompute_states_in_bw,
                           autocast_kernel_dtype=autocast_kernel_dtype)
