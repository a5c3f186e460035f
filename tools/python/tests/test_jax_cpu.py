"""tfla.jax without a GPU: the module imports, libtfla_jax loads and registers its FFI targets,
and the calls' argument checks raise TflaArgumentError naming the problem. Skipped where JAX is
not installed or libtfla_jax was not built (tools/check_jax.sh builds and runs them in CI)."""

import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

import tfla  # noqa: E402
import tfla.jax as tj  # noqa: E402
from tfla import TflaArgumentError, TflaLibraryNotFoundError  # noqa: E402

try:
    tj.load_jax_library()
except TflaLibraryNotFoundError as e:  # pragma: no cover
    pytest.skip(f"libtfla_jax not available: {e}", allow_module_level=True)


def _inputs(B=1, NH=2, S=8, Dqk=64, Dv=64, dtype=jnp.bfloat16, gate=jnp.float32):
    z = jnp.zeros
    return (z((B, NH, S, Dqk), dtype), z((B, NH, S, Dqk), dtype), z((B, NH, S, Dv), dtype),
            z((B, NH, S), gate), z((B, NH, S), gate))


@pytest.fixture
def on_gpu(monkeypatch):
    """Makes the backend check pass, so the argument checks behind it run on this machine."""
    monkeypatch.setattr(tj, "_check_backend", lambda: None)


def test_targets_registered_for_cuda():
    lib = tj.load_jax_library()
    assert lib is tj.load_jax_library()  # once per process
    assert lib.tfla_jax_abi_version() == tfla._library.ABI_VERSION
    # the CUDA registrations: pending in xla_client until a CUDA plugin loads (none here), or
    # in the plugin's table (JAX internals: skipped where they differ)
    from jax._src.lib import xla_client as xc
    pending = getattr(xc, "_custom_callback", None)
    if not isinstance(pending, dict):
        pytest.skip("this JAX keeps its FFI registrations elsewhere")
    names = {entry[0] for entry in pending.get("CUDA", [])}
    try:
        names |= set(xc.custom_call_targets("CUDA"))
    except Exception:  # noqa: BLE001  (no CUDA platform)
        pass
    if not names and jax.default_backend() == "gpu":
        pytest.skip("the CUDA plugin keeps the registrations (test_jax_gpu.py runs the targets)")
    assert {"tfla_mlstm_forward", "tfla_mlstm_backward", "tfla_mlstm_step"} <= names

def test_cpu_backend_is_refused_by_name():
    if jax.default_backend() == "gpu":
        pytest.skip("this machine's JAX has a GPU")
    with pytest.raises(TflaArgumentError, match="CUDA GPUs.*default backend is 'cpu'"):
        tj.mlstm_chunkwise(*_inputs())
    with pytest.raises(TflaArgumentError, match="CUDA GPUs"):
        q, k, v, i, f = _inputs(S=1)
        tj.mlstm_recurrent_step(q[:, :, 0], k[:, :, 0], v[:, :, 0], i[:, :, 0], f[:, :, 0],
                                jnp.zeros((1, 2, 64, 64)), jnp.zeros((1, 2, 64)), jnp.zeros((1, 2, 1)))


@pytest.mark.parametrize("change, message", [
    (lambda a: (a[0][..., :32],) + a[1:], "k has shape"),
    (lambda a: (a[0].astype(jnp.int8),) + a[1:], "dtype int8"),
    (lambda a: a[:2] + (a[2].astype(jnp.float16),) + a[3:], "must share one dtype"),
    (lambda a: a[:3] + (a[3][..., :4],) + a[4:], "gates are"),
    (lambda a: a[:3] + (a[3].astype(jnp.float16), a[4].astype(jnp.float16)), "gates must be float32 or the input dtype"),
    (lambda a: (a[0][0],) + a[1:], "must be 4-D"),
    (lambda a: tuple(x[:, :, :0] for x in a), "empty"),
    (lambda a: (None,) + a[1:], "q is None"),
    (lambda a: ([[1.0]],) + a[1:], "must be a JAX array"),
])
def test_chunkwise_argument_errors(on_gpu, change, message):
    with pytest.raises(TflaArgumentError, match=message):
        tj.mlstm_chunkwise(*change(_inputs()))


def test_chunkwise_option_and_state_errors(on_gpu):
    args = _inputs()
    with pytest.raises(TflaArgumentError, match="variant"):
        tj.mlstm_chunkwise(*args, variant="lin")
    with pytest.raises(TflaArgumentError, match="normalize=False exists only"):
        tj.mlstm_chunkwise(*args, normalize=False)
    with pytest.raises(TflaArgumentError, match="eps"):
        tj.mlstm_chunkwise(*args, eps=-1.0)
    with pytest.raises(TflaArgumentError, match="c_initial has shape"):
        tj.mlstm_chunkwise(*args, c_initial=jnp.zeros((1, 2, 64, 32)))
    with pytest.raises(TflaArgumentError, match="float32"):
        tj.mlstm_chunkwise(*args, n_initial=jnp.zeros((1, 2, 64), jnp.bfloat16))
    with pytest.raises(TflaArgumentError, match="chunk_size must be an int"):
        tj.mlstm_chunkwise(*args, chunk_size=64.5)
    with pytest.raises(TflaArgumentError, match="config"):
        tj.mlstm_chunkwise(*args, config=3)


def test_step_argument_errors(on_gpu):
    q, k, v, i, f = (x[:, :, 0] for x in _inputs(S=1))
    C, n, m = jnp.zeros((1, 2, 64, 64)), jnp.zeros((1, 2, 64)), jnp.zeros((1, 2, 1))
    with pytest.raises(TflaArgumentError, match="m is None"):
        tj.mlstm_recurrent_step(q, k, v, i, f, C, n, None)
    with pytest.raises(TflaArgumentError, match="c has shape"):
        tj.mlstm_recurrent_step(q, k, v, i, f, C[..., :32], n, m)
    with pytest.raises(TflaArgumentError, match="float32"):
        tj.mlstm_recurrent_step(q, k, v, i, f, C.astype(jnp.bfloat16), n, m)
    with pytest.raises(TflaArgumentError, match="one-token gates"):
        tj.mlstm_recurrent_step(q, k, v, i[:, :1], f, C, n, m)


def test_missing_library_is_named(monkeypatch, tmp_path):
    monkeypatch.setattr(tj, "_jax_lib", None)
    monkeypatch.setenv("TFLA_JAX_LIBRARY", str(tmp_path / "libtfla_jax.so"))
    with pytest.raises(TflaLibraryNotFoundError, match="TFLA_JAX_LIBRARY"):
        tj.load_jax_library()
