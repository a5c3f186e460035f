"""The binding's per-call host path in C++ (`_fast.cpp`): built once per torch version and
source with torch.utils.cpp_extension (a C++ compiler and ninja; about 20 s, cached in torch's
extension folder, TORCH_EXTENSIONS_DIR), loaded at the first entry of a process (the step, the
chunkwise forward and backward).

TFLA_TORCH_EXTENSION: unset or "auto" builds or loads it and, where that fails (no compiler, no
ninja, a torch without its headers), logs a warning on the `tfla` logger once and keeps the
ctypes path; "0" never loads it; "1" requires it (a failure raises TflaUnsupportedError).

A loaded module also passes a check once: the raw stream it finds for the current CUDA device
must be torch's (`torch._C._cuda_getCurrentRawStream`), else it is not used.

`entry(owner, ...)` records a prepared call for `call`; `node(record, owner, *args)` runs the
chunkwise forward of a record (`_launch.node_record`) and attaches its C++ autograd node; see
_fast.cpp for both contracts.
"""

import ctypes
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
# the module's call(entry, *args) and node(record, owner, *args) once loaded (see _fast.cpp)
call = node = None

# How the library function is called (_fast.cpp's Form) and how an output is allocated (How).
FORM_STEP, FORM_BACKEND, FORM_OP = 0, 1, 2
LIKE, NEW, BYTES = 0, 1, 2


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
    log.info("tfla: loading the C++ host path %s (the first time, torch.utils.cpp_extension "
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
                    global call, node
                    mod = _build()
                    call, node = mod.call, mod.node
                    _state["module"] = mod
                except Exception as exc:  # noqa: BLE001 - any failure keeps the ctypes path
                    _state["error"] = f"{type(exc).__name__}: {exc}"
                    if mode == "required":
                        raise TflaUnsupportedError(
                            f"TFLA_TORCH_EXTENSION=1 but the C++ host path did not build or "
                            f"load: {_state['error']}") from exc
                    log.warning("tfla: the C++ host path is not available (%s); calls run "
                                "through ctypes (about 5 to 10 us more host time per call). "
                                "TFLA_TORCH_EXTENSION=0 skips this attempt.", _state["error"])
            _state["tried"] = True
    return _state["module"]


def status():
    """(loaded, error) for diagnostics and tests."""
    return _state["module"] is not None, _state["error"]


def entry(owner, form, fn, first, struct, config, args, slots, allocs=(), aligned=(), workspace=-1,
          workspace_bytes=0, result=None, dims=()):
    """A capsule recording one prepared call for `call`, or None without the module.

    owner: what keeps the problem struct and the config text alive (the prepared call); fn,
    first (the problem struct or the backend handle), config: addresses (ints, 0 = none);
    struct: the prepared ctypes tensor struct, copied now (each call patches its copy); args: the
    arguments the entry is made for (their signatures are its guard); sources: argument j is j,
    output j of `allocs` is len(args) + j, -1 a null pointer (None in the result); slots:
    {struct field: source}; allocs: ((LIKE, arg, None, ()) | (NEW, arg, dtype, shape) |
    (BYTES, arg, None, (nbytes,)), ...), on arg's device; aligned: ((arg, bytes), ...) whose
    pointers the C path requires aligned (else the Python path runs); workspace (FORM_OP): the
    source passed as the workspace and its bytes; result: a template of sources (nested tuples,
    None) that `call` returns filled. A call runs on its first argument's device, which must be
    the current one (else the Python path runs)."""
    mod = module()
    if mod is None:
        return None
    cls = type(struct)
    slot_list = tuple((getattr(cls, name).offset, int(src)) for name, src in slots.items())
    return mod.make(owner, form, fn, first, tuple(dims), ctypes.addressof(struct), ctypes.sizeof(struct),
                    config, tuple(args), tuple(aligned), tuple(allocs), slot_list, workspace,
                    workspace_bytes, result)


def calls(capsule):
    """How many calls the C path ran for an entry."""
    return _state["module"].calls(capsule)
