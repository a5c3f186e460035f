"""mLSTMBackend's __call__ without a GPU: it calls forward directly where nn.Module.__call__
would (a module without hooks), and takes nn.Module's path, hooks and all, where there are
hooks of the module's own or global ones. (Skipped without torch.)"""

import pytest

torch = pytest.importorskip("torch")

from torch.nn.modules import module as nn_module  # noqa: E402

from tfla.torch.backend_module import mLSTMBackend, mLSTMBackendConfig  # noqa: E402


class Called(Exception):
    pass


def backend():
    b = mLSTMBackend(mLSTMBackendConfig(mode="inference"))
    b.forward = lambda *args, **kwargs: ("forward", args, kwargs)  # no library, no GPU
    return b


def test_call_without_hooks_reaches_forward_with_its_arguments():
    assert backend()(1, 2, 3, 4, 5, c_initial=6, mode="train") == ("forward", (1, 2, 3, 4, 5),
                                                                    {"c_initial": 6, "mode": "train"})


def test_module_hooks_run():
    b = backend()
    seen = []
    b.register_forward_pre_hook(lambda mod, args, kwargs: seen.append(("pre", args, kwargs)),
                                with_kwargs=True)
    b.register_forward_hook(lambda mod, args, out: seen.append(("post", out[0])))
    assert b(1, 2, 3, 4, 5, m_initial=8)[0] == "forward"
    assert seen == [("pre", (1, 2, 3, 4, 5), {"m_initial": 8}), ("post", "forward")]


@pytest.mark.parametrize("register", [nn_module.register_module_forward_pre_hook,
                                      nn_module.register_module_forward_hook])
def test_global_hooks_run(register):
    def hook(*args):
        raise Called

    b = backend()
    handle = register(hook)
    try:
        with pytest.raises(Called):
            b(1, 2, 3, 4, 5)
    finally:
        handle.remove()
    assert b(1, 2, 3, 4, 5)[0] == "forward"


def test_the_seed_s_chunk_size_pins_no_chunk(monkeypatch):
    """The seed's interfaces take chunk_size as its Triton setting: tfla's kernels get no pinned
    chunk from it (a model's 64 had doubled forward + backward at the paper's heads)."""
    import tfla.torch.chunkwise as cw
    for size in (64, 128):
        kw = mLSTMBackend(mLSTMBackendConfig(mode="train", chunk_size=size))._kernel_kwargs()
        assert kw["chunk_size"] is None
    seen = []

    def fake(*args, **kwargs):
        seen.append(args[10] if len(args) > 10 else kwargs.get("chunk_size"))
        return "h"

    monkeypatch.setattr(cw, "mlstm_chunkwise", fake)
    x = [torch.zeros(1, 1, 4, 4) for _ in range(3)] + [torch.zeros(1, 1, 4) for _ in range(2)]
    assert cw.mlstm_chunkwise__xl_chunk(*x, chunk_size=64) == "h"
    assert cw.mlstm_siging_chunkwise__xl_chunk(*x, chunk_size=256) == "h"
    assert seen == [None, None]
