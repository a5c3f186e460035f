"""The per-call fast path's contract without a GPU: `tools/bench/hostpath_profile.py --selftest`
runs the torch entry points on CPU tensors against a stub libtfla (compiled there with cc) and
checks that warm calls build and query nothing, write the pointers of the tensors they get into
the prepared structs, and that a changed shape, dtype or layout raises the checks' error or makes
a new entry, never reuses a previous one; with the C step path (tfla.torch._fast, built here
with torch.utils.cpp_extension) and the C tensor guard, with the C step path and the dict key
alone (TFLA_NO_TENSOR_GUARDS=1), and with the ctypes path only
(TFLA_TORCH_EXTENSION=0). Skipped without torch or a C compiler."""

import os
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("torch")
if not (shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")):
    pytest.skip("no C compiler for the stub libtfla", allow_module_level=True)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
TOOL = os.path.join(REPO, "tools", "bench", "hostpath_profile.py")


@pytest.mark.parametrize("guards,ext", [("tensor guard", "C step path"), ("dict key only", "C step path"),
                                        ("tensor guard", "ctypes only")])
def test_fast_path_contract_on_the_stub(guards, ext):
    env = dict(os.environ)
    env.pop("TFLA_LIBRARY", None)
    if guards == "dict key only":
        env["TFLA_NO_TENSOR_GUARDS"] = "1"
    else:
        env.pop("TFLA_NO_TENSOR_GUARDS", None)
    # the C step path (tfla.torch._fast) required where torch and a compiler are: a build
    # failure fails the test instead of falling back
    env["TFLA_TORCH_EXTENSION"] = "1" if ext == "C step path" else "0"
    run = subprocess.run([sys.executable, TOOL, "--selftest"], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "0 failure(s)" in run.stdout
