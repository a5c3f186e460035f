"""The per-call fast path's contract without a GPU: `tools/bench/hostpath_profile.py --selftest`
runs the torch entry points on CPU tensors against a stub libtfla (compiled there with cc) and
checks that warm calls build and query nothing, write the pointers of the tensors they get into
the prepared structs, and that a changed shape, dtype or layout raises the checks' error or makes
a new entry, never reuses a previous one; once with the C tensor guard, once without it
(TFLA_NO_TENSOR_GUARDS=1: the dict key alone). Skipped without torch or a C compiler."""

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


@pytest.mark.parametrize("guards", ["tensor guard", "dict key only"])
def test_fast_path_contract_on_the_stub(guards):
    env = dict(os.environ)
    env.pop("TFLA_LIBRARY", None)
    if guards == "dict key only":
        env["TFLA_NO_TENSOR_GUARDS"] = "1"
    else:
        env.pop("TFLA_NO_TENSOR_GUARDS", None)
    run = subprocess.run([sys.executable, TOOL, "--selftest"], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "0 failure(s)" in run.stdout
