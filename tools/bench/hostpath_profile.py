#!/usr/bin/env python3
"""Pure-Python host time per call of tfla's torch entry points, without a GPU.

The binding's hot paths (argument handling, the per-shape cache lookup, output allocations,
filling the prepared ctypes structs, the ctypes call) run on CPU tensors against a stub
libtfla: a small C library compiled here (cc) with tfla's C ABI whose kernel entry points
return at once and whose size/config queries answer fixed values. torch's CUDA lookups that a
call makes (torch._C._cuda_getCurrentRawStream, torch._C._cuda_getDevice) are replaced by C
builtins that return 0, and the argument checks accept CPU tensors as device 0. What is
measured is therefore the Python and ctypes work of a warm call, plus torch's CPU allocator
for the outputs (the CUDA caching allocator costs about the same per tensor); neither the
driver's launch time nor the CUDA allocator is in it. `tools/bench/decode_loop.py` measures the
same calls on a GPU.

Rows (as decode_loop.py's host part; B = 1, one token, NH 8, Dqk 256, Dv 512, bf16; the
chunkwise calls at 1x1x64x64x64):
  step.inplace_out      mlstm_recurrent_step(inplace=True, out=h)
  step.inplace          mlstm_recurrent_step(inplace=True)
  step.new              mlstm_recurrent_step(): new states (their allocations), the inputs left alone
  backend.step          mLSTMBackend(mode="inference") one token with states in and out
  backend.step_inplace  the same with inference_states_inplace=True
  fwd.nograd            mlstm_chunkwise on inputs that do not require grad
  fwd.grad_inputs       mlstm_chunkwise on inputs that require grad, no backward
  fwd+bwd               mlstm_chunkwise(...).backward(dh), the inputs' grads None before each call
                        (autograd runs the backward on CPU)
  floor.fwd_grad        torch's own part of fwd.grad_inputs: a torch.autograd.Function of the same
                        arity (8 tensors in, 4 outputs, 10 saved) allocating h and the normalizer,
                        no library call: what any binding through autograd pays
  floor.fwd+bwd         the same with .backward(dh) allocating the five gradients
  bwd.node              the C++ autograd node's backward called directly (h.grad_fn(dh))
  native.fwd+bwd        torch.addcmul(v, q, k).backward(dh): one native (C++) autograd node of three
                        leaves, torch's floor for a node without Python

Each row: the median and the minimum, over --reps samples of --calls warm calls, of the time per
call, in this thread's CPU time (--wall: wall-clock time). On a busy machine the minimum is the
steadier number; to compare two bindings, alternate runs of each (--package) and compare minima.

usage: hostpath_profile.py [--package DIR] [--calls N] [--reps N] [--only a,b] [--wall]
                           [--profile ROW] [--selftest] [--json FILE]
  --package DIR   import tfla from DIR (default: this checkout's tools/python), e.g. a copy of
                  an older binding to compare against
  --profile ROW   cProfile ROW's warm calls and print the top functions
  --selftest      check the fast path's contract instead (tools/python/tests/test_hostpath_cpu.py
                  runs it): warm calls build and query nothing and write the pointers they get;
                  a changed shape, dtype or layout raises or makes a new entry
"""
import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# tfla's C ABI (src/include/tfla/tfla.h) with no work behind it: kernels return 0 at once,
# queries answer fixed sizes and configs, the backend picks the step kernel for S <= 16.
STUB_SOURCE = r"""
#include <stdint.h>
#include <string.h>
#include <stddef.h>
typedef int st;
static const char* CFG = "chunk=64";
/* the tensor struct of the latest kernel call, copied (the C host path passes a copy on its stack) */
static unsigned char last_t[2048];
static void rec(const void* t, size_t n) { if (t && n <= sizeof last_t) memcpy(last_t, t, n); }
const void* stub_last_tensors(void) { return last_t; }
/* the latest forward's or backward's workspace argument: its bytes, and whether it was given */
static size_t last_wb, last_w;
size_t stub_last_workspace(void) { return last_w ? last_wb : (size_t)-1; }
const char* tfla_last_error(void) { return ""; }
const char* tfla_version(void) { return "stub"; }
int tfla_abi_version(void) { return STUB_ABI_VERSION; }
st tfla_runtime_info(char* buf, size_t n, size_t* need) { *need = 3; if (buf && n >= 3) strcpy(buf, "{}"); return 0; }
static st size_q(size_t* b) { *b = 4096; return 0; }
st tfla_mlstm_forward_workspace_size(const void* p, const char* c, size_t* b) { return size_q(b); }
st tfla_mlstm_backward_workspace_size(const void* p, const char* c, size_t* b) { return size_q(b); }
st tfla_mlstm_backward_saved_workspace_size(const void* p, const char* c, size_t* b) { return size_q(b); }
st tfla_mlstm_forward_saved_workspace_size(const void* p, const char* c, size_t* b) { *b = 0; return 0; }
st tfla_mlstm_saved_size(const void* p, const char* c, size_t* b) { return size_q(b); }
st tfla_mlstm_forward(const void* p, const void* t, void* s, void* w, size_t wb, const char* c) { rec(t, FWD_SIZE); last_w = w != 0; last_wb = wb; return 0; }
st tfla_mlstm_backward(const void* p, const void* t, void* s, void* w, size_t wb, const char* c) { rec(t, BWD_SIZE); last_w = w != 0; last_wb = wb; return 0; }
st tfla_mlstm_step(const void* p, const void* t, void* s, const char* c) { rec(t, STEP_SIZE); return 0; }
st tfla_mlstm_config(const void* p, const char* op, const char* pinned, char* buf, size_t n, size_t* need) {
  const char* out = pinned && *pinned ? pinned : CFG;
  *need = strlen(out) + 1;
  if (buf && n >= *need) memcpy(buf, out, *need);
  return 0;
}
static int backend_obj;
st tfla_backend_create(const void* o, void** b) { *b = &backend_obj; return 0; }
void tfla_backend_destroy(void* b) {}
st tfla_backend_choose(const void* b, int64_t B, int64_t NH, int64_t S, int64_t Dqk, int64_t Dv,
                       int init, int last, int* kind) { *kind = S <= 16 ? 2 : 0; return 0; }
st tfla_backend_forward(const void* b, int64_t B, int64_t NH, int64_t S, int64_t Dqk, int64_t Dv,
                        const void* t, void* s, int* kind) { rec(t, FWD_SIZE); *kind = 2; return 0; }
st tfla_backend_backward(const void* b, int64_t B, int64_t NH, int64_t S, int64_t Dqk, int64_t Dv,
                         const void* t, void* s) { return 0; }
st tfla_backend_step(const void* b, int64_t B, int64_t NH, int64_t T, int64_t Dqk, int64_t Dv,
                     const void* t, void* s) { rec(t, STEP_SIZE); return 0; }
"""


def package_abi_version(package):
    """The C ABI version the binding in `package` is written for (its _library.ABI_VERSION; 1
    for a binding from before the version existed)."""
    import re
    try:
        with open(os.path.join(package, "tfla", "_library.py")) as fh:
            m = re.search(r"^ABI_VERSION = (\d+)", fh.read(), re.M)
    except OSError:
        m = None
    return int(m.group(1)) if m else 1


def build_stub(folder, abi_version):
    """Compiles the stub libtfla (of that C ABI version) into folder; returns its path."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        raise SystemExit("hostpath_profile.py needs a C compiler (cc) for its stub libtfla")
    src = os.path.join(folder, "tfla_stub.c")
    lib = os.path.join(folder, "libtfla_stub.so")
    with open(src, "w") as fh:
        fh.write(STUB_SOURCE)
    import ctypes
    from tfla._library import BackwardTensors, ForwardTensors, StepTensors  # the package's layouts
    sizes = [f"-DSTEP_SIZE={ctypes.sizeof(StepTensors)}", f"-DFWD_SIZE={ctypes.sizeof(ForwardTensors)}",
             f"-DBWD_SIZE={ctypes.sizeof(BackwardTensors)}"]
    subprocess.run([cc, "-O2", "-shared", "-fPIC", f"-DSTUB_ABI_VERSION={int(abi_version)}", *sizes, "-o", lib,
                    src], check=True)
    return lib


def install_fakes(torch):
    """CUDA lookups -> C builtins returning 0; checks accept CPU tensors. Before tfla.torch's
    import (its runtime module reads the torch functions once)."""
    torch._C._cuda_getCurrentRawStream = abs  # abs(0) == 0: the legacy default stream
    torch._C._cuda_getDevice = int            # int() == 0: device 0 is current
    from tfla import _checks
    real_check_cuda = _checks.check_cuda

    def check_cuda(info, ref=None):
        if info.device_type == "cpu":  # a stand-in for cuda:0
            info = _checks.TensorInfo(info.name, info.shape, info.strides, info.dtype, "cuda", 0, info.ptr)
            if ref is not None and ref.device_type == "cpu":
                ref = _checks.TensorInfo(ref.name, ref.shape, ref.strides, ref.dtype, "cuda", 0, ref.ptr)
        return real_check_cuda(info, ref)

    _checks.check_cuda = check_cuda


def on_device0(objs):
    """Prepared entries made from CPU tensors have device index None: make them device 0, as
    those of CUDA tensors are, so the calls take the same branches as on a GPU."""
    for obj in objs:
        if getattr(obj, "device_index", 0) is None:
            obj.device_index = 0


def entries(modules):
    from tfla.torch import _launch
    from tfla.torch import step as step_mod
    out = list(_launch._entries.entries.values()) + list(step_mod._entries.entries.values())
    for mod in modules:
        out += list(mod._entries.entries.values())
    return out


def make_cases(torch, NH=8, DQK=256, DV=512):
    from tfla.torch import mlstm_chunkwise, mlstm_recurrent_step
    from tfla.torch.backend_module import mLSTMBackend, mLSTMBackendConfig
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)
    x = [r(1, NH, DQK).bfloat16(), r(1, NH, DQK).bfloat16(), r(1, NH, DV).bfloat16(), r(1, NH, 1),
         3 + r(1, NH, 1)]
    C, n, m = 0.1 * r(1, NH, DQK, DV), 0.1 * r(1, NH, DQK), r(1, NH, 1)
    h = torch.empty(1, NH, DV, dtype=torch.bfloat16)
    x4 = [t[:, :, None] if t.shape[-1] != 1 else t for t in x]
    cases = {
        "step.inplace_out": lambda: mlstm_recurrent_step(*x, C, n, m, inplace=True, out=h),
        "step.inplace": lambda: mlstm_recurrent_step(*x, C, n, m, inplace=True),
        "step.new": lambda: mlstm_recurrent_step(*x, C, n, m),
    }
    be = mLSTMBackend(mLSTMBackendConfig(chunkwise_kernel="chunkwise--triton_xl_chunk", mode="inference"))
    bi = mLSTMBackend(mLSTMBackendConfig(chunkwise_kernel="chunkwise--triton_xl_chunk", mode="inference",
                                         inference_states_inplace=True))
    cases["backend.step"] = lambda: be(*x4, C, n, m)
    cases["backend.step_inplace"] = lambda: bi(*x4, C, n, m)
    small = [r(1, 1, 64, 64).bfloat16() for _ in range(3)] + [r(1, 1, 64), 3 + r(1, 1, 64)]

    cases["fwd.nograd"] = lambda: mlstm_chunkwise(*small)  # no input requires grad
    sg = [t.clone().requires_grad_(True) for t in small]
    dh = r(1, 1, 64, 64).bfloat16()
    cases["fwd.grad_inputs"] = lambda: mlstm_chunkwise(*sg)

    def fwd_bwd():  # as a training step after zero_grad(set_to_none=True)
        for t in sg:
            t.grad = None
        mlstm_chunkwise(*sg).backward(dh)
    cases["fwd+bwd"] = fwd_bwd

    class Floor(torch.autograd.Function):
        """torch's own share of a training call: the arity of tfla's autograd node (8 tensor
        inputs and 2 options in, 4 outputs, 10 saved), the outputs' allocations (h, the
        normalizer) and the backward's five gradients, no library call."""

        @staticmethod
        def forward(ctx, q, k, v, i, f, c0, n0, m0, opts, need_grad):
            h, norm = torch.empty_like(v), i.new_empty(i.shape, dtype=torch.float32)
            ctx.save_for_backward(q, k, v, i, f, c0, n0, m0, norm, None)
            ctx.set_materialize_grads(False)
            return h, None, None, None

        @staticmethod
        def backward(ctx, dh, dC, dn, dm):
            q, k, v, i, f = ctx.saved_tensors[:5]
            return (torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), torch.empty_like(i),
                    torch.empty_like(f), None, None, None, None, None)

    cases["floor.fwd_grad"] = lambda: Floor.apply(*sg, None, None, None, None, True)

    def floor_fwd_bwd():
        for t in sg:
            t.grad = None
        Floor.apply(*sg, None, None, None, None, True)[0].backward(dh)
    cases["floor.fwd+bwd"] = floor_fwd_bwd
    cases.update(engine_cases(torch, sg, dh))
    return cases, (be, bi)


def engine_cases(torch, sg, dh):
    """The rows beside autograd's engine (decode_loop.py times them on a GPU too), on the training
    rows' inputs sg (q, k, v, i, f requiring grad) and dh: native.fwd+bwd, torch's engine on one
    native node of three leaves (its own floor for a node without Python); bwd.node, the C++
    autograd node's backward called directly (only with the C path loaded)."""
    from tfla.torch import _fast, mlstm_chunkwise

    def native_fwd_bwd():
        for t in sg[:3]:
            t.grad = None
        torch.addcmul(sg[2], sg[0], sg[1]).backward(dh)
    cases = {"native.fwd+bwd": native_fwd_bwd}
    node = []

    def bwd_node():  # the node made at the first call
        if not node:
            node.append(mlstm_chunkwise(*sg).grad_fn)
        return node[0](dh)
    if _fast.module() is not None:
        cases["bwd.node"] = bwd_node
    return cases


def first_call(fn, modules):
    """A call of a shape not seen before: made twice when the first fails past its checks at the
    device lookups (see main), with the new entries moved to device 0 in between."""
    from tfla import TflaError
    try:
        out = fn()
    except TflaError:
        raise
    except Exception:
        on_device0(entries(modules))
        return fn()
    on_device0(entries(modules))  # (the C step path served the call: the entry's later Python calls)
    return out


def selftest(torch, cases, modules):
    """The fast path's contract, checked on the stub: warm calls build nothing and query nothing,
    write the pointers of the tensors they get into the prepared structs (the strides left as
    they were), and a changed shape, dtype or layout is never served by a previous entry: it
    raises the checks' error or makes a new entry. Returns the number of failures."""
    import ctypes

    from tfla import TflaArgumentError, _library
    from tfla.torch import _launch
    from tfla.torch import step as step_mod
    failures = []

    def expect(cond, what):
        print(f"{'ok  ' if cond else 'FAIL'} {what}")
        if not cond:
            failures.append(what)

    calls = [0]
    real_call = _library.Library.call

    def counting_call(lib, name, *args):
        calls[0] += 1
        return real_call(lib, name, *args)

    _library.Library.call = counting_call

    def count():
        return len(entries(modules))

    def raises(fn, what, match):
        n0 = count()
        try:
            fn()
        except TflaArgumentError as e:
            expect(match in str(e) and count() == n0, f"{what}: TflaArgumentError ({e})")
            return
        except Exception as e:  # noqa: BLE001
            expect(False, f"{what}: {type(e).__name__}: {e}")
            return
        expect(False, f"{what}: no error")

    def new_entry(fn, what):
        n0 = count()
        first_call(fn, modules)
        expect(count() == n0 + 1, f"{what}: a new entry")
        n1, c1 = count(), calls[0]
        fn()
        expect(count() == n1 and calls[0] == c1, f"{what}: its warm call builds and queries nothing")

    for name, fn in cases.items():
        n0, c0 = count(), calls[0]
        for _ in range(3):
            fn()
        expect(count() == n0 and calls[0] == c0, f"{name}: warm calls build and query nothing")

    from tfla.torch import mlstm_chunkwise, mlstm_recurrent_step
    g = torch.Generator().manual_seed(1)
    r = lambda *sh: torch.randn(*sh, generator=g)
    NH, DQK, DV = 4, 64, 128
    x = [r(1, NH, DQK).bfloat16(), r(1, NH, DQK).bfloat16(), r(1, NH, DV).bfloat16(), r(1, NH, 1), r(1, NH, 1)]
    C, n, m = r(1, NH, DQK, DV), r(1, NH, DQK), r(1, NH, 1)
    h = torch.empty(1, NH, DV, dtype=torch.bfloat16)
    step = lambda *a, **kw: mlstm_recurrent_step(*a, inplace=True, out=h, **kw)
    new_entry(lambda: step(*x, C, n, m), "step, a new shape")

    def struct_fields(t):
        return {name: getattr(t, name) for name, _ in t._fields_}

    def strides_bytes(t):
        return ctypes.string_at(ctypes.addressof(t) + 40, 120)

    def latest(cache):  # the entry of the call before (the last one made, without the guards)
        return cache.last or next(reversed(cache.entries.values()))

    from tfla._library import ForwardTensors, StepTensors, load_library
    last_addr = ctypes.cast(load_library().cdll["stub_last_tensors"], ctypes.c_void_p).value
    last_fn = ctypes.CFUNCTYPE(ctypes.c_void_p)(last_addr)

    def last(cls):
        """The tensor struct the stub library got in the latest kernel call (a copy)."""
        return cls.from_buffer_copy(ctypes.string_at(last_fn(), ctypes.sizeof(cls)))

    e = latest(step_mod._entries)
    before = strides_bytes(e.call._tensors)  # the prepared struct's
    x2 = [t.clone() for t in x]
    C2, n2, m2, h2 = C.clone(), n.clone(), m.clone(), h.clone()
    mlstm_recurrent_step(*x2, C2, n2, m2, inplace=True, out=h2)
    st = last(StepTensors)
    got = struct_fields(st)
    want = dict(zip(("q", "k", "v", "i", "f", "h", "C", "n", "m"),
                    [t.data_ptr() for t in (*x2, h2, C2, n2, m2)]))
    expect(all(got[k] == v for k, v in want.items()) and strides_bytes(st) == before,
           "step: the struct holds the call's pointers, strides unchanged")
    raises(lambda: step(*x, C.transpose(2, 3).contiguous().transpose(2, 3), n, m),
           "step, c with other strides", "contiguous")
    raises(lambda: step(x[0], x[1].half(), *x[2:], C, n, m), "step, k float16", "dtype")
    raises(lambda: step(*x, C, n.double(), m), "step, n float64", "float32")
    raises(lambda: step(*x, C, r(1, NH, DQK + 1), m), "step, n another shape", "shape")
    raises(lambda: mlstm_recurrent_step(*x, C, n, m, inplace=True, out=h.float()), "step, out float32", "out")
    raises(lambda: step(*x, C, n, m, eps=-1.0), "step, eps < 0", "eps")
    new_entry(lambda: step(*x[:4], r(1, NH, 2)[:, :, :1], C, n, m), "step, f with other strides")
    new_entry(lambda: step(*x, C, n, m, eps=1e-5), "step, another eps")
    new_entry(lambda: step(*x, C, n, m, config="chunk=64"), "step, a config")
    step(*x, C, n, m)
    expect(True, "step: the first signature still runs")

    small = [r(1, 2, 96, 64).bfloat16() for _ in range(3)] + [r(1, 2, 96), r(1, 2, 96)]
    new_entry(lambda: mlstm_chunkwise(*small), "chunkwise, a new shape")
    q, k, v, i, f = small
    e = latest(_launch._entries)
    hh = mlstm_chunkwise(*[t.clone() for t in small])
    expect(last(ForwardTensors).h == hh.data_ptr(), "chunkwise: the struct holds the call's h")
    raises(lambda: mlstm_chunkwise(q, k, r(1, 2, 64, 96).bfloat16().transpose(2, 3), i, f),
           "chunkwise, v with a strided last dimension", "contiguous")
    raises(lambda: mlstm_chunkwise(q, k, v, i.bfloat16(), f), "chunkwise, gates of two dtypes", "dtype")
    raises(lambda: mlstm_chunkwise(q, k, v, i, r(1, 2, 95)), "chunkwise, f another shape", "shape")
    states = (r(1, 2, 64, 64), r(1, 2, 64), r(1, 2, 1))
    new_entry(lambda: mlstm_chunkwise(*small, *states), "chunkwise, with initial states")
    raises(lambda: mlstm_chunkwise(*small, states[0].transpose(2, 3), *states[1:]),
           "chunkwise, C0 transposed", "contiguous")
    new_entry(lambda: mlstm_chunkwise(*small, eps=1e-5), "chunkwise, another eps")
    sg = [t.clone().requires_grad_(True) for t in small]
    new_entry(lambda: mlstm_chunkwise(*sg), "chunkwise with grad")
    from tfla.torch import _fast
    from tfla._library import BackwardTensors
    def entry_of(plain):  # the chunkwise entry of `small` without (plain) or with gradients
        for e in _launch._entries.entries.values():
            if e.plan.S == 96 and e.plan.NH == 2 and e.plain == plain and e.opts.eps == 1e-6 \
                    and e.keep_requested is not plain and e.ext is not None:
                return e
        return None

    def entry_of_S(S):  # the chunkwise entry with gradients of sequence length S
        for e in _launch._entries.entries.values():
            if e.plan.S == S and e.plan.NH == 2 and not e.plain and e.ext is not None:
                return e
        return None

    if _fast.module() is not None:
        mlstm_chunkwise(*small)
        e = entry_of(True)
        k0 = _fast.calls(e.ext[0])
        hh = mlstm_chunkwise(*small)
        expect(_fast.calls(e.ext[0]) == k0 + 1 and last(ForwardTensors).h == hh.data_ptr(),
               "chunkwise without grad: the C path ran the warm forward")
        hg = mlstm_chunkwise(*sg)
        e = entry_of(False)
        k1 = _fast.calls(e.ext[1])
        for t in sg:
            t.grad = None
        hg = mlstm_chunkwise(*sg)
        ft = last(ForwardTensors)
        expect(_fast.calls(e.ext[1]) == k1 + 1 and ft.h == hg.data_ptr() and ft.norm is not None
               and ft.saved is not None, "chunkwise with grad: the C path ran the forward, the normalizer "
               "and the saved buffer in the struct")
        dh2 = r(1, 2, 96, 64).bfloat16()
        hg.backward(dh2)
        kb = _fast.calls(e.bwd_ext) if e.bwd_ext not in (None, _launch._UNSET) else -1
        hg = mlstm_chunkwise(*sg)
        hg.backward(dh2)
        bt = last(BackwardTensors)
        expect(kb >= 0 and _fast.calls(e.bwd_ext) == kb + 1 and bt.dh == dh2.data_ptr(),
               "chunkwise with grad: the C path ran the backward on dh as given")
        dh3 = r(1, 2, 64, 96).bfloat16().transpose(2, 3)  # not contiguous: the Python path's copy
        hg = mlstm_chunkwise(*sg)
        hg.backward(dh3)
        bt = last(BackwardTensors)
        expect(_fast.calls(e.bwd_ext) == kb + 1 and bt.dh not in (None, dh3.data_ptr()),
               "chunkwise with grad, dh not contiguous: the Python path copied it, not the C path")
        rec = e.node
        expect(rec not in (None, _launch._UNSET) and hg.grad_fn.name() == "MlstmChunkwiseBackward",
               "chunkwise with grad: the forward made its autograd node in C++ (tfla.torch._fast.node)")
        fb, has_bwd = _fast.module().node_calls(rec)
        for t in sg:
            t.grad = None
        hg = mlstm_chunkwise(*sg)
        hg.backward(dh2)
        bt = last(BackwardTensors)
        expect(has_bwd and _fast.module().node_calls(rec)[0] == fb and _fast.calls(e.bwd_ext) == kb + 2
               and bt.dh == dh2.data_ptr() and bt.dq == sg[0].grad.data_ptr(),
               "chunkwise with grad: the node's warm backward ran in C (no Python fallback), its dq "
               "became q.grad")
        hg = mlstm_chunkwise(*sg)
        hg.backward(dh3)
        expect(_fast.module().node_calls(rec)[0] == fb + 1 and _fast.calls(e.bwd_ext) == kb + 2,
               "chunkwise with grad, dh not contiguous: the node's Python fallback ran the backward")
        hg = mlstm_chunkwise(*sg)
        hg.backward(dh2)
        try:
            hg.backward(dh2)
            expect(False, "chunkwise with grad: a second backward through the node raises")
        except RuntimeError as err:
            expect("second time" in str(err), "chunkwise with grad: a second backward through the node raises")
        real_backward = _launch.run_backward

        class Marker(Exception):
            pass

        def failing(*a, **kw):
            raise Marker("from the Python backward")
        _launch.run_backward = failing
        try:
            hg = mlstm_chunkwise(*sg)
            hg.backward(dh3)  # the fallback: its Python error reaches the caller as it was raised
            expect(False, "chunkwise with grad: an error in the node's Python fallback reaches the caller")
        except Marker:
            expect(True, "chunkwise with grad: an error in the node's Python fallback reaches the caller")
        finally:
            _launch.run_backward = real_backward
        import torch.autograd.forward_ad as fwAD
        with fwAD.dual_level():
            qd = fwAD.make_dual(sg[0].detach(), torch.ones_like(sg[0]))
            try:
                mlstm_chunkwise(qd, *sg[1:])
                expect(False, "chunkwise, a forward-mode tangent: an error (no forward derivative)")
            except (NotImplementedError, RuntimeError) as err:
                expect("jvp" in str(err),
                       f"chunkwise, a forward-mode tangent: the node declines, the Function raises ({err})")
        # an entry whose first backward gets a dh the C path cannot take makes its C backward
        # entry at the next one that it can
        s2 = [t.detach()[:, :, :80].clone().requires_grad_(True) for t in sg]  # S = 80
        first_call(lambda: mlstm_chunkwise(*s2), modules)
        e2 = entry_of_S(80)
        e2.bwd_ext = _launch._UNSET
        mlstm_chunkwise(*s2).backward(r(1, 2, 64, 80).bfloat16().transpose(2, 3))
        made_late = e2.bwd_ext is _launch._UNSET
        mlstm_chunkwise(*s2).backward(r(1, 2, 80, 64).bfloat16())
        expect(made_late and e2.bwd_ext not in (None, _launch._UNSET)
               and _fast.module().node_calls(e2.node)[1],
               "chunkwise with grad, first dh strided: the C backward entry is made at the next contiguous dh")
        import torch._dynamo.compiled_autograd as ca
        was = ca.compiled_autograd_enabled
        ca.compiled_autograd_enabled = True
        try:
            name = type(mlstm_chunkwise(*sg).grad_fn).__name__  # the C++ node's: CppFunction
        finally:
            ca.compiled_autograd_enabled = was
        expect(name == "MlstmChunkwiseFunctionBackward",
               f"chunkwise with grad, compiled autograd on: MlstmChunkwiseFunction serves ({name})")
        for t in sg:
            t.grad = None
        hg = mlstm_chunkwise(*sg)
        dhg = dh2.clone().requires_grad_(True)
        (gq,) = torch.autograd.grad(hg, sg[0], dhg, create_graph=True)
        try:
            gq.sum().backward()
            expect(False, "chunkwise with grad, create_graph: the gradients' backward raises")
        except RuntimeError as err:
            expect(gq.requires_grad and "differentiate twice" in str(err) and gq.grad_fn is not None,
                   "chunkwise with grad, create_graph: the gradients' backward raises (once_differentiable)")
        q5 = sg[0] * 1
        hg = mlstm_chunkwise(q5, *sg[1:])
        with torch.no_grad():
            q5.add_(1)
        try:
            hg.backward(dh2)
            expect(False, "chunkwise with grad: q changed in place after the forward raises")
        except RuntimeError as err:
            expect("inplace" in str(err), "chunkwise with grad: q changed in place after the forward raises")
    raises(lambda: mlstm_chunkwise(*sg[:4], sg[4].detach().half()), "chunkwise with grad, f float16", "dtype")

    # h comes from empty_like(v) only where that is contiguous: a dense v with permuted strides
    # (B = 2: the batch stride is not the outer one) gets a contiguous h all the same
    x2 = [r(2, NH, DQK).bfloat16(), r(2, NH, DQK).bfloat16(), r(NH, 2, DV).bfloat16().transpose(0, 1),
          r(2, NH, 1), r(2, NH, 1)]
    C2, n2, m2 = r(2, NH, DQK, DV), r(2, NH, DQK), r(2, NH, 1)
    first_call(lambda: mlstm_recurrent_step(*x2, C2, n2, m2, inplace=True), modules)
    hp, _ = mlstm_recurrent_step(*x2, C2, n2, m2, inplace=True)
    e = latest(step_mod._entries)
    expect(hp.is_contiguous() and hp.shape == x2[2].shape and last(StepTensors).h == hp.data_ptr(),
           "step, v with permuted strides: h contiguous, its pointer in the struct")
    vt = r(1, 96, 2, 64).bfloat16().transpose(1, 2)  # (B, NH, S, Dv) of a (B, S, NH, Dv) projection
    first_call(lambda: mlstm_chunkwise(q, k, vt, i, f), modules)
    hc = mlstm_chunkwise(q, k, vt, i, f)
    e = latest(_launch._entries)
    ft = last(ForwardTensors)
    expect(hc.is_contiguous() and hc.shape == vt.shape and ft.h == hc.data_ptr()
           and ft.C0 is None and ft.norm is None,
           "chunkwise, v from a (B, S, NH, Dv) projection: h contiguous, the struct holds its pointer")

    from tfla.torch import _fast
    use_ext = os.environ.get("TFLA_TORCH_EXTENSION", "auto") not in ("0", "off", "false", "no")
    expect((_fast.module() is not None) == use_ext,
           f"the C step path (tfla.torch._fast) is {'loaded' if use_ext else 'off'}: {_fast.status()}")
    if use_ext:
        C3, n3, m3 = C.clone(), n.clone(), m.clone()
        first_call(lambda: mlstm_recurrent_step(*x, C3, n3, m3), modules)  # its entry (no out)
        e = step_mod._entries.last
        c_new, c_inplace = (_fast.calls(x) for x in e.ext)
        h3, (Cn, nn_, mn) = mlstm_recurrent_step(*x, C3, n3, m3)
        st = last(StepTensors)
        expect(_fast.calls(e.ext[0]) == c_new + 1 and Cn is not C3 and Cn.shape == C3.shape
               and all(s_.is_contiguous() for s_ in (h3, Cn, nn_, mn))
               and (st.C, st.n, st.m, st.C_src, st.n_src, st.m_src, st.h)
               == tuple(t_.data_ptr() for t_ in (Cn, nn_, mn, C3, n3, m3, h3)),
               "step, new states: the C path ran, reading the old states and writing new ones")
        h4, (C4, n4, m4) = mlstm_recurrent_step(*x, C3, n3, m3, inplace=True)
        st = last(StepTensors)
        expect(_fast.calls(e.ext[1]) == c_inplace + 1 and C4 is C3 and n4 is n3 and m4 is m3
               and (st.C, st.C_src, st.h) == (C3.data_ptr(), None, h4.data_ptr()),
               "step, in place: the C path ran on the states given")
        # C off 16 bytes: the Python path copies it into the new state (the C path declines)
        Cm = torch.empty(C.numel() + 1)[1:].view(C.shape)
        Cm.copy_(C)
        _, (Cm2, _, _) = mlstm_recurrent_step(*x, Cm, n3, m3)
        st = last(StepTensors)
        expect(_fast.calls(e.ext[0]) == c_new + 1 and torch.equal(Cm2, C) and st.C_src is None
               and st.C == Cm2.data_ptr(),
               "step, new states from a C off 16 bytes: copied by the Python path, not the C path")
        mlstm_recurrent_step(*x, C3, n3, m3)
        expect(_fast.calls(e.ext[0]) == c_new + 2, "step: the C path serves the signature again after it")

    be, bi = modules
    x4 = [t[:, :, None] if t.shape[-1] != 1 else t for t in x]
    new_entry(lambda: be(*x4, C, n, m), "backend, a new shape")
    raises(lambda: be(*x4, C, torch.empty(1, NH, 2 * DQK)[:, :, ::2], m), "backend, n0 strided", "contiguous")
    raises(lambda: be(*x4, C.double(), n, m), "backend, C0 float64", "float32")
    hb, (Cb, nb, mb) = be(*x4, C, n, m)
    t = last(ForwardTensors)
    expect(Cb is not C and Cb.shape == C.shape and nb.shape == n.shape and mb.shape == m.shape
           and all(s.is_contiguous() for s in (hb, Cb, nb, mb))
           and (t.C0, t.C_last, t.n_last, t.m_last, t.h) == (C.data_ptr(), Cb.data_ptr(), nb.data_ptr(),
                                                            mb.data_ptr(), hb.data_ptr()),
           "backend: new states, contiguous, and the struct holds the initial and the new ones")
    if use_ext:
        eb = latest(be._entries)
        k0 = _fast.calls(eb.ext)
        be(*x4, C, n, m)
        expect(_fast.calls(eb.ext) == k0 + 1, "backend: the C path ran the warm call")
    new_entry(lambda: be(*x4, C, n, m[:, :, 0]), "backend, m0 (B, NH)")
    _, (_, _, mb2) = be(*x4, C, n, m[:, :, 0])
    expect(mb2.shape == (1, NH, 1), "backend, m0 (B, NH): the new m is (B, NH, 1)")
    new_entry(lambda: bi(*x4, C, n, m), "backend in place, a new shape")
    hi, (Ci, ni, mi) = bi(*x4, C, n, m)
    t = last(StepTensors)
    expect(Ci is C and ni is n and mi is m and hi.is_contiguous()
           and (t.C, t.n, t.m, t.h) == (C.data_ptr(), n.data_ptr(), m.data_ptr(), hi.data_ptr()),
           "backend in place: the states returned are the inputs, updated through the struct's pointers")
    if use_ext:
        eb = latest(bi._entries)
        k0 = _fast.calls(eb.ext)
        bi(*x4, C, n, m)
        expect(_fast.calls(eb.ext) == k0 + 1, "backend in place: the C path ran the warm call")
    raises(lambda: bi(*x4, C, torch.empty(1, NH, 2 * DQK)[:, :, ::2], m), "backend in place, n0 strided",
           "contiguous")
    raises(lambda: bi(x4[0].half(), *x4[1:], C, n, m), "backend in place, q float16", "dtype")
    raises(lambda: bi(*x4, C, n, m.double()), "backend in place, m0 float64", "float32")
    new_entry(lambda: bi(*x4[:2], r(1, NH, 2, DV).bfloat16()[:, :, :1], *x4[3:], C, n, m),
              "backend in place, v with another sequence stride")
    if _fast.module() is not None:
        same_structs(torch, expect, last, modules)
    _library.Library.call = real_call
    print(f"{len(failures)} failure(s)")
    return len(failures)


def same_structs(torch, expect, last, modules):
    """Each kind of call once through its entry's C path and once through the ctypes path (the
    entry's C calls taken away), on the same arguments: the tensor structs the stub library got
    hold the same input pointers, strides and sizes, and outputs in the same fields."""
    import ctypes

    from tfla._library import BackwardTensors, ForwardTensors, StepTensors
    from tfla.torch import _launch, mlstm_chunkwise, mlstm_recurrent_step
    from tfla.torch import step as step_mod
    from tfla.torch._launch import forward_entry, run_backward, run_forward
    from tfla.torch.chunkwise import options
    be, bi = modules
    g = torch.Generator().manual_seed(5)
    r = lambda *sh: torch.randn(*sh, generator=g)
    NH, DQK, DV, S = 2, 64, 128, 96
    x = [r(1, NH, DQK).bfloat16(), r(1, NH, DQK).bfloat16(), r(1, NH, DV).bfloat16(), r(1, NH, 1), r(1, NH, 1)]
    C, n, m = r(1, NH, DQK, DV), r(1, NH, DQK), r(1, NH, 1)
    h = torch.empty(1, NH, DV, dtype=torch.bfloat16)
    x4 = [t[:, :, None] if t.shape[-1] != 1 else t for t in x]
    seq = [r(1, NH, S, DQK).bfloat16(), r(1, NH, S, DQK).bfloat16(), r(1, NH, S, DV).bfloat16(), r(1, NH, S),
           r(1, NH, S)]
    st = (r(1, NH, DQK, DV), r(1, NH, DQK), r(1, NH, 1))

    from tfla._library import load_library
    from tfla.torch import _fast
    ws_fn = ctypes.CFUNCTYPE(ctypes.c_size_t)(ctypes.cast(load_library().cdll["stub_last_workspace"],
                                                          ctypes.c_void_p).value)

    def c_calls(held):
        n = 0
        for _, ext, bwd in held:
            for c in (ext if isinstance(ext, tuple) else (ext,)) + (bwd,):
                if c is not None and c is not _launch._UNSET:
                    n += _fast.calls(c)
        return n

    def compare(what, cls, call, caches, outputs):
        first_call(call, modules)
        held = [(e, getattr(e, "ext", None), getattr(e, "bwd_ext", None)) for c in caches for e in c.entries.values()]
        n0 = c_calls(held)
        ra = layouts(call())
        a, wa = last(cls), ws_fn()
        expect(c_calls(held) == n0 + 1, f"{what}: the C path ran it")
        for e, _, _ in held:
            e.ext = None
            if hasattr(e, "bwd_ext"):
                e.bwd_ext = None
        try:
            rb = layouts(call())
            b, wb = last(cls), ws_fn()
        finally:
            for e, ext, bwd in held:
                e.ext = ext
                if hasattr(e, "bwd_ext"):
                    e.bwd_ext = bwd
        bad = []
        for name, ctype in cls._fields_:
            va, vb = getattr(a, name), getattr(b, name)
            if name in outputs:
                ok = (va is None) == (vb is None)
            elif isinstance(va, ctypes.Structure):
                ok = bytes(va) == bytes(vb)
            else:
                ok = va == vb
            if not ok:
                bad.append(f"{name} {va} vs {vb}")
        if cls is not StepTensors and wa != wb:  # (the backend's forward takes no workspace)
            bad.append(f"workspace {wa} vs {wb} bytes")
        if ra != rb:  # the C path allocates its outputs itself: the same sizes, strides, dtypes
            bad.append(f"outputs {ra} vs {rb}")
        expect(not bad, f"{what}: the C path's struct is the ctypes path's{' (' + '; '.join(bad) + ')' if bad else ''}")

    def layouts(result):
        """(shape, strides, dtype, device) of every tensor in a call's (nested) result."""
        if isinstance(result, torch.Tensor):
            return [(tuple(result.shape), result.stride(), result.dtype, result.device)]
        if isinstance(result, (tuple, list)):
            return [x for item in result for x in layouts(item)]
        return [None]

    se = step_mod._entries
    compare("step, new states", StepTensors, lambda: mlstm_recurrent_step(*x, C, n, m), [se], {"h", "C", "n", "m"})
    compare("step, in place", StepTensors, lambda: mlstm_recurrent_step(*x, C, n, m, inplace=True), [se], {"h"})
    compare("step, in place, out", StepTensors, lambda: mlstm_recurrent_step(*x, C, n, m, inplace=True, out=h),
            [se], set())
    compare("backend, new states", ForwardTensors, lambda: be(*x4, C, n, m), [be._entries],
            {"h", "C_last", "n_last", "m_last"})
    compare("backend, in place", StepTensors, lambda: bi(*x4, C, n, m), [bi._entries], {"h"})
    le = _launch._entries
    for variant in ("exp", "sig"):
        compare(f"chunkwise {variant}, no grad", ForwardTensors, lambda: mlstm_chunkwise(*seq, variant=variant),
                [le], {"h"})
        compare(f"chunkwise {variant}, states in and out", ForwardTensors,
                lambda: mlstm_chunkwise(*seq, *st, return_last_states=True, variant=variant), [le],
                {"h", "C_last", "n_last", "m_last"})
        for keep in (True, False):
            opts = options(variant, True, 1e-6, None, 64, None, None, False, None)
            for states in (None, st):
                s3 = states or (None, None, None)
                e = forward_entry(*seq, *s3, opts, keep)
                on_device0([e])
                _, norm, _, _, _, saved = run_forward(e, *seq, *s3, True)
                compare(f"chunkwise {variant}, forward with the normalizer, keep={keep}, "
                        f"states={states is not None}", ForwardTensors,
                        lambda: run_forward(e, *seq, *s3, True), [le], {"h", "norm", "saved"})
                dh = r(1, NH, S, DV).bfloat16()
                dC = r(1, NH, DQK, DV) if states is not None else None
                compare(f"chunkwise {variant}, backward, keep={keep}, states={states is not None}",
                        BackwardTensors, lambda: run_backward(e, *seq, *s3, norm, saved, dh, dC), [le],
                        {"dq", "dk", "dv", "di", "df", "dC0"})


def time_us(fn, calls, reps, clock=time.thread_time_ns):
    """(median, min) us per call over reps samples of `calls` calls each, by default in this
    thread's CPU time (time the thread waits for a core, on a busy machine, is not counted)."""
    out = []
    pc = clock
    gc.collect()
    gc.freeze()  # what exists now is never scanned again: collections during the samples stay cheap
    for _ in range(reps):
        t0 = pc()
        for _ in range(calls):
            fn()
        out.append((pc() - t0) / 1e3 / calls)
    return statistics.median(out), min(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--package", default=os.path.join(REPO, "tools", "python"))
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--only")
    ap.add_argument("--profile")
    ap.add_argument("--wall", action="store_true", help="wall-clock time instead of thread CPU time")
    ap.add_argument("--selftest", action="store_true",
                    help="check the fast path's contract on the stub instead of timing (exit 1 on a failure)")
    ap.add_argument("--json")
    args = ap.parse_args()
    sys.path.insert(0, os.path.abspath(args.package))
    import torch
    torch.set_num_threads(1)
    folder = tempfile.mkdtemp(prefix="tfla_stub_")
    try:
        os.environ["TFLA_LIBRARY"] = build_stub(folder, package_abi_version(os.path.abspath(args.package)))
        install_fakes(torch)
        import tfla
        import tfla.torch  # noqa: F401
        print(f"tfla from {os.path.dirname(tfla.__file__)}, torch {torch.__version__}, stub {tfla.library_version()}")
        cases, modules = make_cases(torch)
        if args.only:
            keep = args.only.split(",")
            cases = {k: v for k, v in cases.items() if k in keep}
        for fn in cases.values():
            # The first call of a shape checks it and prepares its call; its entry keeps the CPU
            # tensors' device index (None), which the device lookups reject: it may fail there,
            # after the entry is cached. With the entries on device 0 the calls then succeed.
            first_call(fn, modules)
        rows = []
        if args.selftest:
            sys.exit(1 if selftest(torch, cases, modules) else 0)
        if args.profile:
            import cProfile
            import pstats
            fn = cases[args.profile]
            for _ in range(100):
                fn()
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(args.calls * 10):
                fn()
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
            return
        print(f"{'call':<22}{'median us':>10}{'min us':>9}   ({'wall' if args.wall else 'thread CPU'} time per call)")
        for name, fn in cases.items():
            for _ in range(50):
                fn()
            med, lo = time_us(fn, args.calls, args.reps,
                              time.perf_counter_ns if args.wall else time.thread_time_ns)
            rows.append({"call": name, "median_us": med, "min_us": lo})
            print(f"{name:<22}{med:10.2f}{lo:9.2f}")
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(rows, fh, indent=1)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
