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
- chunk_size: the seed's Triton kernel setting (an xLSTM model passes its own, 64 or 128), not
  used: tfla picks its kernels and chunk for each shape (the tuned config or its default). A
  pinned chunk would make tfla run its chunkwise form at that chunk where it runs faster
  otherwise (at the paper's heads, B = 8, S = 8192, chunk 64 doubled forward + backward). Pin
  one with config="chunk=N".
- inference_state_dtype must be "float32" (tfla's states are float32).
tfla-only fields: config, backward_config (kernel configs), max_step_tokens, and
inference_states_inplace: in inference mode, a step call with initial states writes the new
states into c_initial/n_initial/m_initial and returns those tensors (no copy, no allocation of
states; what a generation loop that drops the old state wants). By default the new states are
fresh tensors and the inputs are left alone, as in the seed.

Per inference call on the step kernel, after the first of a shape in a thread: the entry (the
module's previous one in this thread when the tensors pass its guard, one C call; else a dict
lookup on the tensors' signatures), the outputs' allocations (empty_like of an input where that
gives the output's layout) and one library call: the backend's step (tfla_mlstm_step with its step
config) on the initial states with inference_states_inplace, else tfla_backend_forward, whose step
kernel reads the initial states and writes the new ones (no copy). A module without hooks is
called without nn.Module's dispatch (mLSTMBackend.__call__). With all three initial states given,
a warm call runs all of that in one C call (tfla.torch._fast, README: "The host path in
C"), falling back to the path above for anything its entry was not made for.
"""

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from .. import _binding
from .._checks import check_forward
from .._errors import TflaArgumentError
from .._prepared import PreparedBackendForward, PreparedStep
from . import _fast
from ._runtime import PerThreadCache, current_device, current_stream, info, like, name_non_tensor, sig, tensor_guard
from .chunkwise import mlstm_chunkwise

_F32 = torch.float32
_autocast_enabled = torch.is_autocast_enabled  # no argument: CUDA's (a device name costs a parse)

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


def _module_hooks():
    """torch's global module hooks (torch.nn.modules.module's private dicts: forward, forward
    pre, backward, backward pre), which nn.Module.__call__ runs for every module; None where
    this torch lacks one of them or the per-module state nn.Module.__call__ reads."""
    from torch.nn.modules import module as mm
    try:
        hooks = (mm._global_forward_hooks, mm._global_forward_pre_hooks, mm._global_backward_hooks,
                 mm._global_backward_pre_hooks)
        probe = nn.Module()
        probe._forward_hooks, probe._forward_pre_hooks, probe._backward_hooks  # noqa: B018
        probe._backward_pre_hooks, probe._compiled_call_impl  # noqa: B018
        torch._C._get_tracing_state  # noqa: B018
    except AttributeError:
        return None
    return hooks if all(isinstance(h, dict) for h in hooks) else None


_HOOKS = _module_hooks()
if _HOOKS is not None:
    _GFH, _GFPH, _GBH, _GBPH = _HOOKS
    _tracing_state = torch._C._get_tracing_state
_module_call = nn.Module.__call__


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

    if _HOOKS is not None:
        def __call__(self, *args, **kwargs):
            """nn.Module.__call__, which for a module without hooks (nor module.compile(), nor a
            torch.jit trace) calls forward: done here without nn.Module's dispatch, two frames
            that cost about 1.5 us of host time, a tenth of a decode step."""
            if (self._forward_hooks or self._forward_pre_hooks or self._backward_hooks
                    or self._backward_pre_hooks or _GFH or _GFPH or _GBH or _GBPH
                    or self._compiled_call_impl is not None or _tracing_state()):
                return _module_call(self, *args, **kwargs)
            return self.forward(*args, **kwargs)

    def _kernel_kwargs(self):
        return dict(eps=self.config.eps, chunk_size=None, variant=self.variant,
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
                return_last_states=None, mode=None, *, cu_seqlens=None, max_seqlen=None):
        """Train: h, or (h, last states) with return_last_states (config default).
        Inference: always (h, (c, n, m)). Shapes as in mlstm_chunkwise__xl_chunk.
        cu_seqlens / max_seqlen: packed documents of variable lengths along the token axis of
        B = 1 (mlstm_chunkwise's), in either mode; the states are then per sequence."""
        if mode is None:
            mode = self.config.mode
        if cu_seqlens is not None:
            if "train" not in mode and "inference" not in mode:
                raise ValueError(f"Unknown mode: {mode}")
            if return_last_states is None:
                return_last_states = self.config.return_last_states or "inference" in mode
            kw = self._kernel_kwargs()
            kw.pop("autocast_kernel_dtype")
            out = mlstm_chunkwise(q, k, v, i, f, c_initial, n_initial, m_initial, cu_seqlens=cu_seqlens,
                                  max_seqlen=max_seqlen, return_last_states=return_last_states, **kw)
            if "inference" in mode and self.variant == "sig":  # (h, (C, n, m)) as an inference call returns
                h, (C, n) = out
                return h, (C, n, torch.zeros(C.shape[:2] + (1,), dtype=torch.float32, device=C.device))
            return out
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
        if _autocast_enabled():  # CUDA autocast
            dt = getattr(torch, self.config.autocast_kernel_dtype)
            q, k, v = q.to(dt), k.to(dt), v.to(dt)
            i, f = (g if g.dtype == torch.float32 else g.to(dt) for g in (i, f))
        e = self._entries.last
        if e is not None and e.ext is not None:  # the whole warm call in C (tfla.torch._fast)
            r = _fast.call(e.ext, q, k, v, i, f, c0, n0, m0)
            if r.__class__ is tuple:
                return r
            if r is not None:
                e.call.raise_status(r)
        if (e is None or c0 is None or n0 is None or m0 is None or e.same is None
                or not e.same(q, k, v, i, f, c0, n0, m0)):
            e = self._entry(q, k, v, i, f, c0, n0, m0)
            if e.ext is not None:
                r = _fast.call(e.ext, q, k, v, i, f, c0, n0, m0)
                if r.__class__ is tuple:
                    return r
                if r is not None:
                    e.call.raise_status(r)
        if e.kind is _CHUNKWISE:  # a prefill
            with torch.no_grad():
                h, states = mlstm_chunkwise(q, k, v, i, f, c0, n0, m0, return_last_states=True,
                                            **{**self._kernel_kwargs(), "autocast_kernel_dtype": q.dtype})
            if self.variant == "sig":
                states = (states[0], states[1], torch.zeros(e.m_shape, dtype=torch.float32, device=e.device))
            return h, states
        h = torch.empty_like(v) if e.h_like_v else q.new_empty(e.h_shape)
        exp = e.exp
        if e.kind is _IN_PLACE:  # the step kernel on c0, n0, m0 themselves
            C, n = c0, n0
            m = m0 if m0 is not None else n0.new_zeros(e.m_shape)  # mLSTMsig without m
            ptrs = (q.data_ptr(), k.data_ptr(), v.data_ptr(), i.data_ptr(), f.data_ptr(), h.data_ptr(),
                    c0.data_ptr(), n0.data_ptr(), m.data_ptr() if exp else 0)
        else:  # the step kernel from c0, n0, m0 (or zeros) into new last states
            if e.states_like:  # the initial states all given, m0 (B, NH, 1)
                C, n, m = torch.empty_like(c0), torch.empty_like(n0), torch.empty_like(m0)
            elif c0 is not None:  # new_empty of a float32 tensor
                C, n, m = c0.new_empty(e.C_shape), c0.new_empty(e.n_shape), c0.new_empty(e.m_shape)
            else:
                C = q.new_empty(e.C_shape, dtype=_F32)
                n = q.new_empty(e.n_shape, dtype=_F32)
                m = q.new_empty(e.m_shape, dtype=_F32)
            # mLSTMsig: the step kernel writes m's zeros
            ptrs = (q.data_ptr(), k.data_ptr(), v.data_ptr(), i.data_ptr(), f.data_ptr(), h.data_ptr(),
                    0 if c0 is None else c0.data_ptr(), 0 if n0 is None else n0.data_ptr(),
                    m0.data_ptr() if exp and m0 is not None else 0, C.data_ptr(), n.data_ptr(),
                    m.data_ptr())
        idx = e.device_index
        if current_device() == idx:
            e.call(*ptrs, current_stream(idx))
        else:
            with torch.cuda.device(idx):
                e.call(*ptrs, current_stream(idx))
        return h, (C, n, m)

    def _entry(self, q, k, v, i, f, c0, n0, m0):
        """The _InferenceEntry of a call, looked up by its signatures (made at the first call)."""
        # the signatures (shape, strides, dtype, device) of the inputs, flat: fewer calls than sig()
        try:
            key = (q.shape, q.stride(), q.dtype, q.get_device(), k.shape, k.stride(), k.dtype,
                   k.get_device(), v.shape, v.stride(), v.dtype, v.get_device(), i.shape, i.stride(),
                   i.dtype, i.get_device(), f.shape, f.stride(), f.dtype, f.get_device(),
                   None if c0 is None else (c0.shape, c0.stride(), c0.dtype, c0.get_device()),
                   None if n0 is None else (n0.shape, n0.stride(), n0.dtype, n0.get_device()), sig(m0))
        except AttributeError:
            name_non_tensor(("c_initial", "n_initial", "m_initial"), q=q, k=k, v=v, i=i, f=f, c_initial=c0,
                            n_initial=n0, m_initial=m0)
            raise
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


_CHUNKWISE, _NEW_STATES, _IN_PLACE = "chunkwise", "new states", "in place"


class _InferenceEntry:
    """One (input signatures) of an inference call: the checks, the kernel the backend picks and
    how the call runs (`kind`): _CHUNKWISE, the chunkwise kernels (call None); _NEW_STATES,
    tfla_backend_forward (call: its prepared call), whose step kernel reads the initial states and
    writes new ones; _IN_PLACE (inference_states_inplace with the initial states
    given), the backend's step kernel on the initial states themselves."""

    def __init__(self, module, q, k, v, i, f, c0, n0, m0):
        B, NH, S, Dqk = q.shape
        Dv = v.shape[-1]
        self.device = q.device
        self.device_index = q.device.index
        self.dtype = q.dtype
        self.exp = module.variant == "exp"
        self.h_shape = (B, NH, S, Dv)
        self.C_shape, self.n_shape, self.m_shape = (B, NH, Dqk, Dv), (B, NH, Dqk), (B, NH, 1)
        dtype = str(q.dtype).split(".")[-1]
        gate_dtype = str(i.dtype).split(".")[-1]
        backend = module._inference_backend(dtype, gate_dtype)
        initial = c0 is not None or n0 is not None or m0 is not None
        self.kind, self.call = _CHUNKWISE, None
        # The module's next call in this thread tries its previous entry first, when it is one of
        # a step with all three initial states (with_states) and the tensors pass `same`, a C
        # check of their signatures.
        self.same, self.with_states, self.ext = None, False, None
        if backend.choose(B, NH, S, Dqk, Dv, initial_states=initial, last_states=True) != "step":
            return
        plan = check_forward(info("q", q), info("k", k), info("v", v), info("i", i), info("f", f),
                             None if c0 is None else info("c_initial", c0),
                             None if n0 is None else info("n_initial", n0),
                             None if m0 is None else info("m_initial", m0),
                             variant=module.variant, normalize=module.normalize, eps=module.config.eps)
        if (n0 is not None or m0 is not None) and c0 is None:
            raise TflaArgumentError("n_initial/m_initial given without c_initial: pass all initial states or none")
        # h (the new states) as empty_like of v (of the initial states): one allocation call with
        # no arguments to parse, where that gives h's (their) shape, contiguous
        self.h_like_v = like(v, self.h_shape)
        self.states_like = (c0 is not None and n0 is not None and m0 is not None
                            and like(c0, self.C_shape) and like(n0, self.n_shape) and like(m0, self.m_shape))
        if (module.config.inference_states_inplace and c0 is not None and n0 is not None
                and (m0 is not None or not self.exp)):
            # the backend's step (tfla_backend_step) as tfla_mlstm_step with the backend's step
            # config: the same call, four arguments to pass instead of eight
            self.kind, self.call = _IN_PLACE, PreparedStep(plan, backend.step_config)
        else:
            self.kind, self.call = _NEW_STATES, PreparedBackendForward(backend, plan)
        if c0 is not None and n0 is not None and m0 is not None:
            self.with_states = True
            if tensor_guard is not None:
                self.same = tensor_guard(q, k, v, i, f, c0, n0, m0)
            self.ext = self._make_ext(q, k, v, i, f, c0, n0, m0)

    def _make_ext(self, q, k, v, i, f, c0, n0, m0):
        """The call in C (tfla.torch._fast) with all three initial states given, or None."""
        if _fast.module() is None:
            return None
        args = (q, k, v, i, f, c0, n0, m0)  # sources 0..7; h is 8, new states 9..11
        h_alloc = (_fast.LIKE, 2, None, ()) if self.h_like_v else (_fast.NEW, 0, q.dtype, self.h_shape)
        m_in = 7 if self.exp else -1
        inputs = {"q": 0, "k": 1, "v": 2, "i": 3, "f": 4, "h": 8}
        if self.kind is _IN_PLACE:  # the step kernel on c0, n0, m0 themselves (as _inference)
            fn, problem, _, config = self.call.addresses()
            return _fast.entry(self.call, _fast.FORM_STEP, fn, problem, self.call.tensors, config, args,
                               {**inputs, "C": 5, "n": 6, "m": m_in, "C_src": -1, "n_src": -1, "m_src": -1},
                               allocs=(h_alloc,), result=(8, (5, 6, 7)))
        fn, handle, dims = self.call.backend_addresses()
        if self.states_like:
            states = tuple((_fast.LIKE, j, None, ()) for j in (5, 6, 7))
        else:
            states = tuple((_fast.NEW, 5, torch.float32, shape) for shape in (self.C_shape, self.n_shape, self.m_shape))
        return _fast.entry(self.call, _fast.FORM_BACKEND, fn, handle, self.call.tensors, 0, args,
                           {**inputs, "C_last": 9, "n_last": 10, "m_last": 11, "C0": 5, "n0": 6, "m0": m_in},
                           allocs=(h_alloc,) + states, result=(8, (9, 10, 11)),
                           dims=dims)
