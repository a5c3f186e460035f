"""The chunkwise forward and backward launches on torch tensors, shared by the autograd Function
(eager) and the torch.library custom ops (torch.compile).

Per call the work is: find the shape's entry, allocate the outputs and the scratch through
torch's caching allocator (so torch.cuda's memory stats and graph pools include them), write the
pointers into the entry's prepared ctypes structs and make one library call. Everything that
depends only on the shape, dtypes, strides, options and config (the argument checks, the config
and size queries, the C structs) is done once per entry, the first time a shape is seen in a
thread. Finding the entry: the thread's previous entry when the options are the same and the
tensors pass its guard (one C call comparing every tensor's dtype, device, sizes and strides
with those the entry was made for, _runtime.tensor_guard), else a dict lookup on a tuple of the
tensors' signatures. Nothing here synchronizes with the device. Once the entry is found, the
allocations, pointers and library call run as one C call (tfla.torch._fast, README: "The host
path in C") where the entry has that path and the arguments match the signatures it was made
for; the Python code below runs otherwise.
"""

import threading
from typing import NamedTuple

import torch

from .. import _binding
from .._checks import check_forward
from .._prepared import PreparedBackward, PreparedForward
from . import _fast
from ._runtime import PerThreadCache, current_device, current_stream, info, like, sig, tensor_guard

_F32 = torch.float32
_U8 = torch.uint8
_empty_like = torch.empty_like
# scratch: a storage of the caching allocator without a tensor (about 1 us less than new_empty);
# dropped after the call, it is free for the next allocation on the same stream (stream order)
_storage = torch.UntypedStorage
_CONTIGUOUS = torch.contiguous_format


class Options(NamedTuple):
    """A call's options; a tuple, so a key holding one hashes and compares in C."""
    variant: str
    normalize: bool
    eps: float
    scale: float
    fwd_config: str  # "key=value,..." or None
    bwd_config: str
    return_last_states: bool
    recompute: bool  # True: never keep the forward's states for the backward


configs = _binding.chunk_configs


# ---- sizes, memoized per shape and config (the library's lookups are memoized per process too)
_memo_lock = threading.Lock()
_memo = {}


def plan_key(plan):
    return (plan.B, plan.NH, plan.S, plan.Dqk, plan.Dv, plan.dtype, plan.gate_dtype, plan.variant,
            plan.normalize, plan.eps, plan.scale)


def _form_pinned(plan, op, config):
    """config with the form the library resolves it to pinned, so that a size query answers for
    that form alone (unpinned, a parallel default's sizes also cover the chunkwise form a call
    with states falls back to)."""
    cfg = _binding.parse_config(_binding.config_text(config))
    if "parallel" not in cfg:
        cfg["parallel"] = _binding.kernel_config(plan, op, config).get("parallel", 0)
    return _binding.config_text(cfg)


def sizes(plan, opts, keep, stateless=False):
    """(forward workspace or saved bytes, backward config text, backward workspace bytes, the
    forward's workspace beside a saved buffer). stateless: the calls take no initial states and
    return no last states (so no dC_last either), so they run the form the library picks, never
    its chunkwise fallback, and need only that form's workspace."""
    key = (plan_key(plan), opts.fwd_config, opts.bwd_config, keep, stateless)
    with _memo_lock:
        hit = _memo.get(key)
    if hit is not None:
        return hit
    bwd_cfg = opts.bwd_config
    if not keep:
        fwd_q, bwd_q = opts.fwd_config, bwd_cfg
        if stateless:
            fwd_q, bwd_q = _form_pinned(plan, "fwd", fwd_q), _form_pinned(plan, "bwd", bwd_q)
        out = (_binding.forward_workspace_size(plan, fwd_q), bwd_cfg, _binding.backward_workspace_size(plan, bwd_q), 0)
    else:
        bwd_cfg = _binding.saved_backward_config(plan, opts.fwd_config, bwd_cfg)
        out = (_binding.saved_size(plan, opts.fwd_config), bwd_cfg,
               _binding.backward_workspace_size(plan, bwd_cfg, saved=True),
               _binding.forward_workspace_size(plan, opts.fwd_config, saved=True))
    with _memo_lock:
        _memo[key] = out
    return out


def keeps_saved(plan, opts, keep, stateless):
    """Whether a forward asked to keep its states for the backward (keep) fills a saved buffer:
    not where the backward runs the parallel form (stateless calls), which reads no chunk states;
    a saved buffer would move both passes to the chunkwise form."""
    return keep and not (stateless and parallel_backward(plan, opts))


def parallel_backward(plan, opts):
    """Whether the backward of plan runs the parallel form (with no states and no saved buffer)."""
    key = ("parallel_backward", plan_key(plan), opts.bwd_config)
    with _memo_lock:
        hit = _memo.get(key)
    if hit is None:
        hit = _binding.kernel_config(plan, "bwd", opts.bwd_config).get("parallel") == 1
        with _memo_lock:
            _memo[key] = hit
    return hit


class ForwardEntry:
    """One (shapes, strides, dtypes, device, options, keep) of the chunkwise forward: its checked
    plan, output shapes, sizes and prepared calls (the backward's made at its first use)."""

    def __init__(self, q, k, v, i, f, c0, n0, m0, opts, keep):
        plan = check_forward(info("q", q), info("k", k), info("v", v), info("i", i), info("f", f),
                             None if c0 is None else info("c_initial", c0),
                             None if n0 is None else info("n_initial", n0),
                             None if m0 is None else info("m_initial", m0),
                             variant=opts.variant, normalize=opts.normalize, eps=opts.eps,
                             scale=opts.scale)
        B, NH, S, Dqk, Dv = plan.B, plan.NH, plan.S, plan.Dqk, plan.Dv
        # keep: what the caller asked (the entry's key); self.keep: whether the forward fills a
        # saved buffer (keeps_saved)
        self.keep_requested = keep
        stateless = c0 is None and n0 is None and m0 is None and not opts.return_last_states
        keep = keeps_saved(plan, opts, keep, stateless)
        self.plan, self.opts, self.keep = plan, opts, keep
        self.exp = opts.variant == "exp"
        self.device = q.device
        self.device_index = q.device.index
        self.dtype = q.dtype
        self.gate_dtype = i.dtype
        self.gate_f32 = i.dtype == torch.float32
        self.h_shape = (B, NH, S, Dv)
        self.h_like_v = like(v, self.h_shape)  # h as torch.empty_like(v)
        self.qk_shape = (B, NH, S, Dqk)
        self.gate_shape = (B, NH, S)
        self.C_shape, self.n_shape, self.m_shape = (B, NH, Dqk, Dv), (B, NH, Dqk), (B, NH, 1)
        fwd_bytes, self.bwd_config, self.bwd_bytes, self.split_bytes = sizes(plan, opts, keep, stateless)
        self.fwd_bytes = fwd_bytes
        self.forward = PreparedForward(plan, opts.fwd_config, keep, fwd_bytes, self.split_bytes)
        self._backward = None
        # the forward's calls in C (tfla.torch._fast), (without, with the normalizer), or None;
        # the backward's, made at its first call with a dh it can take as it is
        self.ext = _forward_ext(self, q, k, v, i, f, c0, n0, m0)
        self.bwd_ext = _UNSET
        # the differentiated forward with its autograd node in C++ (node_record), made at its
        # first use
        self.node = _UNSET
        # no states in or out and no saved buffer: _forward's short path (PreparedForward.plain)
        self.plain = c0 is None and n0 is None and m0 is None and not keep and not opts.return_last_states
        # A thread's next call tries its previous entry first: the same options and keep, and
        # tensors that pass `same`, a C check of their signatures; for calls with all three
        # initial states (with_states) or none.
        self.same = self.with_states = None
        if tensor_guard is not None:
            if c0 is None and n0 is None and m0 is None:
                self.same, self.with_states = tensor_guard(q, k, v, i, f), False
            elif c0 is not None and n0 is not None and m0 is not None:
                self.same, self.with_states = tensor_guard(q, k, v, i, f, c0, n0, m0), True

    @property
    def backward(self):
        if self._backward is None:
            self._backward = PreparedBackward(self.plan, self.bwd_config,
                                              self.fwd_bytes if self.keep else 0, self.bwd_bytes)
        return self._backward


_entries = PerThreadCache()
_UNSET = object()


def _forward_ext(e, q, k, v, i, f, c0, n0, m0):
    """Entry e's forward as two C calls (tfla.torch._fast): (without, with the normalizer), each
    allocating and returning what _forward does; None without the extension."""
    if _fast.module() is None:
        return None
    fn, problem, _, config = e.forward.addresses()
    args = (q, k, v, i, f, c0, n0, m0)  # sources 0..7, outputs from 8
    exts = []
    for need_norm in (False, True):
        out = []

        def alloc(spec):
            out.append(spec)
            return len(args) + len(out) - 1

        h = alloc((_fast.LIKE, 2, None, ()) if e.h_like_v else (_fast.NEW, 0, q.dtype, e.h_shape))
        norm = alloc((_fast.NEW, 0, _F32, e.gate_shape)) if need_norm else -1
        if e.opts.return_last_states:
            C, n = alloc((_fast.NEW, 0, _F32, e.C_shape)), alloc((_fast.NEW, 0, _F32, e.n_shape))
            m = alloc((_fast.NEW, 0, _F32, e.m_shape)) if e.exp else -1
        else:
            C = n = m = -1
        if e.keep:  # the saved buffer, an output; the split's scratch beside it
            saved = alloc((_fast.BYTES, 0, None, (e.fwd_bytes,)))
            ws = alloc((_fast.BYTES, 0, None, (e.split_bytes,))) if e.split_bytes else -1
            ws_bytes = e.split_bytes
        else:
            saved = -1
            ws = alloc((_fast.BYTES, 0, None, (e.fwd_bytes,))) if e.fwd_bytes else -1
            ws_bytes = e.fwd_bytes
        slots = {"q": 0, "k": 1, "v": 2, "i": 3, "f": 4, "h": h, "norm": norm, "m": -1, "C0": 5, "n0": 6,
                 "m0": 7 if e.exp else -1, "C_last": C, "n_last": n, "m_last": m, "saved": saved}
        exts.append(_fast.entry(e.forward, _fast.FORM_OP, fn, problem, e.forward.tensors, config, args, slots,
                                allocs=tuple(out), workspace=ws, workspace_bytes=ws_bytes,
                                result=(h, norm, C, n, m, saved)))
    return tuple(exts)


def _backward_ext(e, q, k, v, i, f, c0, n0, m0, norm, saved, dh, dC_last):
    """Entry e's backward as a C call (tfla.torch._fast) for these arguments' signatures, or None
    without the extension or where dh or dC_last need the Python path's conversions."""
    if (_fast.module() is None or dh is None or norm is None or dh.dtype != e.dtype or not dh.is_contiguous()
            or (dC_last is not None and (dC_last.dtype != _F32 or not dC_last.is_contiguous()))):
        return None
    b = e.backward
    fn, problem, _, config = b.addresses()
    args = (q, k, v, i, f, c0, n0, m0, norm, saved, dh, dC_last)  # sources 0..11, outputs from 12
    allocs = [(_fast.NEW, 0, q.dtype, e.qk_shape), (_fast.NEW, 0, q.dtype, e.qk_shape),
              (_fast.NEW, 0, q.dtype, e.h_shape), (_fast.NEW, 3, i.dtype, e.gate_shape),
              (_fast.NEW, 3, i.dtype, e.gate_shape)]
    dC0 = ws = -1
    if c0 is not None:
        allocs.append((_fast.NEW, 5, c0.dtype, e.C_shape))
        dC0 = 12 + len(allocs) - 1
    if b.workspace_bytes:
        allocs.append((_fast.BYTES, 0, None, (b.workspace_bytes,)))
        ws = 12 + len(allocs) - 1
    slots = {"q": 0, "k": 1, "v": 2, "i": 3, "f": 4, "dh": 10, "norm": 8, "C0": 5, "n0": 6,
             "m0": 7 if e.exp else -1, "dC_last": 11, "dq": 12, "dk": 13, "dv": 14, "di": 15, "df": 16,
             "dC0": dC0, "saved": 9}
    return _fast.entry(b, _fast.FORM_OP, fn, problem, b.tensors, config, args, slots, allocs=tuple(allocs),
                       aligned=((10, 16),), workspace=ws, workspace_bytes=b.workspace_bytes,
                       result=(12, 13, 14, 15, 16, dC0))


def node_record(e):
    """Entry e's differentiated forward with a C++ autograd node (tfla.torch._fast.node, the
    contract in _fast.cpp), or None without the extension. The node's backward takes the C
    backward entry that its first Python call (_node_backward) makes."""
    if e.ext is None:
        return None
    return _fast.module().autograd(e.ext[1], _node_backward)


def _node_backward(e, status, q, k, v, i, f, c0, n0, m0, norm, saved, dh, dC_last):
    """The C++ node's backward where its C call declined (status -1: run the Python path) or
    failed (status > 0: raise the library's error): ((dq, dk, dv, di, df, dC0), the C backward
    entry or None)."""
    if status > 0:
        e.backward.raise_status(status)
    grads = run_backward(e, q, k, v, i, f, c0, n0, m0, norm, saved, dh, dC_last)
    ext = e.bwd_ext
    return grads, (None if ext is _UNSET else ext)


def forward_entry(q, k, v, i, f, c0, n0, m0, opts, keep):
    """The ForwardEntry of a call: the thread's previous one when its options and its tensors'
    check match, else looked up by the signatures (made and cached at the first call)."""
    e = _entries.last
    if e is not None and e.keep_requested is keep and (e.opts is opts or e.opts == opts):
        if c0 is None and n0 is None and m0 is None:
            if e.with_states is False and e.same(q, k, v, i, f):
                return e
        elif e.with_states and c0 is not None and n0 is not None and m0 is not None \
                and e.same(q, k, v, i, f, c0, n0, m0):
            return e
    # the signatures (shape, strides, dtype, device) of the inputs, flat: fewer calls than sig()
    key = (q.shape, q.stride(), q.dtype, q.get_device(), k.shape, k.stride(), k.dtype, k.get_device(),
           v.shape, v.stride(), v.dtype, v.get_device(), i.shape, i.stride(), i.dtype, i.get_device(),
           f.shape, f.stride(), f.dtype, f.get_device(),
           None if c0 is None and n0 is None and m0 is None else (sig(c0), sig(n0), sig(m0)), opts, keep)
    cache = _entries.entries
    e = cache.get(key)
    if e is None:
        e = cache[key] = ForwardEntry(q, k, v, i, f, c0, n0, m0, opts, keep)
    if e.same is not None:
        _entries.last = e
    return e


def run_forward(e, q, k, v, i, f, c0, n0, m0, need_norm):
    """The forward of entry e: returns (h, norm, C_last, n_last, m_last, saved); norm only with
    need_norm, the last states only with opts.return_last_states (m_last only for "exp"), saved
    only when e.keep (else None). Outputs come from empty_like / new_empty of an input of the
    same dtype and device (torch's cheapest allocation calls), scratch is an UntypedStorage (no
    tensor around it). Runs on e's device (made current for the call when it is not). The call
    runs in C (tfla.torch._fast) where its entry has that path and takes the arguments."""
    if e.ext is not None:
        r = _fast.call(e.ext[1 if need_norm else 0], q, k, v, i, f, c0, n0, m0)
        if r.__class__ is tuple:
            return r
        if r is not None:
            e.forward.raise_status(r)
    if current_device() == e.device_index:
        return _forward(e, q, k, v, i, f, c0, n0, m0, need_norm)
    with torch.cuda.device(e.device_index):
        return _forward(e, q, k, v, i, f, c0, n0, m0, need_norm)


def _forward(e, q, k, v, i, f, c0, n0, m0, need_norm):
    h = _empty_like(v) if e.h_like_v else q.new_empty(e.h_shape)
    if e.plain and not need_norm:  # no states in or out, no saved buffer: the common inference call
        ws = _storage(e.fwd_bytes, device=e.device) if e.fwd_bytes else None
        e.forward.plain(q.data_ptr(), k.data_ptr(), v.data_ptr(), i.data_ptr(), f.data_ptr(), h.data_ptr(),
                        0 if ws is None else ws.data_ptr(), current_stream(e.device_index))
        return h, None, None, None, None, None
    f32 = i if e.gate_f32 else None  # a float32 template when the gates are float32
    norm = _empty32(f32, q, e.gate_shape) if need_norm else None
    if e.opts.return_last_states:
        C_last = _empty32(f32, q, e.C_shape)
        n_last = _empty32(f32, q, e.n_shape)
        m_last = _empty32(f32, q, e.m_shape) if e.exp else None
    else:
        C_last = n_last = m_last = None
    if e.keep:  # the saved states: an output (a tensor)
        buf = q.new_empty(e.fwd_bytes, dtype=_U8)
    else:
        buf = _storage(e.fwd_bytes, device=e.device) if e.fwd_bytes else None
    split = _storage(e.split_bytes, device=e.device) if e.split_bytes else None
    e.forward(q.data_ptr(), k.data_ptr(), v.data_ptr(), i.data_ptr(), f.data_ptr(), h.data_ptr(),
              0 if norm is None else norm.data_ptr(), 0 if c0 is None else c0.data_ptr(),
              0 if n0 is None else n0.data_ptr(), m0.data_ptr() if m0 is not None and e.exp else 0,
              0 if C_last is None else C_last.data_ptr(), 0 if n_last is None else n_last.data_ptr(),
              0 if m_last is None else m_last.data_ptr(), 0 if buf is None else buf.data_ptr(),
              current_stream(e.device_index), 0 if split is None else split.data_ptr())
    return h, norm, C_last, n_last, m_last, (buf if e.keep else None)


def _empty32(f32, t, shape):
    return f32.new_empty(shape) if f32 is not None else t.new_empty(shape, dtype=_F32)


def _usable_dh(dh, e):
    """dh as the prepared backward takes it: the input dtype, contiguous, 16-byte aligned."""
    if dh.dtype != e.dtype:
        dh = dh.to(e.dtype)
    if not dh.is_contiguous() or dh.data_ptr() % 16:
        dh = dh.clone(memory_format=_CONTIGUOUS)
    return dh


def run_backward(e, q, k, v, i, f, c0, n0, m0, norm, saved, dh, dC_last):
    """The backward of entry e: returns (dq, dk, dv, di, df, dC0); dC0 None without c0. Runs on
    e's device (made current for the call when it is not). The call runs in C
    (tfla.torch._fast) where the arguments' signatures are those of its first call that could (its
    entry is made at the first call whose dh and dC_last the C path takes as they are)."""
    ext = e.bwd_ext
    if ext is _UNSET:
        ext = _backward_ext(e, q, k, v, i, f, c0, n0, m0, norm, saved, dh, dC_last)
        if ext is not None or _fast.module() is None:  # a dh the C path cannot take: ask again later
            e.bwd_ext = ext
    if ext is not None:
        r = _fast.call(ext, q, k, v, i, f, c0, n0, m0, norm, saved, dh, dC_last)
        if r.__class__ is tuple:
            return r
        if r is not None:
            e.backward.raise_status(r)
    if current_device() == e.device_index:
        return _backward(e, q, k, v, i, f, c0, n0, m0, norm, saved, dh, dC_last)
    with torch.cuda.device(e.device_index):
        return _backward(e, q, k, v, i, f, c0, n0, m0, norm, saved, dh, dC_last)


def _backward(e, q, k, v, i, f, c0, n0, m0, norm, saved, dh, dC_last):
    if dh is None:
        dh = q.new_zeros(e.h_shape)
    else:
        dh = _usable_dh(dh, e)
    if dC_last is not None and (dC_last.dtype != _F32 or not dC_last.is_contiguous()):
        dC_last = dC_last.to(_F32).contiguous()
    dq = q.new_empty(e.qk_shape)
    dk = q.new_empty(e.qk_shape)
    dv = q.new_empty(e.h_shape)
    di = i.new_empty(e.gate_shape)
    df = i.new_empty(e.gate_shape)
    dC0 = c0.new_empty(e.C_shape) if c0 is not None else None
    b = e.backward
    ws = _storage(b.workspace_bytes, device=e.device) if b.workspace_bytes else None
    b(q.data_ptr(), k.data_ptr(), v.data_ptr(), i.data_ptr(), f.data_ptr(), dh.data_ptr(),
      norm.data_ptr(), 0 if c0 is None else c0.data_ptr(), 0 if n0 is None else n0.data_ptr(),
      m0.data_ptr() if m0 is not None and e.exp else 0, 0 if dC_last is None else dC_last.data_ptr(),
      dq.data_ptr(), dk.data_ptr(), dv.data_ptr(), di.data_ptr(), df.data_ptr(),
      0 if dC0 is None else dC0.data_ptr(), 0 if saved is None else saved.data_ptr(),
      0 if ws is None else ws.data_ptr(), current_stream(e.device_index))
    return dq, dk, dv, di, df, dC0
