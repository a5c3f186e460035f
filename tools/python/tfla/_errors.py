"""Exceptions of the tfla binding.

Every failure reaches Python as a TflaError subclass. Argument problems (a wrong dtype, device,
shape or layout, found by the binding before the library is called, or by the library itself)
are TflaArgumentError, which is also a ValueError, so code that catches ValueError keeps working.
Library statuses map one to one onto the classes below (src/include/tfla/tfla.h, tfla_status).
"""


class TflaError(RuntimeError):
    """A tfla failure. `status` is the library's tfla_status (0 when raised by the binding)."""

    def __init__(self, message, status=0):
        super().__init__(message)
        self.status = status


class TflaArgumentError(TflaError, ValueError):
    """A bad tensor, shape, dtype, device, layout or option (TFLA_ERROR_INVALID_ARGUMENT)."""

    def __init__(self, message, status=1):
        super().__init__(message, status)


class TflaUnsupportedError(TflaError):
    """A valid request this build or device cannot run (TFLA_ERROR_UNSUPPORTED)."""


class TflaNoDriverError(TflaError):
    """No CUDA driver or no device (TFLA_ERROR_NO_DRIVER)."""


class TflaCudaError(TflaError):
    """A CUDA driver call failed (TFLA_ERROR_CUDA)."""


class TflaCompileError(TflaError):
    """NVRTC failed to compile a kernel; the message carries the log (TFLA_ERROR_COMPILE)."""


class TflaCacheError(TflaError):
    """The tuned-config / cubin cache failed (TFLA_ERROR_CACHE)."""


class TflaLibraryNotFoundError(TflaError, ImportError):
    """libtfla.so could not be loaded; the message lists every place that was tried."""


STATUS_CLASSES = {
    1: TflaArgumentError,
    2: TflaUnsupportedError,
    3: TflaNoDriverError,
    4: TflaCudaError,
    5: TflaCompileError,
    6: TflaCacheError,
}

STATUS_NAMES = {
    0: "TFLA_OK",
    1: "TFLA_ERROR_INVALID_ARGUMENT",
    2: "TFLA_ERROR_UNSUPPORTED",
    3: "TFLA_ERROR_NO_DRIVER",
    4: "TFLA_ERROR_CUDA",
    5: "TFLA_ERROR_COMPILE",
    6: "TFLA_ERROR_CACHE",
    7: "TFLA_ERROR_INTERNAL",
}


def error_for_status(status, message):
    """The exception for a non-zero tfla_status and the library's last-error message."""
    cls = STATUS_CLASSES.get(status, TflaError)
    name = STATUS_NAMES.get(status, f"status {status}")
    return cls(f"{message} [{name}]" if message else name, status)
