"""The calls into libtfla, on plain integers (device pointers, stream handle): no torch here.

The torch layer (tfla.torch) allocates tensors and passes their data pointers; these functions
fill the C structs from a Plan (tfla._checks) and call the library, which raises TflaError
subclasses on failure. The size and config queries need no GPU.
"""

import ctypes
import operator

from ._checks import DTYPE_CODES, VARIANT_CODES, Plan, check_options
from ._errors import TflaArgumentError
from ._library import (BackendOptions, BackwardTensors, ForwardTensors, Problem, StepTensors,
                       Strides, load_library)

CONTIGUOUS = (0, 0, 0)  # all-zero strides: contiguous (B, NH, S, D) in the C ABI


def config_text(config):
    """A config as the C ABI's "key=value,..." text: from None, a str or a {key: int} dict."""
    if config is None:
        return None
    if isinstance(config, str):
        text = config.strip()
        return text or None
    if isinstance(config, dict):
        items = []
        for key, value in config.items():
            if not isinstance(key, str) or "," in key or "=" in key:
                raise TflaArgumentError(f"bad config key {key!r}")
            if isinstance(value, bool) or not isinstance(value, int):
                raise TflaArgumentError(f"config value of {key!r} must be an int, got {value!r}")
            items.append(f"{key}={value}")
        return ",".join(items) or None
    raise TflaArgumentError(f"config must be None, a 'key=value,...' string or a dict, got {type(config).__name__}")


def parse_config(text):
    """{key: int} from "key=value,..." text."""
    out = {}
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        key, eq, value = item.partition("=")
        try:
            if not eq or not key.strip():
                raise ValueError
            out[key.strip()] = int(value)
        except ValueError:
            raise TflaArgumentError(f"bad config item {item!r} in {text!r}: expected key=integer, as "
                                    "\"chunk=128,siz_b_v=128\"") from None
    return out


def chunk_configs(chunk_size, config, backward_config):
    """Forward and backward config texts: chunk_size pins "chunk" unless a config sets it;
    the backward follows the forward's pinned chunk."""
    fwd = parse_config(config_text(config))
    bwd = parse_config(config_text(backward_config))
    if chunk_size is not None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
            raise TflaArgumentError(f"chunk_size must be an int or None, got {chunk_size!r}")
        fwd.setdefault("chunk", chunk_size)
    if "chunk" in fwd:
        bwd.setdefault("chunk", fwd["chunk"])
    return config_text(fwd), config_text(bwd)


def saved_backward_config(plan, fwd_config, bwd_config):
    """The backward's config when it reads the forward's saved states: those are laid out by
    the forward's chunk in the chunkwise form, so the backward must use them (its other pinned
    keys stay)."""
    fwd = kernel_config(plan, "fwd", fwd_config)
    if fwd.get("parallel"):
        # a forward with a saved buffer runs the chunkwise form with the caller's other pins,
        # whether the library chose the parallel form or the caller pinned it (the forward then
        # refuses the buffer): what tfla_mlstm_saved_size sizes
        pinned = parse_config(config_text(fwd_config))
        pinned["parallel"] = 0
        fwd = kernel_config(plan, "fwd", pinned)
    chunk = fwd["chunk"]
    if kernel_config(plan, "bwd", bwd_config).get("chunk") != chunk:
        cfg = parse_config(config_text(bwd_config))
        cfg.pop("parallel", None)
        cfg["chunk"] = chunk
        return config_text(cfg)
    return bwd_config


def _bytes(text):
    return text.encode() if text is not None else None


def problem_struct(plan):
    return Problem(**plan.problem_fields())


def make_plan(B, NH, S, Dqk, Dv, *, dtype="bfloat16", gate_dtype="float32", variant="exp",
              normalize=True, eps=1e-6, scale=None):
    """A Plan from sizes alone (for the size and config queries)."""
    if dtype not in DTYPE_CODES:
        raise TflaArgumentError(f"dtype must be one of {sorted(DTYPE_CODES)}, got {dtype!r}")
    if gate_dtype not in DTYPE_CODES:
        raise TflaArgumentError(f"gate_dtype must be one of {sorted(DTYPE_CODES)}, got {gate_dtype!r}")
    eps, scale = check_options(variant, normalize, eps, scale)
    sizes = []
    for name, value in (("B", B), ("NH", NH), ("S", S), ("Dqk", Dqk), ("Dv", Dv)):
        # an integer, never a float that int() would truncate (1.5 -> 1) or a bool
        try:
            sizes.append(operator.index(value) if not isinstance(value, bool) else None)
        except TypeError:
            sizes.append(None)
        if sizes[-1] is None:
            raise TflaArgumentError(f"{name} must be an int, got {value!r}")
    return Plan(*sizes, dtype, gate_dtype, variant, bool(normalize), eps, scale, 0, {})


def _size_query(name, plan, config):
    lib = load_library()
    out = ctypes.c_size_t(0)
    lib.call(name, ctypes.byref(problem_struct(plan)), _bytes(config_text(config)), ctypes.byref(out))
    return out.value


def forward_workspace_size(plan, config=None, saved=False):
    """Bytes of device scratch the forward needs (tfla_mlstm_forward_workspace_size); with
    saved=True, when it is given a saved buffer: the scratch of a state walk split into sequence
    segments, 0 where the config does not split (tfla_mlstm_forward_saved_workspace_size)."""
    if saved:
        return _size_query("tfla_mlstm_forward_saved_workspace_size", plan, config)
    return _size_query("tfla_mlstm_forward_workspace_size", plan, config)


def backward_workspace_size(plan, config=None, saved=False):
    """Bytes of device scratch the backward needs (tfla_mlstm_backward_workspace_size); with
    saved=True, when it reads the forward's saved buffer: filled by a forward with the default
    config, or at config's chunk where it names one (after a forward with another config, name
    that forward's chunk)."""
    if saved:
        return _size_query("tfla_mlstm_backward_saved_workspace_size", plan, config)
    return _size_query("tfla_mlstm_backward_workspace_size", plan, config)


def saved_size(plan, config=None):
    """Bytes of the forward-to-backward saved-states buffer (tfla_mlstm_saved_size)."""
    return _size_query("tfla_mlstm_saved_size", plan, config)


def kernel_config(plan, op, pinned=None):
    """The config op ("fwd", "bwd", "step") would use: the tuned cache entry or the default,
    with the pinned keys on top (tfla_mlstm_config). Returns {key: int}."""
    lib = load_library()
    prob = problem_struct(plan)
    pinned_b = _bytes(config_text(pinned))
    needed = ctypes.c_size_t(0)
    lib.call("tfla_mlstm_config", ctypes.byref(prob), op.encode(), pinned_b, None, 0, ctypes.byref(needed))
    buf = ctypes.create_string_buffer(needed.value)
    lib.call("tfla_mlstm_config", ctypes.byref(prob), op.encode(), pinned_b, buf, needed.value,
             ctypes.byref(needed))
    return parse_config(buf.value.decode())


def _strides(t):
    return Strides(*t)


def _set_inputs(t, plan, p):
    """q, k, v, i, f of a forward/backward tensor block: pointers and the plan's strides."""
    for name in ("q", "k", "v", "i", "f"):
        setattr(t, name, p[name])
        setattr(t, name + "_strides", _strides(plan.strides[name]))


def forward(plan, p, stream, workspace=0, workspace_bytes=0, config=None):
    """tfla_mlstm_forward. p: name -> device pointer (int, 0 = absent) for q, k, v, i, f, h and
    the optional norm, m, C0, n0, m0, C_last, n_last, m_last, saved (+ saved_bytes)."""
    t = ForwardTensors()
    _set_inputs(t, plan, p)
    t.h = p["h"]
    t.h_strides = _strides(CONTIGUOUS)
    for name in ("norm", "m", "C0", "n0", "m0", "C_last", "n_last", "m_last", "saved"):
        setattr(t, name, p.get(name) or None)
    t.saved_bytes = p.get("saved_bytes", 0)
    load_library().call("tfla_mlstm_forward", ctypes.byref(problem_struct(plan)), ctypes.byref(t),
                        stream or None, workspace or None, workspace_bytes, _bytes(config_text(config)))


def backward(plan, p, stream, workspace=0, workspace_bytes=0, config=None, dh_strides=CONTIGUOUS):
    """tfla_mlstm_backward. p: name -> device pointer for q, k, v, i, f, dh, norm, dq, dk, dv,
    di, df and the optional C0, n0, m0, dC_last, dC0, saved (+ saved_bytes). Outputs contiguous."""
    t = BackwardTensors()
    _set_inputs(t, plan, p)
    t.dh = p["dh"]
    t.dh_strides = _strides(dh_strides)
    for name in ("norm", "C0", "n0", "m0", "dC_last", "dq", "dk", "dv", "di", "df", "dC0", "saved"):
        setattr(t, name, p.get(name) or None)
    t.saved_bytes = p.get("saved_bytes", 0)
    load_library().call("tfla_mlstm_backward", ctypes.byref(problem_struct(plan)), ctypes.byref(t),
                        stream or None, workspace or None, workspace_bytes, _bytes(config_text(config)))


def step(plan, p, stream, config=None):
    """tfla_mlstm_step: T = plan.S tokens, the new states into C, n, m, from C_src, n_src,
    m_src where p has them (else C, n, m are updated in place)."""
    t = StepTensors()
    for name in ("q", "k", "v", "i", "f"):
        setattr(t, name, p[name])
        setattr(t, name + "_strides", _strides(plan.strides[name]))
    t.h = p["h"]
    t.h_strides = _strides(CONTIGUOUS)
    t.C, t.n, t.m = p["C"], p["n"], p.get("m") or None
    t.C_src, t.n_src, t.m_src = p.get("C_src") or None, p.get("n_src") or None, p.get("m_src") or None
    load_library().call("tfla_mlstm_step", ctypes.byref(problem_struct(plan)), ctypes.byref(t),
                        stream or None, _bytes(config_text(config)))


KERNEL_KINDS = {0: "chunkwise", 1: "parallel", 2: "step"}


class Backend:
    """A tfla_backend (the library's kernel chooser), owned by this object."""

    def __init__(self, *, mode="train", variant="exp", normalize=True, dtype="bfloat16",
                 gate_dtype="float32", eps=1e-6, scale=None, config=None, step_config=None,
                 max_step_tokens=0):
        if mode not in ("train", "inference"):
            raise TflaArgumentError(f"mode must be 'train' or 'inference', got {mode!r}")
        eps, scale = check_options(variant, normalize, eps, scale)
        self._config = _bytes(config_text(config))  # kept alive: the struct points into them
        self._step_config = _bytes(config_text(step_config))
        self.step_config = config_text(step_config)  # what its step runs with (None: tuned/default)
        opts = BackendOptions(mode=0 if mode == "train" else 1, variant=VARIANT_CODES[variant],
                              normalize=1 if normalize or variant == "exp" else 0,
                              dtype=DTYPE_CODES[dtype], gate_dtype=DTYPE_CODES[gate_dtype],
                              eps=eps, scale=scale, config=self._config,
                              step_config=self._step_config, max_step_tokens=int(max_step_tokens))
        self._lib = load_library()
        handle = ctypes.c_void_p()
        self._lib.call("tfla_backend_create", ctypes.byref(opts), ctypes.byref(handle))
        self._handle = handle

    def close(self):
        if getattr(self, "_handle", None) and self._handle.value:
            self._lib.function("tfla_backend_destroy")(self._handle)
            self._handle = ctypes.c_void_p()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing left to release into
            pass

    def choose(self, B, NH, S, Dqk, Dv, initial_states=False, last_states=False):
        """Which kernels forward() runs for this shape: "chunkwise", "parallel" or "step"."""
        kind = ctypes.c_int(-1)
        self._lib.call("tfla_backend_choose", self._handle, B, NH, S, Dqk, Dv,
                       int(bool(initial_states)), int(bool(last_states)), ctypes.byref(kind))
        return KERNEL_KINDS.get(kind.value, str(kind.value))

    def forward(self, plan, p, stream):
        """tfla_backend_forward with the pointers of `forward`; returns the kind it ran."""
        t = ForwardTensors()
        for name in ("q", "k", "v", "i", "f"):
            setattr(t, name, p[name])
            setattr(t, name + "_strides", _strides(plan.strides[name]))
        t.h = p["h"]
        t.h_strides = _strides(CONTIGUOUS)
        for name in ("norm", "m", "C0", "n0", "m0", "C_last", "n_last", "m_last"):
            setattr(t, name, p.get(name) or None)
        kind = ctypes.c_int(-1)
        self._lib.call("tfla_backend_forward", self._handle, plan.B, plan.NH, plan.S, plan.Dqk, plan.Dv,
                       ctypes.byref(t), stream or None, ctypes.byref(kind))
        return KERNEL_KINDS.get(kind.value, str(kind.value))


def version():
    """The library's version string."""
    v = load_library().function("tfla_version")()
    return v.decode() if v else ""
