"""The ctypes layer without a GPU: where libtfla is looked for, the C struct layouts against a
C compiler's, and the library's size/config queries and argument errors (which need no
device). Tests that need the built library skip when it cannot be loaded."""

import ctypes
import os
import re
import shutil
import subprocess

import pytest

import tfla
from tfla import _library
from tfla._binding import make_plan

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


@pytest.fixture
def fresh_loader(monkeypatch):
    _library._reset_for_tests()
    yield monkeypatch
    _library._reset_for_tests()


def test_tfla_library_env_wins_and_errors_name_it(fresh_loader, tmp_path):
    missing = str(tmp_path / "nowhere" / "libtfla.so")
    fresh_loader.setenv("TFLA_LIBRARY", missing)
    assert _library.candidate_paths() == [("$TFLA_LIBRARY", missing)]
    with pytest.raises(tfla.TflaLibraryNotFoundError, match="TFLA_LIBRARY") as e:
        tfla.library_path()
    assert missing in str(e.value) and "no such file" in str(e.value)
    assert isinstance(e.value, ImportError)


def test_bad_library_file_is_reported(fresh_loader, tmp_path):
    bogus = tmp_path / "libtfla.so"
    bogus.write_bytes(b"not an ELF file")
    fresh_loader.setenv("TFLA_LIBRARY", str(bogus))
    with pytest.raises(tfla.TflaLibraryNotFoundError, match=str(bogus)):
        tfla.library_path()


def test_search_order_without_env(fresh_loader):
    fresh_loader.delenv("TFLA_LIBRARY", raising=False)
    wheres = [w for w, _ in _library.candidate_paths()]
    assert wheres[0] == "next to the package"
    paths = [p for w, p in _library.candidate_paths() if w == "repository build folder"]
    assert paths and paths[0] == os.path.join(REPO, "build", "src", "libtfla.so")


def test_not_found_message_lists_every_place(fresh_loader, tmp_path):
    fresh_loader.delenv("TFLA_LIBRARY", raising=False)
    fresh_loader.setattr(_library, "candidate_paths", lambda: [("repository build folder", str(tmp_path / "x.so"))])
    fresh_loader.setattr(_library.ctypes.util, "find_library", lambda name: None)
    fresh_loader.setenv("LD_LIBRARY_PATH", str(tmp_path))
    try:
        ctypes.CDLL("libtfla.so")
        pytest.skip("a libtfla.so is on the loader path of this machine")
    except OSError:
        pass
    with pytest.raises(tfla.TflaLibraryNotFoundError) as e:
        tfla.library_path()
    msg = str(e.value)
    assert "x.so (no such file)" in msg and "loader path: libtfla.so" in msg and "TFLA_LIBRARY" in msg


def _stub_library(tmp_path, body):
    """A shared library compiled from C source `body` (None where no C compiler is found)."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        return None
    src = tmp_path / "stub.c"
    src.write_text(body)
    lib = tmp_path / "libtfla.so"
    subprocess.run([cc, "-shared", "-fPIC", str(src), "-o", str(lib)], check=True)
    return str(lib)


def test_binding_abi_version_is_the_headers():
    with open(os.path.join(REPO, "src", "include", "tfla", "tfla.h")) as fh:
        m = re.search(r"^#define TFLA_ABI_VERSION (\d+)$", fh.read(), re.M)
    assert m, "tfla.h defines TFLA_ABI_VERSION"
    assert _library.ABI_VERSION == int(m.group(1))


@pytest.mark.parametrize("body, says", [
    ("int tfla_abi_version(void) { return 999; }", "C ABI version 999, but this binding is written for version"),
    ("int tfla_version_of_nothing(void) { return 0; }", "no tfla_abi_version: a library older than this binding"),
])
def test_a_library_of_another_abi_is_refused_by_name(fresh_loader, tmp_path, body, says):
    lib = _stub_library(tmp_path, body)
    if lib is None:
        pytest.skip("no C compiler to build a stub library")
    fresh_loader.setenv("TFLA_LIBRARY", lib)
    with pytest.raises(tfla.TflaLibraryNotFoundError) as e:
        tfla.library_path()
    assert lib in str(e.value) and says in str(e.value)


def test_the_search_passes_over_a_library_of_another_abi(fresh_loader, tmp_path):
    stale = _stub_library(tmp_path, "int tfla_abi_version(void) { return 999; }")
    if stale is None:
        pytest.skip("no C compiler to build a stub library")
    fresh_loader.delenv("TFLA_LIBRARY", raising=False)
    real = os.path.join(REPO, "build", "src", "libtfla.so")
    places = [("repository build folder", stale), ("repository build folder", real)]
    fresh_loader.setattr(_library, "candidate_paths", lambda: places)
    if not os.path.exists(real):
        pytest.skip("libtfla not built")
    assert tfla.library_path() == os.path.realpath(real)


# ---- struct layouts against the C header -----------------------------------------------------

_STRUCTS = {
    "tfla_problem": _library.Problem, "tfla_strides": _library.Strides,
    "tfla_forward_tensors": _library.ForwardTensors, "tfla_backward_tensors": _library.BackwardTensors,
    "tfla_step_tensors": _library.StepTensors, "tfla_backend_options": _library.BackendOptions,
}


def test_struct_layouts_match_the_header(tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler to read the header's layouts")
    lines = ['#include <stdio.h>', '#include <stddef.h>', '#include "tfla/tfla.h"', "int main(void) {"]
    for cname, py in _STRUCTS.items():
        lines.append(f'printf("{cname} sizeof %zu\\n", sizeof({cname}));')
        for field, _ in py._fields_:
            lines.append(f'printf("{cname} {field} %zu\\n", offsetof({cname}, {field}));')
    lines.append("return 0; }")
    src = tmp_path / "layout.c"
    src.write_text("\n".join(lines))
    exe = tmp_path / "layout"
    subprocess.run([cc, "-std=c11", "-I", os.path.join(REPO, "src", "include"), str(src), "-o", str(exe)],
                   check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        cname, field, value = line.split()
        py = _STRUCTS[cname]
        got = ctypes.sizeof(py) if field == "sizeof" else getattr(py, field).offset
        assert got == int(value), f"{cname}.{field}: ctypes {got}, C {value}"


# ---- the real library, no GPU needed -------------------------------------------------------------

@pytest.fixture(scope="module")
def lib():
    _library._reset_for_tests()
    try:
        return _library.load_library()
    except tfla.TflaLibraryNotFoundError as e:
        pytest.skip(f"libtfla not built: {str(e).splitlines()[0]}")


def test_version(lib):
    assert tfla.library_version()
    assert os.path.exists(tfla.library_path())


def test_size_queries(lib):
    p = tfla.problem(2, 4, 1000, 64, 128)
    ws = tfla.forward_workspace_size(p, "chunk=128")
    saved = tfla.saved_size(p, "chunk=128")
    assert ws > 0 and saved >= ws  # the saved layout adds the last state and the n states
    assert tfla.forward_workspace_size(p, "chunk=64") > ws  # twice the chunk states
    full = tfla.backward_workspace_size(p, {"chunk": 128})
    with_saved = tfla.backward_workspace_size(p, {"chunk": 128}, saved=True)
    # With the forward's saved buffer the backward's workspace shrinks by that buffer's size
    # less its n states (the library's own layout; the binding relies on the query alone).
    B, NH, S, Dqk, L = 2, 4, 1000, 64, 128
    nc = (S + L - 1) // L
    assert 0 < with_saved < full
    assert with_saved == full - saved + (B * NH * nc * Dqk * 4 + 255) // 256 * 256


def test_config_lookups(lib):
    p = tfla.problem(8, 8, 8192, 256, 512)
    fwd = tfla.forward_config(p)
    assert fwd["chunk"] >= 16 and fwd["chunk"] % 16 == 0 and "siz_b_q" in fwd
    assert tfla.forward_config(p, "chunk=128")["chunk"] == 128
    assert tfla.backward_config(p, {"chunk": 64})["chunk"] == 64


def test_saved_backward_config_keeps_the_backwards_keys(lib):
    # a backward reading saved states takes the forward's chunk and keeps its other pinned keys
    p = tfla.problem(2, 2, 4096, 64, 64)
    cfg = tfla._binding.parse_config(tfla._binding.saved_backward_config(p, "chunk=256", "chunk=64,siz_b_r=32"))
    assert cfg == {"chunk": 256, "siz_b_r": 32}
    # the saved states are the chunkwise form's: a pinned parallel form gives way
    cfg = tfla._binding.parse_config(tfla._binding.saved_backward_config(p, "chunk=128", "parallel=1"))
    assert cfg == {"chunk": 128}
    assert tfla._binding.saved_backward_config(p, "chunk=128", "chunk=128") == "chunk=128"


def test_saved_states_follow_the_forward_s_chunkwise_fallback(lib):
    # a short sequence whose forward default is the parallel form: with a saved buffer the forward
    # runs the chunkwise form with the caller's other pins (here the engine), so the buffer's size
    # and the backward's chunk are those of that chunkwise config
    p = tfla.problem(1, 2, 64, 64, 64)
    assert tfla.forward_config(p)["parallel"] == 1
    default = tfla.forward_config(p, "parallel=0")
    pinned = tfla.forward_config(p, "engine=0,parallel=0")
    assert pinned["chunk"] != default["chunk"]  # (the case where the two differ)
    for fwd, want in ((None, default), ("engine=0", pinned)):
        assert tfla.saved_size(p, fwd) == tfla.saved_size(p, f"parallel=0,chunk={want['chunk']}")
        cfg = tfla._binding.parse_config(tfla._binding.saved_backward_config(p, fwd, None))
        assert tfla.backward_config(p, cfg)["chunk"] == want["chunk"]


def test_packed_problems_pass_through_the_binding(lib):
    # the Plan's packed fields reach the C struct: 7 sequences of at most 200 tokens are sized as
    # a batch of 7 sequences of the length bucket 256
    import dataclasses
    p = dataclasses.replace(tfla.problem(1, 4, 1000, 64, 128), num_seqs=7, max_seqlen=200)
    cfg = tfla._binding.kernel_config(p, "fwd")
    assert cfg["parallel"] == 0 and cfg["st_seg"] == 1
    batch = tfla.problem(7, 4, 256, 64, 128)
    assert tfla.forward_workspace_size(p) == tfla.forward_workspace_size(batch, cfg)
    with pytest.raises(tfla.TflaArgumentError, match=r"max_seqlen = 2000 must be in \[1, T = S = 1000\]"):
        tfla.forward_workspace_size(dataclasses.replace(p, max_seqlen=2000))


def test_library_argument_errors_become_value_errors(lib):
    with pytest.raises(tfla.TflaArgumentError, match=r"Dqk = 24 is unsupported") as e:
        tfla.forward_workspace_size(tfla.problem(1, 1, 64, 24, 64))
    assert isinstance(e.value, ValueError) and e.value.status == 1
    with pytest.raises(tfla.TflaArgumentError, match=r"unknown forward config key 'chunky'"):
        tfla.forward_config(tfla.problem(1, 1, 64, 64, 64), "chunky=3")
    with pytest.raises(tfla.TflaArgumentError, match=r"unknown op 'fwbw'"):
        tfla._binding.kernel_config(tfla.problem(1, 1, 64, 64, 64), "fwbw")


def test_backend_choice_without_gpu(lib):
    b = tfla.Backend(mode="inference", max_step_tokens=16)
    assert b.choose(1, 2, 4, 64, 64, last_states=True) == "step"
    assert b.choose(1, 2, 4096, 64, 64, last_states=True) == "chunkwise"
    with pytest.raises(tfla.TflaArgumentError, match="mode must be"):
        tfla.Backend(mode="eval")
    b.close()


def _has_gpu():
    return os.path.exists("/dev/nvidiactl") or shutil.which("nvidia-smi") is not None


@pytest.mark.skipif(_has_gpu(), reason="fake pointers must never reach a real GPU")
def test_forward_without_driver_is_a_clear_error(lib):
    from tfla import _binding
    plan = make_plan(1, 1, 64, 64, 64)
    plan.strides.update({n: (0, 0, 0) for n in ("q", "k", "v", "i", "f")})
    # 16-byte aligned, 1 GiB apart, never dereferenced: the driver is missing (h may not share
    # the inputs' bytes; the inputs may share one buffer)
    fake = 1 << 30
    p = dict(q=fake, k=fake, v=fake, i=fake, f=fake, h=2 * fake)
    with pytest.raises(tfla.TflaError) as e:
        _binding.forward(plan, p, 0)
    assert e.value.status in (3, 4) and str(e.value)  # no driver / no device
