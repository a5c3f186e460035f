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
