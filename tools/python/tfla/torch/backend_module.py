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
tfla-only fields: config, backward_config (kernel configs), max_step_tokens, and
inference_states_inplace: in inference mode, a step call with initial states writes the new
states into c_initial/n_initial/m_initial and returns those tensors (no copy, no allocation of
states; what a generation loop that drops the old state wants). By default the new states are
fresh tensors and the inputs are left alone, as in the seed.

Per inference call on the step kernel, after the first of a shape in a thread: the entry (the
module's previous one in this thread when the tensors pass its guard, one C call; else a dict
lookup on the tensors' signatures), the outputs' allocations and one library call
(tfla_backend_forward, which copies the initial states into the new ones unless they are the
same buffers).
"""

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from .. import _binding
from .._checks import check_forward
from .._errors import TflaArgumentError
from .._prepared import PreparedBackendForward
from ._runtime import PerThreadCache, current_device, current_stream, info, sig, tensor_guard
from .chunkwise import mlstm_chunkwise

_F32 = torch.float32
_autocast_enabled = torch.is_autocast_enabled

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
    inference_states_inplace: bool = False

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
        self._entries = PerThreadCache()  # inference: input signatures -> _InferenceEntry

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
        if _autocast_enabled("cuda"):
            dt = getattr(torch, self.config.autocast_kernel_dtype)
            q, k, v = q.to(dt), k.to(dt), v.to(dt)
            i, f = (g if g.dtype == torch.float32 else g.to(dt) for g in (i, f))
        entries = self._entries
        e = entries.last
        if e is None or not (e.with_states and c0 is not None and n0 is not None and m0 is not None
                             and e.same(q, k, v, i, f, c0, n0, m0)):
            e = self._entry(q, k, v, i, f, c0, n0, m0)
        if e.call is None:  # the chunkwise kernels (a prefill)
            with torch.no_grad():
                h, states = mlstm_chunkwise(q, k, v, i, f, c0, n0, m0, return_last_states=True,
                                            **{**self._kernel_kwargs(), "autocast_kernel_dtype": q.dtype})
            if self.variant == "sig":
                states = (states[0], states[1], torch.zeros(e.m_shape, dtype=torch.float32, device=e.device))
            return h, states
        # the fused step kernel: the last states start from c0/n0/m0 (or zeros), then S tokens
        h = q.new_empty(e.h_shape)
        exp = e.exp
        if e.inplace and c0 is not None and n0 is not None and (m0 is not None or not exp):
            C, n = c0, n0
            m = m0 if m0 is not None else n0.new_zeros(e.m_shape)  # mLSTMsig without m
        else:
            if c0 is not None:  # new_empty of a float32 tensor: the cheapest allocation call
                C, n, m = c0.new_empty(e.C_shape), c0.new_empty(e.n_shape), c0.new_empty(e.m_shape)
            else:
                C = q.new_empty(e.C_shape, dtype=_F32)
                n = q.new_empty(e.n_shape, dtype=_F32)
                m = q.new_empty(e.m_shape, dtype=_F32)
            if not exp:
                m.zero_()
        idx = e.device_index
        if current_device() == idx:
            e.call(q.data_ptr(), k.data_ptr(), v.data_ptr(), i.data_ptr(), f.data_ptr(), h.data_ptr(),
                   0 if c0 is None else c0.data_ptr(), 0 if n0 is None else n0.data_ptr(),
                   m0.data_ptr() if exp and m0 is not None else 0, C.data_ptr(), n.data_ptr(),
                   m.data_ptr() if exp else 0, current_stream(idx))
        else:
            with torch.cuda.device(idx):
                e.call(q.data_ptr(), k.data_ptr(), v.data_ptr(), i.data_ptr(), f.data_ptr(), h.data_ptr(),
                       0 if c0 is None else c0.data_ptr(), 0 if n0 is None else n0.data_ptr(),
                       m0.data_ptr() if exp and m0 is not None else 0, C.data_ptr(), n.data_ptr(),
                       m.data_ptr() if exp else 0, current_stream(idx))
        return h, (C, n, m)

    def _entry(self, q, k, v, i, f, c0, n0, m0):
        """The _InferenceEntry of a call, looked up by its signatures (made at the first call)."""
        # the signatures (shape, strides, dtype, device) of the inputs, flat: fewer calls than sig()
        key = (q.shape, q.stride(), q.dtype, q.get_device(), k.shape, k.stride(), k.dtype,
               k.get_device(), v.shape, v.stride(), v.dtype, v.get_device(), i.shape, i.stride(),
               i.dtype, i.get_device(), f.shape, f.stride(), f.dtype, f.get_device(),
               None if c0 is None else (c0.shape, c0.stride(), c0.dtype, c0.get_device()),
               None if n0 is None else (n0.shape, n0.stride(), n0.dtype, n0.get_device()), sig(m0))
        entries = self._entries
        e = entries.entries.get(key)
        if e is None:
            e = entries.entries[key] = _InferenceEntry(self, q, k, v, i, f, c0, n0, m0)
        if e.with_states:
            entries.last = e
        return e

    def __getstate__(self):
        # the library handles are per process: a copy or an unpickled module makes its own
        state = self.__dict__.copy()
        state["_backends"] = {}
        return state

    def extra_repr(self) -> str:
        return f"{self.config}"


class _InferenceEntry:
    """One (input signatures) of an inference call: the checks, the kernel the backend picks and,
    for the step kernel, the prepared tfla_backend_forward call (None: the chunkwise path)."""

    def __init__(self, module, q, k, v, i, f, c0, n0, m0):
        B, NH, S, Dqk = q.shape
        Dv = v.shape[-1]
        self.device = q.device
        self.device_index = q.device.index
        self.dtype = q.dtype
        self.exp = module.variant == "exp"
        self.inplace = module.config.inference_states_inplace
        self.h_shape = (B, NH, S, Dv)
        self.C_shape, self.n_shape, self.m_shape = (B, NH, Dqk, Dv), (B, NH, Dqk), (B, NH, 1)
        dtype = str(q.dtype).split(".")[-1]
        gate_dtype = str(i.dtype).split(".")[-1]
        backend = module._inference_backend(dtype, gate_dtype)
        initial = c0 is not None or n0 is not None or m0 is not None
        self.call = None
        # The module's next call in this thread tries its previous entry first, when it is one of
        # a step with all three initial states (with_states) and the tensors pass `same`, a C
        # check of their signatures.
        self.same, self.with_states = None, False
        if backend.choose(B, NH, S, Dqk, Dv, initial_states=initial, last_states=True) != "step":
            return
        plan = check_forward(info("q", q), info("k", k), info("v", v), info("i", i), info("f", f),
                             None if c0 is None else info("c_initial", c0),
                             None if n0 is None else info("n_initial", n0),
                             None if m0 is None else info("m_initial", m0),
                             variant=module.variant, normalize=module.normalize, eps=module.config.eps)
        if (n0 is not None or m0 is not None) and c0 is None:
            raise TflaArgumentError("n_initial/m_initial given without c_initial: pass all initial states or none")
        self.call = PreparedBackendForward(backend, plan)
        if tensor_guard is not None and c0 is not None and n0 is not None and m0 is not None:
            self.same, self.with_states = tensor_guard(q, k, v, i, f, c0, n0, m0), True
