"""runtime_info(): what the loaded libtfla sees (C ABI tfla_runtime_info), no GPU needed."""

import ctypes
import json

from ._library import load_library


def runtime_info():
    """A dict: tfla_version; nvrtc_loaded, nvrtc_version, nvrtc_path, nvrtc_found_by (which step
    of the search found it, e.g. "nvidia-cuda-nvrtc wheel beside libtfla" or "$CUDA_HOME"),
    nvrtc_builtins_path, nvrtc_error (every place looked when none loaded); driver_loaded,
    driver_version, driver_error; devices (a dict per device); library_path (this libtfla).
    A missing driver or NVRTC is reported in the *_error fields, not raised."""
    lib = load_library()
    needed = ctypes.c_size_t(0)
    lib.call("tfla_runtime_info", None, 0, ctypes.byref(needed))
    buf = ctypes.create_string_buffer(needed.value)
    lib.call("tfla_runtime_info", buf, needed.value, ctypes.byref(needed))
    info = json.loads(buf.value.decode("utf-8", "replace"))
    info["library_path"] = lib.path
    return info
