"""Context parallelism: one sequence split across the ranks of a torch.distributed group.

Each rank holds a contiguous shard of the sequence, (B, NH, S_r, D) on its own device, in rank
order (rank 0 the first tokens); S_r may differ between ranks. The mLSTM's state recurrence is
linear with scalar decays, so a rank's entering state follows from the earlier ranks' segment
summaries (docs/SEQUENCE_SPLIT.md, "Across GPUs"); the ranks exchange those summaries, never
q, k or v, so the bytes exchanged are independent of S:

- forward: every rank but the first walks its shard from a zero state with no stabilizer history
  (its summary: end state C, n, m and total log-decay G); rank 0 runs its shard from the caller's
  initial state (its end state is exact). One all_gather of the summaries (per rank B NH (Dqk Dv +
  Dqk) float32 and 2 B NH float64); each rank folds the earlier ones into its entering state
  (max-plus for the stabilizer, linear for C and n) and runs its shard from it.
- backward: every rank but the first runs its shard's backward with no gradient on its last
  state (its local dC0); one all_gather of those (B NH Dqk Dv float32 each, with the decays and
  stabilizers, and the last rank's gradient of the returned last state); each rank folds the
  later ones into the gradient of its last state and runs its backward with it.

So a rank computes its shard's forward and backward twice (rank 0 once): the split divides
activation memory and sequence length by the rank count, not yet the time.

The kernels are tfla's (mlstm_chunkwise on the shard) unless `kernel` is given: a differentiable
callable (q, k, v, i, f, c0, n0, m0) -> (h, C_last, n_last, m_last) with m0 and m_last of shape
(B, NH) (tests pass the float64 reference). Gradients follow the library's convention: dn0 and
dm0 are zero, so the initial state's gradient is dC0 alone.
"""

import torch
import torch.nn.functional as F

from .._errors import TflaArgumentError

_NO_HISTORY = -1e30  # a segment's stabilizer before its first token (the kernels' segment start)
_DTYPES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2, torch.float64: 3}


def _dist():
    import torch.distributed as dist
    if not dist.is_available() or not dist.is_initialized():
        raise TflaArgumentError("mlstm_chunkwise_cp needs an initialized torch.distributed process group "
                                "(torch.distributed.init_process_group)")
    return dist


def _tfla_kernel(variant, normalize, eps, qk_scale, chunk_size, config, backward_config):
    from .chunkwise import mlstm_chunkwise

    def run(q, k, v, i, f, c0, n0, m0):
        B, NH = q.shape[:2]
        h, st = mlstm_chunkwise(q, k, v, i, f, c0, n0, None if m0 is None else m0.reshape(B, NH, 1),
                                return_last_states=True, eps=eps, chunk_size=chunk_size, variant=variant,
                                normalize=normalize, qk_scale=qk_scale, config=config,
                                backward_config=backward_config)
        if variant == "exp":
            C, n, m = st
            return h, C, n, m.reshape(B, NH)
        C, n = st
        return h, C, n, torch.zeros(B, NH, dtype=torch.float32, device=q.device)
    return run


def _check_agreement(dist, group, q, v, i, variant):
    """Every rank's B, NH, Dqk, Dv, dtype and variant equal, else an error naming the fields and
    the ranks (raised on every rank alike)."""
    B, NH, S, Dqk = q.shape
    mine = torch.tensor([B, NH, Dqk, v.shape[-1], _DTYPES.get(q.dtype, -1), _DTYPES.get(i.dtype, -1),
                         0 if variant == "exp" else 1, S], dtype=torch.int64, device=q.device)
    world = dist.get_world_size(group)
    got = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(got, mine, group=group)
    rows = [g.tolist() for g in got]
    names = ("B", "NH", "Dqk", "Dv", "dtype of q, k, v", "dtype of i, f", "variant")
    bad = [n for j, n in enumerate(names) if len({r[j] for r in rows}) > 1]
    if bad:
        per_rank = "; ".join(f"rank {r}: " + ", ".join(f"{n}={rows[r][names.index(n)]}" for n in bad)
                             for r in range(world))
        raise TflaArgumentError(f"mlstm_chunkwise_cp: the ranks disagree on {', '.join(bad)} ({per_rank})")
    if any(r[7] < 1 for r in rows):
        raise TflaArgumentError("mlstm_chunkwise_cp: every rank needs a shard of at least one token "
                                f"(shard lengths by rank: {[r[7] for r in rows]})")


def _gather(dist, group, t):
    out = [torch.empty_like(t) for _ in range(dist.get_world_size(group))]
    dist.all_gather(out, t.contiguous(), group=group)
    return out


def _fold(exp, C, n, m, EC, En, Em, G):
    """The state entering the next segment: (C, n, m) entering this one, folded with this
    segment's summary (end state EC, En, Em from no history, total log-decay G)."""
    if not exp:
        a = torch.exp(G).to(C.dtype)
        return a[..., None, None] * C + EC, a[..., None] * n + En, m
    m_new = torch.maximum(G + m, Em)
    a = torch.exp(G + m - m_new)
    e = torch.where(Em <= _NO_HISTORY / 2, torch.zeros_like(Em), torch.exp(Em - m_new))
    a32, e32 = a.to(C.dtype), e.to(C.dtype)
    return (a32[..., None, None] * C + e32[..., None, None] * EC, a32[..., None] * n + e32[..., None] * En,
            m_new)


class _ContextParallel(torch.autograd.Function):
    @staticmethod
    def forward(ctx, run, exp, need_grad, group, q, k, v, i, f, c0, n0, m0):
        dist = _dist()
        rank = dist.get_rank(group)
        B, NH, _, Dqk = q.shape
        Dv = v.shape[-1]
        dev = q.device
        leaves = [t.detach().requires_grad_(t.requires_grad) for t in (q, k, v, i, f)]
        G = F.logsigmoid(f.detach().double()).sum(-1)  # the shard's total log-decay (B, NH)
        if rank == 0:  # its shard from the caller's initial state: its end state is exact
            c0_leaf = None if c0 is None else c0.detach().float().requires_grad_(c0.requires_grad)
            n_enter = None if n0 is None else n0.detach().float()
            m_enter = None if m0 is None else m0.detach().float().reshape(B, NH)
            with torch.set_grad_enabled(need_grad):
                h, CL, nL, mL = run(*leaves, c0_leaf, n_enter, m_enter if exp else None)
            EC, En, Em = CL.detach().float(), nL.detach().float(), mL.detach().double()
        else:  # its summary: the shard from a zero state with no stabilizer history
            with torch.no_grad():
                zC = torch.zeros(B, NH, Dqk, Dv, dtype=torch.float32, device=dev)
                zn = torch.zeros(B, NH, Dqk, dtype=torch.float32, device=dev)
                zm = torch.full((B, NH), _NO_HISTORY, dtype=torch.float32, device=dev)
                _, EC, En, Em = run(*(t.detach() for t in leaves), zC, zn, zm if exp else None)
            EC, En, Em = EC.float(), En.float(), Em.double()
        states = torch.cat([EC.reshape(-1), En.reshape(-1)])
        scalars = torch.cat([Em.reshape(-1), G.reshape(-1)])
        all_states, all_scalars = _gather(dist, group, states), _gather(dist, group, scalars)
        nC, nn_, nbh = B * NH * Dqk * Dv, B * NH * Dqk, B * NH
        if rank > 0:  # fold ranks 0 .. rank - 1 into the entering state, then run from it
            C = all_states[0][:nC].view(B, NH, Dqk, Dv)
            n = all_states[0][nC:nC + nn_].view(B, NH, Dqk)
            m = all_scalars[0][:nbh].view(B, NH)
            for j in range(1, rank):
                s, c = all_states[j], all_scalars[j]
                C, n, m = _fold(exp, C, n, m, s[:nC].view(B, NH, Dqk, Dv), s[nC:nC + nn_].view(B, NH, Dqk),
                                c[:nbh].view(B, NH), c[nbh:].view(B, NH))
            c0_leaf = C.clone().requires_grad_(True)
            m_enter = m.double() if exp else torch.zeros(B, NH, dtype=torch.float64, device=dev)
            with torch.set_grad_enabled(need_grad):
                h, CL, nL, mL = run(*leaves, c0_leaf, n.clone(), m_enter.float() if exp else None)
        else:
            m_enter = (m_enter.double() if m_enter is not None and exp
                       else torch.zeros(B, NH, dtype=torch.float64, device=dev))
        ctx.graph = (h, CL, leaves, c0_leaf) if need_grad else None
        ctx.exp, ctx.group, ctx.G = exp, group, G
        ctx.m_enter, ctx.m_leave = m_enter, mL.detach().double().reshape(B, NH)
        outs = (h.detach(), CL.detach(), nL.detach(), mL.detach())
        ctx.mark_non_differentiable(outs[2], outs[3])
        return outs

    @staticmethod
    def backward(ctx, dh, dCL, dnL, dmL):
        dist = _dist()
        rank, world = dist.get_rank(ctx.group), dist.get_world_size(ctx.group)
        h, CL, leaves, c0_leaf = ctx.graph
        ctx.graph = None
        if dh is None:
            dh = torch.zeros_like(h)
        # the local dC0: the shard's backward with no gradient on its last state (rank 0's is
        # needed by no one)
        local = torch.zeros(CL.shape, dtype=torch.float32, device=CL.device)
        if rank > 0:
            g = torch.autograd.grad([h], [c0_leaf], [dh], retain_graph=True, allow_unused=True)[0]
            if g is not None:
                local = g.float()
        user = dCL.float() if dCL is not None and rank == world - 1 else torch.zeros_like(local)
        B, NH = CL.shape[:2]
        states = torch.cat([local.reshape(-1), user.reshape(-1)])
        scalars = torch.cat([ctx.G.reshape(-1), ctx.m_enter.reshape(-1), ctx.m_leave.reshape(-1)])
        all_states, all_scalars = _gather(dist, ctx.group, states), _gather(dist, ctx.group, scalars)
        nC, nbh = local.numel(), B * NH
        # the gradient of this rank's last state: the caller's gradient of the sequence's last state,
        # folded back through the later ranks (dC entering j = exp(G_j + m_enter_j - m_leave_j) dC
        # leaving j + local_j)
        D = all_states[world - 1][nC:].view_as(local)
        for j in range(world - 1, rank, -1):
            c = all_scalars[j]
            G_j, me_j, ml_j = c[:nbh], c[nbh:2 * nbh], c[2 * nbh:]
            a = torch.exp(G_j + (me_j - ml_j if ctx.exp else 0.0)).view(B, NH).float()
            D = a[..., None, None] * D + all_states[j][:nC].view_as(local)
        wrt = [t for t in leaves if t.requires_grad] + ([c0_leaf] if c0_leaf is not None and c0_leaf.requires_grad
                                                        else [])
        grads = iter(torch.autograd.grad([h, CL], wrt, [dh, D.to(CL.dtype)], allow_unused=True) if wrt else ())
        dq, dk, dv, di, df = (next(grads) if t.requires_grad else None for t in leaves)
        dC0 = next(grads) if c0_leaf is not None and c0_leaf.requires_grad else None
        return None, None, None, None, dq, dk, dv, di, df, (dC0 if rank == 0 else None), None, None


def mlstm_chunkwise_cp(q, k, v, i, f, c_initial=None, n_initial=None, m_initial=None, *, group=None,
                       return_last_states=False, variant="exp", normalize=True, eps=1e-6, qk_scale=None,
                       chunk_size=None, config=None, backward_config=None, kernel=None):
    """The chunkwise mLSTM over one sequence split across the ranks of `group` (default: the
    world), with autograd; see the module docstring.

    Every rank of the group calls it at once with its shard: q, k (B, NH, S_r, Dqk), v (B, NH,
    S_r, Dv), i, f (B, NH, S_r), on its own device. c_initial (B, NH, Dqk, Dv), n_initial
    (B, NH, Dqk), m_initial (B, NH, 1): the sequence's initial state, read on rank 0 (other ranks
    pass None). Returns the rank's h (B, NH, S_r, Dv); with return_last_states, (h, (C, n, m))
    ((h, (C, n)) for "sig"), the sequence's last state on the last rank and None elsewhere. The
    ranks must agree on B, NH, Dqk, Dv, dtypes and the variant (a TflaArgumentError on every rank
    names what differs)."""
    dist = _dist()
    if variant not in ("exp", "sig"):
        raise TflaArgumentError(f"variant must be 'exp' or 'sig', got {variant!r}")
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    if q.dim() != 4 or v.dim() != 4 or i.dim() != 3 or f.dim() != 3:
        raise TflaArgumentError("mlstm_chunkwise_cp takes q, k, v of shape (B, NH, S, D) and i, f of (B, NH, S)")
    _check_agreement(dist, group, q, v, i, variant)
    if rank != 0 and c_initial is not None:
        raise TflaArgumentError(f"mlstm_chunkwise_cp: the initial state belongs to rank 0; rank {rank} passed one")
    if (c_initial is None) != (n_initial is None):
        raise TflaArgumentError("mlstm_chunkwise_cp: pass c_initial and n_initial together")
    run = kernel or _tfla_kernel(variant, normalize, eps, qk_scale, chunk_size, config, backward_config)
    exp = variant == "exp"
    m0 = None
    if c_initial is not None and exp:
        B, NH = q.shape[:2]
        m0 = m_initial if m_initial is not None else torch.zeros(B, NH, 1, dtype=torch.float32, device=q.device)
    # without gradients the shard's run keeps no graph
    need_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (q, k, v, i, f, c_initial))
    h, C, n, m = _ContextParallel.apply(run, exp, need_grad, group, q, k, v, i, f, c_initial, n_initial, m0)
    if not return_last_states:
        return h
    if rank != world - 1:
        return h, None
    B, NH = q.shape[:2]
    return h, ((C, n, m.reshape(B, NH, 1)) if exp else (C, n))
