"""Prepared library calls: one op on one shape, with everything but the device pointers filled in.

A call through `_binding.forward` builds the C structs (tfla_problem, the tensor block with its
strides, the config text) from a Plan every time: some tens of microseconds of Python. A
prepared call builds them once, when the torch layer first sees a shape, and keeps them; each
call then writes the tensors' device pointers into the kept tensor block (one struct.pack_into
over the block: the pointers, with the constant bytes between them, the strides, written back as
they are) and makes one ctypes call with pointer-sized integers (argtypes c_void_p, no
per-argument type conversion of ctypes structures). The library itself reads the structs at
entry and keeps no reference to them.

Thread safety: a prepared call owns mutable structs, so one object must not be called from two
threads at once; the torch layer keeps its prepared calls per thread.

No torch here: pointers and the stream are plain ints (0 = absent / legacy default stream).
"""

import ctypes
import struct

from ._binding import CONTIGUOUS, Strides, _bytes, config_text, problem_struct
from ._errors import error_for_status
from ._library import BackwardTensors, ForwardTensors, StepTensors, load_library

_VP = ctypes.c_void_p
_IN5 = ("q", "k", "v", "i", "f")
# int64_t arguments (the sizes, all >= 0) as c_void_p where both are 64-bit integers passed
# alike (LP64 ABIs): ctypes converts an int to c_void_p in about half the time of c_int64.
_I64 = _VP if ctypes.sizeof(_VP) == ctypes.sizeof(ctypes.c_int64) == 8 else ctypes.c_int64


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


class _PointerWriter:
    """Writes the pointer fields `names` of one tensor block with one struct.pack_into: the
    format holds each pointer ("P") and, as "s" items, the bytes between them (the strides
    and sizes, constant per prepared call), which `gaps` keeps as read once the block is
    filled. `pack_into(block, 0, *pointers and gaps in offset order)` writes them all."""

    __slots__ = ("pack_into", "gaps")

    def __init__(self, tensors, names):
        cls = type(tensors)
        fmt, pos, spans = "@", 0, []
        for name in names:
            field = getattr(cls, name)
            if field.size != ctypes.sizeof(ctypes.c_void_p) or field.offset < pos:
                raise AssertionError(f"{cls.__name__}.{name}: not a pointer in offset order")
            if field.offset > pos:
                fmt += f"{field.offset - pos}s"
                spans.append((pos, field.offset))
            fmt += "P"
            pos = field.offset + field.size
        packer = struct.Struct(fmt)
        if packer.size != pos:  # an alignment pad would overwrite bytes unseen
            raise AssertionError(f"{cls.__name__}: pointer layout {fmt} is {packer.size} bytes, not {pos}")
        base = ctypes.addressof(tensors)
        self.gaps = tuple(ctypes.string_at(base + a, b - a) for a, b in spans)
        self.pack_into = packer.pack_into


class _Prepared:
    __slots__ = ("_lib", "_fn", "_problem", "_tensors", "_problem_ptr", "_tensors_ptr", "_config",
                 "_pack", "_gaps")

    def __init__(self, name, argtypes, plan, tensors, config):
        self._lib = load_library()
        self._fn = _raw_function(self._lib, name, argtypes)
        self._problem = problem_struct(plan)
        self._tensors = tensors
        self._problem_ptr = ctypes.addressof(self._problem)
        self._tensors_ptr = ctypes.addressof(tensors)
        self._config = _bytes(config_text(config))

    def _writer(self, names):
        """Called last in a subclass's __init__, once every constant field is set."""
        w = _PointerWriter(self._tensors, names)
        self._pack, self._gaps = w.pack_into, w.gaps

    def _raise(self, status):
        raise error_for_status(status, self._lib.last_error())

    raise_status = _raise  # for a caller that made the call from C (tfla.torch._fast)

    @property
    def tensors(self):
        """The prepared tensor struct (its pointers are rewritten by each call)."""
        return self._tensors

    def addresses(self):
        """(function, problem, tensor block, config text) as ints (0 = none), for a caller that
        makes the same call from C (tfla.torch._fast): valid while this object lives."""
        cfg = self._config
        return (ctypes.cast(self._fn, _VP).value, self._problem_ptr, self._tensors_ptr,
                0 if cfg is None else ctypes.cast(ctypes.c_char_p(cfg), _VP).value)


class PreparedStep(_Prepared):
    """tfla_mlstm_step for one plan (T = plan.S tokens) and config."""

    __slots__ = ()

    def __init__(self, plan, config=None):
        t = StepTensors()
        _fill_inputs(t, plan)
        t.h_strides = Strides(*CONTIGUOUS)
        super().__init__("tfla_mlstm_step", [_VP, _VP, _VP, ctypes.c_char_p], plan, t, config)
        self._writer(_IN5 + ("h", "C", "n", "m", "C_src", "n_src", "m_src"))

    def __call__(self, q, k, v, i, f, h, C, n, m, stream, C_src=0, n_src=0, m_src=0):
        """Device pointers as ints (m: 0 for mLSTMsig without a stabilizer). The new states go
        to C, n, m; the step starts from C_src, n_src, m_src where not 0, else from C, n, m."""
        g1, g2 = self._gaps
        self._pack(self._tensors, 0, q, k, v, i, f, g1, h, g2, C, n, m, C_src, n_src, m_src)
        status = self._fn(self._problem_ptr, self._tensors_ptr, stream, self._config)
        if status:
            self._raise(status)


class PreparedForward(_Prepared):
    """tfla_mlstm_forward for one plan and config; `workspace_bytes` is what the call needs
    (the saved buffer's size when `saved` is set); `split_bytes`, with `saved`: the workspace of
    a split state walk beside the saved buffer (0: none)."""

    __slots__ = ("saved", "workspace_bytes", "split_bytes")

    def __init__(self, plan, config, saved, workspace_bytes, split_bytes=0):
        t = ForwardTensors()
        _fill_inputs(t, plan)
        t.h_strides = Strides(*CONTIGUOUS)
        super().__init__("tfla_mlstm_forward", [_VP, _VP, _VP, _VP, ctypes.c_size_t, ctypes.c_char_p],
                         plan, t, config)
        self.saved = saved
        self.workspace_bytes = workspace_bytes
        self.split_bytes = split_bytes
        if saved:
            t.saved_bytes = workspace_bytes
        self._writer(_IN5 + ("h", "norm", "m", "C0", "n0", "m0", "C_last", "n_last", "m_last", "saved"))

    def __call__(self, q, k, v, i, f, h, norm, C0, n0, m0, C_last, n_last, m_last, scratch, stream, split=0):
        """Device pointers as ints, 0 = absent. scratch: the saved buffer (saved=True) or the
        workspace, workspace_bytes long; split: with saved, a workspace of split_bytes."""
        g1, g2 = self._gaps
        if self.saved:
            self._pack(self._tensors, 0, q, k, v, i, f, g1, h, g2, norm, 0, C0, n0, m0, C_last, n_last,
                       m_last, scratch)
            status = self._fn(self._problem_ptr, self._tensors_ptr, stream, split or None,
                              self.split_bytes if split else 0, self._config)
        else:
            self._pack(self._tensors, 0, q, k, v, i, f, g1, h, g2, norm, 0, C0, n0, m0, C_last, n_last,
                       m_last, 0)
            status = self._fn(self._problem_ptr, self._tensors_ptr, stream, scratch,
                              self.workspace_bytes, self._config)
        if status:
            self._raise(status)

    def plain(self, q, k, v, i, f, h, workspace, stream):
        """A call without norm, states in or out and saved buffer (saved=False): __call__ with
        those pointers 0."""
        g1, g2 = self._gaps
        self._pack(self._tensors, 0, q, k, v, i, f, g1, h, g2, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        status = self._fn(self._problem_ptr, self._tensors_ptr, stream, workspace, self.workspace_bytes,
                          self._config)
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
        self._writer(_IN5 + ("dh", "norm", "C0", "n0", "m0", "dC_last", "dq", "dk", "dv", "di", "df",
                             "dC0", "saved"))

    def __call__(self, q, k, v, i, f, dh, norm, C0, n0, m0, dC_last, dq, dk, dv, di, df, dC0,
                 saved, workspace, stream):
        """Device pointers as ints, 0 = absent."""
        g1, g2, g3, g4 = self._gaps
        self._pack(self._tensors, 0, q, k, v, i, f, g1, dh, g2, norm, C0, n0, m0, dC_last, dq, dk, dv,
                   g3, di, df, g4, dC0, saved)
        status = self._fn(self._problem_ptr, self._tensors_ptr, stream, workspace,
                          self.workspace_bytes, self._config)
        if status:
            self._raise(status)


class PreparedBackendForward(_Prepared):
    """tfla_backend_forward of one backend handle for one plan: the step path when the backend
    chooses it (the step kernel from the initial states, or from zeros set into the last states,
    into the last states)."""

    __slots__ = ("_handle", "_dims", "_kind", "_kind_ptr", "_backend")

    def __init__(self, backend, plan):
        t = ForwardTensors()
        _fill_inputs(t, plan)
        t.h_strides = Strides(*CONTIGUOUS)
        super().__init__("tfla_backend_forward", [_VP, _I64, _I64, _I64, _I64, _I64, _VP, _VP, _VP],
                         plan, t, None)
        self._backend = backend  # keeps the handle alive as long as this call exists
        self._handle = backend._handle.value
        self._dims = (plan.B, plan.NH, plan.S, plan.Dqk, plan.Dv)
        self._kind = ctypes.c_int(-1)
        self._kind_ptr = ctypes.addressof(self._kind)
        self._writer(_IN5 + ("h", "norm", "m", "C0", "n0", "m0", "C_last", "n_last", "m_last"))

    def __call__(self, q, k, v, i, f, h, C0, n0, m0, C_last, n_last, m_last, stream):
        """Device pointers as ints, 0 = absent. Returns the tfla_kernel_kind it ran."""
        g1, g2 = self._gaps
        self._pack(self._tensors, 0, q, k, v, i, f, g1, h, g2, 0, 0, C0, n0, m0, C_last, n_last, m_last)
        B, NH, S, Dqk, Dv = self._dims
        status = self._fn(self._handle, B, NH, S, Dqk, Dv, self._tensors_ptr, stream, self._kind_ptr)
        if status:
            self._raise(status)
        return self._kind.value

    def backend_addresses(self):
        """(function, backend handle, dims) as in addresses()."""
        return ctypes.cast(self._fn, _VP).value, self._handle, self._dims
