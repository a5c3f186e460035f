"""A float64 PyTorch reference of the mLSTM for tests: the recurrent definition of DESIGN.md
section 3, token by token, differentiable with the seed's convention (the normalizer den_t and
the stabilizer m_t are held constant in the backward), so its autograd gradients are what
tfla's backward computes. Cost O(S B NH Dqk Dv) time and autograd memory: small shapes only.
"""

import torch
import torch.nn.functional as F


def mlstm_recurrent_reference(q, k, v, i, f, c_initial=None, n_initial=None, m_initial=None, *,
                              variant="exp", normalize=True, eps=1e-6, qk_scale=None):
    """h (B, NH, S, Dv) and the last states (C, n, m), all float64.

    q, k: (B, NH, S, Dqk); v: (B, NH, S, Dv); i, f: (B, NH, S); optional c_initial
    (B, NH, Dqk, Dv), n_initial (B, NH, Dqk), m_initial (B, NH, 1) or (B, NH). Inputs are
    converted to float64 (differentiably: gradients reach the caller's tensors)."""
    q, k, v, i, f = (t.double() for t in (q, k, v, i, f))
    B, NH, S, Dqk = q.shape
    Dv = v.shape[-1]
    s = Dqk ** -0.5 if qk_scale is None else qk_scale
    zeros = dict(dtype=torch.float64, device=q.device)
    C = c_initial.double() if c_initial is not None else torch.zeros(B, NH, Dqk, Dv, **zeros)
    n = n_initial.double() if n_initial is not None else torch.zeros(B, NH, Dqk, **zeros)
    if variant == "exp" and m_initial is not None:
        m = m_initial.double().reshape(B, NH).detach()
    else:
        m = torch.zeros(B, NH, **zeros)
    logf = F.logsigmoid(f)
    logi = i if variant == "exp" else F.logsigmoid(i)
    hs = []
    for t in range(S):
        if variant == "exp":
            m_new = torch.maximum(logf[..., t] + m, logi[..., t]).detach()
        else:
            m_new = m
        fa = torch.exp(logf[..., t] + m - m_new)
        ia = torch.exp(logi[..., t] - m_new)
        kt, vt, qt = k[:, :, t], v[:, :, t], q[:, :, t] * s
        C = fa[..., None, None] * C + ia[..., None, None] * (kt[..., :, None] * vt[..., None, :])
        n = fa[..., None] * n + ia[..., None] * kt
        num = torch.einsum("bhd,bhde->bhe", qt, C)
        qn = (n * qt).sum(-1).abs()
        if variant == "exp":
            den = torch.maximum(qn, torch.exp(-m_new))
        elif normalize:
            den = torch.clamp(qn, min=1.0)
        else:
            den = torch.ones_like(qn)
        hs.append(num / (den.detach() + eps)[..., None])
        m = m_new
    return torch.stack(hs, dim=2), (C, n, m[..., None])
