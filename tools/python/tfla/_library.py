"""Finds and loads libtfla.so with ctypes and declares the C ABI (src/include/tfla/tfla.h).

Search order (the first that loads wins):
  1. $TFLA_LIBRARY, a path to libtfla.so (when set, nothing else is tried);
  2. the copy inside this package: tfla/lib/libtfla.so* (where `pip install ./tools/python`
     puts the libtfla it compiles) or tfla/libtfla.so*;
  3. the repository's build folders, when the package runs from a checkout:
     <repo>/build/src/libtfla.so, then every other <repo>/build*/src/libtfla.so, newest first;
  4. the dynamic loader's path (LD_LIBRARY_PATH, ldconfig): "libtfla.so", then
     ctypes.util.find_library("tfla").
The library is loaded on first use, so `import tfla` and the argument checks need neither the
library nor a GPU. A missing library raises TflaLibraryNotFoundError naming every place tried.

NVRTC: libtfla loads it itself on first use (src/runtime/nvrtc.hpp: $TFLA_NVRTC, the
nvidia-cuda-nvrtc wheel beside libtfla, $TFLA_NVRTC_SEARCH_PATH, $CUDA_HOME, the loader path).
Before loading libtfla, this module appends to $TFLA_NVRTC_SEARCH_PATH the sys.path entries that
hold the wheel, so a libtfla outside site-packages (a checkout's build) finds the NVRTC that
PyTorch installed.
Struct layouts mirror tfla.h field by field; tests/test_library.py compares them with a C
compiler's offsetof where one is available. A library is used only when its tfla_abi_version()
is ABI_VERSION (tfla.h's TFLA_ABI_VERSION, which these layouts are): one of another ABI, or one
older than the query, is passed over in the search (and refused when $TFLA_LIBRARY names it),
with the versions in the error message.
"""

import ctypes
import ctypes.util
import glob
import os
import sys
import threading

from ._errors import TflaLibraryNotFoundError, error_for_status

# tfla.h's TFLA_ABI_VERSION: the C ABI the structs and signatures below are written for
ABI_VERSION = 2

c_int64 = ctypes.c_int64
c_int = ctypes.c_int
c_float = ctypes.c_float
c_void_p = ctypes.c_void_p
c_size_t = ctypes.c_size_t
c_char_p = ctypes.c_char_p


class Problem(ctypes.Structure):  # tfla_problem
    _fields_ = [("B", c_int64), ("NH", c_int64), ("S", c_int64), ("Dqk", c_int64), ("Dv", c_int64),
                ("dtype", c_int), ("gate_dtype", c_int), ("variant", c_int), ("normalize", c_int),
                ("eps", c_float), ("scale", c_float), ("num_seqs", c_int64), ("max_seqlen", c_int64)]


class Strides(ctypes.Structure):  # tfla_strides, in elements; all zero = contiguous
    _fields_ = [("b", c_int64), ("h", c_int64), ("s", c_int64)]


_IN5 = [(n, c_void_p) for n in ("q", "k", "v", "i", "f")]
_IN5_STRIDES = [(n + "_strides", Strides) for n in ("q", "k", "v", "i", "f")]


class ForwardTensors(ctypes.Structure):  # tfla_forward_tensors
    _fields_ = _IN5 + _IN5_STRIDES + [
        ("h", c_void_p), ("h_strides", Strides), ("norm", c_void_p), ("m", c_void_p),
        ("C0", c_void_p), ("n0", c_void_p), ("m0", c_void_p),
        ("C_last", c_void_p), ("n_last", c_void_p), ("m_last", c_void_p),
        ("saved", c_void_p), ("saved_bytes", c_size_t), ("cu_seqlens", c_void_p), ("cu_seqlens_int64", c_int)]


class BackwardTensors(ctypes.Structure):  # tfla_backward_tensors
    _fields_ = _IN5 + _IN5_STRIDES + [
        ("dh", c_void_p), ("dh_strides", Strides), ("norm", c_void_p),
        ("C0", c_void_p), ("n0", c_void_p), ("m0", c_void_p), ("dC_last", c_void_p),
        ("dq", c_void_p), ("dk", c_void_p), ("dv", c_void_p),
        ("dq_strides", Strides), ("dk_strides", Strides), ("dv_strides", Strides),
        ("di", c_void_p), ("df", c_void_p), ("di_strides", Strides), ("df_strides", Strides),
        ("dC0", c_void_p), ("saved", c_void_p), ("saved_bytes", c_size_t),
        ("cu_seqlens", c_void_p), ("cu_seqlens_int64", c_int)]


class StepTensors(ctypes.Structure):  # tfla_step_tensors
    _fields_ = _IN5 + _IN5_STRIDES + [
        ("h", c_void_p), ("h_strides", Strides), ("C", c_void_p), ("n", c_void_p), ("m", c_void_p),
        ("C_src", c_void_p), ("n_src", c_void_p), ("m_src", c_void_p)]


class BackendOptions(ctypes.Structure):  # tfla_backend_options
    _fields_ = [("mode", c_int), ("variant", c_int), ("normalize", c_int), ("dtype", c_int),
                ("gate_dtype", c_int), ("eps", c_float), ("scale", c_float),
                ("config", c_char_p), ("step_config", c_char_p), ("max_step_tokens", c_int64)]


_P = ctypes.POINTER
_D5 = [c_int64] * 5  # B, NH, S (or T), Dqk, Dv
# name -> argument types (every function returns a tfla_status int unless listed in _RESTYPES)
_SIGNATURES = {
    "tfla_last_error": [],
    "tfla_abi_version": [],
    "tfla_version": [],
    "tfla_mlstm_forward_workspace_size": [_P(Problem), c_char_p, _P(c_size_t)],
    "tfla_mlstm_forward_saved_workspace_size": [_P(Problem), c_char_p, _P(c_size_t)],
    "tfla_mlstm_forward": [_P(Problem), _P(ForwardTensors), c_void_p, c_void_p, c_size_t, c_char_p],
    "tfla_mlstm_backward_workspace_size": [_P(Problem), c_char_p, _P(c_size_t)],
    "tfla_mlstm_saved_size": [_P(Problem), c_char_p, _P(c_size_t)],
    "tfla_mlstm_backward_saved_workspace_size": [_P(Problem), c_char_p, _P(c_size_t)],
    "tfla_mlstm_backward": [_P(Problem), _P(BackwardTensors), c_void_p, c_void_p, c_size_t, c_char_p],
    "tfla_mlstm_step": [_P(Problem), _P(StepTensors), c_void_p, c_char_p],
    "tfla_mlstm_config": [_P(Problem), c_char_p, c_char_p, ctypes.c_char_p, c_size_t, _P(c_size_t)],
    "tfla_runtime_info": [c_char_p, c_size_t, _P(c_size_t)],
    "tfla_backend_create": [_P(BackendOptions), _P(c_void_p)],
    "tfla_backend_destroy": [c_void_p],
    "tfla_backend_choose": [c_void_p] + _D5 + [c_int, c_int, _P(c_int)],
    "tfla_backend_forward": [c_void_p] + _D5 + [_P(ForwardTensors), c_void_p, _P(c_int)],
    "tfla_backend_backward": [c_void_p] + _D5 + [_P(BackwardTensors), c_void_p],
    "tfla_backend_step": [c_void_p] + _D5 + [_P(StepTensors), c_void_p],
}
_RESTYPES = {"tfla_last_error": c_char_p, "tfla_version": c_char_p, "tfla_backend_destroy": None,
             "tfla_abi_version": c_int}


class Library:
    """The loaded libtfla: `path`, and `call(name, *args)` which raises on a non-zero status."""

    def __init__(self, cdll, path):
        self.cdll = cdll
        self.path = path
        self._functions = {}

    def function(self, name):
        fn = self._functions.get(name)
        if fn is None:
            try:
                fn = getattr(self.cdll, name)
            except AttributeError:
                raise TflaLibraryNotFoundError(
                    f"{self.path} has no symbol {name}: the library is older than this binding "
                    "(rebuild libtfla, or point TFLA_LIBRARY at a current build)") from None
            fn.argtypes = _SIGNATURES[name]
            fn.restype = _RESTYPES.get(name, c_int)
            self._functions[name] = fn
        return fn

    def has(self, name):
        return hasattr(self.cdll, name)

    def last_error(self):
        msg = self.function("tfla_last_error")()
        return msg.decode("utf-8", "replace") if msg else ""

    def call(self, name, *args):
        """Calls a tfla_status function; raises the matching TflaError on failure."""
        status = self.function(name)(*args)
        if status != 0:
            raise error_for_status(status, self.last_error())


def _package_dir():
    return os.path.dirname(os.path.abspath(__file__))


def _repo_root():
    """The checkout this package runs from (tools/python/tfla -> repo), or None."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(_package_dir())))
    if os.path.isfile(os.path.join(root, "src", "include", "tfla", "tfla.h")):
        return root
    return None


def candidate_paths():
    """(where, path) pairs in search order, before the loader path; for messages and tests."""
    out = []
    env = os.environ.get("TFLA_LIBRARY")
    if env:
        return [("$TFLA_LIBRARY", env)]
    pkg = _package_dir()
    for pattern in ("lib/libtfla.so", "lib/libtfla.so.*", "libtfla.so", "libtfla.so.*"):
        for p in sorted(glob.glob(os.path.join(pkg, pattern))):
            out.append(("next to the package", p))
    if not any(w == "next to the package" for w, _ in out):
        out.append(("next to the package", os.path.join(pkg, "lib", "libtfla.so")))
    root = _repo_root()
    if root:
        first = os.path.join(root, "build", "src", "libtfla.so")
        others = [p for p in glob.glob(os.path.join(root, "build*", "src", "libtfla.so")) if p != first]
        others.sort(key=lambda p: os.path.getmtime(p), reverse=True)
        for p in [first] + others:
            out.append(("repository build folder", p))
    return out


# Where the nvidia-cuda-nvrtc wheels put libnvrtc under site-packages (CUDA 13, CUDA 12).
NVRTC_WHEEL_FILES = ("nvidia/cu13/lib/libnvrtc.so.13", "nvidia/cuda_nvrtc/lib/libnvrtc.so.12")


def nvrtc_wheel_dirs():
    """The sys.path entries (site-packages) holding an nvidia-cuda-nvrtc wheel's libnvrtc."""
    out = []
    for entry in sys.path:
        if not entry or not os.path.isdir(entry):
            continue
        if any(os.path.isfile(os.path.join(entry, f)) for f in NVRTC_WHEEL_FILES):
            d = os.path.abspath(entry)
            if d not in out:
                out.append(d)
    return out


def export_nvrtc_search_path():
    """Appends nvrtc_wheel_dirs() to $TFLA_NVRTC_SEARCH_PATH (libtfla reads it when it first
    needs NVRTC). Nothing to do when $TFLA_NVRTC names NVRTC explicitly."""
    if os.environ.get("TFLA_NVRTC"):
        return
    current = [d for d in os.environ.get("TFLA_NVRTC_SEARCH_PATH", "").split(":") if d]
    added = [d for d in nvrtc_wheel_dirs() if d not in current]
    if added:
        os.environ["TFLA_NVRTC_SEARCH_PATH"] = ":".join(current + added)


_lock = threading.Lock()
_loaded = None


def abi_mismatch(cdll):
    """Why a loaded library cannot be used with this binding (its C ABI version is not
    ABI_VERSION, or it has no tfla_abi_version), or None when it can."""
    try:
        fn = cdll.tfla_abi_version
    except AttributeError:
        return (f"no tfla_abi_version: a library older than this binding, which needs C ABI "
                f"version {ABI_VERSION}")
    fn.argtypes = []
    fn.restype = c_int
    got = fn()
    if got != ABI_VERSION:
        return (f"C ABI version {got}, but this binding is written for version {ABI_VERSION}: "
                "use the binding that came with that library, or rebuild libtfla from this checkout")
    return None


def load_library():
    """The process's libtfla (loaded once). Raises TflaLibraryNotFoundError listing the search."""
    global _loaded
    with _lock:
        if _loaded is not None:
            return _loaded
        export_nvrtc_search_path()
        tried = []
        for where, path in candidate_paths():
            if not os.path.exists(path):
                tried.append(f"  {where}: {path} (no such file)")
                continue
            try:
                cdll = ctypes.CDLL(path)
            except OSError as e:
                tried.append(f"  {where}: {path} ({e})")
                continue
            why = abi_mismatch(cdll)
            if why:
                tried.append(f"  {where}: {path} ({why})")
                continue
            _loaded = Library(cdll, os.path.realpath(path))
            return _loaded
        if os.environ.get("TFLA_LIBRARY"):
            raise TflaLibraryNotFoundError(
                "could not load libtfla from $TFLA_LIBRARY:\n" + "\n".join(tried))
        names = ["libtfla.so"]
        found = ctypes.util.find_library("tfla")
        if found and found not in names:
            names.append(found)
        for name in names:
            try:
                cdll = ctypes.CDLL(name)
            except OSError as e:
                tried.append(f"  loader path: {name} ({e})")
                continue
            why = abi_mismatch(cdll)
            if why:
                tried.append(f"  loader path: {name} ({why})")
                continue
            _loaded = Library(cdll, name)
            return _loaded
        raise TflaLibraryNotFoundError(
            "could not find libtfla.so. Looked in:\n" + "\n".join(tried) +
            "\nInstall the package with its library (pip install ./tools/python compiles it), or "
            "build it (cmake --build build) and set TFLA_LIBRARY=/path/to/libtfla.so or add its "
            "folder to LD_LIBRARY_PATH.")


def _reset_for_tests():
    global _loaded
    with _lock:
        _loaded = None
