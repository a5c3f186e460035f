"""GPU tests of the binding's per-call host path, its custom ops and CUDA-graph capture.

- A warm call (second call of a shape, new data) builds nothing (no new prepared entry, no
  library query: Library.call is the slow path's door), makes no device synchronization (torch's
  sync debug mode raises on one, the synchronize functions are counted, and a call enqueued
  behind a long GPU sleep returns before the GPU gets to it), allocates nothing but its outputs
  (torch.cuda.memory_stats counts allocator requests and cudaMalloc segments), and nothing at
  all for a step given h's buffer and in-place states.
- The C host path (tfla.torch._fast) serves warm steps, backend steps and the chunkwise forward
  and backward with results bitwise equal to the ctypes path's, on torch's current stream.
- torch.library.opcheck of tfla::mlstm_fwd, tfla::mlstm_bwd and tfla::mlstm_step_; a small
  xLSTM-style block compiled with torch.compile(fullgraph=True): in float32 it equals eager,
  outputs and gradients; in bfloat16 it is as close as eager to a float64 copy of the block.
- forward, forward + backward and the step captured in a CUDA graph, replayed on new inputs
  copied into the same buffers, equal eager.
"""

import time

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)

import tfla  # noqa: E402

try:
    tfla.library_path()
except tfla.TflaLibraryNotFoundError as e:  # pragma: no cover
    pytest.skip(f"libtfla not found: {e}", allow_module_level=True)

from tfla import _library  # noqa: E402
from tfla.torch import _launch, mlstm_chunkwise, mlstm_recurrent_step, step as step_mod  # noqa: E402
from tfla.torch.backend_module import mLSTMBackend, mLSTMBackendConfig  # noqa: E402
from tfla.torch.reference import mlstm_recurrent_reference  # noqa: E402

pytestmark = pytest.mark.gpu
DEV = "cuda"


def rel(out, ref):
    out, ref = out.detach().double(), ref.detach().double()
    return float((out - ref).norm() / ref.norm())


def inputs(B, NH, S, Dqk, Dv, dtype=torch.bfloat16, seed=0, grad=False):
    g = torch.Generator(device=DEV).manual_seed(seed)
    q = torch.randn(B, NH, S, Dqk, device=DEV, generator=g).to(dtype)
    k = torch.randn(B, NH, S, Dqk, device=DEV, generator=g).to(dtype)
    v = torch.randn(B, NH, S, Dv, device=DEV, generator=g).to(dtype)
    i = torch.randn(B, NH, S, device=DEV, generator=g)
    f = 3 + torch.randn(B, NH, S, device=DEV, generator=g)
    x = [q, k, v, i, f]
    if grad:
        for t in x:
            t.requires_grad_(True)
    return x


def step_inputs(B, NH, Dqk, Dv, seed=0):
    g = torch.Generator(device=DEV).manual_seed(seed)
    q = torch.randn(B, NH, Dqk, device=DEV, generator=g).bfloat16()
    k = torch.randn(B, NH, Dqk, device=DEV, generator=g).bfloat16()
    v = torch.randn(B, NH, Dv, device=DEV, generator=g).bfloat16()
    i = torch.randn(B, NH, 1, device=DEV, generator=g)
    f = 3 + torch.randn(B, NH, 1, device=DEV, generator=g)
    C = 0.1 * torch.randn(B, NH, Dqk, Dv, device=DEV, generator=g)
    n = 0.1 * torch.randn(B, NH, Dqk, device=DEV, generator=g)
    m = torch.randn(B, NH, 1, device=DEV, generator=g)
    return [q, k, v, i, f], [C, n, m]


class Counts:
    """Counts, over a `with` block: library slow-path calls, synchronize calls, allocator
    requests and cudaMalloc segments; torch's sync debug mode set to raise."""

    def __init__(self, monkeypatch):
        self.lib_calls = 0
        self.syncs = 0
        orig_call = _library.Library.call

        def counting_call(lib, name, *args):
            self.lib_calls += 1
            return orig_call(lib, name, *args)

        monkeypatch.setattr(_library.Library, "call", counting_call)
        for owner, name in ((torch.cuda, "synchronize"), (torch.cuda.Stream, "synchronize"),
                            (torch.cuda.Event, "synchronize")):
            orig = getattr(owner, name)

            def counted(*a, _orig=orig, **kw):
                self.syncs += 1
                return _orig(*a, **kw)

            monkeypatch.setattr(owner, name, counted)

    def __enter__(self):
        s = torch.cuda.memory_stats()
        self._alloc0 = s.get("allocation.all.allocated", 0)
        self._seg0 = s.get("segment.all.allocated", 0)
        self.lib_calls = self.syncs = 0
        torch.cuda.set_sync_debug_mode("error")
        return self

    def __exit__(self, *exc):
        torch.cuda.set_sync_debug_mode("default")
        s = torch.cuda.memory_stats()
        self.allocations = s.get("allocation.all.allocated", 0) - self._alloc0
        self.segments = s.get("segment.all.allocated", 0) - self._seg0
        return False


def test_warm_step_allocates_nothing_and_never_syncs(monkeypatch):
    x, (C, n, m) = step_inputs(1, 8, 256, 512)
    h = torch.empty(1, 8, 512, device=DEV, dtype=torch.bfloat16)
    mlstm_recurrent_step(*x, C, n, m, inplace=True, out=h)  # cold: checks, prepared call, kernel load
    x2, _ = step_inputs(1, 8, 256, 512, seed=1)
    entries = len(step_mod._entries.entries)
    C_ref, n_ref, m_ref = C.clone(), n.clone(), m.clone()
    with Counts(monkeypatch) as c:
        h2, (C2, n2, m2) = mlstm_recurrent_step(*x2, C, n, m, inplace=True, out=h)
    assert (c.lib_calls, c.syncs, c.allocations, c.segments) == (0, 0, 0, 0)
    assert len(step_mod._entries.entries) == entries
    assert h2 is h and C2 is C and n2 is n and m2 is m
    # and it computed the step: against the float64 recurrence from the same states
    q, k, v, i, f = x2  # one token: (B, NH, D) and (B, NH, 1) gates, as (B, NH, S = 1, ...)
    h_ref, (Cr, _, _) = mlstm_recurrent_reference(q[:, :, None], k[:, :, None], v[:, :, None], i, f,
                                                  C_ref, n_ref, m_ref)
    assert rel(h, h_ref[:, :, 0]) < 2e-2 and rel(C, Cr) < 1e-4


def test_step_with_aliased_new_states_does_not_copy(monkeypatch):
    x, (C, n, m) = step_inputs(2, 4, 128, 128)
    mlstm_recurrent_step(*x, C, n, m, c_new=C, n_new=n, m_new=m)
    with Counts(monkeypatch) as c:
        h, (C2, n2, m2) = mlstm_recurrent_step(*x, C, n, m, c_new=C, n_new=n, m_new=m)
    assert C2 is C and n2 is n and m2 is m
    assert c.allocations == 1 and (c.lib_calls, c.syncs, c.segments) == (0, 0, 0)  # h only
    # separate buffers: the caller's states stay as they were
    C0 = C.clone()
    Cn, nn_, mn = torch.empty_like(C), torch.empty_like(n), torch.empty_like(m)
    _, (C3, _, _) = mlstm_recurrent_step(*x, C, n, m, c_new=Cn, n_new=nn_, m_new=mn)
    assert C3 is Cn and torch.equal(C, C0) and not torch.equal(Cn, C0)


def test_warm_calls_still_check_the_device():
    """A warm call (its entry found through the previous call's tensor guard) with one tensor
    moved off the GPU raises the checks' error instead of reusing the entry."""
    from tfla import TflaArgumentError
    x, (C, n, m) = step_inputs(1, 4, 128, 128)
    h = torch.empty(1, 4, 128, device=DEV, dtype=torch.bfloat16)
    for _ in range(2):
        mlstm_recurrent_step(*x, C, n, m, inplace=True, out=h)
    with pytest.raises(TflaArgumentError, match="cuda"):
        mlstm_recurrent_step(*x, C, n.cpu(), m, inplace=True, out=h)
    with pytest.raises(TflaArgumentError, match="cuda"):
        mlstm_recurrent_step(x[0].cpu(), *x[1:], C, n, m, inplace=True, out=h)
    s = inputs(1, 2, 64, 64, 64)
    for _ in range(2):
        mlstm_chunkwise(*s)
    with pytest.raises(TflaArgumentError, match="cuda"):
        mlstm_chunkwise(*s[:2], s[2].cpu(), *s[3:])
    be = mLSTMBackend(mLSTMBackendConfig(chunkwise_kernel="chunkwise--triton_xl_chunk", mode="inference",
                                         inference_states_inplace=True))
    x4 = inputs(1, 4, 1, 128, 128)
    _, (C4, n4, m4) = be(*x4)
    for _ in range(2):
        be(*x4, C4, n4, m4)
    with pytest.raises(TflaArgumentError, match="cuda"):
        be(*x4, C4, n4.cpu(), m4)


def test_warm_step_returns_before_the_gpu_runs_it():
    x, (C, n, m) = step_inputs(1, 8, 256, 512)
    h = torch.empty(1, 8, 512, device=DEV, dtype=torch.bfloat16)
    mlstm_recurrent_step(*x, C, n, m, inplace=True, out=h)
    torch.cuda.synchronize()
    torch.cuda._sleep(200_000_000)  # ~0.1 s of GPU time ahead of the call
    t0 = time.perf_counter()
    for _ in range(20):
        mlstm_recurrent_step(*x, C, n, m, inplace=True, out=h)
    host_s = time.perf_counter() - t0
    done = torch.cuda.current_stream().query()
    torch.cuda.synchronize()
    assert not done and host_s < 0.02, f"20 calls took {host_s * 1e3:.1f} ms of host time"


def test_warm_forward_backward_allocate_only_outputs(monkeypatch):
    x = inputs(2, 4, 256, 128, 128, grad=True)
    C0 = torch.zeros(2, 4, 128, 128, device=DEV)
    dh = torch.randn(2, 4, 256, 128, device=DEV).bfloat16()
    h = mlstm_chunkwise(*x, c_initial=C0, chunk_size=64)
    h.backward(dh)
    entries = len(_launch._entries.entries)
    for t in x:
        t.grad = None
    with Counts(monkeypatch) as c:
        h = mlstm_chunkwise(*x, c_initial=C0, chunk_size=64)
    # h, norm, the saved states
    assert (c.allocations, c.lib_calls, c.syncs, c.segments) == (3, 0, 0, 0)
    with Counts(monkeypatch) as c:
        torch.autograd.backward([h], [dh])
    assert c.lib_calls == 0 and c.syncs == 0 and c.segments == 0
    # dq, dk, dv, di, df, workspace (+ autograd's own bookkeeping: no more than a few)
    assert 6 <= c.allocations <= 10
    assert len(_launch._entries.entries) == entries


def test_backend_inference_step_warm_call(monkeypatch):
    B, NH, Dqk, Dv = 1, 8, 256, 512
    for inplace in (False, True):
        be = mLSTMBackend(mLSTMBackendConfig(chunkwise_kernel="chunkwise--triton_xl_chunk",
                                             mode="inference", inference_states_inplace=inplace))
        x = inputs(B, NH, 1, Dqk, Dv)
        _, (C, n, m) = be(*x)  # zero initial states
        C_in = C.clone()
        be(*x, C, n, m)
        with Counts(monkeypatch) as c:
            h, (C2, n2, m2) = be(*x, C, n, m)
        assert (c.lib_calls, c.syncs, c.segments) == (0, 0, 0)
        if inplace:
            assert C2 is C and c.allocations == 1  # h
        else:
            assert C2 is not C and c.allocations == 4  # h, C, n, m
        h_ref, (C_ref, _, _) = mlstm_recurrent_reference(*x)  # one token from zeros: C_in
        assert rel(C_in, C_ref) < 1e-4


def _c_path():
    """tfla.torch._fast's module: loaded unless TFLA_TORCH_EXTENSION=0 (then the test skips)."""
    import os

    from tfla.torch import _fast
    if os.environ.get("TFLA_TORCH_EXTENSION", "auto") in ("0", "off", "false", "no"):
        pytest.skip("TFLA_TORCH_EXTENSION=0: the C step path is off")
    assert _fast.module() is not None, _fast.status()
    return _fast


@pytest.mark.parametrize("how", ["new states", "in place", "in place, out"])
def test_c_step_path_equals_the_ctypes_path(how):
    """Warm steps through the C path (tfla.torch._fast) and through the ctypes path (the entry's
    C path taken away) on the same inputs: bitwise equal h and states, the same aliasing."""
    _fast = _c_path()
    x, (C, n, m) = step_inputs(2, 8, 256, 512, seed=3)
    h = torch.empty(2, 8, 512, device=DEV, dtype=torch.bfloat16)
    kw = {"new states": {}, "in place": {"inplace": True}, "in place, out": {"inplace": True, "out": h}}[how]
    mlstm_recurrent_step(*x, C.clone(), n.clone(), m.clone(), **kw)
    e = step_mod._entries.last
    ext = e.ext[0 if how == "new states" else 1]
    runs = []
    for path in ("C", "ctypes"):
        states = [C.clone(), n.clone(), m.clone()]
        before = _fast.calls(ext)
        if path == "ctypes":
            e.ext, saved = None, e.ext
        try:
            h2, out_states = mlstm_recurrent_step(*x, *states, **kw)
        finally:
            if path == "ctypes":
                e.ext = saved
        assert _fast.calls(ext) == before + (1 if path == "C" else 0)
        assert all((a is b) == (how != "new states") for a, b in zip(out_states, states))
        assert (h2 is h) == (how == "in place, out")
        runs.append([h2.clone()] + [t.clone() for t in out_states] + [t.clone() for t in states])
    for a, b in zip(*runs):
        assert torch.equal(a, b)
    # and the step itself: against the float64 recurrence
    q, k, v, i, f = x
    h_ref, (C_ref, _, _) = mlstm_recurrent_reference(q[:, :, None], k[:, :, None], v[:, :, None], i, f, C, n, m)
    assert rel(runs[0][0], h_ref[:, :, 0]) < 2e-2 and rel(runs[0][1], C_ref) < 1e-4


@pytest.mark.parametrize("inplace", [False, True])
def test_c_backend_path_equals_the_ctypes_path(inplace):
    _fast = _c_path()
    be = mLSTMBackend(mLSTMBackendConfig(chunkwise_kernel="chunkwise--triton_xl_chunk", mode="inference",
                                         inference_states_inplace=inplace))
    x = inputs(1, 8, 1, 256, 512, seed=5)
    _, (C, n, m) = be(*x)
    be(*x, C.clone(), n.clone(), m.clone())
    e = be._entries.last
    runs = []
    for path in ("C", "ctypes"):
        states = [C.clone(), n.clone(), m.clone()]
        before = _fast.calls(e.ext)
        if path == "ctypes":
            e.ext, saved = None, e.ext
        try:
            h2, out_states = be(*x, *states)
        finally:
            if path == "ctypes":
                e.ext = saved
        assert _fast.calls(e.ext) == before + (1 if path == "C" else 0)
        assert all((a is b) == inplace for a, b in zip(out_states, states))
        runs.append([h2.clone()] + [t.clone() for t in out_states] + [t.clone() for t in states])
    for a, b in zip(*runs):
        assert torch.equal(a, b)


@pytest.mark.parametrize("variant", ["exp", "sig"])
@pytest.mark.parametrize("states", [False, True])
@pytest.mark.parametrize("recompute", [False, True])
def test_c_chunkwise_path_equals_the_ctypes_path(variant, states, recompute):
    """The chunkwise forward (with and without gradients) and backward through the C path and
    through the ctypes path (the entries' C paths taken away), on the same inputs: h, the last
    states and every gradient bitwise equal; initial and last states, a saved buffer or a
    recomputing backward, S not a multiple of the chunk."""
    _fast = _c_path()
    B, NH, S, D = 2, 4, 200, 128
    x = inputs(B, NH, S, D, D, seed=9)
    g = torch.Generator(device=DEV).manual_seed(10)
    st = ([0.1 * torch.randn(B, NH, D, D, device=DEV, generator=g), 0.1 * torch.randn(B, NH, D, device=DEV, generator=g),
           torch.randn(B, NH, 1, device=DEV, generator=g)] if states else [None, None, None])
    dh = torch.randn(B, NH, S, D, device=DEV, generator=g).bfloat16()
    dC = torch.randn(B, NH, D, D, device=DEV, generator=g)
    kw = dict(return_last_states=states, variant=variant, chunk_size=64, recompute_states_in_bw=recompute)

    def calls():
        n = 0
        for e in _launch._entries.entries.values():
            for c in (e.ext or ()) + ((e.bwd_ext,) if e.bwd_ext not in (None, _launch._UNSET) else ()):
                n += _fast.calls(c)
        return n

    def run():
        xs = [t.detach().clone().requires_grad_(True) for t in x]
        ss = [None if s is None else s.clone() for s in st]
        if states:
            ss[0].requires_grad_(True)
        with torch.no_grad():
            out_ng = mlstm_chunkwise(*xs, *ss, **kw)
        out = mlstm_chunkwise(*xs, *ss, **kw)
        h = out[0] if states else out
        loss = (h.float() * dh.float()).sum()
        if states:
            loss = loss + (out[1][0] * dC).sum()  # dC_last = dC, contiguous float32
        loss.backward()
        flat = lambda o: [o] if torch.is_tensor(o) else [t for t in (o[0], *o[1])]
        return flat(out_ng) + flat(out) + [t.grad for t in xs] + ([ss[0].grad] if states else [])

    run()  # entries made, kernels loaded
    before = calls()
    c_out = run()
    assert calls() >= before + 3  # no-grad forward, forward, backward
    saved = [(e, e.ext, e.bwd_ext, e.node) for e in _launch._entries.entries.values()]
    for e, _, _, _ in saved:
        e.ext, e.bwd_ext, e.node = None, None, None
    try:
        py_out = run()
    finally:
        for e, a, b, nd in saved:
            e.ext, e.bwd_ext, e.node = a, b, nd
    assert len(c_out) == len(py_out)
    for a, b in zip(c_out, py_out):
        assert torch.equal(a, b)


def _without_c_path(fn):
    """fn() with every chunkwise entry's C paths taken away (the ctypes path and
    MlstmChunkwiseFunction), restored after."""
    held = [(e, e.ext, e.bwd_ext, e.node) for e in _launch._entries.entries.values()]
    for e, _, _, _ in held:
        e.ext, e.bwd_ext, e.node = None, None, None
    try:
        return fn()
    finally:
        for e, a, b, nd in held:
            e.ext, e.bwd_ext, e.node = a, b, nd


@pytest.mark.parametrize("loss_on", ["h", "C_last", "h and C_last, dh strided"])
def test_c_autograd_node_equals_the_function(loss_on):
    """The C++ autograd node (tfla.torch._fast.node) against MlstmChunkwiseFunction on the same
    inputs, every gradient bitwise equal: a loss on h (the backward in C), on C_last alone (no
    dh: the node's Python fallback) and on both with a dh that is not contiguous (the fallback's
    copy); n0 and m0 get zero gradients, n_last and m_last none."""
    _fast = _c_path()
    B, NH, S, D = 2, 4, 200, 128
    x = inputs(B, NH, S, D, D, seed=21)
    g = torch.Generator(device=DEV).manual_seed(22)
    st = [0.1 * torch.randn(B, NH, D, D, device=DEV, generator=g), 0.1 * torch.randn(B, NH, D, device=DEV, generator=g),
          torch.randn(B, NH, 1, device=DEV, generator=g)]
    w = torch.randn(B, NH, D, S, device=DEV, generator=g).transpose(2, 3)  # a strided dh
    wC = torch.randn(B, NH, D, D, device=DEV, generator=g)

    def run():
        xs = [t.detach().clone().requires_grad_(True) for t in x]
        ss = [s.clone().requires_grad_(True) for s in st]
        h, (C, n, m) = mlstm_chunkwise(*xs, *ss, return_last_states=True, chunk_size=64)
        assert not n.requires_grad and not m.requires_grad
        if loss_on == "h":
            loss = (h.float() * w.contiguous()).sum()
        elif loss_on == "C_last":
            loss = (C * wC).sum()
        else:
            h.backward(w.bfloat16(), retain_graph=True)
            loss = (C * wC).sum()
        loss.backward()
        return h.grad_fn.name(), [h, C, n, m] + [t.grad for t in xs + ss]

    run()
    name, c_out = run()
    assert name == "MlstmChunkwiseBackward"
    py_name, py_out = _without_c_path(run)
    assert py_name != name
    for a, b in zip(c_out, py_out):
        assert torch.equal(a, b)
    assert not c_out[-2].any() and not c_out[-1].any()  # dn0, dm0


def test_c_autograd_node_keeps_autograd_s_rules():
    """The C++ node behaves as the Function under autograd's rules: a second backward without
    retain_graph raises, retain_graph accumulates, an input changed in place after the forward
    raises autograd's version error, the gradients of a create_graph backward are not
    differentiable (once_differentiable), saved-tensor hooks see every saved tensor."""
    _fast = _c_path()
    x = inputs(1, 2, 128, 64, 64, seed=23, grad=True)
    dh = torch.randn(1, 2, 128, 64, device=DEV).bfloat16()
    h = mlstm_chunkwise(*x, chunk_size=64)
    h.backward(dh)
    assert h.grad_fn.name() == "MlstmChunkwiseBackward"
    with pytest.raises(RuntimeError, match="second time"):
        h.backward(dh)
    for t in x:
        t.grad = None
    h = mlstm_chunkwise(*x, chunk_size=64)
    h.backward(dh, retain_graph=True)
    once = x[0].grad.clone()
    h.backward(dh)
    assert torch.equal(x[0].grad, 2 * once)
    q3 = x[0] * 1  # not a leaf: changed in place below
    h = mlstm_chunkwise(q3, *x[1:], chunk_size=64)
    with torch.no_grad():
        q3.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        h.backward(dh)
    h = mlstm_chunkwise(*x, chunk_size=64)
    dhg = dh.clone().requires_grad_(True)
    (gq,) = torch.autograd.grad(h, x[0], dhg, create_graph=True)
    assert gq.requires_grad
    with pytest.raises(RuntimeError, match="differentiate twice"):
        gq.sum().backward()
    packed = []

    def pack(t):
        packed.append(t.shape)
        return t

    import torch.autograd.forward_ad as fwAD
    with fwAD.dual_level():  # no forward-mode derivative: an error, as the Function raises
        qd = fwAD.make_dual(x[0].detach(), torch.ones_like(x[0]))
        with pytest.raises((NotImplementedError, RuntimeError)):
            mlstm_chunkwise(qd, *x[1:], chunk_size=64)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        h = mlstm_chunkwise(*x, chunk_size=64)
    h.backward(dh)
    # q, k, v, i, f, the normalizer and (kept for the backward, or not at a short S) the saved buffer
    assert len(packed) in (6, 7) and packed[:3] == [x[0].shape, x[1].shape, x[2].shape]


def test_c_autograd_node_from_threads():
    """Forward + backward through the C++ node from four threads at once (each thread its own
    entries; their first backward runs the node's Python fallback under the GIL while others run
    in C): every thread's gradients equal the single-threaded ones."""
    import threading
    _c_path()
    x = inputs(2, 4, 192, 64, 64, seed=31)
    dh = torch.randn(2, 4, 192, 64, device=DEV, generator=torch.Generator(device=DEV).manual_seed(32)).bfloat16()

    def grads():
        xs = [t.detach().clone().requires_grad_(True) for t in x]
        mlstm_chunkwise(*xs, chunk_size=64, recompute_states_in_bw=False).backward(dh)
        return [t.grad for t in xs]

    ref = grads()
    out, errors = {}, []

    def worker(j):
        try:
            for _ in range(10):
                out[j] = grads()
            torch.cuda.current_stream().synchronize()
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(j,)) for j in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for j in range(4):
        for a, b in zip(out[j], ref):
            assert torch.equal(a, b)


def test_c_step_path_runs_on_the_current_stream():
    """The C path launches on torch's current stream: a step on a side stream queued behind a
    GPU sleep leaves the default stream idle and that stream busy, and is right once it ran."""
    _fast = _c_path()
    x, (C, n, m) = step_inputs(1, 8, 256, 512, seed=4)
    h = torch.empty(1, 8, 512, device=DEV, dtype=torch.bfloat16)
    C_ref, n_ref, m_ref = C.clone(), n.clone(), m.clone()
    mlstm_recurrent_step(*x, C.clone(), n.clone(), m.clone(), inplace=True, out=h)  # warm
    e = step_mod._entries.last
    side = torch.cuda.Stream()
    torch.cuda.synchronize()
    with torch.cuda.stream(side):
        assert _fast.module().stream(torch.cuda.current_device()) == side.cuda_stream
        torch.cuda._sleep(100_000_000)
        before = _fast.calls(e.ext[1])
        mlstm_recurrent_step(*x, C, n, m, inplace=True, out=h)
        assert _fast.calls(e.ext[1]) == before + 1
        assert not side.query() and torch.cuda.default_stream().query()
    side.synchronize()
    q, k, v, i, f = x
    h_ref, (Cr, _, _) = mlstm_recurrent_reference(q[:, :, None], k[:, :, None], v[:, :, None], i, f,
                                                  C_ref, n_ref, m_ref)
    assert rel(h, h_ref[:, :, 0]) < 2e-2 and rel(C, Cr) < 1e-4


@pytest.mark.parametrize("inplace", [False, True])
def test_backend_decode_steps_equal_the_reference(inplace):
    """A prefill, then one-token steps through mLSTMBackend: in place (tfla_backend_step on the
    states given, returned as they are) or not (tfla_backend_forward on new states, the given
    ones untouched); v a view of a (B, S, NH, Dv) projection, so h cannot be empty_like(v). The
    tokens' h and the last states equal the float64 recurrence of the whole sequence."""
    B, NH, S, T, Dqk, Dv = 2, 4, 40, 4, 64, 128
    q, k, v, i, f = inputs(B, NH, S + T, Dqk, Dv, dtype=torch.float32, seed=7)
    vp = v.transpose(1, 2).contiguous().transpose(1, 2)  # (B, NH, S, Dv), strides of (B, S, NH, Dv)
    be = mLSTMBackend(mLSTMBackendConfig(chunkwise_kernel="chunkwise--triton_xl_chunk", mode="inference",
                                         inference_states_inplace=inplace))
    part = lambda t, a, b: t[:, :, a:b]
    h0, (C, n, m) = be(*(part(t, 0, S) for t in (q, k, vp, i, f)))  # S > max_step_tokens: chunkwise
    hs = [h0]
    for t in range(S, S + T):
        C_in = C.clone()
        h, (C2, n2, m2) = be(*(part(x, t, t + 1) for x in (q, k, vp, i, f)), C, n, m)
        assert h.shape == (B, NH, 1, Dv) and h.is_contiguous()
        if inplace:
            assert C2 is C and n2 is n and m2 is m
        else:
            assert C2 is not C and torch.equal(C, C_in)
        C, n, m = C2, n2, m2
        hs.append(h)
    h_ref, (C_ref, n_ref, m_ref) = mlstm_recurrent_reference(q, k, v, i, f)
    assert rel(torch.cat(hs, dim=2), h_ref) < 1e-4
    assert rel(C, C_ref) < 1e-4 and rel(n, n_ref) < 1e-4 and rel(m, m_ref) < 1e-6


# ---- custom ops and torch.compile ------------------------------------------------------------

@pytest.mark.parametrize("which", ["fwd-recompute", "fwd-saved", "bwd", "step", "step-into"])
def test_opcheck_custom_ops(which):
    """opcheck runs each op more than once and compares the outputs exactly: fwd-saved's uint8
    saved-states output included, whose region padding the library zeroes (no kernel writes it)."""
    from tfla.torch import ops
    x = inputs(1, 2, 96, 64, 64, dtype=torch.float32, grad=True)
    g = torch.Generator(device=DEV).manual_seed(5)
    C0 = torch.randn(1, 2, 64, 64, device=DEV, generator=g) * 0.1
    n0 = torch.randn(1, 2, 64, device=DEV, generator=g) * 0.1
    m0 = torch.zeros(1, 2, 1, device=DEV)
    if which.startswith("fwd"):
        keep = which == "fwd-saved"
        args = (*x, C0, n0, m0, "exp", True, 1e-6, 0.0, "chunk=32", "chunk=32", True, True, keep)
        torch.library.opcheck(ops.mlstm_fwd, args)
    elif which == "bwd":
        xd = [t.detach() for t in x]
        h, norm, C, n, m, saved = ops.mlstm_fwd(*xd, C0, n0, m0, "exp", True, 1e-6, 0.0, "chunk=32",
                                                "chunk=32", True, True, True)
        bargs = (*xd, C0, n0, m0, norm, saved, torch.randn_like(h), torch.randn_like(C), "exp", True,
                 1e-6, 0.0, "chunk=32", "chunk=32")
        torch.library.opcheck(ops.mlstm_bwd, bargs)
    elif which == "step":
        s, (Cs, ns, ms) = step_inputs(2, 2, 64, 64)
        torch.library.opcheck(ops.mlstm_step_, (*s, Cs, ns, ms, "exp", True, 1e-6, 0.0, None))
    else:  # step-into: new states apart from the old ones, which stay as they were
        s, (Cs, ns, ms) = step_inputs(2, 2, 64, 64)
        C0s, n0s, m0s = Cs.clone(), ns.clone(), ms.clone()
        news = (torch.empty_like(Cs), torch.empty_like(ns), torch.empty_like(ms))
        torch.library.opcheck(ops.mlstm_step_into, (*s, Cs, ns, ms, *news, "exp", True, 1e-6, 0.0, None))
        assert torch.equal(Cs, C0s) and torch.equal(ns, n0s) and torch.equal(ms, m0s)


class Block(torch.nn.Module):
    """A small xLSTM-style block: projections, soft-capped gates, the mLSTM, a per-head norm,
    an output gate and projection, a residual. reference=True: the mLSTM is the float64
    recurrence (tfla.torch.reference) and the gates stay in the block's dtype, for a float64 copy
    of the block that the tfla block is measured against."""

    def __init__(self, d=256, nh=2, dqk=64, dv=128, reference=False):
        super().__init__()
        self.nh, self.dqk, self.dv, self.reference = nh, dqk, dv, reference
        self.norm = torch.nn.LayerNorm(d)
        self.q = torch.nn.Linear(d, nh * dqk, bias=False)
        self.k = torch.nn.Linear(d, nh * dqk, bias=False)
        self.v = torch.nn.Linear(d, nh * dv, bias=False)
        self.o = torch.nn.Linear(d, nh * dv, bias=False)
        self.ig = torch.nn.Linear(d, nh)
        self.fg = torch.nn.Linear(d, nh)
        self.hnorm = torch.nn.GroupNorm(nh, nh * dv)
        self.out = torch.nn.Linear(nh * dv, d, bias=False)

    def forward(self, x):
        B, S, _ = x.shape
        y = self.norm(x)
        heads = lambda t, d: t.view(B, S, self.nh, d).transpose(1, 2)
        q, k = heads(self.q(y), self.dqk), heads(self.k(y), self.dqk)
        v = heads(self.v(y), self.dv)
        cap = lambda g: 15.0 * torch.tanh(g / 15.0)
        gate_dtype = x.dtype if self.reference else torch.float32
        i = cap(self.ig(y)).transpose(1, 2).to(gate_dtype)
        f = (cap(self.fg(y)) + 3.0).transpose(1, 2).to(gate_dtype)
        if self.reference:
            h = mlstm_recurrent_reference(q, k, v, i, f)[0]
        else:
            h = mlstm_chunkwise(q, k, v, i, f, chunk_size=64)  # (B, NH, S, Dv)
        h = h.transpose(1, 2).reshape(B * S, self.nh * self.dv)
        h = self.hnorm(h).view(B, S, -1)
        return x + self.out(h * torch.sigmoid(self.o(y)))


def run_block(block, x):
    """The block's output and the gradients of mean(y^2) (computed in float64) for its
    parameters and x, which must require grad; the gradients are cleared afterwards."""
    y = block(x)
    y.double().square().mean().backward()
    grads = [p.grad.clone() for p in block.parameters()] + [x.grad.clone()]
    block.zero_grad()
    x.grad = None
    return y.detach(), grads


def test_compiled_block_fullgraph_equals_eager_float32():
    """float32: eager and compiled agree to rounding."""
    torch.manual_seed(0)
    block = Block().to(DEV)
    x = torch.randn(2, 192, 256, device=DEV, requires_grad=True)
    y, grads = run_block(block, x)
    yc, grads_c = run_block(torch.compile(block, fullgraph=True), x)
    assert rel(yc, y) < 1e-5
    errs = [rel(a, b) for a, b in zip(grads_c, grads)]
    assert max(errs) < 1e-4, errs


def test_compiled_block_fullgraph_bfloat16_as_accurate_as_eager():
    """bfloat16: inductor fuses the elementwise work around the kernel and keeps it in float32,
    so compiled and eager round at different places and need not agree with each other to bf16
    rounding. What must hold is that compiling loses no accuracy: against a float64 copy of the
    block (the same bf16 weights and input, the float64 recurrence as its mLSTM), the compiled
    output and every gradient is within 2x the eager one's error plus bf16's eps (2^-7 = two
    unit roundoffs: both end in a bf16 rounding of their own, and either may round an
    intermediate the other does not). A wrong compiled graph or gradient (errors of order 1)
    fails; so does a compiled path that is markedly less accurate than eager.

    Errors are relative to the reference's norm, except for the gate biases: their gradient is a
    sum over all tokens that nearly cancels (the input gate's is about 1% of the size of its
    terms), so it is measured against the larger of its norm and that of its terms (the
    reference's gradient of the gate projection, per token), the size a sum of that many terms
    of random sign would have; even so both errors are rounding noise there, so those two are held
    to 5e-2 (an error of order 1, a wrong gradient, still fails) rather than to eager's error."""
    import copy
    torch.manual_seed(0)
    block = Block().to(DEV, torch.bfloat16)
    x = torch.randn(2, 192, 256, device=DEV, dtype=torch.bfloat16, requires_grad=True)
    ref_block = copy.deepcopy(block).double()
    ref_block.reference = True
    gate_out = {}

    def keep(name):
        def hook(module, args, out):
            out.retain_grad()
            gate_out[name] = out
        return hook

    for name in ("ig", "fg"):
        getattr(ref_block, name).register_forward_hook(keep(name))
    y_ref, grads_ref = run_block(ref_block, x.detach().double().requires_grad_(True))
    y, grads = run_block(block, x)
    yc, grads_c = run_block(torch.compile(block, fullgraph=True), x)
    names = [n for n, _ in block.named_parameters()] + ["x"]
    scale = {f"{g}.bias": float(gate_out[g].grad.norm()) for g in ("ig", "fg")}

    def err(out, ref, name):
        d = float((out.double() - ref.double()).norm())
        return d / max(float(ref.norm()), scale.get(name, 0.0))

    rows = [("y", err(y, y_ref, "y"), err(yc, y_ref, "y"))]
    rows += [(n, err(g, r, n), err(gc, r, n)) for n, g, gc, r in zip(names, grads, grads_c, grads_ref)]
    table = "\n".join(f"{n:<14} eager {e:.3e} compiled {c:.3e}" for n, e, c in rows)
    print(table)
    # eager itself is close to the reference (else the bound below would mean nothing)
    assert all(e < 0.1 for _, e, _ in rows), table
    floor = torch.finfo(torch.bfloat16).eps
    # The gate biases' gradients, measured against the size of their terms, are rounding noise in
    # both runs, so their ratio is chance (H200: fg.bias eager 5.0e-3, compiled 2.0e-2; ig.bias
    # 9.7e-3 and 1.8e-3); they are held to a bound of their own, far below a wrong gradient's error.
    bound = {name: 5e-2 for name in scale}
    bad = [n for n, e, c in rows if not c <= bound.get(n, 2.0 * e + floor)]
    assert not bad, f"compiled less accurate than eager for {bad}:\n{table}"


@pytest.mark.parametrize("how", ["new", "inplace", "c_new"])
def test_compiled_step_equals_eager(how):
    """Compiled (the custom ops: mlstm_step_into for new states, mlstm_step_ in place or a mix)
    equals eager bit for bit; new states leave the inputs as they were."""
    x, (C, n, m) = step_inputs(2, 4, 128, 128)

    def decode(q, k, v, i, f, C, n, m):
        if how == "new":
            h, (C, n, m) = mlstm_recurrent_step(q, k, v, i, f, C, n, m)
        elif how == "inplace":
            h, (C, n, m) = mlstm_recurrent_step(q, k, v, i, f, C, n, m, inplace=True)
        else:  # C updated in place, n and m into new buffers (copied first)
            h, (C, n, m) = mlstm_recurrent_step(q, k, v, i, f, C, n, m, c_new=C, n_new=torch.empty_like(n),
                                                m_new=torch.empty_like(m))
        return h * 2, C, n, m

    start = (C.clone(), n.clone(), m.clone())
    ref = decode(*x, *(t.clone() for t in start))
    states = tuple(t.clone() for t in start)
    out = torch.compile(decode, fullgraph=True, backend="aot_eager")(*x, *states)
    for a, b in zip(out, ref):
        assert torch.equal(a, b)
    if how == "new":
        assert all(torch.equal(a, b) for a, b in zip(states, start))


# ---- CUDA graphs -----------------------------------------------------------------------------

def test_cuda_graph_forward_backward_replay_new_inputs():
    shape = (2, 4, 192, 128, 128)
    static = inputs(*shape, grad=True)
    dh = torch.randn(2, 4, 192, 128, device=DEV).bfloat16()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # warm-up on the capture stream: configs, kernel loads
        for _ in range(2):
            h = mlstm_chunkwise(*static, chunk_size=64)
            h.backward(dh)
    torch.cuda.current_stream().wait_stream(s)
    for t in static:
        t.grad = None
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        h_static = mlstm_chunkwise(*static, chunk_size=64)
        h_static.backward(dh)
    for seed in (3, 4):
        fresh = inputs(*shape, seed=seed)
        with torch.no_grad():
            for dst, src in zip(static, fresh):
                dst.copy_(src)
        g.replay()
        eager = inputs(*shape, seed=seed, grad=True)
        h_eager = mlstm_chunkwise(*eager, chunk_size=64)
        h_eager.backward(dh)
        torch.cuda.synchronize()
        assert rel(h_static, h_eager) < 1e-3
        for a, b in zip(static, eager):
            assert rel(a.grad, b.grad) < 5e-3


def test_cuda_graph_decode_loop_replay():
    B, NH, Dqk, Dv, T = 4, 8, 256, 512, 8
    x, (C, n, m) = step_inputs(B, NH, Dqk, Dv)
    C0, n0, m0 = C.clone(), n.clone(), m.clone()
    toks = [step_inputs(B, NH, Dqk, Dv, seed=10 + t)[0] for t in range(T)]
    h = torch.empty(B, NH, Dv, device=DEV, dtype=torch.bfloat16)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        mlstm_recurrent_step(*x, C, n, m, inplace=True, out=h)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        mlstm_recurrent_step(*x, C, n, m, inplace=True, out=h)
    C.copy_(C0), n.copy_(n0), m.copy_(m0)
    Ce, ne, me = C0.clone(), n0.clone(), m0.clone()
    for t in range(T):
        for dst, src in zip(x, toks[t]):
            dst.copy_(src)
        g.replay()
        he, _ = mlstm_recurrent_step(*toks[t], Ce, ne, me, inplace=True)
        torch.cuda.synchronize()
        assert rel(h, he) < 1e-3, f"token {t}"
    assert rel(C, Ce) < 1e-6 and rel(n, ne) < 1e-6 and rel(m, me) < 1e-6
