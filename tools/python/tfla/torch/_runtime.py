"""torch helpers of the binding: descriptions of tensors, the current stream, the device guard,
device scratch allocated through torch (so torch.cuda memory stats include it), and the per-call
fast path's pieces: a tensor's signature (what a cached check depends on) and per-thread caches
of prepared calls."""

import contextlib
import threading

import torch

from .._checks import DTYPE_BYTES, describe, layout_ok

TORCH_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}

# The raw CUstream of the current stream as an int: one C call, no torch.cuda.Stream object.
_raw_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None)
_get_device = getattr(torch._C, "_cuda_getDevice", None)
_NO_GUARD = contextlib.nullcontext()

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


def info(name, t):
    return describe(name, t)


def ptr(t):
    """Device pointer of a tensor, 0 for None."""
    return 0 if t is None else t.data_ptr()


def sig(t):
    """What the binding's checks read of a tensor, as a hashable key: shape, strides, dtype and
    device index (-1 off the GPU); None for None. Two tensors with the same signature pass or
    fail the same checks (the library re-checks pointer alignment on every call)."""
    return None if t is None else (t.shape, t.stride(), t.dtype, t.get_device())


def stream_handle(device):
    """The CUstream of torch's current stream on `device` (0 for the legacy default stream)."""
    if _raw_stream is not None:
        index = device if isinstance(device, int) else device.index
        return _raw_stream(torch.cuda.current_device() if index is None else index)
    return torch.cuda.current_stream(device).cuda_stream


def on_device(index):
    """Whether `index` is the current CUDA device (then no device guard is needed)."""
    return _get_device is not None and _get_device() == index


def raw_stream(index):
    """The CUstream handle (int) of torch's current stream on device `index`."""
    if _raw_stream is not None:
        return _raw_stream(index)
    return torch.cuda.current_stream(index).cuda_stream


def device_guard(device):
    """Makes `device` current for the call, so the library finds its primary context; nothing
    to do (no context manager entered) when it already is current."""
    index = device if isinstance(device, int) else device.index
    if index is None or (_get_device is not None and _get_device() == index):
        return _NO_GUARD
    return torch.cuda.device(index)


def scratch(nbytes, device):
    """A uint8 device buffer of nbytes from torch's caching allocator (None for 0 bytes).
    The allocator aligns blocks to 512 bytes; the library needs 256."""
    if nbytes <= 0:
        return None
    return torch.empty(int(nbytes), dtype=torch.uint8, device=device)


def usable(t, name):
    """t itself when the library accepts its layout, else a contiguous copy (gradients that
    autograd hands over may be broadcast or strided)."""
    d = describe(name, t)
    if d.dtype in DTYPE_BYTES and layout_ok(d):
        return t
    return t.clone(memory_format=torch.contiguous_format)  # a fresh, aligned buffer


class PerThreadCache(threading.local):
    """A dict per thread: prepared calls own mutable ctypes structs, so threads never share one."""

    def __init__(self):
        self.entries = {}

    def __reduce__(self):  # a copied or unpickled owner starts with an empty cache
        return (PerThreadCache, ())


def hashable_config(config):
    """A config (None, "key=value,..." or {key: int}) as a dict key."""
    if isinstance(config, dict):
        return tuple(sorted(config.items()))
    return config
