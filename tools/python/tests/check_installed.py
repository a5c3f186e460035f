"""Checks an installed tfla package from the outside, as a user would see it (run by
tools/check_pip_install.sh in the venv it installed into, with the working directory outside
the checkout, so nothing falls back to the checkout's build folders):

- `import tfla` works and finds libtfla inside the installed package, with no TFLA_LIBRARY;
  the package holds tfla/torch/_fast.cpp (the C step path's source, built at run time);
- the CPU-side queries answer without a GPU or driver: versions, runtime_info() (a missing
  driver is reported, not raised), a forward config and its workspace size;
- NVRTC was found, and by the search step named with --nvrtc-found-by (a substring), e.g.
  "wheel" after `pip install nvidia-cuda-nvrtc`.

usage: python check_installed.py [--nvrtc-found-by TEXT]     exit 0 when every check passed
"""

import argparse
import os
import sys
import sysconfig


def check(cond, what):
    print(("ok    " if cond else "FAIL  ") + what)
    if not cond:
        sys.exit(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nvrtc-found-by", default="", help="substring expected in nvrtc_found_by")
    args = ap.parse_args()
    check("TFLA_LIBRARY" not in os.environ, "TFLA_LIBRARY is not set")

    import tfla

    site = os.path.realpath(sysconfig.get_paths()["platlib"])
    pkg = os.path.realpath(os.path.dirname(tfla.__file__))
    check(pkg.startswith(site + os.sep), f"tfla imported from the venv: {pkg}")
    lib = os.path.realpath(tfla.library_path())
    check(lib.startswith(os.path.join(pkg, "lib") + os.sep), f"libtfla inside the package: {lib}")
    fast = os.path.join(pkg, "torch", "_fast.cpp")
    check(os.path.isfile(fast), f"the C step path's source is in the package: {fast}")
    check(tfla.library_version() == tfla.__version__,
          f"library version {tfla.library_version()} == package version {tfla.__version__}")

    info = tfla.runtime_info()
    check(info["tfla_version"] == tfla.__version__, "runtime_info() tfla_version")
    if info["driver_loaded"]:
        print(f"      driver {info['driver_version']}, {len(info['devices'])} device(s)")
    else:
        check(bool(info["driver_error"]), f"no driver, reported: {info['driver_error']}")
    check(info["nvrtc_loaded"], f"NVRTC {info['nvrtc_version']} loaded: {info['nvrtc_path']} "
                                f"(found by: {info['nvrtc_found_by']}; builtins: "
                                f"{info['nvrtc_builtins_path']}) {info['nvrtc_error']}")
    check(args.nvrtc_found_by in info["nvrtc_found_by"],
          f"NVRTC found by '{info['nvrtc_found_by']}' (expected '{args.nvrtc_found_by}')")
    check(os.path.isfile(info["nvrtc_builtins_path"]), "libnvrtc-builtins loaded from a file")

    p = tfla.problem(2, 4, 1000, 256, 512)
    cfg = tfla.forward_config(p, {"chunk": 128})
    check(cfg.get("chunk") == 128, f"forward_config: {cfg}")
    ws = tfla.forward_workspace_size(p, {"chunk": 128})
    check(ws > 0, f"forward_workspace_size: {ws} bytes")
    print("check_installed.py: all checks passed")


if __name__ == "__main__":
    main()
