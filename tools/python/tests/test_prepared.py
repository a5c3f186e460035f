"""The prepared calls (tfla._prepared) without the library: each writes the pointers it is given
into its ctypes tensor block with one struct.pack_into over the block, so every field must land
where the C struct has it and the strides between the pointers must stay as prepared. A fake
library records the arguments of the call."""

import ctypes
import types

import pytest

from fake_tensor import FakeTensor, fp32
from tfla import _prepared
from tfla._checks import check_forward, check_step, describe
from tfla._errors import TflaArgumentError


class FakeFunction:
    def __init__(self, status=0):
        self.status = status
        self.calls = []

    def __call__(self, *args):
        self.calls.append(args)
        return self.status


class FakeLibrary:
    def __init__(self, status=0):
        self.functions = {}
        self.status = status
        self.cdll = self

    def __getitem__(self, name):
        return self.functions.setdefault(name, FakeFunction(self.status))

    def last_error(self):
        return "fake failure"


@pytest.fixture
def lib(monkeypatch):
    fake = FakeLibrary()
    monkeypatch.setattr(_prepared, "load_library", lambda: fake)
    return fake


def strided_inputs(S=8, B=2, NH=3, Dqk=32, Dv=16):
    """q, k, v as transposed (B, S, NH, D) projections and gates with their own strides, so every
    tensor has distinct, non-contiguous strides."""
    q = FakeTensor((B, S, NH, Dqk)).transpose12()
    k = FakeTensor((B, S, NH, Dqk), strides=(S * NH * 2 * Dqk, NH * 2 * Dqk, 2 * Dqk, 1)).transpose12()
    v = FakeTensor((B, S, NH, Dv)).transpose12()
    i = FakeTensor((B, NH, S), fp32, strides=(NH * S * 2, S * 2, 2))
    f = FakeTensor((B, NH, S), fp32, strides=(NH * S * 3, 1, NH * 3))
    return q, k, v, i, f


def plan_of(tensors, step=False):
    infos = [describe(n, t) for n, t in zip("qkvif", tensors)]
    if step:
        B, NH, S, Dqk = tensors[0].shape
        Dv = tensors[2].shape[3]
        states = [describe("c", FakeTensor((B, NH, Dqk, Dv), fp32)), describe("n", FakeTensor((B, NH, Dqk), fp32)),
                  describe("m", FakeTensor((B, NH, 1), fp32))]
        return check_step(*infos, *states)
    return check_forward(*infos)


def fields(block):
    return {name: getattr(block, name) for name, _ in block._fields_}


def strides_of(block, name):
    s = getattr(block, name + "_strides")
    return (s.b, s.h, s.s)


def check_block(block, plan, pointers, zero=()):
    got = fields(block)
    for name, value in pointers.items():
        assert got[name] == value, name
    for name in zero:
        assert not got[name], name
    for name in "qkvif":
        assert strides_of(block, name) == plan.strides[name], name


def test_step_block(lib):
    x = strided_inputs()
    plan = plan_of(x, step=True)
    call = _prepared.PreparedStep(plan, "chunk=64")
    names = ("q", "k", "v", "i", "f", "h", "C", "n", "m")
    for base in (0x7F0000000000, 0x7E0000001000):
        ptrs = {n: base + 0x100000 * j for j, n in enumerate(names)}
        call(*ptrs.values(), 0x5000)
        check_block(call._tensors, plan, ptrs)
        assert strides_of(call._tensors, "h") == (0, 0, 0)
        args = lib.functions["tfla_mlstm_step"].calls[-1]
        assert args == (call._problem_ptr, call._tensors_ptr, 0x5000, b"chunk=64")
    assert call._problem.B == 2 and call._problem.S == 8 and call._problem.Dv == 16


@pytest.mark.parametrize("saved", [False, True])
def test_forward_block(lib, saved):
    x = strided_inputs()
    plan = plan_of(x)
    call = _prepared.PreparedForward(plan, None, saved, 4096)
    names = ("q", "k", "v", "i", "f", "h", "norm", "C0", "n0", "m0", "C_last", "n_last", "m_last")
    ptrs = {n: 0x7F0000000000 + 0x100000 * j for j, n in enumerate(names)}
    call(*ptrs.values(), 0x7D0000000000, 0x42)
    if saved:
        check_block(call._tensors, plan, {**ptrs, "saved": 0x7D0000000000}, zero=("m",))
        assert call._tensors.saved_bytes == 4096
        assert lib.functions["tfla_mlstm_forward"].calls[-1][2:] == (0x42, None, 0, None)
    else:
        check_block(call._tensors, plan, ptrs, zero=("m", "saved"))
        assert call._tensors.saved_bytes == 0
        assert lib.functions["tfla_mlstm_forward"].calls[-1][2:] == (0x42, 0x7D0000000000, 4096, None)
    # absent tensors (0) clear what an earlier call wrote
    call(*[ptrs[n] if n in ("q", "k", "v", "i", "f", "h") else 0 for n in names], 0, 0)
    check_block(call._tensors, plan, {n: ptrs[n] for n in "qkvif"},
                zero=("norm", "C0", "n0", "m0", "C_last", "n_last", "m_last", "saved"))


def test_forward_with_saved_buffer_and_split_workspace(lib):
    # a forward with a saved buffer whose state walk splits: the split's workspace goes beside it
    x = strided_inputs()
    call = _prepared.PreparedForward(plan_of(x), None, True, 4096, 1024)
    names = ("q", "k", "v", "i", "f", "h", "norm", "C0", "n0", "m0", "C_last", "n_last", "m_last")
    ptrs = {n: 0x7F0000000000 + 0x100000 * j for j, n in enumerate(names)}
    call(*ptrs.values(), 0x7D0000000000, 0x42, 0x7C0000000000)
    assert call._tensors.saved_bytes == 4096
    assert lib.functions["tfla_mlstm_forward"].calls[-1][2:] == (0x42, 0x7C0000000000, 1024, None)
    call(*ptrs.values(), 0x7D0000000000, 0x42)  # no split workspace given: the library's own
    assert lib.functions["tfla_mlstm_forward"].calls[-1][2:] == (0x42, None, 0, None)


def test_backward_block(lib):
    x = strided_inputs()
    plan = plan_of(x)
    call = _prepared.PreparedBackward(plan, "chunk=32", 1234, 999)
    names = ("q", "k", "v", "i", "f", "dh", "norm", "C0", "n0", "m0", "dC_last", "dq", "dk", "dv",
             "di", "df", "dC0", "saved")
    ptrs = {n: 0x7F0000000000 + 0x100000 * j for j, n in enumerate(names)}
    call(*ptrs.values(), 0x7C0000000000, 7)
    check_block(call._tensors, plan, ptrs)
    t = call._tensors
    for name in ("dh", "dq", "dk", "dv", "di", "df"):
        assert strides_of(t, name) == (0, 0, 0), name
    assert t.saved_bytes == 1234
    assert lib.functions["tfla_mlstm_backward"].calls[-1][2:] == (7, 0x7C0000000000, 999, b"chunk=32")


def test_backend_forward_block(lib):
    x = strided_inputs()
    plan = plan_of(x)
    backend = types.SimpleNamespace(_handle=ctypes.c_void_p(0x1234))
    call = _prepared.PreparedBackendForward(backend, plan)
    names = ("q", "k", "v", "i", "f", "h", "C0", "n0", "m0", "C_last", "n_last", "m_last")
    ptrs = {n: 0x7F0000000000 + 0x100000 * j for j, n in enumerate(names)}
    call(*ptrs.values(), 0x99)
    check_block(call._tensors, plan, ptrs, zero=("norm", "m", "saved"))
    args = lib.functions["tfla_backend_forward"].calls[-1]
    assert args[:6] == (0x1234, 2, 3, 8, 32, 16) and args[6:8] == (call._tensors_ptr, 0x99)


def test_failed_call_raises_the_library_error(monkeypatch):
    fake = FakeLibrary(status=1)
    monkeypatch.setattr(_prepared, "load_library", lambda: fake)
    monkeypatch.setattr(_prepared, "error_for_status",
                        lambda status, msg: TflaArgumentError(f"status {status}: {msg}"))
    call = _prepared.PreparedStep(plan_of(strided_inputs(), step=True))
    with pytest.raises(TflaArgumentError, match="status 1: fake failure"):
        call(*range(1, 10), 0)


def test_pointer_writer_rejects_fields_out_of_order():
    with pytest.raises(AssertionError):
        _prepared._PointerWriter(_prepared.StepTensors(), ("k", "q"))
