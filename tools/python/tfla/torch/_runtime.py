"""torch helpers of the binding: descriptions of tensors, the current stream, the device guard
and device scratch allocated through torch (so torch.cuda memory stats include it)."""

import torch

from .._checks import DTYPE_BYTES, describe, layout_ok

TORCH_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def info(name, t):
    return describe(name, t)


def ptr(t):
    """Device pointer of a tensor, 0 for None."""
    return 0 if t is None else t.data_ptr()


def stream_handle(device):
    """The CUstream of torch's current stream on `device` (0 for the legacy default stream)."""
    return torch.cuda.current_stream(device).cuda_stream


def device_guard(device):
    """Makes `device` current for the call, so the library finds its primary context."""
    return torch.cuda.device(device)


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
