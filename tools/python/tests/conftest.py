import os
import sys

# the package is used from the checkout (tools/python) without installing it
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs torch with a CUDA GPU and libtfla (skipped otherwise)")
