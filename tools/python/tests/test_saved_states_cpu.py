"""When the chunkwise binding keeps the forward's states for the backward, and what its calls'
workspaces are sized for, against the library's own config and size queries (host-side, no
kernels run). Skipped without torch or a built libtfla."""

import pytest

pytest.importorskip("torch")

import tfla  # noqa: E402
from tfla import _binding, _library  # noqa: E402
from tfla.torch._launch import Options, keeps_saved, parallel_backward, sizes  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def lib():
    try:
        return _library.load_library()
    except tfla.TflaLibraryNotFoundError as e:
        pytest.skip(f"libtfla not built: {str(e).splitlines()[0]}")


def _opts(fwd=None, bwd=None, last=False):
    return Options(variant="exp", normalize=True, eps=1e-6, scale=0.0, fwd_config=fwd, bwd_config=bwd,
                   return_last_states=last, recompute=False)


SHAPES = [(8, 8, 256, 256, 512), (8, 16, 128, 128, 256), (4, 8, 1000, 256, 512), (1, 8, 8192, 256, 512),
          (16, 4, 64, 64, 64), (2, 2, 100, 96, 160)]


@pytest.mark.parametrize("shape", SHAPES)
def test_saved_states_only_where_the_backward_reads_them(shape):
    plan = _binding.make_plan(*shape, dtype="bfloat16")
    opts = _opts()
    par = parallel_backward(plan, opts)
    assert par == (_binding.kernel_config(plan, "bwd").get("parallel") == 1)
    # a stateless call keeps none where the backward runs the parallel form; a call with states
    # (its backward runs chunkwise) keeps them as asked
    assert keeps_saved(plan, opts, True, True) is (not par)
    assert keeps_saved(plan, opts, True, False) is True
    assert keeps_saved(plan, opts, False, True) is False
    # a pinned chunkwise backward reads saved states
    assert keeps_saved(plan, _opts(bwd="parallel=0"), True, True) is True


@pytest.mark.parametrize("shape", SHAPES)
def test_stateless_workspaces_cover_the_form_that_runs(shape):
    plan = _binding.make_plan(*shape, dtype="bfloat16")
    opts = _opts()
    fwd_form = _binding.kernel_config(plan, "fwd").get("parallel", 0)
    bwd_form = _binding.kernel_config(plan, "bwd").get("parallel", 0)
    fwd, bwd_cfg, bwd, split = sizes(plan, opts, False, True)
    assert bwd_cfg is None and split == 0
    assert fwd == _binding.forward_workspace_size(plan, f"parallel={fwd_form}")
    assert bwd == _binding.backward_workspace_size(plan, f"parallel={bwd_form}")
    # with states the sizes also cover the chunkwise fallback, never less
    fwd_s, _, bwd_s, _ = sizes(plan, opts, False, False)
    assert fwd_s == _binding.forward_workspace_size(plan) >= fwd
    assert bwd_s == _binding.backward_workspace_size(plan) >= bwd
    if not fwd_form:
        assert fwd_s == fwd
    if not bwd_form:
        assert bwd_s == bwd


def test_short_sequences_on_the_reference_device_run_the_parallel_form_without_saved_states():
    """Without a GPU the library answers for its reference device (sm_90a): the paper's heads at
    S = 256 run the sm90 parallel form both ways, whose workspaces are a small part of the
    chunkwise fallback's (its chunk states)."""
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("the reference device's answers (a GPU here answers for itself)")
    plan = _binding.make_plan(8, 8, 256, 256, 512, dtype="bfloat16")
    opts = _opts()
    assert _binding.kernel_config(plan, "fwd").get("engine") == 1
    assert parallel_backward(plan, opts)
    assert not keeps_saved(plan, opts, True, True)
    _, _, bwd, _ = sizes(plan, opts, False, True)
    assert 0 < 100 * bwd < _binding.backward_workspace_size(plan)
