"""Packed sequences of variable lengths (FLA's cu_seqlens convention) on torch tensors.

N sequences lie back to back along the token axis of one (1, NH, T, D) layout, sequence j at
tokens [cu_seqlens[j], cu_seqlens[j + 1]). Each runs from its own initial state and no token
sees another sequence; an empty sequence is allowed and does nothing (its last state is its
initial state). States are per sequence: (N, NH, Dqk, Dv), (N, NH, Dqk), (N, NH, 1). A model
whose tensors are (1, T, NH, D), as FLA's are, passes q.transpose(1, 2): a view, no copy.

max_seqlen bounds every sequence's length; the kernels' grids and workspace are sized by a
bucket of it, so calls whose bound falls in the same bucket share their configuration and
compiled kernels, whatever the packing. Without max_seqlen the binding reads cu_seqlens once on
the host (one synchronization), checks every offset and takes the longest length; with it the
call makes no synchronization, and the library clamps offsets that break the rules (so they
cannot read or write outside the tensors) but cannot name them. Under torch.compile a packed call
runs the custom operators tfla::mlstm_fwd_varlen / mlstm_bwd_varlen (tfla.torch.ops) and needs
max_seqlen.
"""

import ctypes
import dataclasses

import torch

from .. import _binding
from .._checks import _shape_text, check_forward, check_state
from .._errors import TflaArgumentError
from .._library import BackwardTensors, ForwardTensors, Strides, load_library
from ._runtime import compiled_ops, current_stream, info, is_compiling

_OFFSET_DTYPES = (torch.int32, torch.int64)


def _offsets(cu_seqlens, q, T, max_seqlen):
    """cu_seqlens as the library takes it (an int32 or int64 CUDA tensor on q's device,
    contiguous) and the length bound; a bad offset is named where the offsets are read."""
    if not isinstance(cu_seqlens, torch.Tensor):
        try:
            cu_seqlens = torch.tensor(list(cu_seqlens), dtype=torch.int64)
        except (TypeError, ValueError, OverflowError):
            raise TflaArgumentError(
                f"cu_seqlens must be a 1-D integer tensor or a sequence of ints, got {type(cu_seqlens).__name__}"
            ) from None
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
        raise TflaArgumentError(
            f"cu_seqlens must be 1-D with N + 1 >= 2 offsets, got shape {_shape_text(tuple(cu_seqlens.shape))}")
    if cu_seqlens.dtype not in _OFFSET_DTYPES:
        raise TflaArgumentError(f"cu_seqlens has dtype {cu_seqlens.dtype}; offsets are int32 or int64")
    if max_seqlen is None or cu_seqlens.device.type != "cuda":
        cu = cu_seqlens.tolist()  # on the GPU: one synchronization
        if cu[0] != 0:
            raise TflaArgumentError(f"cu_seqlens[0] = {cu[0]}, must be 0")
        for j in range(1, len(cu)):
            if cu[j] < cu[j - 1]:
                raise TflaArgumentError(f"cu_seqlens[{j}] = {cu[j]} is below cu_seqlens[{j - 1}] = {cu[j - 1]}: "
                                        "offsets must not decrease")
        if cu[-1] != T:
            raise TflaArgumentError(f"cu_seqlens[N] = {cu[-1]} is not the packed token count T = {T}")
        longest = max(b - a for a, b in zip(cu, cu[1:]))
        if max_seqlen is None:
            max_seqlen = max(longest, 1)
        elif max_seqlen < longest:
            raise TflaArgumentError(f"max_seqlen = {max_seqlen} is below the longest sequence ({longest} tokens)")
    if isinstance(max_seqlen, bool) or not isinstance(max_seqlen, int):
        raise TflaArgumentError(f"max_seqlen must be an int, got {max_seqlen!r}")
    if not 1 <= max_seqlen <= T:
        raise TflaArgumentError(f"max_seqlen = {max_seqlen} must be in [1, T = {T}]")
    if cu_seqlens.device != q.device:
        cu_seqlens = cu_seqlens.to(q.device)
    if not cu_seqlens.is_contiguous():
        cu_seqlens = cu_seqlens.contiguous()
    return cu_seqlens, max_seqlen


class _Call:
    """One packed call's checked sizes, C structs' common parts and configs."""

    def __init__(self, q, k, v, i, f, c0, n0, m0, cu_seqlens, max_seqlen, opts):
        plan = check_forward(info("q", q), info("k", k), info("v", v), info("i", i), info("f", f),
                             variant=opts["variant"], normalize=opts["normalize"], eps=opts["eps"],
                             scale=opts["scale"])
        if plan.B != 1:
            raise TflaArgumentError(
                f"packed sequences take B = 1 (the sequences lie along the token axis); q has shape "
                f"{_shape_text(tuple(q.shape))}")
        self.cu, self.max_seqlen = _offsets(cu_seqlens, q, plan.S, max_seqlen)
        self.N = self.cu.numel() - 1
        NH, T, Dqk, Dv = plan.NH, plan.S, plan.Dqk, plan.Dv
        qi = info("q", q)
        if c0 is not None:
            check_state(info("c_initial", c0), (self.N, NH, Dqk, Dv), qi)
        if n0 is not None:
            check_state(info("n_initial", n0), (self.N, NH, Dqk), qi)
        if m0 is not None and plan.variant == "exp":
            check_state(info("m_initial", m0), (self.N, NH, 1), qi, alt_shape=(self.N, NH))
        if (n0 is not None or m0 is not None) and c0 is None:
            raise TflaArgumentError("n_initial/m_initial given without c_initial: pass all initial states or none")
        self.plan = plan = dataclasses.replace(plan, num_seqs=self.N, max_seqlen=self.max_seqlen)
        self.exp = plan.variant == "exp"
        self.problem = _binding.problem_struct(plan)
        self.int64 = 1 if self.cu.dtype == torch.int64 else 0
        self.fwd_config, self.bwd_config = opts["fwd_config"], opts["bwd_config"]
        self.shapes = dict(h=(1, NH, T, Dv), qk=(1, NH, T, Dqk), gate=(1, NH, T), C=(self.N, NH, Dqk, Dv),
                           n=(self.N, NH, Dqk), m=(self.N, NH, 1))

    def inputs(self, t, q, k, v, i, f):
        for name, x in (("q", q), ("k", k), ("v", v), ("i", i), ("f", f)):
            setattr(t, name, x.data_ptr())
            setattr(t, name + "_strides", Strides(*self.plan.strides[name]))
        t.cu_seqlens = self.cu.data_ptr()
        t.cu_seqlens_int64 = self.int64


def _ptr(x):
    return None if x is None else x.data_ptr()


def _forward(c, q, k, v, i, f, c0, n0, m0, need_norm, last, keep=False):
    """h, norm, C, n, m and (keep) the saved states the backward reads instead of recomputing."""
    h = q.new_empty(c.shapes["h"])
    norm = q.new_empty(c.shapes["gate"], dtype=torch.float32) if need_norm else None
    C = n = m = None
    if last:
        C = q.new_empty(c.shapes["C"], dtype=torch.float32)
        n = q.new_empty(c.shapes["n"], dtype=torch.float32)
        m = q.new_empty(c.shapes["m"], dtype=torch.float32) if c.exp else None
    t = ForwardTensors()
    c.inputs(t, q, k, v, i, f)
    t.h = h.data_ptr()
    t.h_strides = Strides(0, 0, 0)
    t.norm, t.C0, t.n0, t.m0 = _ptr(norm), _ptr(c0), _ptr(n0), _ptr(m0) if c.exp else None
    t.C_last, t.n_last, t.m_last = _ptr(C), _ptr(n), _ptr(m)
    saved = None
    if keep:
        saved = q.new_empty(_binding.saved_size(c.plan, c.fwd_config), dtype=torch.uint8)
        t.saved, t.saved_bytes = saved.data_ptr(), saved.numel()
    ws_bytes = _binding.forward_workspace_size(c.plan, c.fwd_config, saved=keep)
    ws = torch.UntypedStorage(ws_bytes, device=q.device) if ws_bytes else None
    load_library().call("tfla_mlstm_forward", ctypes.byref(c.problem), ctypes.byref(t),
                        current_stream(q.device.index) or None, _ptr(ws), ws_bytes, _binding._bytes(c.fwd_config))
    return h, norm, C, n, m, saved


def _backward(c, q, k, v, i, f, c0, n0, m0, norm, dh, dC_last, saved=None):
    if dh is None:
        dh = q.new_zeros(c.shapes["h"])
    elif dh.dtype != q.dtype or not dh.is_contiguous() or dh.data_ptr() % 16:
        dh = dh.to(q.dtype).contiguous()
    if dC_last is not None and (dC_last.dtype != torch.float32 or not dC_last.is_contiguous()):
        dC_last = dC_last.to(torch.float32).contiguous()
    dq, dk = q.new_empty(c.shapes["qk"]), q.new_empty(c.shapes["qk"])
    dv = q.new_empty(c.shapes["h"])
    di, df = i.new_empty(c.shapes["gate"]), i.new_empty(c.shapes["gate"])
    dC0 = q.new_empty(c.shapes["C"], dtype=torch.float32) if c0 is not None else None
    t = BackwardTensors()
    c.inputs(t, q, k, v, i, f)
    t.dh = dh.data_ptr()
    t.dh_strides = Strides(0, 0, 0)
    t.norm, t.C0, t.n0, t.m0 = norm.data_ptr(), _ptr(c0), _ptr(n0), _ptr(m0) if c.exp else None
    t.dC_last, t.dC0 = _ptr(dC_last), _ptr(dC0)
    t.dq, t.dk, t.dv, t.di, t.df = dq.data_ptr(), dk.data_ptr(), dv.data_ptr(), di.data_ptr(), df.data_ptr()
    for name in ("dq", "dk", "dv", "di", "df"):
        setattr(t, name + "_strides", Strides(0, 0, 0))
    cfg = c.bwd_config
    if saved is not None:
        cfg = _binding.saved_backward_config(c.plan, c.fwd_config, cfg)
        t.saved, t.saved_bytes = saved.data_ptr(), saved.numel()
    ws_bytes = _binding.backward_workspace_size(c.plan, cfg, saved=saved is not None)
    ws = torch.UntypedStorage(ws_bytes, device=q.device) if ws_bytes else None
    load_library().call("tfla_mlstm_backward", ctypes.byref(c.problem), ctypes.byref(t),
                        current_stream(q.device.index) or None, _ptr(ws), ws_bytes, _binding._bytes(cfg))
    return dq, dk, dv, di, df, dC0


class MlstmPackedFunction(torch.autograd.Function):
    """h, C_last, n_last, m_last = apply(q, k, v, i, f, C0, n0, m0, call, last, keep); keep: the
    forward keeps its chunk states for the backward (else the backward recomputes them)."""

    @staticmethod
    def forward(ctx, q, k, v, i, f, c0, n0, m0, call, last, keep):
        h, norm, C, n, m, saved = _forward(call, q, k, v, i, f, c0, n0, m0, True, last, keep)
        ctx.call = call
        ctx.save_for_backward(q, k, v, i, f, c0, n0, m0, norm, saved)
        ctx.set_materialize_grads(False)
        if n is not None:  # the gradients of n and m are ignored, as in the unpacked call
            ctx.mark_non_differentiable(*(x for x in (n, m) if x is not None))
        return h, C, n, m

    @staticmethod
    def backward(ctx, dh, dC_last, dn_last, dm_last):
        q, k, v, i, f, c0, n0, m0, norm, saved = ctx.saved_tensors
        with torch.cuda.device(q.device.index):
            dq, dk, dv, di, df, dC0 = _backward(ctx.call, q, k, v, i, f, c0, n0, m0, norm, dh, dC_last, saved)
        dn0 = torch.zeros_like(n0) if n0 is not None else None
        dm0 = torch.zeros_like(m0) if m0 is not None else None
        return dq, dk, dv, di, df, dC0, dn0, dm0, None, None, None


def mlstm_chunkwise_packed(q, k, v, i, f, cu_seqlens, max_seqlen=None, c_initial=None, n_initial=None,
                           m_initial=None, return_last_states=False, eps=1e-6, chunk_size=None, *,
                           variant="exp", normalize=True, qk_scale=None, config=None, backward_config=None,
                           recompute_states_in_bw=None):
    """The chunkwise mLSTM over packed sequences, with autograd (see the module's docstring).

    q, k: (1, NH, T, Dqk); v: (1, NH, T, Dv); i, f: (1, NH, T); cu_seqlens: N + 1 offsets (an
    int32/int64 tensor, on the GPU or the host, or a list). Returns h (1, NH, T, Dv), or with
    return_last_states (h, (C, n, m)) ("exp") / (h, (C, n)) ("sig"), the states (N, NH, ...).
    Gradients flow to q, k, v, i, f and c_initial. As in mlstm_chunkwise, the forward keeps its
    chunk states for the backward unless recompute_states_in_bw is True."""
    for name, x in (("q", q), ("k", k), ("v", v), ("i", i), ("f", f)):
        if not isinstance(x, torch.Tensor):
            raise TflaArgumentError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    for name, x in (("c_initial", c_initial), ("n_initial", n_initial), ("m_initial", m_initial)):
        if x is not None and not isinstance(x, torch.Tensor):
            raise TflaArgumentError(f"{name} must be a torch.Tensor or None, got {type(x).__name__}")
    fwd_cfg, bwd_cfg = _binding.chunk_configs(chunk_size, config, backward_config)
    opts = dict(variant=variant, normalize=normalize, eps=eps, scale=qk_scale, fwd_config=fwd_cfg,
                bwd_config=bwd_cfg)
    if is_compiling():
        return _compiled(q, k, v, i, f, cu_seqlens, max_seqlen, c_initial, n_initial, m_initial,
                         return_last_states, opts, recompute_states_in_bw)
    call = _Call(q, k, v, i, f, c_initial, n_initial, m_initial, cu_seqlens, max_seqlen, opts)
    states = (c_initial, n_initial, m_initial)
    need_grad = torch.is_grad_enabled() and any(
        x is not None and x.requires_grad for x in (q, k, v, i, f) + states)
    with torch.cuda.device(q.device.index):
        if need_grad:
            h, C, n, m = MlstmPackedFunction.apply(q, k, v, i, f, *states, call, bool(return_last_states),
                                                   not recompute_states_in_bw)
        else:
            h, _, C, n, m, _ = _forward(call, q, k, v, i, f, *states, False, bool(return_last_states))
    if not return_last_states:
        return h
    return (h, (C, n, m)) if variant == "exp" else (h, (C, n))


def _compiled(q, k, v, i, f, cu_seqlens, max_seqlen, c0, n0, m0, return_last_states, opts, recompute):
    """mlstm_chunkwise_packed under torch.compile: the custom ops tfla::mlstm_fwd_varlen and
    tfla::mlstm_bwd_varlen (no graph break). max_seqlen must be an int there: reading the offsets
    on the host would break the graph, and the kernels' sizes come from it."""
    if max_seqlen is None:
        raise TflaArgumentError("under torch.compile a packed call needs max_seqlen (an int bounding every "
                                "sequence's length): the binding cannot read cu_seqlens on the host there")
    if isinstance(max_seqlen, bool) or not isinstance(max_seqlen, int):
        raise TflaArgumentError(f"max_seqlen must be an int, got {max_seqlen!r}")
    if not isinstance(cu_seqlens, torch.Tensor):
        cu_seqlens = torch.tensor(list(cu_seqlens), dtype=torch.int64, device=q.device)
    elif cu_seqlens.device != q.device:
        cu_seqlens = cu_seqlens.to(q.device)
    need_grad = torch.is_grad_enabled() and any(
        x is not None and x.requires_grad for x in (q, k, v, i, f, c0, n0, m0))
    h, C, n, m = compiled_ops().chunkwise_packed(q, k, v, i, f, cu_seqlens, max_seqlen, c0, n0, m0, opts,
                                                 need_grad, bool(return_last_states), not recompute)
    if not return_last_states:
        return h
    return (h, (C, n, m)) if opts["variant"] == "exp" else (h, (C, n))

