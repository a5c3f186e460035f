"""mLSTMBackend / mLSTMBackendConfig with the interface of mlstm_kernels.torch.backend_module.

An xLSTM model that does
    from mlstm_kernels.torch.backend_module import mLSTMBackend, mLSTMBackendConfig
runs on tfla after changing that line to
    from tfla.torch.backend_module import mLSTMBackend, mLSTMBackendConfig

The config has the seed's fields and defaults. How tfla reads them:
- chunkwise_kernel: a name containing "siging" selects mLSTMsig (normalize_siging applies),
  any other name mLSTMexp; tfla's own kernels run either way.
- sequence_kernel, step_kernel: accepted; tfla's step kernel serves inference.
- mode "train" and "train_with_padding" are the same for tfla (it takes any sequence length,
  no padding needed); "inference" always returns the last states and runs sequences of up to
  max_step_tokens tokens on the fused step kernel (tfla_backend_choose), longer ones on the
  chunkwise kernels.
- chunk_size: tfla's chunk length; None lets tfla pick (tuned config or default).
- inference_state_dtype must be "float32" (tfla's states are float32).
tfla-only fields: config, backward_config (kernel configs), max_step_tokens.
"""

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from .. import _binding
from .._checks import check_forward
from .._errors import TflaArgumentError
from ._runtime import device_guard, info, ptr, stream_handle
from .chunkwise import mlstm_chunkwise

ChunkwiseKernelType = Literal[
    "chunkwise--native_autograd",
    "chunkwise--native_custbw",
    "chunkwise--triton_limit_chunk",
    "chunkwise--triton_xl_chunk",
    "chunkwise--triton_xl_chunk_siging",
    "parallel--native_autograd",
    "parallel--native_custbw",
    "parallel--native_stablef_autograd",
    "parallel--native_stablef_custbw",
    "parallel--triton_limit_headdim",
    "parallel--native_siging_autograd",
    "parallel--native_siging_custbw",
]
SequenceKernelType = Literal["native_sequence__native", "native_sequence__triton"]
StepKernelType = Literal["native", "triton"]
DtypeType = Literal["float32", "bfloat16", "float16"]
BackendModeType = Literal["train", "train_with_padding", "inference"]


@dataclass
class mLSTMBackendConfig:
    chunkwise_kernel: ChunkwiseKernelType = "chunkwise--native_autograd"
    sequence_kernel: SequenceKernelType = "native_sequence__native"
    step_kernel: StepKernelType = "native"
    mode: BackendModeType = "train"
    chunk_size: int = 64
    return_last_states: bool = True
    autocast_kernel_dtype: DtypeType = "bfloat16"
    eps: float = 1e-6
    inference_state_dtype: DtypeType = "float32"
    normalize_siging: bool = True
    # tfla only
    config: str = None
    backward_config: str = None
    max_step_tokens: int = 16

    def __post_init__(self):
        if self.return_last_states and "parallel" in self.chunkwise_kernel:
            raise ValueError("return_last_states=True is not supported with parallel kernels.")
        if self.return_last_states and self.mode == "train_with_padding":
            raise ValueError("return_last_states=True is not supported with train_with_padding mode.")
        if self.mode not in ("train", "train_with_padding", "inference"):
            raise ValueError(f"Unknown mode: {self.mode}")
        if self.autocast_kernel_dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"autocast_kernel_dtype must be float32, bfloat16 or float16, got {self.autocast_kernel_dtype}")
        if self.inference_state_dtype != "float32":
            raise ValueError(f"inference_state_dtype={self.inference_state_dtype}: tfla keeps the states in float32")


class mLSTMBackend(nn.Module):
    """The seed's mLSTMBackend on tfla kernels (see the module docstring)."""

    config_class = mLSTMBackendConfig

    def __init__(self, config: mLSTMBackendConfig):
        super().__init__()
        self.config = config
        self.variant = "sig" if "siging" in config.chunkwise_kernel else "exp"
        self.normalize = bool(config.normalize_siging) if self.variant == "sig" else True
        self._backends = {}  # (dtype, gate dtype) -> tfla Backend in inference mode

    def _kernel_kwargs(self):
        return dict(eps=self.config.eps, chunk_size=self.config.chunk_size, variant=self.variant,
                    normalize=self.normalize, config=self.config.config,
                    backward_config=self.config.backward_config,
                    autocast_kernel_dtype=getattr(torch, self.config.autocast_kernel_dtype))

    def _inference_backend(self, dtype, gate_dtype):
        key = (dtype, gate_dtype)
        b = self._backends.get(key)
        if b is None:
            b = _binding.Backend(mode="inference", variant=self.variant, normalize=self.normalize,
                                 dtype=dtype, gate_dtype=gate_dtype, eps=self.config.eps,
                                 config=self.config.config,
                                 max_step_tokens=self.config.max_step_tokens)
            self._backends[key] = b
        return b

    def forward(self, q, k, v, i, f, c_initial=None, n_initial=None, m_initial=None,
                return_last_states=None, mode=None):
        """Train: h, or (h, last states) with return_last_states (config default).
        Inference: always (h, (c, n, m)). Shapes as in mlstm_chunkwise__xl_chunk."""
        if mode is None:
            mode = self.config.mode
        if "train" in mode:
            if return_last_states is None:
                return_last_states = self.config.return_last_states
            if self.config.mode == "train_with_padding" and return_last_states:
                raise ValueError("return_last_states=True is not supported with train_with_padding mode.")
            return mlstm_chunkwise(q, k, v, i, f, c_initial, n_initial, m_initial,
                                   return_last_states=return_last_states, **self._kernel_kwargs())
        if "inference" in mode:
            return self._inference(q, k, v, i, f, c_initial, n_initial, m_initial)
        raise ValueError(f"Unknown mode: {mode}")

    def _inference(self, q, k, v, i, f, c0, n0, m0):
        if torch.is_autocast_enabled("cuda"):
            dt = getattr(torch, self.config.autocast_kernel_dtype)
            q, k, v = q.to(dt), k.to(dt), v.to(dt)
            i, f = (g if g.dtype == torch.float32 else g.to(dt) for g in (i, f))
        B, NH, S, Dqk = q.shape
        Dv = v.shape[-1]
        dtype = str(q.dtype).split(".")[-1]
        gate_dtype = str(i.dtype).split(".")[-1]
        backend = self._inference_backend(dtype, gate_dtype)
        initial = c0 is not None or n0 is not None or m0 is not None
        if backend.choose(B, NH, S, Dqk, Dv, initial_states=initial, last_states=True) != "step":
            with torch.no_grad():
                h, states = mlstm_chunkwise(q, k, v, i, f, c0, n0, m0, return_last_states=True,
                                            **{**self._kernel_kwargs(), "autocast_kernel_dtype": q.dtype})
            if self.variant == "sig":
                states = (states[0], states[1], torch.zeros((B, NH, 1), dtype=torch.float32, device=q.device))
            return h, states
        # the fused step kernel: states initialized from c0/n0/m0 (or zeros), then S tokens
        plan = check_forward(info("q", q), info("k", k), info("v", v), info("i", i), info("f", f),
                             None if c0 is None else info("c_initial", c0),
                             None if n0 is None else info("n_initial", n0),
                             None if m0 is None else info("m_initial", m0),
                             variant=self.variant, normalize=self.normalize, eps=self.config.eps)
        if (n0 is not None or m0 is not None) and c0 is None:
            raise TflaArgumentError("n_initial/m_initial given without c_initial: pass all initial states or none")
        dev = q.device
        h = torch.empty((B, NH, S, Dv), dtype=q.dtype, device=dev)
        C = torch.empty((B, NH, Dqk, Dv), dtype=torch.float32, device=dev)
        n = torch.empty((B, NH, Dqk), dtype=torch.float32, device=dev)
        m = torch.empty((B, NH, 1), dtype=torch.float32, device=dev)
        if self.variant == "sig":
            m.zero_()
        p = dict(q=ptr(q), k=ptr(k), v=ptr(v), i=ptr(i), f=ptr(f), h=ptr(h), C0=ptr(c0), n0=ptr(n0),
                 m0=ptr(m0) if self.variant == "exp" else 0, C_last=ptr(C), n_last=ptr(n),
                 m_last=ptr(m) if self.variant == "exp" else 0)
        with torch.no_grad(), device_guard(dev):
            backend.forward(plan, p, stream_handle(dev))
        return h, (C, n, m)

    def extra_repr(self) -> str:
        return f"{self.config}"
