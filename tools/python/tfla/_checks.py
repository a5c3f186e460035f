"""Argument checks of the binding, in plain Python (no torch, no library, no GPU).

Tensors are read through a duck-typed description (TensorInfo: shape, strides in elements,
dtype name, device, data pointer) that `describe` takes from anything shaped like a
torch.Tensor (shape, stride(), dtype, device, data_ptr()), so CI tests these checks with a
small fake tensor class. The checks produce a Plan: the tfla_problem fields and the strides
to pass, or raise TflaArgumentError with a message naming the argument and what to do.

What is checked here: presence, rank, dtype, device, shape agreement between arguments, and
the layout the C ABI can express (feature dimension contiguous; fp32 states contiguous). What
the library checks itself (and reports through the same exception class): supported head
dimensions, 16-byte alignment and stride multiples, eps, configs.
"""

from dataclasses import dataclass

from ._errors import TflaArgumentError

# tfla_dtype codes of src/include/tfla/tfla.h, by torch dtype name
DTYPE_CODES = {"bfloat16": 0, "float16": 1, "float32": 2}
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
VARIANT_CODES = {"exp": 0, "sig": 1}
SUPPORTED = "bfloat16, float16 and float32"


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple
    strides: tuple  # elements
    dtype: str      # "bfloat16", "float16", "float32", ...
    device_type: str
    device_index: int
    ptr: int

    @property
    def device(self):
        return f"{self.device_type}:{self.device_index}" if self.device_index is not None else self.device_type

    @property
    def numel(self):
        n = 1
        for s in self.shape:
            n *= s
        return n


def describe(name, t):
    """TensorInfo of a torch.Tensor (or anything with its shape/stride/dtype/device/data_ptr)."""
    if t is None:
        raise TflaArgumentError(f"{name} is None: a tensor is required")
    try:
        shape = tuple(int(s) for s in t.shape)
        strides = tuple(int(s) for s in t.stride())
        dtype = str(t.dtype).split(".")[-1]
        dev = t.device
        dev_type = getattr(dev, "type", str(dev))
        dev_index = getattr(dev, "index", None)
        ptr = int(t.data_ptr())
    except (AttributeError, TypeError):
        raise TflaArgumentError(f"{name} must be a torch.Tensor, got {type(t).__name__}") from None
    if dev_type == "cuda" and dev_index is None:
        dev_index = 0
    return TensorInfo(name, shape, strides, dtype, dev_type, dev_index, ptr)


def _shape_text(shape):
    return "(" + ", ".join(str(s) for s in shape) + ")"


def contiguous_strides(shape):
    out, acc = [], 1
    for s in reversed(shape):
        out.append(acc)
        acc *= s
    return tuple(reversed(out))


def is_contiguous(info):
    """Contiguous row-major, ignoring the strides of size-1 dimensions (as torch does)."""
    want = contiguous_strides(info.shape)
    return all(n == 1 or s == w for n, s, w in zip(info.shape, info.strides, want))


def _normalized(info):
    """Strides with those of size-1 dimensions replaced by their contiguous values, so a
    squeezed or unsqueezed view passes the library's stride checks; never read (index 0)."""
    want = contiguous_strides(info.shape)
    return tuple(w if n == 1 else s for n, s, w in zip(info.shape, info.strides, want))


def check_cuda(info, ref=None):
    if info.device_type != "cuda":
        raise TflaArgumentError(
            f"{info.name} is on {info.device}: tfla runs on CUDA tensors (move it with .cuda())")
    if ref is not None and info.device_index != ref.device_index:
        raise TflaArgumentError(
            f"{info.name} is on {info.device} but {ref.name} is on {ref.device}: "
            "all tensors of one call must be on the same GPU")


def check_float_dtype(info):
    if info.dtype not in DTYPE_CODES:
        raise TflaArgumentError(f"{info.name} has dtype {info.dtype}; tfla supports {SUPPORTED}")


def seq_strides(info):
    """(b, h, s) element strides of a (B, NH, S, D) tensor whose feature dim is contiguous."""
    if info.shape[-1] > 1 and info.strides[-1] != 1:
        raise TflaArgumentError(
            f"{info.name} {_shape_text(info.shape)} has strides {_shape_text(info.strides)}: its last "
            "dimension must be contiguous (stride 1); pass x.contiguous()")
    return _materialized(info, _normalized(info)[:3], info.shape[-1])


def _materialized(info, bhs, row):
    """The (b, h, s) strides bhs, checked: not all zero (a broadcast view) unless the tensor has
    at most `row` elements, none negative."""
    b, h, s = bhs
    if b == 0 and h == 0 and s == 0 and info.numel > row:
        raise TflaArgumentError(
            f"{info.name} is broadcast (strides {_shape_text(info.strides)}); pass a materialized "
            "tensor (x.contiguous())")
    if min(b, h, s) < 0:
        raise TflaArgumentError(f"{info.name} has a negative stride")
    return (b, h, s)


def gate_strides(info):
    """(b, h, s) element strides of a (B, NH, S) gate tensor (any non-negative strides)."""
    return _materialized(info, _normalized(info), 1)


def layout_ok(info):
    """Whether the library accepts this (B, NH, S, D) tensor as is: feature dim contiguous,
    16-byte aligned, other strides multiples of 16 bytes and not all zero. Used to decide
    whether a gradient coming from autograd must be made contiguous first."""
    if info.shape[-1] > 1 and info.strides[-1] != 1:
        return False
    eb = DTYPE_BYTES.get(info.dtype, 1)
    b, h, s = _normalized(info)[:3]
    if (b == 0 and h == 0 and s == 0) or min(b, h, s) < 0 or s < info.shape[-1]:
        return False
    return info.ptr % 16 == 0 and all((x * eb) % 16 == 0 for x in (b, h, s))


def check_state(info, want_shape, ref, alt_shape=None):
    """An fp32 state tensor: exact shape (or alt_shape), contiguous, on ref's device."""
    check_cuda(info, ref)
    if info.shape != tuple(want_shape) and (alt_shape is None or info.shape != tuple(alt_shape)):
        also = f" or {_shape_text(alt_shape)}" if alt_shape is not None else ""
        raise TflaArgumentError(
            f"{info.name} has shape {_shape_text(info.shape)}; expected {_shape_text(want_shape)}{also}")
    if info.dtype != "float32":
        raise TflaArgumentError(
            f"{info.name} has dtype {info.dtype}; tfla keeps the mLSTM states in float32 "
            f"(pass {info.name}.float())")
    if not is_contiguous(info):
        raise TflaArgumentError(
            f"{info.name} {_shape_text(info.shape)} has strides {_shape_text(info.strides)}; states "
            "must be contiguous (pass x.contiguous())")


@dataclass
class Plan:
    """What one call passes to the library: the problem and the strides of every input."""
    B: int
    NH: int
    S: int
    Dqk: int
    Dv: int
    dtype: str
    gate_dtype: str
    variant: str
    normalize: bool
    eps: float
    scale: float
    device_index: int
    strides: dict  # name -> (b, h, s)
    # packed sequences (tfla_problem's num_seqs, max_seqlen; B = 1, S = T): 0, 0 for none
    num_seqs: int = 0
    max_seqlen: int = 0

    def problem_fields(self):
        return dict(B=self.B, NH=self.NH, S=self.S, Dqk=self.Dqk, Dv=self.Dv,
                    dtype=DTYPE_CODES[self.dtype], gate_dtype=DTYPE_CODES[self.gate_dtype],
                    variant=VARIANT_CODES[self.variant],
                    normalize=1 if (self.normalize or self.variant == "exp") else 0,
                    eps=float(self.eps), scale=float(self.scale), num_seqs=self.num_seqs,
                    max_seqlen=self.max_seqlen)


def check_options(variant, normalize, eps, scale):
    if variant not in VARIANT_CODES:
        raise TflaArgumentError(f"variant must be 'exp' (mLSTMexp) or 'sig' (mLSTMsig), got {variant!r}")
    if variant == "exp" and not normalize:
        raise TflaArgumentError("normalize=False exists only for variant 'sig'; mLSTMexp always normalizes")
    try:
        eps = float(eps)
        scale = 0.0 if scale is None else float(scale)
    except (TypeError, ValueError):
        raise TflaArgumentError(f"eps and qk_scale must be numbers (got eps={eps!r}, qk_scale={scale!r})") from None
    if not eps >= 0.0 or eps == float("inf"):
        raise TflaArgumentError(f"eps must be finite and >= 0, got {eps}")
    if not scale >= 0.0 or scale == float("inf"):
        raise TflaArgumentError(f"qk_scale must be finite and > 0 (or None for 1/sqrt(Dqk)), got {scale}")
    return eps, scale


def _check_gates(i, f, q, B, NH, S, names=("i", "f")):
    for g in (i, f):
        check_cuda(g, q)
        if g.shape != (B, NH, S):
            raise TflaArgumentError(
                f"{g.name} has shape {_shape_text(g.shape)}; gates are (B, NH, S) = {_shape_text((B, NH, S))}")
        if g.dtype not in ("float32", q.dtype):
            raise TflaArgumentError(
                f"{g.name} has dtype {g.dtype}; gates must be float32 or the input dtype ({q.dtype})")
    if i.dtype != f.dtype:
        raise TflaArgumentError(f"{names[0]} has dtype {i.dtype} but {names[1]} has {f.dtype}: both gates share one dtype")
    return i.dtype


def check_forward(q, k, v, i, f, c0=None, n0=None, m0=None, *, variant="exp", normalize=True,
                  eps=1e-6, scale=None):
    """Checks a chunkwise forward call; q..m0 are TensorInfo (or None for the states)."""
    eps, scale = check_options(variant, normalize, eps, scale)
    for t, want in ((q, "(B, NH, S, Dqk)"), (k, "(B, NH, S, Dqk)"), (v, "(B, NH, S, Dv)")):
        if len(t.shape) != 4:
            raise TflaArgumentError(f"{t.name} must be 4-D {want}; got shape {_shape_text(t.shape)}")
    check_cuda(q)
    check_float_dtype(q)
    for t in (k, v):
        check_cuda(t, q)
        if t.dtype != q.dtype:
            raise TflaArgumentError(
                f"{t.name} has dtype {t.dtype} but q has {q.dtype}: q, k and v must share one dtype")
    B, NH, S, Dqk = q.shape
    Dv = v.shape[3]
    if k.shape != q.shape:
        raise TflaArgumentError(f"k has shape {_shape_text(k.shape)} but q has {_shape_text(q.shape)}; they must match")
    if v.shape[:3] != q.shape[:3]:
        raise TflaArgumentError(
            f"v has shape {_shape_text(v.shape)}; its (B, NH, S) must match q's {_shape_text(q.shape[:3])}")
    if S < 1:
        raise TflaArgumentError("the sequence is empty (S = 0)")
    for g in (i, f):
        if len(g.shape) != 3:
            raise TflaArgumentError(f"{g.name} must be 3-D (B, NH, S); got shape {_shape_text(g.shape)}")
    gate_dtype = _check_gates(i, f, q, B, NH, S)
    strides = {t.name: seq_strides(t) for t in (q, k, v)}
    strides.update({g.name: gate_strides(g) for g in (i, f)})
    if c0 is not None:
        check_state(c0, (B, NH, Dqk, Dv), q)
    if n0 is not None:
        check_state(n0, (B, NH, Dqk), q)
    if m0 is not None and variant == "exp":
        check_state(m0, (B, NH, 1), q, alt_shape=(B, NH))
    return Plan(B, NH, S, Dqk, Dv, q.dtype, gate_dtype, variant, bool(normalize), eps, scale,
                q.device_index, strides)


def check_step(q, k, v, i, f, c, n, m, *, variant="exp", normalize=True, eps=1e-6, scale=None):
    """Checks a recurrent step: q, k (B, NH, Dqk) and v (B, NH, Dv) for one token with gates
    (B, NH, 1) or (B, NH); or q, k (B, NH, T, Dqk), v (B, NH, T, Dv), gates (B, NH, T) for T
    tokens. States c (B, NH, Dqk, Dv), n (B, NH, Dqk), m (B, NH, 1) or (B, NH), fp32."""
    eps, scale = check_options(variant, normalize, eps, scale)
    rank = len(q.shape)
    if rank not in (3, 4):
        raise TflaArgumentError(
            f"q must be (B, NH, Dqk) for one token or (B, NH, T, Dqk) for T tokens; got {_shape_text(q.shape)}")
    for t in (k, v):
        if len(t.shape) != rank:
            raise TflaArgumentError(f"{t.name} has shape {_shape_text(t.shape)} but q has {_shape_text(q.shape)}")
    check_cuda(q)
    check_float_dtype(q)
    for t in (k, v):
        check_cuda(t, q)
        if t.dtype != q.dtype:
            raise TflaArgumentError(
                f"{t.name} has dtype {t.dtype} but q has {q.dtype}: q, k and v must share one dtype")
    if k.shape != q.shape:
        raise TflaArgumentError(f"k has shape {_shape_text(k.shape)} but q has {_shape_text(q.shape)}; they must match")
    if v.shape[:-1] != q.shape[:-1]:
        raise TflaArgumentError(f"v has shape {_shape_text(v.shape)}; all but its last dimension must match q's")
    if rank == 3:
        B, NH, Dqk = q.shape
        T = 1
        Dv = v.shape[2]
        # view one token as (B, NH, 1, D): the sequence stride is never used
        q4, k4, v4 = (_as_one_token(t) for t in (q, k, v))
        gates = []
        for g in (i, f):
            if g.shape not in ((B, NH, 1), (B, NH)):
                raise TflaArgumentError(
                    f"{g.name} has shape {_shape_text(g.shape)}; one-token gates are (B, NH, 1) or (B, NH)")
            gates.append(_as_one_gate(g))
        i3, f3 = gates
    else:
        B, NH, T, Dqk = q.shape
        Dv = v.shape[3]
        q4, k4, v4, i3, f3 = q, k, v, i, f
        for g in (i, f):
            if len(g.shape) != 3:
                raise TflaArgumentError(f"{g.name} must be (B, NH, T); got shape {_shape_text(g.shape)}")
    gate_dtype = _check_gates(i3, f3, q, B, NH, T)
    strides = {t.name: seq_strides(t) for t in (q4, k4, v4)}
    strides.update({g.name: gate_strides(g) for g in (i3, f3)})
    if c is None or n is None or (m is None and variant == "exp"):
        raise TflaArgumentError("the step needs the states c, n and m (m may be None only for variant 'sig')")
    check_state(c, (B, NH, Dqk, Dv), q)
    check_state(n, (B, NH, Dqk), q)
    if m is not None:
        check_state(m, (B, NH, 1), q, alt_shape=(B, NH))
    return Plan(B, NH, T, Dqk, Dv, q.dtype, gate_dtype, variant, bool(normalize), eps, scale,
                q.device_index, strides)


def _as_one_token(t):
    B, NH, D = t.shape
    sb, sh, sd = t.strides
    return TensorInfo(t.name, (B, NH, 1, D), (sb, sh, D, sd), t.dtype, t.device_type, t.device_index, t.ptr)


def _as_one_gate(g):
    if len(g.shape) == 2:
        return TensorInfo(g.name, g.shape + (1,), g.strides + (1,), g.dtype, g.device_type, g.device_index, g.ptr)
    return g
