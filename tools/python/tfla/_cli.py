"""The `tfla` console script: runs the tfla CLI binary installed inside this package
(tfla/bin/tfla, next to tfla/lib/libtfla.so), with the same NVRTC search hints as the library."""

import os
import sys

from ._library import _package_dir, export_nvrtc_search_path


def main():
    exe = os.path.join(_package_dir(), "bin", "tfla")
    if not os.access(exe, os.X_OK):
        sys.stderr.write(
            f"tfla: the command-line tool is not installed ({exe} is missing): this package was "
            "built with TFLA_BUILD_TOOLS=OFF. Reinstall with `pip install ./tools/python`, or "
            "build the CLI with CMake (build/tools/tfla).\n")
        return 1
    export_nvrtc_search_path()
    os.execv(exe, [exe] + sys.argv[1:])
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
