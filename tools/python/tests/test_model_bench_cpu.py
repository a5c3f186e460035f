"""tools/bench/model.py runs each backend in a process of its own: a backend whose process aborts
or exits with an error is reported as failed and the next backend still runs, and the rows the
children write come back. Checked without a GPU on stand-in children. Skipped without torch."""

import importlib.util
import os
import sys
import textwrap

import pytest

pytest.importorskip("torch")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def load_model_bench():
    spec = importlib.util.spec_from_file_location("model_bench", os.path.join(REPO, "tools", "bench", "model.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def tiny_model_bench(monkeypatch):
    """model.py at a tiny shape on the CPU (no CUDA synchronization)."""
    import torch
    bench = load_model_bench()
    for name, value in dict(DEV="cpu", D=32, NH=2, DQK=8, DV=16, VOCAB=64, FFN=32).items():
        monkeypatch.setattr(bench, name, value)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    return bench


def speed_row(bench, name, compile):
    """One speed() row of backend `name` at B = 1 on the tiny model (float32)."""
    import argparse
    import torch
    torch.manual_seed(0)
    model = bench.build(name, 1, dtype=torch.float32)
    rows = []
    bench.speed(model, name, [1], argparse.Namespace(train_seq=8, prompt=4, gen=2, reps=1, compile=compile), rows)
    (r,) = rows
    return model, r


def test_each_backend_in_its_own_process(tmp_path):
    child = tmp_path / "child.py"
    child.write_text(textwrap.dedent("""
        import json, os, sys
        name, out = sys.argv[sys.argv.index("--child") + 1], sys.argv[sys.argv.index("--json") + 1]
        assert "--batch" in sys.argv  # the parent's arguments are passed on
        if name == "aborts":
            os.abort()
        if name == "fails":
            sys.exit(3)
        json.dump([{"part": "speed", "backend": name, "B": 1, "gen_us": 1.0}], open(out, "w"))
    """))
    bench = load_model_bench()
    rows = bench.run_children(["first", "aborts", "fails", "last"], ["--batch", "1"], script=str(child))
    ok = [r["backend"] for r in rows if r["part"] == "speed"]
    failed = {r["backend"]: r["error"] for r in rows if r["part"] == "failed"}
    assert ok == ["first", "last"]
    assert failed == {"aborts": "signal SIGABRT", "fails": "exit status 3"}


def test_training_parts_eager_and_compiled_on_cpu(monkeypatch):
    """The training part of a backend, eager and (--compile) under torch.compile(fullgraph=True),
    on the CPU at a tiny shape with the float64 recurrent reference standing in for tfla's kernels:
    both report tokens/s, and the compiled model's gradients are the eager one's."""
    import torch
    from tfla.torch.reference import mlstm_recurrent_reference

    bench = tiny_model_bench(monkeypatch)

    class Reference(torch.nn.Module):
        def forward(self, q, k, v, i, f, c=None, n=None, m=None, return_last_states=False, mode="train"):
            h, (C, n_new, m_new) = mlstm_recurrent_reference(q, k, v, i, f, c, n, m)
            if mode == "inference":
                return h.to(q.dtype), (C.float(), n_new.float(), m_new.float().reshape(*m_new.shape[:2], 1))
            return h.to(q.dtype)

    monkeypatch.setattr(bench, "backend_factory", lambda name, dtype: Reference)
    model, r = speed_row(bench, "tfla", compile=True)
    assert r.get("train_tok_s", 0) > 0 and r.get("train_compiled_tok_s", 0) > 0, r

    tokens = torch.randint(0, bench.VOCAB, (1, 9))
    grads = []
    for m in (model, torch.compile(model, fullgraph=True)):
        logits, _ = m(tokens[:, :-1])
        torch.nn.functional.cross_entropy(logits.reshape(-1, bench.VOCAB), tokens[:, 1:].reshape(-1)).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
        model.zero_grad(set_to_none=True)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_floor_backend_runs_every_part_without_an_mlstm(monkeypatch):
    """The `floor` backend (h = v, states passed through) runs training, prefill and generation of
    the same model on the CPU at a tiny shape, so its times bound what any mLSTM backend reaches;
    its h is v itself in the model's (B, NH, S, Dv) layout."""
    import torch

    bench = tiny_model_bench(monkeypatch)
    be = bench.backend_factory("floor", torch.float32)()
    v = torch.randn(2, 2, 5, 16)
    q = torch.randn(2, 2, 5, 8)
    g = torch.randn(2, 2, 5)
    assert torch.equal(be(q, q, v, g, g, mode="train"), v)
    h, state = be(q, q, v, g, g, None, None, None, mode="inference")
    assert torch.equal(h, v) and state == (None, None, None)
    _, r = speed_row(bench, "floor", compile=False)
    assert r.get("train_tok_s", 0) > 0 and r.get("prefill_ms", 0) > 0 and r.get("gen_us", 0) > 0, r
