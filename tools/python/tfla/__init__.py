"""tfla: Python binding of the tfla mLSTM kernels (Tiled Flash Linear Attention).

Pure Python over the C ABI (ctypes); no compiler at install time. Two layers:

- `tfla` (this module): no torch needed. The library's size and config queries, its version,
  the exceptions, and the argument checks the torch layer runs before every call.
- `tfla.torch`: the kernels on torch CUDA tensors, on the current stream, without copies:
  `mlstm_chunkwise__xl_chunk` / `mlstm_siging_chunkwise__xl_chunk` (same signatures and
  defaults as mlstm_kernels' Triton kernels, forward and backward through autograd),
  `mlstm_recurrent_step`, and `tfla.torch.backend_module.mLSTMBackend` (the seed's
  mLSTMBackend interface), so an xLSTM model switches by changing one import.

libtfla.so is found at first use: $TFLA_LIBRARY, the copy in tfla/lib/ that `pip install
./tools/python` compiles, the checkout's build folders, then the loader path (see
tfla._library). `runtime_info()` says which libtfla, NVRTC and driver were found, and where.
"""

from ._binding import (Backend, backward_workspace_size, forward_workspace_size, make_plan,
                       parse_config, saved_size)
from ._binding import kernel_config as _kernel_config
from ._binding import version as _version
from ._errors import (TflaArgumentError, TflaCacheError, TflaCompileError, TflaCudaError, TflaError,
                      TflaLibraryNotFoundError, TflaNoDriverError, TflaUnsupportedError)
from ._info import runtime_info
from ._library import load_library

__version__ = "0.1.0"

__all__ = [
    "TflaError", "TflaArgumentError", "TflaUnsupportedError", "TflaNoDriverError", "TflaCudaError",
    "TflaCompileError", "TflaCacheError", "TflaLibraryNotFoundError",
    "library_path", "library_version", "runtime_info", "problem", "forward_config", "backward_config",
    "step_config", "forward_workspace_size", "backward_workspace_size", "saved_size",
    "parse_config", "Backend",
]


def library_path():
    """Path of the libtfla.so this process uses (loads it if needed)."""
    return load_library().path


def library_version():
    """Version string of the loaded libtfla."""
    return _version()


def problem(B, NH, S, Dqk, Dv, *, dtype="bfloat16", gate_dtype="float32", variant="exp",
            normalize=True, eps=1e-6, qk_scale=None):
    """A problem description for the queries below (dtype names as torch spells them)."""
    return make_plan(B, NH, S, Dqk, Dv, dtype=dtype, gate_dtype=gate_dtype, variant=variant,
                     normalize=normalize, eps=eps, scale=qk_scale)


def forward_config(prob, pinned=None):
    """{key: int}: the forward config tfla uses for `prob` (tuned cache entry, else the default;
    pinned keys on top). A cache lookup: no GPU work."""
    return _kernel_config(prob, "fwd", pinned)


def backward_config(prob, pinned=None):
    """{key: int}: the backward config tfla uses for `prob`."""
    return _kernel_config(prob, "bwd", pinned)


def step_config(prob, pinned=None):
    """{key: int}: the recurrent step config tfla uses for `prob` (prob.S = tokens per call)."""
    return _kernel_config(prob, "step", pinned)
