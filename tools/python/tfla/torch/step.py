"""The recurrent step (generation) on torch tensors.

`mlstm_recurrent_step` has the signature of mlstm_kernels.torch.recurrent's step kernels
(q, k, v, i, f, c, n, m, eps, dtype_state) and returns (h, (c_new, n_new, m_new)) like them.
tfla's step kernel reads the states from c, n, m and writes the new ones, in place or elsewhere,
never copying them first. Where the new states go:
- by default into fresh tensors, as the seed returns new tensors and leaves its inputs alone;
- with inplace=True into c, n, m themselves (no allocation: the fast choice for a generation loop);
- with c_new/n_new/m_new into those buffers, which may be c, n, m themselves (the same buffers,
  as a loop that keeps its state in place passes them) or apart from them (a buffer that shares
  only part of its bytes with c, n or m is refused).
`out` takes h's buffer (B, NH, Dv) or (B, NH, T, Dv), contiguous; with out and in-place states a
call allocates nothing, which a CUDA-graph-captured decode loop wants. A (B, NH, T, D) q/k/v
with (B, NH, T) gates runs T tokens in one fused call. Prefill hand-off: the last states of
mlstm_chunkwise__xl_chunk(..., return_last_states=True) are valid c, n, m here.

Per call, after the first of a shape in a thread: the entry (the thread's previous one when the
options are the same and the tensors pass its guard, one C call comparing their dtypes,
devices, sizes and strides; else a flat tuple of the tensors' signatures looked up in a dict),
the new states' allocations unless in place, h's allocation (unless out is given) and one library
call. Calls without c_new/n_new/m_new and with m given run all of that in one C call
(tfla.torch._fast, README: "The host path in C"), which hands anything its entry was not
made for (another signature or device, a state off its alignment) back to the path above.
"""

import torch

from .._checks import check_state, check_step
from .._errors import TflaArgumentError
from .._prepared import PreparedStep
from . import _fast
from ._runtime import (PerThreadCache, compiled_ops, current_device, current_stream, hashable_config,
                       info, is_compiling, like, name_non_tensor, sig, tensor_guard)

_F32 = torch.float32
_empty_like = torch.empty_like


class StepEntry:
    """One (signatures, options, config) of the step: checked once, its call prepared."""

    def __init__(self, q, k, v, i, f, c, n, m, variant, normalize, eps, qk_scale, config,
                 out, c_new, n_new, m_new):
        plan = check_step(info("q", q), info("k", k), info("v", v), info("i", i), info("f", f),
                          info("c", c), info("n", n), None if m is None else info("m", m),
                          variant=variant, normalize=normalize, eps=eps, scale=qk_scale)
        if out is not None:
            o = info("out", out)
            if o.shape != tuple(v.shape) or o.dtype != info("q", q).dtype or o.device_index != q.device.index:
                raise TflaArgumentError(
                    f"out has shape {o.shape}, dtype {o.dtype} on {o.device}; h is {tuple(v.shape)} "
                    f"{info('q', q).dtype} on {q.device}")
            if not out.is_contiguous():
                raise TflaArgumentError("out must be contiguous")
        q_info = info("q", q)
        for name, new, old in (("c_new", c_new, c), ("n_new", n_new, n), ("m_new", m_new, m)):
            if new is not None:
                if old is None:
                    raise TflaArgumentError(f"{name} given but its input state is None")
                check_state(info(name, new), tuple(old.shape), q_info)
        self.device = q.device
        self.device_index = q.device.index
        self.h_shape = tuple(v.shape)
        self.h_like_v = like(v, self.h_shape)  # h as torch.empty_like(v)
        self.dtype = q.dtype
        self.m_shape = (plan.B, plan.NH, 1)
        self.call = PreparedStep(plan, config)
        # A thread's next call tries its previous entry first: the same options (`fast`), then
        # the whole call in C (`ext`, per `inplace`: tfla.torch._fast), else tensors that pass
        # `same`, a C check of their signatures. Only for the usual calls: m given, no
        # c_new/n_new/m_new, a config that is not a dict (which could change in place).
        self.fast = self.same = self.ext = None
        if m is not None and c_new is None and n_new is None and m_new is None and config.__class__ is not dict:
            self.fast = (variant, normalize, eps, qk_scale, config, out is None)
            if tensor_guard is not None:
                self.same = (tensor_guard(q, k, v, i, f, c, n, m) if out is None
                             else tensor_guard(q, k, v, i, f, c, n, m, out))
            self.ext = _step_ext(self.call, q, k, v, i, f, c, n, m, out, self.h_like_v, self.h_shape)


_entries = PerThreadCache()


def _entry(q, k, v, i, f, c, n, m, variant, normalize, eps, qk_scale, config, out, c_new, n_new, m_new,
           news):
    """The StepEntry of a call, looked up by its signatures (made and cached at the first call)."""
    try:
        return _entry_of(q, k, v, i, f, c, n, m, variant, normalize, eps, qk_scale, config, out, c_new, n_new,
                         m_new, news)
    except AttributeError:
        name_non_tensor(("m", "out", "c_new", "n_new", "m_new"), q=q, k=k, v=v, i=i, f=f, c=c, n=n, m=m,
                        out=out, c_new=c_new, n_new=n_new, m_new=m_new)
        raise


def _entry_of(q, k, v, i, f, c, n, m, variant, normalize, eps, qk_scale, config, out, c_new, n_new, m_new, news):
    if news:
        outs = (sig(out), sig(c_new), sig(n_new), sig(m_new))
    elif out is not None:  # h's buffer only (a 5-tuple, apart from the above)
        outs = (out.shape, out.stride(), out.dtype, out.get_device(), None)
    else:
        outs = None
    # the signatures (shape, strides, dtype, device) of the inputs, flat: fewer calls than sig()
    key = (q.shape, q.stride(), q.dtype, q.get_device(), k.shape, k.stride(), k.dtype, k.get_device(),
           v.shape, v.stride(), v.dtype, v.get_device(), i.shape, i.stride(), i.dtype, i.get_device(),
           f.shape, f.stride(), f.dtype, f.get_device(), c.shape, c.stride(), c.dtype, c.get_device(),
           n.shape, n.stride(), n.dtype, n.get_device(),
           None if m is None else (m.shape, m.stride(), m.dtype, m.get_device()), variant, normalize,
           eps, qk_scale, config if config.__class__ is not dict else hashable_config(config), outs)
    cache = _entries.entries
    e = cache.get(key)
    if e is None:
        e = cache[key] = StepEntry(q, k, v, i, f, c, n, m, variant, normalize, eps, qk_scale, config,
                                   out, c_new, n_new, m_new)
    if e.fast is not None:
        _entries.last = e
    return e


def _step_ext(call, q, k, v, i, f, c, n, m, out, h_like_v, h_shape):
    """The entry's two C calls (tfla.torch._fast), (new states, in place), or None without the
    extension. New states come from empty_like of the old ones (as _target), which the step
    reads in place (C_src...); an old state off its alignment takes the Python path, which copies
    it."""
    if _fast.module() is None:
        return None
    fn, problem, tensors, config = call.addresses()
    args = (q, k, v, i, f, c, n, m, out)  # sources 0..8; outputs from 9
    if out is not None:
        h_alloc, h = (), 8
    else:
        h_alloc = ((_fast.LIKE, 2, None, ()) if h_like_v else (_fast.NEW, 0, q.dtype, h_shape),)
        h = 9
    inputs = {"q": 0, "k": 1, "v": 2, "i": 3, "f": 4, "h": h}
    s = 9 + len(h_alloc)  # the new states' sources
    new = _fast.entry(call, _fast.FORM_STEP, fn, problem, call.tensors, config, args,
                      {**inputs, "C": s, "n": s + 1, "m": s + 2, "C_src": 5, "n_src": 6, "m_src": 7},
                      allocs=h_alloc + tuple((_fast.LIKE, j, None, ()) for j in (5, 6, 7)),
                      aligned=((5, 16), (6, 4), (7, 4)), result=(h, (s, s + 1, s + 2)))
    inplace = _fast.entry(call, _fast.FORM_STEP, fn, problem, call.tensors, config, args,
                          {**inputs, "C": 5, "n": 6, "m": 7, "C_src": -1, "n_src": -1, "m_src": -1},
                          allocs=h_alloc, result=(h, (5, 6, 7)))
    return new, inplace


def _target(new, old, inplace, align=4):
    """Where a state goes and where the step reads it: (new, old's pointer), or (new, 0) when new
    is old's buffer; (old, 0) in place; else (a fresh tensor like old, old's pointer). An old
    state off `align` bytes (the kernel reads C as 16-byte vectors) is copied into the new one,
    which the step then updates in place."""
    if new is not None:
        p = old.data_ptr()
        if new.data_ptr() == p:
            return new, 0
        if p % align:
            new.copy_(old)
            return new, 0
        return new, p
    if inplace:
        return old, 0
    if old.data_ptr() % align:
        return old.clone(), 0
    return _empty_like(old), old.data_ptr()


def mlstm_recurrent_step(
    q: torch.Tensor,  # (B, NH, DHQK) or (B, NH, T, DHQK)
    k: torch.Tensor,  # (B, NH, DHQK) or (B, NH, T, DHQK)
    v: torch.Tensor,  # (B, NH, DHV) or (B, NH, T, DHV)
    i: torch.Tensor,  # (B, NH, 1) or (B, NH, T)
    f: torch.Tensor,  # (B, NH, 1) or (B, NH, T)
    c: torch.Tensor,  # (B, NH, DHQK, DHV) float32
    n: torch.Tensor,  # (B, NH, DHQK) float32
    m: torch.Tensor,  # (B, NH, 1) float32 (None allowed for variant "sig")
    eps: float = 1e-6,
    dtype_state: torch.dtype = torch.float32,
    *,
    variant: str = "exp",
    normalize: bool = True,
    qk_scale: float = None,
    inplace: bool = False,
    config=None,
    out: torch.Tensor = None,    # (B, NH, DHV) or (B, NH, T, DHV), h's buffer
    c_new: torch.Tensor = None,  # (B, NH, DHQK, DHV) float32, the new C's buffer (may be c)
    n_new: torch.Tensor = None,  # (B, NH, DHQK) float32 (may be n)
    m_new: torch.Tensor = None,  # (B, NH, 1) float32 (may be m)
    **kwargs,
):
    """One (or T fused) mLSTM generation step(s). Returns (h, (c, n, m)); h is (B, NH, DHV)
    (or (B, NH, T, DHV)). No autograd (generation only)."""
    if dtype_state is not _F32 and dtype_state != _F32:
        raise TflaArgumentError(f"dtype_state={dtype_state}: tfla keeps the mLSTM states in float32")
    if is_compiling():
        return compiled_ops().recurrent_step(q, k, v, i, f, c, n, m, eps, variant, normalize, qk_scale,
                                  inplace, config, out, c_new, n_new, m_new)
    news = c_new is not None or n_new is not None or m_new is not None
    e = _entries.last
    if e is not None and not news and e.fast == (variant, normalize, eps, qk_scale, config, out is None):
        if e.ext is not None:
            r = _fast.call(e.ext[1 if inplace else 0], q, k, v, i, f, c, n, m, out)
            if r.__class__ is tuple:
                return r
            if r is not None:
                e.call.raise_status(r)
        if e.same is None or not (e.same(q, k, v, i, f, c, n, m) if out is None
                                  else e.same(q, k, v, i, f, c, n, m, out)):
            e = None
    else:
        e = None
    if e is None:
        e = _entry(q, k, v, i, f, c, n, m, variant, normalize, eps, qk_scale, config, out, c_new, n_new,
                   m_new, news)
        if e.ext is not None and not news:  # (an entry with ext was made for calls without news)
            r = _fast.call(e.ext[1 if inplace else 0], q, k, v, i, f, c, n, m, out)
            if r.__class__ is tuple:
                return r
            if r is not None:
                e.call.raise_status(r)
    c_src = n_src = m_src = 0
    if news or not inplace:
        c, c_src = _target(c_new, c, inplace, 16)
        n, n_src = _target(n_new, n, inplace)
        if m is not None:
            m, m_src = _target(m_new, m, inplace)
    if m is None:
        m = n.new_zeros(e.m_shape)  # mLSTMsig without a stabilizer (StepEntry: exp needs m)
    if out is None:
        out = _empty_like(v) if e.h_like_v else q.new_empty(e.h_shape)
    idx = e.device_index
    # mLSTMsig: m is passed so that the kernel writes its zeros there (a fresh m is not zeroed)
    if current_device() == idx:
        e.call(q.data_ptr(), k.data_ptr(), v.data_ptr(), i.data_ptr(), f.data_ptr(), out.data_ptr(),
               c.data_ptr(), n.data_ptr(), m.data_ptr(), current_stream(idx), c_src, n_src, m_src)
    else:
        with torch.cuda.device(idx):
            e.call(q.data_ptr(), k.data_ptr(), v.data_ptr(), i.data_ptr(), f.data_ptr(), out.data_ptr(),
                   c.data_ptr(), n.data_ptr(), m.data_ptr(), current_stream(idx), c_src, n_src, m_src)
    return out, (c, n, m)


def mlstm_recurrent_step__tfla(q, k, v, i, f, c, n, m, eps=1e-6, dtype_state=torch.float32, **kwargs):
    """The seed's step-kernel interface (mlstm_recurrent_step__native / __triton)."""
    return mlstm_recurrent_step(q, k, v, i, f, c, n, m, eps=eps, dtype_state=dtype_state, **kwargs)
