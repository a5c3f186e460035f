"""Prepared library calls: one op on one shape, with everything but the device pointers filled in.

A call through `_binding.forward` builds the C structs (tfla_problem, the tensor block with its
strides, the config text) from a Plan every time: some tens of microseconds of Python. A
prepared call builds them once, when the torch layer first sees a shape, and keeps them; each
call then writes the tensors' device pointers into the kept tensor block and makes one ctypes
call with pointer-sized integers (argtypes c_void_p, no per-argument type conversion of ctypes
structures). The library itself reads the structs at entry and keeps no reference to them.

Thread safety: a prepared call owns mutable structs, so one object must not be called from two
threads at once; the torch layer keeps its prepared calls per thread.

No torch here: pointers and the stream are plain ints (0 = absent / legacy default stream).
"""

import ctypes

from ._binding import CONTIGUOUS, Strides, _bytes, config_text, problem_struct
from ._errors import error_for_status
from ._library import BackwardTensors, ForwardTensors, StepTensors, load_library

_VP = ctypes.c_void_p


def _raw_function(lib, name, argtypes):
    """A fresh function pointer of `name` with its own argtypes (c_void_p for every pointer:
    integers pass through without ctypes building a byref object per call)."""
    fn = lib.cdll[name]  # indexing returns a new _FuncPtr, so these argtypes are private to it
    fn.argtypes = argtypes
    fn.restype = ctypes.c_int
    return fn


def _fill_inputs(t, plan):
    for name in ("q", "k", "v", "i", "f"):
        setattr(t, name + "_strides", Strides(*plan.strides[name]))


class _Prepared:
    __slots__ = ("_lib", "_fn", "_problem", "_tensors", "_problem_ptr", "_tensors_ptr", "_config")

    def __init__(self, name, argtypes, plan, tensors, config):
        self._lib = load_library()
        self._fn = _raw_function(self._lib, name, argtypes)
        self._problem = problem_struct(plan)
        self._tensors = tensors
        self._problem_ptr = ctypes.addressof(self._problem)
        self._tensors_ptr = ctypes.addressof(tensors)
        self._config = _bytes(config_text(config))

    def _raise(self, status):
        raise error_for_status(status, self._lib.last_error())


class PreparedStep(_Prepared):
    """tfla_mlstm_step for one plan (T = plan.S tokens) and config."""

    __slots__ = ()

    def __init__(self, plan, config=None):
        t = StepTensors()
        _fill_inputs(t, plan)
        t.h_strides = Strides(*CONTIGUOUS)
        super().__init__("tfla_mlstm_step", [_VP, _VP, _VP, ctypes.c_char_p], plan, t, config)

    def __call__(self, q, k, v, i, f, h, C, n, m, stream):
        t = self._tensors
        t.q, t.k, t.v, t.i, t.f, t.h, t.C, t.n, t.m = q, k, v, i, f, h, C, n, m
        status = self._fn(self._problem_ptr, self._tensors_ptr, stream, self._config)
        if status:
            self._raise(status)


class PreparedForward(_Prepared):
    """tfla_mlstm_forward for one plan and config; `workspace_bytes` is what the call needs
    (the saved buffer's size when `saved` is set: then no separate workspace)."""

    __slots__ = ("saved", "workspace_bytes")

    def __init__(self, plan, config, saved, workspace_bytes):
        t = ForwardTensors()
        _fill_inputs(t, plan)
        t.h_strides = Strides(*CONTIGUOUS)
        super().__init__("tfla_mlstm_forward", [_VP, _VP, _VP, _VP, ctypes.c_size_t, ctypes.c_char_p],
                         plan, t, config)
        self.saved = saved
        self.workspace_bytes = workspace_bytes
        if saved:
            t.saved_bytes = workspace_bytes

    def __call__(self, q, k, v, i, f, h, norm, C0, n0, m0, C_last, n_last, m_last, scratch, stream):
        """scratch: the saved buffer (saved=True) or the workspace, workspace_bytes long."""
        t = self._tensors
        t.q, t.k, t.v, t.i, t.f, t.h, t.norm = q, k, v, i, f, h, norm
        t.C0, t.n0, t.m0, t.C_last, t.n_last, t.m_last = C0, n0, m0, C_last, n_last, m_last
        if self.saved:
            t.saved = scratch
            status = self._fn(self._problem_ptr, self._tensors_ptr, stream, None, 0, self._config)
        else:
            status = self._fn(self._problem_ptr, self._tensors_ptr, stream, scratch,
                              self.workspace_bytes, self._config)
        if status:
            self._raise(status)


class PreparedBackward(_Prepared):
    """tfla_mlstm_backward for one plan and config, outputs contiguous; dh contiguous (the
    torch layer makes it so). `saved_bytes`: the forward's saved buffer, 0 = recompute."""

    __slots__ = ("saved_bytes", "workspace_bytes")

    def __init__(self, plan, config, saved_bytes, workspace_bytes):
        t = BackwardTensors()
        _fill_inputs(t, plan)
        t.dh_strides = Strides(*CONTIGUOUS)
        super().__init__("tfla_mlstm_backward", [_VP, _VP, _VP, _VP, ctypes.c_size_t, ctypes.c_char_p],
                         plan, t, config)
        self.saved_bytes = saved_bytes
        self.workspace_bytes = workspace_bytes
        t.saved_bytes = saved_bytes

    def __call__(self, q, k, v, i, f, dh, norm, C0, n0, m0, dC_last, dq, dk, dv, di, df, dC0,
                 saved, workspace, stream):
        t = self._tensors
        t.q, t.k, t.v, t.i, t.f, t.dh, t.norm = q, k, v, i, f, dh, norm
        t.C0, t.n0, t.m0, t.dC_last = C0, n0, m0, dC_last
        t.dq, t.dk, t.dv, t.di, t.df, t.dC0, t.saved = dq, dk, dv, di, df, dC0, saved
        status = self._fn(self._problem_ptr, self._tensors_ptr, stream, workspace,
                          self.workspace_bytes, self._config)
        if status:
            self._raise(status)


class PreparedBackendForward(_Prepared):
    """tfla_backend_forward of one backend handle for one plan: the step path when the backend
    chooses it (last states <- initial states, skipped where they are the same buffer, or
    zeros; then the tokens in place)."""

    __slots__ = ("_handle", "_dims", "_kind", "_kind_ptr", "_backend")

    def __init__(self, backend, plan):
        t = ForwardTensors()
        _fill_inputs(t, plan)
        t.h_strides = Strides(*CONTIGUOUS)
        i64 = ctypes.c_int64
        super().__init__("tfla_backend_forward", [_VP, i64, i64, i64, i64, i64, _VP, _VP, _VP],
                         plan, t, None)
        self._backend = backend  # keeps the handle alive as long as this call exists
        self._handle = backend._handle.value
        self._dims = (plan.B, plan.NH, plan.S, plan.Dqk, plan.Dv)
        self._kind = ctypes.c_int(-1)
        self._kind_ptr = ctypes.addressof(self._kind)

    def __call__(self, q, k, v, i, f, h, C0, n0, m0, C_last, n_last, m_last, stream):
        t = self._tensors
        t.q, t.k, t.v, t.i, t.f, t.h = q, k, v, i, f, h
        t.C0, t.n0, t.m0, t.C_last, t.n_last, t.m_last = C0, n0, m0, C_last, n_last, m_last
        B, NH, S, Dqk, Dv = self._dims
        status = self._fn(self._handle, B, NH, S, Dqk, Dv, self._tensors_ptr, stream, self._kind_ptr)
        if status:
            self._raise(status)
        return self._kind.value
