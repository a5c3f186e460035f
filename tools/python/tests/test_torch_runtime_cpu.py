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
