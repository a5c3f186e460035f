"""The recurrent step (generation) on torch tensors.

`mlstm_recurrent_step` has the signature of mlstm_kernels.torch.recurrent's step kernels
(q, k, v, i, f, c, n, m, eps, dtype_state) and returns (h, (c_new, n_new, m_new)) like them.
tfla's step kernel updates the states in place; by default this function first copies them
(the seed returns new tensors and leaves its inputs alone); inplace=True skips that copy and
returns the updated input tensors, the fast choice for a generation loop. A (B, NH, T, D)
q/k/v with (B, NH, T) gates runs T tokens in one fused call. Prefill hand-off: the last
states of mlstm_chunkwise__xl_chunk(..., return_last_states=True) are valid c, n, m here.
"""

import torch

from .. import _binding
from .._checks import check_step
from .._errors import TflaArgumentError
from ._runtime import device_guard, info, ptr, stream_handle


def mlstm_recurrent_step(
    q: torch.Tensor,  # (B, NH, DHQK) or (B, NH, T, DHQK)
    k: torch.Tensor,  # (B, NH, DHQK) or (B, NH, T, DHQK)
    v: torch.Tensor,  # (B, NH, DHV) or (B, NH, T, DHV)
    i: torch.Tensor,  # (B, NH, 1) or (B, NH, T)
    f: torch.Tensor,  # (B, NH, 1) or (B, NH, T)
    c: torch.Tensor,  # (B, NH, DHQK, DHV) float32
    n: torch.Tensor,  # (B, NH, DHQK) float32
    m: torch.Tensor,  # (B, NH, 1) float32 (None allowed for variant "sig")
    eps: float = 1e-6,
    dtype_state: torch.dtype = torch.float32,
    *,
    variant: str = "exp",
    normalize: bool = True,
    qk_scale: float = None,
    inplace: bool = False,
    config=None,
    **kwargs,
):
    """One (or T fused) mLSTM generation step(s). Returns (h, (c, n, m)); h is (B, NH, DHV)
    (or (B, NH, T, DHV)). No autograd (generation only)."""
    if dtype_state != torch.float32:
        raise TflaArgumentError(f"dtype_state={dtype_state}: tfla keeps the mLSTM states in float32")
    plan = check_step(info("q", q), info("k", k), info("v", v), info("i", i), info("f", f),
                      info("c", c), info("n", n), None if m is None else info("m", m),
                      variant=variant, normalize=normalize, eps=eps, scale=qk_scale)
    if not inplace:
        c, n = c.clone(), n.clone()
        m = m.clone() if m is not None else None
    if variant == "sig" and m is None:
        m = torch.zeros((plan.B, plan.NH, 1), dtype=torch.float32, device=q.device)
    h = torch.empty(tuple(v.shape), dtype=q.dtype, device=q.device)
    p = dict(q=ptr(q), k=ptr(k), v=ptr(v), i=ptr(i), f=ptr(f), h=ptr(h), C=ptr(c), n=ptr(n),
             m=ptr(m) if variant == "exp" else 0)
    with torch.no_grad(), device_guard(q.device):
        _binding.step(plan, p, stream_handle(q.device), config)
    return h, (c, n, m)


def mlstm_recurrent_step__tfla(q, k, v, i, f, c, n, m, eps=1e-6, dtype_state=torch.float32, **kwargs):
    """The seed's step-kernel interface (mlstm_recurrent_step__native / __triton)."""
    return mlstm_recurrent_step(q, k, v, i, f, c, n, m, eps=eps, dtype_state=dtype_state, **kwargs)
