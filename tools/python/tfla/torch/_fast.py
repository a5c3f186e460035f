"""The step's host path in C++ (`_fast.cpp`): built once per torch version and source with
torch.utils.cpp_extension (a C++ compiler and ninja; about 20 s, cached in torch's extension
folder, TORCH_EXTENSIONS_DIR), loaded at the first step entry of a process.

TFLA_TORCH_EXTENSION: unset or "auto" builds or loads it and, where that fails (no compiler, no
ninja, a torch without its headers), logs a warning on the `tfla` logger once and keeps the
ctypes path; "0" never loads it; "1" requires it (a failure raises TflaUnsupportedError).

A loaded module also passes a check once: the raw stream it finds for the current CUDA device
must be torch's (`torch._C._cuda_getCurrentRawStream`), else it is not used.

`entry(owner, ...)` records a prepared step entry for `call`; see _fast.cpp for the contract.
"""

import hashlib
import logging
import os
import sys
import threading

import torch

from .._errors import TflaUnsupportedError

log = logging.getLogger("tfla")

_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_fast.cpp")
_lock = threading.Lock()
_state = {"tried": False, "module": None, "error": None}
# the module's call(entry, q, k, v, i, f, c, n, m, out) once loaded (see _fast.cpp)
call = None

# Pointer slots of the step's and the backend forward's tensor structs (_fast.cpp's Slot) and
# what fills them (its Source): arguments 0..8 (q, k, v, i, f, c, n, m, out), h, the new states,
# or 0.
SLOTS = ("q", "k", "v", "i", "f", "h", "C_out", "n_out", "m_out", "C_in", "n_in", "m_in")
ARG_Q, ARG_K, ARG_V, ARG_I, ARG_F, ARG_C, ARG_N, ARG_M, ARG_OUT = range(9)
SRC_H, SRC_NEW_C, SRC_NEW_N, SRC_NEW_M, SRC_ZERO = 9, 10, 11, 12, -1
H_OUT, H_LIKE_V, H_NEW = 0, 1, 2
STATES_ARGS, STATES_LIKE, STATES_NEW = 0, 1, 2
KIND_STEP, KIND_BACKEND_FORWARD = 0, 1


def _mode():
    m = os.environ.get("TFLA_TORCH_EXTENSION", "auto").strip().lower()
    if m in ("", "auto"):
        return "auto"
    if m in ("0", "off", "false", "no"):
        return "off"
    if m in ("1", "on", "true", "yes", "required"):
        return "required"
    raise TflaUnsupportedError(f"TFLA_TORCH_EXTENSION={m!r}: use auto (default), 0 or 1")


def _build():
    from torch.utils import cpp_extension

    with open(_SOURCE, "rb") as fh:
        source = fh.read()
    # the name carries the source, torch's version and the interpreter, so that no build made
    # for another of them is loaded from the shared extension folder
    tag = hashlib.sha256(source + torch.__version__.encode() + sys.version.encode()).hexdigest()[:16]
    name = f"tfla_fast_{tag}"
    log.info("tfla: loading the C++ step host path %s (the first time, torch.utils.cpp_extension "
             "compiles it: about 20 s)", name)
    mod = cpp_extension.load(name=name, sources=[_SOURCE], extra_cflags=["-O2"], verbose=False)
    if torch.cuda.is_available():
        idx = torch.cuda.current_device()
        mine, torch_s = mod.stream(idx), torch._C._cuda_getCurrentRawStream(idx)
        if mine != torch_s:
            raise RuntimeError(f"its current stream {mine:#x} is not torch's {torch_s:#x}")
    return mod


def module():
    """The loaded extension module, or None (off, or it failed: see the module docstring)."""
    if _state["tried"]:
        return _state["module"]
    mode = _mode()
    with _lock:
        if not _state["tried"]:
            if mode != "off":
                try:
                    global call
                    mod = _build()
                    call = mod.call
                    _state["module"] = mod
                except Exception as exc:  # noqa: BLE001 - any failure keeps the ctypes path
                    _state["error"] = f"{type(exc).__name__}: {exc}"
                    if mode == "required":
                        raise TflaUnsupportedError(
                            f"TFLA_TORCH_EXTENSION=1 but the C++ step host path did not build or "
                            f"load: {_state['error']}") from exc
                    log.warning("tfla: the C++ step host path is not available (%s); the step "
                                "runs through ctypes (about 10 us more host time per call). "
                                "TFLA_TORCH_EXTENSION=0 skips this attempt.", _state["error"])
            _state["tried"] = True
    return _state["module"]


def status():
    """(loaded, error) for diagnostics and tests."""
    return _state["module"] is not None, _state["error"]


def entry(owner, kind, fn, first, tensors, config, kind_out, struct_cls, fields, sources, how_h,
          how_states, h_shape, c_shape, n_shape, m_shape, device_index, args, dims=(), align=(0, 0)):
    """A capsule recording one prepared step entry for `call`, or None without the module.
    owner: what keeps the structs alive (the prepared call); fn, first, tensors, config,
    kind_out: addresses (ints, 0 = none); fields: the struct's field for each slot of SLOTS;
    sources: what fills each slot; args: the 9 arguments the entry was made for."""
    mod = module()
    if mod is None:
        return None
    offs = tuple(getattr(struct_cls, name).offset for name in fields)
    return mod.make(owner, kind, fn, first, tuple(dims), tensors, config, kind_out, offs, tuple(sources),
                    how_h, how_states, align[0], align[1], tuple(h_shape), tuple(c_shape), tuple(n_shape),
                    tuple(m_shape), -1 if device_index is None else device_index, tuple(args))


def calls(capsule):
    """How many calls the C path ran for an entry."""
    return _state["module"].calls(capsule)
