"""Build backend of the tfla Python package: scikit-build-core, after checking that the C++
project it compiles (the repository root, two folders above tools/python) is there.

The wheel's libtfla is built from the checkout that holds this package (pyproject.toml:
cmake.source-dir = "../.."), so a copy of tools/python on its own, or an sdist of it, cannot
build. Both fail here with a message that says how to build instead, rather than deep inside
CMake.
"""

import os

from scikit_build_core import build as _skbuild
from scikit_build_core.build import (  # noqa: F401  (the PEP 517/660 hooks used unchanged)
    get_requires_for_build_editable, get_requires_for_build_wheel,
    prepare_metadata_for_build_editable, prepare_metadata_for_build_wheel)

_HERE = os.path.dirname(os.path.abspath(__file__))            # tools/python/_build
_PACKAGE_ROOT = os.path.dirname(_HERE)                         # tools/python
_REPO_ROOT = os.path.dirname(os.path.dirname(_PACKAGE_ROOT))  # the checkout


def _check_checkout():
    marker = os.path.join(_REPO_ROOT, "src", "include", "tfla", "tfla.h")
    if not (os.path.isfile(os.path.join(_REPO_ROOT, "CMakeLists.txt")) and os.path.isfile(marker)):
        raise RuntimeError(
            f"tfla: the Python package at {_PACKAGE_ROOT} builds libtfla from the repository two "
            f"folders up, and {_REPO_ROOT} is not a tfla checkout (no CMakeLists.txt and "
            "src/include/tfla/tfla.h). Build from a checkout: `pip install ./tools/python` or "
            "`python -m build --wheel tools/python` (no sdist).")


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _check_checkout()
    return _skbuild.build_wheel(wheel_directory, config_settings, metadata_directory)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    _check_checkout()
    return _skbuild.build_editable(wheel_directory, config_settings, metadata_directory)


def get_requires_for_build_sdist(config_settings=None):
    return []


def build_sdist(sdist_directory, config_settings=None):
    raise RuntimeError(
        "tfla: the Python package has no sdist: its libtfla is compiled from the whole repository "
        "(CMake project at the checkout's root), which an sdist of tools/python would not hold. "
        "Build a wheel from the checkout instead: `python -m build --wheel tools/python` or "
        "`pip wheel ./tools/python`.")
