"""runtime_info() and the NVRTC search hints the package gives libtfla (no GPU needed)."""

import os
import sys

import pytest

import tfla
from tfla import _library


def _fake_wheel(root, layout="nvidia/cu13/lib/libnvrtc.so.13"):
    path = root / layout
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    return str(root)


def test_nvrtc_wheel_dirs_finds_both_layouts(tmp_path, monkeypatch):
    cu13 = _fake_wheel(tmp_path / "site13")
    cu12 = _fake_wheel(tmp_path / "site12", "nvidia/cuda_nvrtc/lib/libnvrtc.so.12")
    (tmp_path / "empty").mkdir()
    monkeypatch.setattr(sys, "path", [str(tmp_path / "empty"), cu13, "", cu12, cu13])
    assert _library.nvrtc_wheel_dirs() == [cu13, cu12]


def test_export_appends_to_the_search_path_once(tmp_path, monkeypatch):
    site = _fake_wheel(tmp_path / "site")
    monkeypatch.setattr(sys, "path", [site])
    monkeypatch.delenv("TFLA_NVRTC", raising=False)
    monkeypatch.setenv("TFLA_NVRTC_SEARCH_PATH", "/opt/mine")
    _library.export_nvrtc_search_path()
    _library.export_nvrtc_search_path()
    assert os.environ["TFLA_NVRTC_SEARCH_PATH"] == "/opt/mine:" + site


def test_export_leaves_an_explicit_nvrtc_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", [_fake_wheel(tmp_path / "site")])
    monkeypatch.setenv("TFLA_NVRTC", "/opt/nvrtc/libnvrtc.so.13")
    monkeypatch.delenv("TFLA_NVRTC_SEARCH_PATH", raising=False)
    _library.export_nvrtc_search_path()
    assert "TFLA_NVRTC_SEARCH_PATH" not in os.environ


@pytest.fixture(scope="module")
def info():
    _library._reset_for_tests()
    try:
        return tfla.runtime_info()
    except tfla.TflaLibraryNotFoundError as e:
        pytest.skip(f"libtfla not built: {str(e).splitlines()[0]}")


def test_runtime_info_reports_library_nvrtc_and_driver(info):
    assert info["tfla_version"] == tfla.library_version()
    assert info["abi_version"] == _library.ABI_VERSION
    assert os.path.samefile(info["library_path"], tfla.library_path())
    if info["nvrtc_loaded"]:
        assert os.path.isfile(info["nvrtc_path"]) and os.path.isfile(info["nvrtc_builtins_path"])
        assert info["nvrtc_found_by"] and not info["nvrtc_error"]
        major, minor = (int(x) for x in info["nvrtc_version"].split("."))
        assert major >= 12
    else:
        assert info["nvrtc_error"].startswith("NVRTC not")
    if info["driver_loaded"]:
        assert info["driver_version"] > 0 and not info["driver_error"]
    else:
        assert info["driver_error"] and info["devices"] == []
    for d in info["devices"]:
        assert d["name"] and d["arch"].startswith("sm_") and d["sm_count"] > 0
