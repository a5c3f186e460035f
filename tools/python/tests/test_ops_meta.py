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
