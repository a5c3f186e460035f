"""tfla.torch._runtime.like without a GPU: empty_like stands for new_empty only where it gives a
contiguous tensor of the output's shape. (Skipped without torch.)"""

import pytest

torch = pytest.importorskip("torch")

from tfla.torch._runtime import like  # noqa: E402


@pytest.mark.parametrize("make, ok", [
    (lambda: torch.empty(2, 4, 8, 16), True),
    (lambda: torch.empty(1, 2, 8, 16).transpose(0, 1), True),  # a size-1 dim with any stride
    (lambda: torch.empty(2, 8, 4, 16).transpose(1, 2), False),  # dense, permuted: empty_like keeps it
    (lambda: torch.empty(2, 4, 8, 32)[..., :16], False),  # not dense
])
def test_like_only_where_empty_like_is_contiguous(make, ok):
    t = make()
    assert like(t, tuple(t.shape)) is ok
    if ok:
        assert torch.empty_like(t).is_contiguous()
    assert not like(t, tuple(t.shape[:-1]) + (t.shape[-1] + 1,))  # another shape


def test_a_non_tensor_argument_is_named():
    """Entry points name an argument that is not a tensor (not an AttributeError from inside)."""
    from tfla import TflaArgumentError
    from tfla.torch import mlstm_chunkwise, mlstm_recurrent_step
    from tfla.torch.backend_module import mLSTMBackend, mLSTMBackendConfig
    q = torch.randn(1, 2, 64, 64)
    g = torch.randn(1, 2, 64)
    with pytest.raises(TflaArgumentError, match="i must be a torch.Tensor, got float"):
        mlstm_chunkwise(q, q, q, 1.0, g)
    with pytest.raises(TflaArgumentError, match="q must be a torch.Tensor, got NoneType"):
        mlstm_chunkwise(None, q, q, g, g)
    q1, g1 = q[:, :, 0], torch.randn(1, 2, 1)
    states = (torch.zeros(1, 2, 64, 64), torch.zeros(1, 2, 64), torch.zeros(1, 2, 1))
    with pytest.raises(TflaArgumentError, match="f must be a torch.Tensor, got list"):
        mlstm_recurrent_step(q1, q1, q1, g1, [1.0], *states)
    with pytest.raises(TflaArgumentError, match="c must be a torch.Tensor, got NoneType"):
        mlstm_recurrent_step(q1, q1, q1, g1, g1, None, *states[1:])
    backend = mLSTMBackend(mLSTMBackendConfig(mode="inference"))
    with pytest.raises(TflaArgumentError, match="v must be a torch.Tensor, got int"):
        backend(q[:, :, :1], q[:, :, :1], 3, g[:, :, :1], g[:, :, :1])
