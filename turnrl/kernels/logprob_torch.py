"""Fused linear log-prob + entropy in plain torch: the memory-frugal path for CPU (and any device).

Invariant: never more than ``rows x cols`` logits exist at once, forward or backward; the
vocabulary is walked in tiles with an online logsumexp, so the per-row state is three
float32 numbers: the running max ``m``, ``s = sum exp(z - m)`` and ``u = sum exp(z - m) (z - m)``.
Then ``logsumexp = m + log s`` and ``entropy = log s - u / s`` (no cancellation between two
large numbers, so very large logits keep their entropy exact). Backward recomputes each tile:
``d logp / dz = onehot - p`` and ``d entropy / dz = -p (log p + entropy)``, which is 0 where
``p`` underflows to 0 (no ``0 * log 0``). Rows whose target is ``ignore_index`` get 0 outputs and
contribute no gradient (their hidden state is replaced by zeros before any product, so not even
a NaN there can leak into the weight gradient). Accumulation is float32 for any input dtype.
"""

from __future__ import annotations

import torch

DEFAULT_ROWS = 512
DEFAULT_COLS = 1024


def _rows(hidden, targets, valid, start, stop):
    h = hidden[start:stop].float()
    ok = valid[start:stop]
    return torch.where(ok[:, None], h, 0.0), targets[start:stop].clamp(min=0), ok


def forward_stats(hidden, weight, targets, valid, inv_t: float, rows: int, cols: int):
    """``(logp, entropy, logsumexp)`` float32 ``[N]``; ignored rows get 0, 0 and an unused logsumexp."""
    n, vocab = hidden.shape[0], weight.shape[0]
    logp = torch.zeros(n, dtype=torch.float32, device=hidden.device)
    entropy, lse = torch.zeros_like(logp), torch.zeros_like(logp)
    for start in range(0, n, rows):
        h, tgt, ok = _rows(hidden, targets, valid, start, start + rows)
        m = torch.full((h.shape[0],), float("-inf"), device=h.device)
        s, u, target_z = torch.zeros_like(m), torch.zeros_like(m), torch.zeros_like(m)
        for v0 in range(0, vocab, cols):
            z = torch.mm(h, weight[v0 : v0 + cols].float().t()).mul_(inv_t)
            # the target's logit is read from the same tile as the max, so target_z <= m <= logsumexp
            # holds exactly in floating point and log p can never come out positive
            inside = (tgt >= v0) & (tgt < v0 + z.shape[1])
            target_z += torch.where(inside, z.gather(1, (tgt - v0).clamp(0, z.shape[1] - 1)[:, None])[:, 0], 0.0)
            m_new = torch.maximum(m, z.amax(1))
            alpha = torch.exp(m - m_new)
            # u is relative to the running max: shifting it to m_new adds (m - m_new) * s
            u = alpha * (u + torch.where(s > 0, (m - m_new) * s, 0.0))
            z.sub_(m_new[:, None])
            e = torch.exp(z)
            s = alpha * s + e.sum(1)
            u = u + e.mul_(z).sum(1)
            m = m_new
        log_s = torch.log(s)
        rows_lse = m + log_s
        logp[start : start + rows] = torch.where(ok, target_z - rows_lse, 0.0)
        entropy[start : start + rows] = torch.where(ok, log_s - u / s, 0.0)
        lse[start : start + rows] = rows_lse
    return logp, entropy, lse


def backward_grads(
    hidden,
    weight,
    targets,
    valid,
    lse,
    entropy,
    g_logp,
    g_entropy,
    inv_t: float,
    rows: int,
    cols: int,
    want_hidden: bool,
    want_weight: bool,
):
    """Gradients (float32) of ``sum(g_logp * logp + g_entropy * entropy)`` w.r.t. hidden and weight."""
    n, vocab = hidden.shape[0], weight.shape[0]
    g_logp = torch.where(valid, g_logp.float(), 0.0) * inv_t
    g_ent = torch.where(valid, g_entropy.float(), 0.0)
    grad_h = torch.zeros(hidden.shape, dtype=torch.float32, device=hidden.device) if want_hidden else None
    grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_weight else None
    for start in range(0, n, rows):
        stop = start + rows
        h, tgt, _ = _rows(hidden, targets, valid, start, stop)
        lse_r, ent_r = lse[start:stop, None], entropy[start:stop, None]
        gl, ge = g_logp[start:stop, None], g_ent[start:stop, None] * inv_t
        for v0 in range(0, vocab, cols):
            w = weight[v0 : v0 + cols].float()
            logp_all = torch.mm(h, w.t()).mul_(inv_t).sub_(lse_r)
            p = torch.exp(logp_all)
            # dz = -p * (g_logp + g_entropy * (log p + entropy)), scaled by 1/temperature
            dz = logp_all.add_(ent_r).mul_(ge).add_(gl).mul_(p).neg_()
            if grad_h is not None:
                grad_h[start:stop].addmm_(dz, w)
            if grad_w is not None:
                grad_w[v0 : v0 + cols].addmm_(dz.t(), h)
        # the one-hot part of d logp / dz: + g_logp at each row's target
        if grad_h is not None:
            grad_h[start:stop].add_(gl * weight[tgt].float())
        if grad_w is not None:
            grad_w.index_add_(0, tgt, gl * h)
    return grad_h, grad_w


class ChunkedLinearLogprobEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, valid, inv_t: float, rows: int, cols: int):
        logp, entropy, lse = forward_stats(hidden, weight, targets, valid, inv_t, rows, cols)
        ctx.save_for_backward(hidden, weight, targets, valid, lse, entropy)
        ctx.config = (inv_t, rows, cols)
        ctx.mark_non_differentiable(lse)
        return logp, entropy, lse

    @staticmethod
    def backward(ctx, g_logp, g_entropy, _g_lse):
        hidden, weight, targets, valid, lse, entropy = ctx.saved_tensors
        want_h, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        zeros = torch.zeros_like(lse)
        g_logp = zeros if g_logp is None else g_logp
        g_entropy = zeros if g_entropy is None else g_entropy
        grad_h, grad_w = backward_grads(
            hidden, weight, targets, valid, lse, entropy, g_logp, g_entropy, *ctx.config, want_h, want_w
        )
        grad_h = None if grad_h is None else grad_h.to(hidden.dtype)
        grad_w = None if grad_w is None else grad_w.to(weight.dtype)
        return grad_h, grad_w, None, None, None, None, None


def linear_logprob_entropy_torch(
    hidden, weight, targets, valid, temperature: float, rows: int = DEFAULT_ROWS, cols: int = DEFAULT_COLS
):
    """``(logp, entropy)`` float32 ``[N]``, differentiable w.r.t. ``hidden`` and ``weight``."""
    logp, entropy, _ = ChunkedLinearLogprobEntropy.apply(hidden, weight, targets, valid, 1.0 / temperature, rows, cols)
    return logp, entropy
