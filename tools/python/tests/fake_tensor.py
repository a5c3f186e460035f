"""A stand-in for torch.Tensor with just what tfla's argument checks read (shape, stride(),
dtype, device, data_ptr()), so those checks are tested where torch is not installed."""

from dataclasses import dataclass


@dataclass(frozen=True)
class FakeDtype:
    name: str

    def __str__(self):
        return f"torch.{self.name}"


@dataclass(frozen=True)
class FakeDevice:
    type: str
    index: int = None


bf16, fp16, fp32, fp64 = (FakeDtype(n) for n in ("bfloat16", "float16", "float32", "float64"))
CUDA0, CUDA1, CPU = FakeDevice("cuda", 0), FakeDevice("cuda", 1), FakeDevice("cpu")


def contiguous_strides(shape):
    out, acc = [], 1
    for s in reversed(shape):
        out.append(acc)
        acc *= s
    return tuple(reversed(out))


class FakeTensor:
    _next_ptr = 1 << 20

    def __init__(self, shape, dtype=bf16, device=CUDA0, strides=None, ptr=None):
        self.shape = tuple(shape)
        self._strides = tuple(strides) if strides is not None else contiguous_strides(self.shape)
        self.dtype = dtype
        self.device = device
        if ptr is None:
            ptr = FakeTensor._next_ptr
            FakeTensor._next_ptr += 1 << 24  # distinct, 16-byte aligned
        self._ptr = ptr

    def stride(self):
        return self._strides

    def data_ptr(self):
        return self._ptr

    def transpose12(self):
        """x.transpose(1, 2) of a 4-D tensor (a (B, S, NH, D) projection viewed as (B, NH, S, D))."""
        s = list(self.shape)
        st = list(self._strides)
        s[1], s[2] = s[2], s[1]
        st[1], st[2] = st[2], st[1]
        return FakeTensor(s, self.dtype, self.device, st, self._ptr)
