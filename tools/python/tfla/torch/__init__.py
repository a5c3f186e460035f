"""tfla on torch CUDA tensors: drop-in replacements for mlstm_kernels' torch kernels.

    from tfla.torch import mlstm_chunkwise__xl_chunk          # was mlstm_kernels...triton_xl_chunk
    from tfla.torch import mlstm_siging_chunkwise__xl_chunk   # was ...triton_xl_chunk_siging
    from tfla.torch.backend_module import mLSTMBackend, mLSTMBackendConfig

Every call runs on torch's current CUDA stream of the inputs' device and reads the inputs in
place; outputs, gradients and the library's scratch memory are allocated through torch. A call
never synchronizes, so forward, backward and step can be captured in CUDA graphs; under
torch.compile they run as the custom operators of tfla.torch.ops (torch.ops.tfla.*), registered
when this package is imported.
"""

try:
    import torch as _torch  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised only where torch is missing
    raise ImportError("tfla.torch needs PyTorch (pip install torch); the rest of tfla does not") from e

from .chunkwise import (MlstmChunkwiseFunction, mlstm_chunkwise, mlstm_chunkwise__xl_chunk,
                        mlstm_siging_chunkwise__xl_chunk)
from .step import mlstm_recurrent_step, mlstm_recurrent_step__tfla
from .varlen import mlstm_chunkwise_packed
from .cp import mlstm_chunkwise_cp

registry = {
    "chunkwise--tfla": mlstm_chunkwise__xl_chunk,
    "chunkwise--tfla_siging": mlstm_siging_chunkwise__xl_chunk,
}
registry_step = {"tfla": mlstm_recurrent_step__tfla}

__all__ = ["mlstm_chunkwise", "mlstm_chunkwise__xl_chunk", "mlstm_siging_chunkwise__xl_chunk",
           "mlstm_recurrent_step", "mlstm_recurrent_step__tfla", "MlstmChunkwiseFunction",
           "mlstm_chunkwise_packed", "mlstm_chunkwise_cp", "registry", "registry_step"]
