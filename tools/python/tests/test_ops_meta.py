"""The custom ops' fake (meta) implementations and torch.compile tracing, without a GPU: on
meta tensors the ops run their fake implementations, so the shapes, dtypes and the autograd
wiring of what torch.compile puts into a graph are checked where torch is installed, GPU or not.
(Skipped without torch.)"""

import pytest

torch = pytest.importorskip("torch")

from tfla.torch import mlstm_chunkwise, mlstm_recurrent_step, ops  # noqa: E402

META = "meta"


def meta_inputs(B=2, NH=2, S=100, Dqk=64, Dv=32, dtype=torch.bfloat16, grad=False):
    x = [torch.empty(B, NH, S, Dqk, device=META, dtype=dtype),
         torch.empty(B, NH, S, Dqk, device=META, dtype=dtype),
         torch.empty(B, NH, S, Dv, device=META, dtype=dtype),
         torch.empty(B, NH, S, device=META), torch.empty(B, NH, S, device=META)]
    return [t.requires_grad_(grad) for t in x]


def test_forward_fake_shapes_without_saved_states():
    q, k, v, i, f = meta_inputs()
    h, norm, C, n, m, saved = ops.mlstm_fwd(q, k, v, i, f, None, None, None, "exp", True, 1e-6, 0.0,
                                            None, None, True, True, False)
    assert h.shape == (2, 2, 100, 32) and h.dtype == torch.bfloat16
    assert norm.shape == (2, 2, 100) and norm.dtype == torch.float32
    assert C.shape == (2, 2, 64, 32) and n.shape == (2, 2, 64) and m.shape == (2, 2, 1)
    assert saved.numel() == 0
    h, norm, C, n, m, _ = ops.mlstm_fwd(q, k, v, i, f, None, None, None, "sig", True, 1e-6, 0.0,
                                        None, None, False, False, False)
    assert norm.numel() == 0 and C.numel() == 0 and m.numel() == 0


def test_backward_and_step_fake_shapes():
    q, k, v, i, f = meta_inputs(dtype=torch.float16)
    C0 = torch.empty(2, 2, 64, 32, device=META)
    norm = torch.empty(2, 2, 100, device=META)
    dh = torch.empty(2, 2, 100, 32, device=META, dtype=torch.float16)
    dq, dk, dv, di, df, dC0 = ops.mlstm_bwd(q, k, v, i, f, C0, None, None, norm, None, dh, None, "exp",
                                            True, 1e-6, 0.0, None, None)
    assert dq.shape == q.shape and dv.shape == v.shape and dq.dtype == torch.float16
    assert di.shape == (2, 2, 100) and di.dtype == torch.float32 and dC0.shape == C0.shape
    q1, k1, v1 = q[:, :, 0], k[:, :, 0], v[:, :, 0]
    g = torch.empty(2, 2, 1, device=META)
    h = ops.mlstm_step_(q1, k1, v1, g, g, C0, torch.empty(2, 2, 64, device=META), g.clone(), "exp",
                        True, 1e-6, 0.0, None)
    assert h.shape == (2, 2, 32) and h.dtype == torch.float16
    n0 = torch.empty(2, 2, 64, device=META)
    h = ops.mlstm_step_into(q1, k1, v1, g, g, C0, n0, g, torch.empty_like(C0), torch.empty_like(n0),
                            torch.empty_like(g), "exp", True, 1e-6, 0.0, None)
    assert h.shape == (2, 2, 32) and h.dtype == torch.float16


def test_compile_fullgraph_traces_forward_and_backward_on_meta():
    """torch.compile(fullgraph=True) of a function around mlstm_chunkwise: no graph break, and
    its forward and backward (aot_eager: the joint graph through the registered autograd) run."""
    x = meta_inputs(grad=True)

    def fn(q, k, v, i, f):
        h, (C, n, m) = mlstm_chunkwise(torch.sin(q), k, v, i, f, return_last_states=True,
                                       chunk_size=64, recompute_states_in_bw=True)
        return h.float().sum() + C.sum()

    loss = torch.compile(fn, fullgraph=True, backend="aot_eager")(*x)
    loss.backward()
    assert loss.shape == () and x[0].grad.shape == x[0].shape and x[4].grad.shape == x[4].shape


def test_compile_fullgraph_step_on_meta():
    B, NH, Dqk, Dv = 2, 2, 64, 32
    q = torch.empty(B, NH, Dqk, device=META, dtype=torch.bfloat16)
    v = torch.empty(B, NH, Dv, device=META, dtype=torch.bfloat16)
    g = torch.empty(B, NH, 1, device=META)
    C, n = torch.empty(B, NH, Dqk, Dv, device=META), torch.empty(B, NH, Dqk, device=META)

    def fn(q, k, v, i, f, C, n, m):
        h, (C, n, m) = mlstm_recurrent_step(q, k, v, i, f, C, n, m)
        return h + 1, C

    h, C2 = torch.compile(fn, fullgraph=True, backend="aot_eager")(q, q, v, g, g, C, n, g.clone())
    assert h.shape == (B, NH, Dv) and C2.shape == C.shape


def test_opcheck_autograd_wiring_with_the_reference_as_kernel(monkeypatch):
    """opcheck of tfla::mlstm_fwd (schema, fake tensors, autograd registration, eager vs AOT
    gradients) on the CPU, with the launches replaced by the float64 reference: checks the
    registration (which output's gradient goes where) without a GPU."""
    import types

    from tfla.torch.reference import mlstm_recurrent_reference

    def run_forward(e, q, k, v, i, f, c0, n0, m0, need_norm):
        with torch.no_grad():
            h, (C, n, m) = mlstm_recurrent_reference(q, k, v, i, f, c0, n0, m0)
        last = e.opts.return_last_states
        return (h.to(q.dtype), torch.ones(q.shape[:3]) if need_norm else None,
                C.float() if last else None, n.float() if last else None,
                m.float().reshape(q.shape[0], q.shape[1], 1) if last else None,
                torch.zeros(16, dtype=torch.uint8) if e.keep else None)

    def run_backward(e, q, k, v, i, f, c0, n0, m0, norm, saved, dh, dC_last):
        with torch.inference_mode(False), torch.enable_grad():
            xs = [t.detach().double().clone().requires_grad_(True) for t in (q, k, v, i, f)]
            c = c0.detach().double().clone().requires_grad_(True) if c0 is not None else None
            h, (C, _, _) = mlstm_recurrent_reference(*xs, c, n0.clone(), m0.clone())
            outs, gs = [h], [dh.double().clone()]
            if dC_last is not None:
                outs.append(C)
                gs.append(dC_last.double().clone())
            grads = torch.autograd.grad(outs, xs + [c], gs)
        return (*[g.to(t.dtype) for g, t in zip(grads, (q, k, v, i, f))], grads[5].float())

    monkeypatch.setattr(ops, "forward_entry", lambda *a: types.SimpleNamespace(opts=a[8], keep=a[9]))
    monkeypatch.setattr(ops, "run_forward", run_forward)
    monkeypatch.setattr(ops, "run_backward", run_backward)
    monkeypatch.setattr(ops, "_saved_bytes", lambda *a: 16)
    g = torch.Generator().manual_seed(0)
    B, NH, S, D = 1, 2, 12, 8
    x = [torch.randn(B, NH, S, D, generator=g) for _ in range(3)]
    x += [torch.randn(B, NH, S, generator=g), 3 + torch.randn(B, NH, S, generator=g)]
    x = [t.requires_grad_(True) for t in x]
    C0, n0 = 0.1 * torch.randn(B, NH, D, D, generator=g), 0.1 * torch.randn(B, NH, D, generator=g)
    m0 = torch.zeros(B, NH, 1)
    for keep in (False, True):
        torch.library.opcheck(ops.mlstm_fwd, (*x, C0, n0, m0, "exp", True, 1e-6, 0.0, None, None, True,
                                              True, keep))


def test_compile_fullgraph_backend_module_on_meta(monkeypatch):
    """mLSTMBackend calls forward itself where nn.Module would (no hooks): torch.compile
    (fullgraph=True) of a model around it traces through that, with and without a hook. (The
    saved buffer's size, a library query, is stubbed.)"""
    from tfla.torch.backend_module import mLSTMBackend, mLSTMBackendConfig
    monkeypatch.setattr(ops, "_saved_bytes", lambda *a: 16)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mlstm = mLSTMBackend(mLSTMBackendConfig(chunkwise_kernel="chunkwise--triton_xl_chunk",
                                                         return_last_states=False))

        def forward(self, q, k, v, i, f):
            return self.mlstm(torch.sin(q), k, v, i, f).float().sum()

    model = Model()
    x = meta_inputs(grad=True)
    loss = torch.compile(model, fullgraph=True, backend="aot_eager")(*x)
    loss.backward()
    assert loss.shape == () and x[0].grad.shape == x[0].shape
    seen = []
    model.mlstm.register_forward_pre_hook(lambda mod, args: seen.append(len(args)))
    torch._dynamo.reset()
    torch.compile(model, fullgraph=True, backend="aot_eager")(*x)
    assert seen == [5]


def test_packed_ops_fake_shapes():
    """tfla::mlstm_fwd_varlen / mlstm_bwd_varlen on meta tensors: (1, NH, T, ...) outputs, states
    (N, NH, ...) with N from cu_seqlens."""
    q, k, v, i, f = meta_inputs(B=1, S=300)
    cu = torch.empty(5, dtype=torch.int32, device=META)
    h, norm, C, n, m, saved = ops.mlstm_fwd_varlen(q, k, v, i, f, cu, None, None, None, 120, "exp", True, 1e-6,
                                                   0.0, None, None, True, True, False)
    assert h.shape == (1, 2, 300, 32) and norm.shape == (1, 2, 300)
    assert C.shape == (4, 2, 64, 32) and n.shape == (4, 2, 64) and m.shape == (4, 2, 1) and saved.numel() == 0
    C0 = torch.empty(4, 2, 64, 32, device=META)
    dh = torch.empty(1, 2, 300, 32, device=META, dtype=torch.bfloat16)
    dq, dk, dv, di, df, dC0 = ops.mlstm_bwd_varlen(q, k, v, i, f, cu, C0, None, None, norm, None, dh, None, 120,
                                                   "sig", True, 1e-6, 0.0, None, None)
    assert dq.shape == q.shape and dv.shape == v.shape and di.shape == (1, 2, 300) and dC0.shape == C0.shape


def test_compile_fullgraph_packed_call_on_meta():
    """torch.compile(fullgraph=True) of a packed mlstm_chunkwise call (cu_seqlens, max_seqlen):
    no graph break, forward and backward traced through tfla::mlstm_fwd_varlen's autograd; without
    max_seqlen it is refused by name (the offsets cannot be read on the host in a graph)."""
    from tfla._errors import TflaArgumentError

    x = meta_inputs(B=1, S=300, grad=True)
    cu = torch.empty(5, dtype=torch.int64, device=META)
    C0 = torch.empty(4, 2, 64, 32, device=META, requires_grad=True)

    def fn(q, k, v, i, f, cu, C0):
        h, (C, n, m) = mlstm_chunkwise(torch.sin(q), k, v, i, f, C0, return_last_states=True, cu_seqlens=cu,
                                       max_seqlen=128, recompute_states_in_bw=True)
        return h.float().sum() + C.sum()

    loss = torch.compile(fn, fullgraph=True, backend="aot_eager")(*x, cu, C0)
    loss.backward()
    assert x[0].grad.shape == x[0].shape and C0.grad.shape == C0.shape

    def unbounded(q, k, v, i, f, cu):
        return mlstm_chunkwise(q, k, v, i, f, cu_seqlens=cu)

    torch._dynamo.reset()
    with pytest.raises((TflaArgumentError, torch._dynamo.exc.TorchDynamoException), match="max_seqlen"):
        torch.compile(unbounded, fullgraph=True, backend="aot_eager")(*x, cu)


def test_opcheck_packed_autograd_wiring_with_the_reference_as_kernel(monkeypatch):
    """opcheck of tfla::mlstm_fwd_varlen on the CPU with the launches replaced by the float64
    reference run sequence by sequence: the schema, the fake tensors and which gradient goes
    where (cu_seqlens none, c_initial its (N, NH, Dqk, Dv) dC0)."""
    import contextlib

    from tfla.torch import varlen
    from tfla.torch.reference import mlstm_recurrent_reference

    def pieces(cu, *xs):
        return [[x[:, :, a:b] for x in xs] for a, b in zip(cu.tolist(), cu.tolist()[1:])]

    def reference(c, q, k, v, i, f, c0, n0, m0):
        hs, Cs = [], []
        for j, (qj, kj, vj, ij, fj) in enumerate(pieces(c.cu, q, k, v, i, f)):
            if qj.shape[2] == 0:  # an empty sequence: its last state is its initial one
                Cs.append(c0[j:j + 1].to(q.dtype))
                continue
            h, (C, _, _) = mlstm_recurrent_reference(qj, kj, vj, ij, fj, c0[j:j + 1], n0[j:j + 1], m0[j:j + 1])
            hs.append(h)
            Cs.append(C)
        return torch.cat(hs, dim=2), torch.cat(Cs)

    class Call:
        def __init__(self, q, k, v, i, f, c0, n0, m0, cu, max_seqlen, opts):
            self.cu = cu

    def forward(c, q, k, v, i, f, c0, n0, m0, need_norm, last, keep=False):
        with torch.no_grad():
            h, C = reference(c, q, k, v, i, f, c0, n0, m0)
        N = c.cu.numel() - 1
        return (h.to(q.dtype), torch.ones(q.shape[:3]) if need_norm else None, C.float() if last else None,
                torch.zeros(N, q.shape[1], q.shape[3]) if last else None,
                torch.zeros(N, q.shape[1], 1) if last else None, torch.zeros(16, dtype=torch.uint8) if keep else None)

    def backward(c, q, k, v, i, f, c0, n0, m0, norm, dh, dC_last, saved=None):
        with torch.inference_mode(False), torch.enable_grad():
            xs = [t.detach().double().clone().requires_grad_(True) for t in (q, k, v, i, f)]
            c0d = c0.detach().double().clone().requires_grad_(True)
            h, C = reference(c, *xs, c0d, n0.double(), m0.double())
            outs, gs = [h], [dh.double().clone()]
            if dC_last is not None:
                outs.append(C)
                gs.append(dC_last.double().clone())
            grads = torch.autograd.grad(outs, xs + [c0d], gs)
        return (*[g.to(t.dtype) for g, t in zip(grads, (q, k, v, i, f))], grads[5].float())

    monkeypatch.setattr(varlen, "_Call", Call)
    monkeypatch.setattr(varlen, "_forward", forward)
    monkeypatch.setattr(varlen, "_backward", backward)
    monkeypatch.setattr(torch.cuda, "device", lambda *a: contextlib.nullcontext())
    g = torch.Generator().manual_seed(0)
    NH, T, D = 2, 11, 8
    x = [torch.randn(1, NH, T, D, generator=g) for _ in range(3)]
    x += [torch.randn(1, NH, T, generator=g), 3 + torch.randn(1, NH, T, generator=g)]
    x = [t.requires_grad_(True) for t in x]
    cu = torch.tensor([0, 4, 4, 11])
    C0 = (0.1 * torch.randn(3, NH, D, D, generator=g)).requires_grad_(True)
    n0, m0 = 0.1 * torch.randn(3, NH, D, generator=g), torch.zeros(3, NH, 1)
    torch.library.opcheck(ops.mlstm_fwd_varlen, (*x, cu, C0, n0, m0, 7, "exp", True, 1e-6, 0.0, None, None, True,
                                                 True, False))
