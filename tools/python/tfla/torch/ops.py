"""tfla's kernels as PyTorch custom operators (torch.library), for torch.compile.

    torch.ops.tfla.mlstm_fwd   the chunkwise forward  -> (h, norm, C_last, n_last, m_last, saved)
    torch.ops.tfla.mlstm_bwd   the chunkwise backward -> (dq, dk, dv, di, df, dC0)
    torch.ops.tfla.mlstm_fwd_varlen / mlstm_bwd_varlen  the same over packed sequences (cu_seqlens)
    torch.ops.tfla.mlstm_step_ the recurrent step, updating C, n, m in place -> h
    torch.ops.tfla.mlstm_step_into  the step from C, n, m into C_new, n_new, m_new -> h

Each has a fake (meta) implementation, so torch.compile traces shapes without running the GPU,
and mlstm_fwd has its autograd formula registered (its backward calls mlstm_bwd), so a compiled
model has the mLSTM inside its graph, forward and backward, with no graph break. An output that
a call does not produce (norm without gradients, the last states without return_last_states,
the saved states when the backward recomputes them, dC0 without C0) is an empty tensor of shape
(0,): custom operators return tensors, not None.

mlstm_chunkwise and mlstm_recurrent_step call these when torch.compile traces them
(torch.compiler.is_compiling()); eager calls go through the autograd Function and the prepared
calls directly, which costs less host time per call. Both run the same launches (tfla.torch._launch).

The fake implementations ask the library for the saved buffer's size (a host-side config
query, no GPU), with concrete sizes: a dynamic dimension is specialized there.
"""

import dataclasses
from typing import Optional, Tuple

import torch
from torch import Tensor

from .. import _binding
from .._errors import TflaArgumentError
from ._launch import Options, forward_entry, keeps_saved, run_backward, run_forward, sizes

_EMPTY = (0,)


def _options(variant, normalize, eps, scale, fwd_config, bwd_config, return_last_states, recompute):
    return Options(variant=variant, normalize=normalize, eps=eps, scale=scale, fwd_config=fwd_config,
                   bwd_config=bwd_config, return_last_states=return_last_states, recompute=recompute)


def _none_if_empty(t):
    return None if t is None or t.numel() == 0 else t


def _or_empty(t, like, dtype=torch.float32):
    return like.new_empty(_EMPTY, dtype=dtype) if t is None else t


# ---- forward ---------------------------------------------------------------------------------

@torch.library.custom_op("tfla::mlstm_fwd", mutates_args=())
def mlstm_fwd(q: Tensor, k: Tensor, v: Tensor, i: Tensor, f: Tensor, c0: Optional[Tensor],
              n0: Optional[Tensor], m0: Optional[Tensor], variant: str, normalize: bool, eps: float,
              scale: float, fwd_config: Optional[str], bwd_config: Optional[str],
              return_last_states: bool, need_norm: bool, keep_saved: bool
              ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """q, k (B, NH, S, Dqk), v (B, NH, S, Dv), i, f (B, NH, S), optional fp32 c0 (B, NH, Dqk, Dv),
    n0 (B, NH, Dqk), m0 (B, NH, 1). Returns h (B, NH, S, Dv), norm (B, NH, S) fp32 (need_norm),
    C_last, n_last, m_last (return_last_states; m_last for "exp" only) and the saved states
    (uint8, keep_saved) for mlstm_bwd; absent outputs are empty."""
    opts = _options(variant, normalize, eps, scale, fwd_config, bwd_config, return_last_states,
                    not keep_saved)
    e = forward_entry(q, k, v, i, f, c0, n0, m0, opts, keep_saved)
    h, norm, C, n, m, saved = run_forward(e, q, k, v, i, f, c0, n0, m0, need_norm)
    return (h, _or_empty(norm, h), _or_empty(C, h), _or_empty(n, h), _or_empty(m, h),
            _or_empty(saved, h, torch.uint8))


def _saved_bytes(q, i, v, c0, variant, normalize, eps, scale, fwd_config, bwd_config, return_last_states):
    """The saved buffer's size as the real op fills it: 0 where it keeps none (keeps_saved)."""
    B, NH, S, Dqk = (int(x) for x in q.shape)
    Dv = int(v.shape[-1])
    plan = _binding.make_plan(B, NH, S, Dqk, Dv, dtype=str(q.dtype).split(".")[-1],
                              gate_dtype=str(i.dtype).split(".")[-1], variant=variant,
                              normalize=normalize, eps=eps, scale=scale if scale > 0 else None)
    opts = _options(variant, normalize, eps, scale, fwd_config, bwd_config, return_last_states, False)
    if not keeps_saved(plan, opts, True, c0 is None and not return_last_states):
        return 0
    return sizes(plan, opts, True)[0]


@mlstm_fwd.register_fake
def _(q, k, v, i, f, c0, n0, m0, variant, normalize, eps, scale, fwd_config, bwd_config,
      return_last_states, need_norm, keep_saved):
    B, NH, S, Dqk = q.shape
    Dv = v.shape[-1]
    f32 = torch.float32
    h = q.new_empty((B, NH, S, Dv))
    norm = q.new_empty((B, NH, S) if need_norm else _EMPTY, dtype=f32)
    if return_last_states:
        C, n = q.new_empty((B, NH, Dqk, Dv), dtype=f32), q.new_empty((B, NH, Dqk), dtype=f32)
        m = q.new_empty((B, NH, 1) if variant == "exp" else _EMPTY, dtype=f32)
    else:
        C, n, m = (q.new_empty(_EMPTY, dtype=f32) for _ in range(3))
    nbytes = (_saved_bytes(q, i, v, c0, variant, normalize, eps, scale, fwd_config, bwd_config, return_last_states)
              if keep_saved else 0)
    saved = q.new_empty((nbytes,) if keep_saved else _EMPTY, dtype=torch.uint8)
    return h, norm, C, n, m, saved


# ---- backward --------------------------------------------------------------------------------

@torch.library.custom_op("tfla::mlstm_bwd", mutates_args=())
def mlstm_bwd(q: Tensor, k: Tensor, v: Tensor, i: Tensor, f: Tensor, c0: Optional[Tensor],
              n0: Optional[Tensor], m0: Optional[Tensor], norm: Tensor, saved: Optional[Tensor],
              dh: Tensor, dC_last: Optional[Tensor], variant: str, normalize: bool, eps: float,
              scale: float, fwd_config: Optional[str], bwd_config: Optional[str]
              ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The backward of mlstm_fwd (its inputs, its norm and saved outputs, dh and the optional
    dC_last): dq, dk, dv, di, df, and dC0 (empty without c0)."""
    saved, dC_last = _none_if_empty(saved), _none_if_empty(dC_last)
    # return_last_states stands for "not stateless" here: with a dC_last the entry's workspace covers
    # the chunkwise backward that it runs, and a saved buffer is kept whatever the form (keeps_saved)
    opts = _options(variant, normalize, eps, scale, fwd_config, bwd_config,
                    dC_last is not None or saved is not None, saved is None)
    e = forward_entry(q, k, v, i, f, c0, n0, m0, opts, saved is not None)
    dq, dk, dv, di, df, dC0 = run_backward(e, q, k, v, i, f, c0, n0, m0, norm, saved, dh, dC_last)
    return dq, dk, dv, di, df, _or_empty(dC0, dh)


@mlstm_bwd.register_fake
def _(q, k, v, i, f, c0, n0, m0, norm, saved, dh, dC_last, variant, normalize, eps, scale,
      fwd_config, bwd_config):
    B, NH, S, Dqk = q.shape
    Dv = v.shape[-1]
    dC0 = q.new_empty((B, NH, Dqk, Dv) if c0 is not None else _EMPTY, dtype=torch.float32)
    return (q.new_empty((B, NH, S, Dqk)), q.new_empty((B, NH, S, Dqk)), q.new_empty((B, NH, S, Dv)),
            i.new_empty((B, NH, S)), f.new_empty((B, NH, S)), dC0)


def _setup_fwd(ctx, inputs, output):
    (q, k, v, i, f, c0, n0, m0, variant, normalize, eps, scale, fwd_config, bwd_config,
     _return_last, _need_norm, keep_saved) = inputs
    _h, norm, _C, _n, _m, saved = output
    ctx.save_for_backward(q, k, v, i, f, c0, n0, m0, norm, saved if keep_saved else None)
    ctx.args = (variant, normalize, eps, scale, fwd_config, bwd_config)
    ctx.has = (c0 is not None, n0 is not None, m0 is not None)


def _backward_fwd(ctx, dh, dnorm, dC_last, dn_last, dm_last, dsaved):
    q, k, v, i, f, c0, n0, m0, norm, saved = ctx.saved_tensors
    if dh is None:
        dh = torch.zeros_like(q[..., :1]).expand(*q.shape[:3], v.shape[-1])
    dh = dh.to(q.dtype).contiguous()
    if dC_last is not None:
        dC_last = dC_last.float().contiguous() if dC_last.numel() else None
    dq, dk, dv, di, df, dC0 = mlstm_bwd(q, k, v, i, f, c0, n0, m0, norm, saved, dh, dC_last, *ctx.args)
    has_c0, has_n0, has_m0 = ctx.has
    return (dq, dk, dv, di, df, dC0 if has_c0 else None,
            torch.zeros_like(n0) if has_n0 else None, torch.zeros_like(m0) if has_m0 else None,
            None, None, None, None, None, None, None, None, None)


mlstm_fwd.register_autograd(_backward_fwd, setup_context=_setup_fwd)


# ---- packed sequences (cu_seqlens) -------------------------------------------------------------

def _packed_opts(variant, normalize, eps, scale, fwd_config, bwd_config):
    return dict(variant=variant, normalize=normalize, eps=eps, scale=scale if scale > 0 else None,
                fwd_config=fwd_config, bwd_config=bwd_config)


@torch.library.custom_op("tfla::mlstm_fwd_varlen", mutates_args=())
def mlstm_fwd_varlen(q: Tensor, k: Tensor, v: Tensor, i: Tensor, f: Tensor, cu_seqlens: Tensor,
                     c0: Optional[Tensor], n0: Optional[Tensor], m0: Optional[Tensor], max_seqlen: int,
                     variant: str, normalize: bool, eps: float, scale: float, fwd_config: Optional[str],
                     bwd_config: Optional[str], return_last_states: bool, need_norm: bool, keep_saved: bool
                     ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """mlstm_fwd over N packed sequences: q, k (1, NH, T, Dqk), v (1, NH, T, Dv), i, f (1, NH, T),
    cu_seqlens (N + 1,) int32/int64 on q's device, states (N, NH, ...), max_seqlen bounding every
    length (tfla.torch.varlen). Returns h, norm, C_last, n_last, m_last and the saved states as
    mlstm_fwd does; absent outputs are empty."""
    from .varlen import _Call, _forward
    call = _Call(q, k, v, i, f, c0, n0, m0, cu_seqlens, max_seqlen,
                 _packed_opts(variant, normalize, eps, scale, fwd_config, bwd_config))
    with torch.cuda.device(q.device.index):
        h, norm, C, n, m, saved = _forward(call, q, k, v, i, f, c0, n0, m0, need_norm, return_last_states,
                                           keep_saved)
    return (h, _or_empty(norm, h), _or_empty(C, h), _or_empty(n, h), _or_empty(m, h),
            _or_empty(saved, h, torch.uint8))


@mlstm_fwd_varlen.register_fake
def _(q, k, v, i, f, cu_seqlens, c0, n0, m0, max_seqlen, variant, normalize, eps, scale, fwd_config,
      bwd_config, return_last_states, need_norm, keep_saved):
    _, NH, T, Dqk = q.shape
    Dv = v.shape[-1]
    N = cu_seqlens.shape[0] - 1
    f32 = torch.float32
    h = q.new_empty((1, NH, T, Dv))
    norm = q.new_empty((1, NH, T) if need_norm else _EMPTY, dtype=f32)
    if return_last_states:
        C, n = q.new_empty((N, NH, Dqk, Dv), dtype=f32), q.new_empty((N, NH, Dqk), dtype=f32)
        m = q.new_empty((N, NH, 1) if variant == "exp" else _EMPTY, dtype=f32)
    else:
        C, n, m = (q.new_empty(_EMPTY, dtype=f32) for _ in range(3))
    nbytes = 0
    if keep_saved:
        plan = _binding.make_plan(1, int(NH), int(T), int(Dqk), int(Dv), dtype=str(q.dtype).split(".")[-1],
                                  gate_dtype=str(i.dtype).split(".")[-1], variant=variant, normalize=normalize,
                                  eps=eps, scale=scale if scale > 0 else None)
        plan = dataclasses.replace(plan, num_seqs=int(N), max_seqlen=int(max_seqlen))
        nbytes = _binding.saved_size(plan, fwd_config)
    saved = q.new_empty((nbytes,) if keep_saved else _EMPTY, dtype=torch.uint8)
    return h, norm, C, n, m, saved


@torch.library.custom_op("tfla::mlstm_bwd_varlen", mutates_args=())
def mlstm_bwd_varlen(q: Tensor, k: Tensor, v: Tensor, i: Tensor, f: Tensor, cu_seqlens: Tensor,
                     c0: Optional[Tensor], n0: Optional[Tensor], m0: Optional[Tensor], norm: Tensor,
                     saved: Optional[Tensor], dh: Tensor, dC_last: Optional[Tensor], max_seqlen: int,
                     variant: str, normalize: bool, eps: float, scale: float, fwd_config: Optional[str],
                     bwd_config: Optional[str]) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The backward of mlstm_fwd_varlen: dq, dk, dv, di, df, and dC0 (N, NH, Dqk, Dv) (empty
    without c0)."""
    from .varlen import _Call, _backward
    call = _Call(q, k, v, i, f, c0, n0, m0, cu_seqlens, max_seqlen,
                 _packed_opts(variant, normalize, eps, scale, fwd_config, bwd_config))
    with torch.cuda.device(q.device.index):
        dq, dk, dv, di, df, dC0 = _backward(call, q, k, v, i, f, c0, n0, m0, norm, dh, _none_if_empty(dC_last),
                                            _none_if_empty(saved))
    return dq, dk, dv, di, df, _or_empty(dC0, dh)


@mlstm_bwd_varlen.register_fake
def _(q, k, v, i, f, cu_seqlens, c0, n0, m0, norm, saved, dh, dC_last, max_seqlen, variant, normalize, eps,
      scale, fwd_config, bwd_config):
    _, NH, T, Dqk = q.shape
    Dv = v.shape[-1]
    dC0 = q.new_empty(tuple(c0.shape) if c0 is not None else _EMPTY, dtype=torch.float32)
    return (q.new_empty((1, NH, T, Dqk)), q.new_empty((1, NH, T, Dqk)), q.new_empty((1, NH, T, Dv)),
            i.new_empty((1, NH, T)), i.new_empty((1, NH, T)), dC0)


def _setup_fwd_varlen(ctx, inputs, output):
    (q, k, v, i, f, cu, c0, n0, m0, max_seqlen, variant, normalize, eps, scale, fwd_config, bwd_config,
     _return_last, _need_norm, keep_saved) = inputs
    _h, norm, _C, _n, _m, saved = output
    ctx.save_for_backward(q, k, v, i, f, cu, c0, n0, m0, norm, saved if keep_saved else None)
    ctx.args = (max_seqlen, variant, normalize, eps, scale, fwd_config, bwd_config)
    ctx.has = (c0 is not None, n0 is not None, m0 is not None)


def _backward_fwd_varlen(ctx, dh, dnorm, dC_last, dn_last, dm_last, dsaved):
    q, k, v, i, f, cu, c0, n0, m0, norm, saved = ctx.saved_tensors
    if dh is None:
        dh = torch.zeros_like(q[..., :1]).expand(*q.shape[:3], v.shape[-1])
    dh = dh.to(q.dtype).contiguous()
    if dC_last is not None:
        dC_last = dC_last.float().contiguous() if dC_last.numel() else None
    dq, dk, dv, di, df, dC0 = mlstm_bwd_varlen(q, k, v, i, f, cu, c0, n0, m0, norm, saved, dh, dC_last,
                                               *ctx.args)
    has_c0, has_n0, has_m0 = ctx.has
    return (dq, dk, dv, di, df, None, dC0 if has_c0 else None,
            torch.zeros_like(n0) if has_n0 else None, torch.zeros_like(m0) if has_m0 else None,
            None, None, None, None, None, None, None, None, None, None)


mlstm_fwd_varlen.register_autograd(_backward_fwd_varlen, setup_context=_setup_fwd_varlen)


# ---- step ------------------------------------------------------------------------------------

@torch.library.custom_op("tfla::mlstm_step_", mutates_args=("C", "n", "m"))
def mlstm_step_(q: Tensor, k: Tensor, v: Tensor, i: Tensor, f: Tensor, C: Tensor, n: Tensor,
                m: Tensor, variant: str, normalize: bool, eps: float, scale: float,
                config: Optional[str]) -> Tensor:
    """One (q (B, NH, Dqk)) or T (q (B, NH, T, Dqk)) generation steps; the fp32 states C
    (B, NH, Dqk, Dv), n (B, NH, Dqk), m (B, NH, 1) are updated in place. Returns h."""
    from .step import mlstm_recurrent_step
    h, _ = mlstm_recurrent_step(q, k, v, i, f, C, n, m, eps, variant=variant, normalize=normalize,
                                qk_scale=scale if scale > 0 else None, inplace=True, config=config)
    return h


@mlstm_step_.register_fake
def _(q, k, v, i, f, C, n, m, variant, normalize, eps, scale, config):
    return q.new_empty(tuple(v.shape))


@torch.library.custom_op("tfla::mlstm_step_into", mutates_args=("C_new", "n_new", "m_new"))
def mlstm_step_into(q: Tensor, k: Tensor, v: Tensor, i: Tensor, f: Tensor, C: Tensor, n: Tensor,
                    m: Tensor, C_new: Tensor, n_new: Tensor, m_new: Tensor, variant: str,
                    normalize: bool, eps: float, scale: float, config: Optional[str]) -> Tensor:
    """mlstm_step_ from the states C, n, m (left as they are) into C_new, n_new, m_new, buffers
    apart from them: the step kernel reads the one and writes the other, no copy. Returns h."""
    from .step import mlstm_recurrent_step
    h, _ = mlstm_recurrent_step(q, k, v, i, f, C, n, m, eps, variant=variant, normalize=normalize,
                                qk_scale=scale if scale > 0 else None, config=config, c_new=C_new,
                                n_new=n_new, m_new=m_new)
    return h


@mlstm_step_into.register_fake
def _(q, k, v, i, f, C, n, m, C_new, n_new, m_new, variant, normalize, eps, scale, config):
    return q.new_empty(tuple(v.shape))


# ---- what mlstm_chunkwise and mlstm_recurrent_step call under torch.compile ----------------

def chunkwise(q, k, v, i, f, c0, n0, m0, opts, need_grad):
    """MlstmChunkwiseFunction.apply's contract on the custom ops: (h, C_last, n_last, m_last)."""
    keep = need_grad and not opts.recompute
    h, _norm, C, n, m, _saved = mlstm_fwd(q, k, v, i, f, c0, n0, m0, opts.variant, opts.normalize,
                                          opts.eps, opts.scale, opts.fwd_config, opts.bwd_config,
                                          opts.return_last_states, need_grad, keep)
    if not opts.return_last_states:
        return h, None, None, None
    return h, C, n, (m if opts.variant == "exp" else None)


def chunkwise_packed(q, k, v, i, f, cu_seqlens, max_seqlen, c0, n0, m0, opts, need_grad, last, keep):
    """MlstmPackedFunction.apply's contract on the custom ops: (h, C_last, n_last, m_last)."""
    h, _norm, C, n, m, _saved = mlstm_fwd_varlen(
        q, k, v, i, f, cu_seqlens, c0, n0, m0, max_seqlen, opts["variant"], bool(opts["normalize"]),
        float(opts["eps"]), 0.0 if opts["scale"] is None else float(opts["scale"]), opts["fwd_config"],
        opts["bwd_config"], last, need_grad, need_grad and keep)
    if not last:
        return h, None, None, None
    return h, C, n, (m if opts["variant"] == "exp" else None)


def recurrent_step(q, k, v, i, f, c, n, m, eps, variant, normalize, qk_scale, inplace, config,
                   out, c_new, n_new, m_new):
    """mlstm_recurrent_step on the custom ops: new states apart from the old ones (fresh, or
    c_new/n_new/m_new that are other tensors) through mlstm_step_into, with no copy; in place
    (inplace=True, or every new state its old one) through mlstm_step_; a mix of the two (some
    new state its old one, another apart) copies the old states into the new ones first. "Its
    old one" is the same tensor object (what a trace can tell): a new state that is another view
    of the old one's memory must be passed as that tensor itself."""
    if m is None:
        if m_new is not None:
            raise TflaArgumentError("m_new given but its input state is None")
        m = torch.zeros((q.shape[0], q.shape[1], 1), dtype=torch.float32, device=q.device)
    pairs = ((c_new, c), (n_new, n), (m_new, m))
    same = [new is old for new, old in pairs]
    cfg = _binding.config_text(config)
    args = (variant, bool(normalize), float(eps), 0.0 if qk_scale is None else float(qk_scale), cfg)
    if not inplace and not any(same):  # every new state apart from its old one
        news = [new if new is not None else torch.empty_like(old) for new, old in pairs]
        h = mlstm_step_into(q, k, v, i, f, c, n, m, *news, *args)
        c, n, m = news
    else:
        def target(new, old):
            if new is not None:
                if new is not old:
                    new.copy_(old)
                return new
            return old if inplace else old.clone()

        if not all(same):
            c, n, m = (target(new, old) for new, old in pairs)
        h = mlstm_step_(q, k, v, i, f, c, n, m, *args)
    if out is not None:
        out.copy_(h)
        h = out
    return h, (c, n, m)


__all__ = ["mlstm_fwd", "mlstm_bwd", "mlstm_fwd_varlen", "mlstm_bwd_varlen", "mlstm_step_", "mlstm_step_into"]
