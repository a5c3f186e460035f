"""tfla.torch._fast without a GPU: the TFLA_TORCH_EXTENSION setting, and the C module's checks of
what an entry records (it is built here with torch.utils.cpp_extension, as on a user's first
call; a build failure fails these tests). Its calls are checked against a stub library by
test_hostpath_cpu.py and against the ctypes path on a GPU by test_hostpath_gpu.py. Skipped
without torch or a C++ compiler."""

import ctypes
import os
import shutil
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
if not (shutil.which("c++") or shutil.which("g++")):
    pytest.skip("no C++ compiler for tfla.torch._fast", allow_module_level=True)

from tfla import TflaUnsupportedError  # noqa: E402
from tfla._library import StepTensors  # noqa: E402
from tfla.torch import _fast  # noqa: E402


@pytest.mark.parametrize("value,mode", [(None, "auto"), ("", "auto"), ("auto", "auto"), ("0", "off"),
                                        ("off", "off"), ("no", "off"), ("1", "required"), ("TRUE", "required")])
def test_setting(monkeypatch, value, mode):
    if value is None:
        monkeypatch.delenv("TFLA_TORCH_EXTENSION", raising=False)
    else:
        monkeypatch.setenv("TFLA_TORCH_EXTENSION", value)
    assert _fast._mode() == mode


def test_a_bad_setting_names_the_variable(monkeypatch):
    monkeypatch.setenv("TFLA_TORCH_EXTENSION", "fast")
    with pytest.raises(TflaUnsupportedError, match="TFLA_TORCH_EXTENSION"):
        _fast._mode()


def test_off_never_builds():
    code = ("import os; from tfla.torch import _fast; m = _fast.module(); "
            "print('none' if m is None else 'loaded', _fast.status())")
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tools/python
    env = dict(os.environ, TFLA_TORCH_EXTENSION="0",
               PYTHONPATH=os.pathsep.join([package] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("none (False, None)")


@pytest.fixture(scope="module")
def mod():
    old = os.environ.get("TFLA_TORCH_EXTENSION")
    os.environ["TFLA_TORCH_EXTENSION"] = "1"
    try:
        m = _fast.module()
    finally:
        if old is None:
            os.environ.pop("TFLA_TORCH_EXTENSION", None)
        else:
            os.environ["TFLA_TORCH_EXTENSION"] = old
    assert m is not None, _fast.status()
    return m


def _make(mod, struct, **kw):
    a = dict(owner=object(), form=_fast.FORM_STEP, fn=1, first=0, dims=(), tensors=ctypes.addressof(struct),
             size=ctypes.sizeof(struct), config=0, args=(torch.zeros(2),), aligned=(), allocs=(), slots=(),
             workspace=-1, workspace_bytes=0, result=None)
    a.update(kw)
    return mod.make(a["owner"], a["form"], a["fn"], a["first"], a["dims"], a["tensors"], a["size"], a["config"],
                    a["args"], a["aligned"], a["allocs"], a["slots"], a["workspace"], a["workspace_bytes"],
                    a["result"])


def test_make_refuses_what_a_call_could_not_do(mod):
    t = StepTensors()
    q = torch.zeros(2)
    assert _make(mod, t) is not None
    bad = {
        "an unknown form": dict(form=7),
        "a null function": dict(fn=0),
        "a null struct": dict(tensors=0),
        "the first argument None": dict(args=(None,)),
        "a non-tensor argument": dict(args=(q, 3)),
        "a slot past the struct": dict(slots=((ctypes.sizeof(t) - 4, 0),)),
        "a slot's unknown source": dict(slots=((0, 1),)),
        "an alloc of an absent argument": dict(args=(q, None), allocs=((_fast.LIKE, 1, None, ()),)),
        "an alloc of an unknown kind": dict(allocs=((9, 0, None, ()),)),
        "a new alloc without a dtype": dict(allocs=((_fast.NEW, 0, None, (2,)),)),
        "a byte alloc of two sizes": dict(allocs=((_fast.BYTES, 0, None, (2, 3)),)),
        "an alignment of 0 bytes": dict(aligned=((0, 0),)),
        "a workspace of an unknown source": dict(workspace=2),
        "a result of an unknown source": dict(result=(0, (5,))),
        "a result that is a list": dict(result=[0]),
        "a backend call without its 5 dims": dict(form=_fast.FORM_BACKEND, dims=(1, 2)),
    }
    for what, kw in bad.items():
        with pytest.raises((ValueError, TypeError)):
            _make(mod, t, **kw)
            pytest.fail(what)


def test_call_declines_other_signatures(mod):
    """A call whose arguments differ from the entry's in any recorded way returns None before
    anything is allocated or called (fn is a bad address: calling it would crash)."""
    t = StepTensors()
    q = torch.zeros(2, 3)
    e = _make(mod, t, args=(q, None), fn=8)
    assert mod.call(e, torch.zeros(3, 2), None) is None                  # sizes
    assert mod.call(e, torch.zeros(3, 2).t(), None) is None              # strides
    assert mod.call(e, torch.zeros(2, 3, dtype=torch.float64), None) is None  # dtype
    assert mod.call(e, q, q) is None                                     # None recorded
    assert mod.call(e, q) is None                                        # arity
    with torch.inference_mode():
        assert mod.call(e, torch.zeros(2, 3), None) is None              # dispatch keys
    assert mod.calls(e) == 0


def test_autograd_refuses_what_its_node_could_not_run(mod):
    """autograd(entry, fallback) takes only a chunkwise forward entry of 8 arguments whose result
    is (h, norm, C, n, m, saved) with h and the normalizer allocated, and a callable fallback."""
    from tfla._library import ForwardTensors
    t = ForwardTensors()
    q = torch.zeros(2)
    args8 = (q,) + (None,) * 7
    allocs = ((_fast.LIKE, 0, None, ()), (_fast.LIKE, 0, None, ()))
    ok = _make(mod, t, form=_fast.FORM_OP, args=args8, allocs=allocs, result=(8, 9, -1, -1, -1, -1))
    rec = mod.autograd(ok, lambda *a: None)
    assert mod.node_calls(rec) == (0, False)
    bad = {
        "a step entry": (_make(mod, t, args=args8, allocs=allocs, result=(8, 9, -1, -1, -1, -1)), len),
        "another arity": (_make(mod, t, form=_fast.FORM_OP, args=(q,), allocs=allocs, result=(1, 2, -1, -1, -1, -1)),
                          len),
        "no normalizer": (_make(mod, t, form=_fast.FORM_OP, args=args8, allocs=allocs, result=(8, -1, -1, -1, -1, -1)),
                          len),
        "a nested result": (_make(mod, t, form=_fast.FORM_OP, args=args8, allocs=allocs, result=(8, (9,), -1, -1, -1, -1)),
                            len),
        "a fallback that is not callable": (ok, 3),
    }
    for what, (entry, fallback) in bad.items():
        with pytest.raises((ValueError, TypeError)):
            mod.autograd(entry, fallback)
            pytest.fail(what)
    with pytest.raises((ValueError, TypeError)):  # not a record
        mod.node(ok, None, *args8)
    # arguments unlike the entry's: None before anything is allocated or called (fn is 1)
    assert mod.node(rec, None, torch.zeros(3), *args8[1:]) is None
    assert mod.node(rec, None, q, q, *args8[2:]) is None
