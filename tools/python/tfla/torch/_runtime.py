"""torch helpers of the binding: descriptions of tensors, the current device and stream, and the
per-call fast path's pieces: whether empty_like of an input can allocate an output, a tensor's
signature (what a cached check depends on), a C check of tensors against recorded signatures,
and per-thread caches of prepared calls."""

import os
import threading

import torch

from .._checks import DTYPE_BYTES, describe, layout_ok
from .._errors import TflaArgumentError

TORCH_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def _stream_of(index):  # torch built without CUDA: the public lookup (which raises there)
    return torch.cuda.current_stream(index).cuda_stream


def _no_current_device():
    return None


# current_stream(index): the raw CUstream (an int) of torch's current stream on device `index`,
# one C call without a torch.cuda.Stream object. current_device(): the current CUDA device's
# index (None where torch has no CUDA). A launch runs where current_device() is its tensors'
# device, else inside torch.cuda.device(index), so the library finds that device's context.
current_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None) or _stream_of
current_device = getattr(torch._C, "_cuda_getDevice", None) or _no_current_device

# Whether torch.compile is tracing the caller (torch >= 2.3 spells it torch.compiler.is_compiling)
is_compiling = getattr(torch.compiler, "is_compiling", None) or torch._dynamo.is_compiling


def compiled_ops():
    """tfla.torch.ops (the custom operators torch.compile traces), or an error naming the torch
    version they need (torch.library.custom_op: torch >= 2.4)."""
    try:
        from . import ops
    except (ImportError, AttributeError) as e:
        from .._errors import TflaUnsupportedError
        raise TflaUnsupportedError(
            f"torch.compile of tfla's kernels needs torch >= 2.4 (torch.library.custom_op); this is "
            f"torch {torch.__version__} ({e})") from None
    return ops


def name_non_tensor(optional=(), **args):
    """Raises TflaArgumentError naming the first argument that is not a torch.Tensor (those in
    `optional` may be None). Called where touching an argument raised AttributeError."""
    for name, x in args.items():
        if x is None and name in optional:
            continue
        if not isinstance(x, torch.Tensor):
            raise TflaArgumentError(f"{name} must be a torch.Tensor, got {type(x).__name__}")


def info(name, t):
    return describe(name, t)


def sig(t):
    """What the binding's checks read of a tensor, as a hashable key: shape, strides, dtype and
    device index (-1 off the GPU); None for None. Two tensors with the same signature pass or
    fail the same checks (the library re-checks pointer alignment on every call)."""
    return None if t is None else (t.shape, t.stride(), t.dtype, t.get_device())


def like(t, shape):
    """Whether torch.empty_like(t) is a contiguous tensor of `shape`, so it can stand for
    new_empty(shape) (torch's cheapest allocation call, about 1 us less than new_empty): t has
    that shape and is contiguous (empty_like keeps the strides of a dense tensor). It depends on
    t's shape and strides only, which a prepared entry's guard holds fixed."""
    return tuple(t.shape) == tuple(shape) and t.is_contiguous()


def usable(t, name):
    """t itself when the library accepts its layout, else a contiguous copy (gradients that
    autograd hands over may be broadcast or strided)."""
    d = describe(name, t)
    if d.dtype in DTYPE_BYTES and layout_ok(d):
        return t
    return t.clone(memory_format=torch.contiguous_format)  # a fresh, aligned buffer


class PerThreadCache(threading.local):
    """A dict per thread: prepared calls own mutable ctypes structs, so threads never share one.
    `last`: the entry of the thread's previous call, whose tensor guard a call tries first."""

    def __init__(self):
        self.entries = {}
        self.last = None

    def __reduce__(self):  # a copied or unpickled owner starts with an empty cache
        return (PerThreadCache, ())


def hashable_config(config):
    """A config (None, "key=value,..." or {key: int}) as a dict key."""
    if isinstance(config, dict):
        return tuple(sorted(config.items()))
    return config


def _tensor_guards():
    """torch's C++ tensor check (torch._C._dynamo.guards.TensorGuards, what TorchDynamo's guards
    were built on): TensorGuards(*tensors) records each tensor's Python type, dispatch keys,
    dtype, device index, requires_grad, sizes and strides; .check(*tensors) says in one C call
    whether the tensors given have all of those. The constructor's signature is torch-internal:
    it is probed here on CPU tensors, and where it is missing or answers wrong, None (the
    callers then build their dict keys on every call). TFLA_NO_TENSOR_GUARDS=1 turns it off."""
    if os.environ.get("TFLA_NO_TENSOR_GUARDS", "") not in ("", "0"):
        return None
    try:
        from torch._C._dynamo.guards import TensorGuards

        def guard(*tensors):
            return TensorGuards(*tensors, dynamic_dims_sizes=None, dynamic_dims_strides=None).check

        a = torch.zeros(2, 3)
        same = guard(a, a[:, :1])
        ok = (same(torch.ones(2, 3), torch.ones(2, 3)[:, :1]) is True
              and same(a, torch.ones(2, 1)) is False                       # strides of size 1
              and same(torch.zeros(3, 2).t(), a[:, :1]) is False            # strides
              and same(a, torch.zeros(2, 2)[:, :1]) is False               # strides of a view
              and same(torch.zeros(2, 4), a[:, :1]) is False               # sizes
              and same(torch.zeros(2, 3, 1), a[:, :1]) is False            # rank
              and same(a.double(), a[:, :1]) is False                      # dtype
              and same(a.to("meta"), a[:, :1]) is False                    # device
              and same(a, None) is False)
    except Exception:  # noqa: BLE001 - any failure of the probe: do without
        return None
    return guard if ok else None


# tensor_guard(*tensors) -> check(*tensors) -> bool, or None (see _tensor_guards)
tensor_guard = _tensor_guards()
