"""Triton kernels for the fused linear log-prob + entropy (the CUDA path of ``logprob``).

Invariant: same results as ``logprob_entropy_reference`` with float32 accumulation, and no ``[N, V]``
tensor ever exists: the forward grid is (row blocks, vocabulary splits); each program walks its
slice of the vocabulary in ``BLOCK_V`` tiles (each tile an ``H``-loop of ``tl.dot``), keeping per row
an online logsumexp state ``m``, ``s = sum exp(z - m)``, ``u = sum exp(z - m) (z - m)`` and the
target's logit. The running max starts at ``-inf`` (never 0: all-negative logits stay correct)
and columns past ``V`` are ``-inf`` logits that add exactly 0. The splits' states are merged in
torch (``O(N * splits)``). Backward recomputes each tile's logits, forms
``dz = g_logp (onehot - p) - g_entropy p (log p + entropy)`` (0 where ``p`` underflows), and adds
``dz @ W`` and ``dz.T @ h`` into float32 gradients with atomics. Ignored rows (target < 0 after
dispatch) load zeros instead of their hidden state and get ``dz = 0``.

Operands of ``tl.dot`` are upcast to float32 when ``UPCAST`` is set: always for float32 inputs (with
IEEE precision) and in the interpreter, whose bfloat16 ``tl.dot`` is wrong; on a GPU float16 and
bfloat16 feed the tensor cores directly.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from turnrl.kernels.backend import interpreting

BLOCKS = {"BLOCK_N": 64, "BLOCK_V": 128, "BLOCK_H": 64}


@triton.jit
def _dot(a, b, acc, UPCAST: tl.constexpr):
    if UPCAST:  # noqa: SIM108 (triton compiles statements, not conditional expressions on constexprs)
        out = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    else:
        out = tl.dot(a, b, acc)
    return out


@triton.jit
def _logits_tile(
    h_ptr,
    w_ptr,
    rows64,
    cols64,
    load_row,
    col_ok,
    H,
    UPCAST: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    acc = tl.zeros([BLOCK_N, BLOCK_V], dtype=tl.float32)
    for k0 in range(0, H, BLOCK_H):
        ks = k0 + tl.arange(0, BLOCK_H)
        k_ok = ks < H
        a = tl.load(h_ptr + rows64[:, None] * H + ks[None, :], mask=load_row[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(w_ptr + cols64[:, None] * H + ks[None, :], mask=col_ok[:, None] & k_ok[None, :], other=0.0)
        acc = _dot(a, tl.trans(b), acc, UPCAST)
    return acc


@triton.jit
def _forward_kernel(
    h_ptr,
    w_ptr,
    tgt_ptr,
    part_ptr,
    N,
    V,
    H,
    inv_t,
    tiles_per_split,
    UPCAST: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    split = tl.program_id(1)
    row_ok = rows < N
    tgt = tl.load(tgt_ptr + rows, mask=row_ok, other=-1)
    valid = row_ok & (tgt >= 0)
    rows64 = rows.to(tl.int64)
    m = tl.full([BLOCK_N], float("-inf"), dtype=tl.float32)
    s = tl.zeros([BLOCK_N], dtype=tl.float32)
    u = tl.zeros([BLOCK_N], dtype=tl.float32)
    z_target = tl.zeros([BLOCK_N], dtype=tl.float32)
    first_tile = split * tiles_per_split
    for tile in range(first_tile, first_tile + tiles_per_split):
        cols = tile * BLOCK_V + tl.arange(0, BLOCK_V)
        col_ok = cols < V
        z = (
            _logits_tile(h_ptr, w_ptr, rows64, cols.to(tl.int64), valid, col_ok, H, UPCAST, BLOCK_N, BLOCK_V, BLOCK_H)
            * inv_t
        )
        z = tl.where(col_ok[None, :], z, float("-inf"))
        z_target += tl.sum(tl.where(cols[None, :] == tgt[:, None], z, 0.0), axis=1)
        m_new = tl.maximum(m, tl.max(z, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a tile wholly past V leaves m at -inf
        alpha = tl.exp(m - m_safe)
        u = alpha * (u + tl.where(s > 0, m - m_safe, 0.0) * s)
        d = tl.where(col_ok[None, :], z - m_safe[:, None], 0.0)
        e = tl.where(col_ok[None, :], tl.exp(d), 0.0)
        s = alpha * s + tl.sum(e, axis=1)
        u += tl.sum(e * d, axis=1)
        m = m_new
    out = part_ptr + split * 4 * N + rows
    tl.store(out, m, mask=row_ok)
    tl.store(out + N, s, mask=row_ok)
    tl.store(out + 2 * N, u, mask=row_ok)
    tl.store(out + 3 * N, z_target, mask=row_ok)


@triton.jit
def _backward_kernel(
    h_ptr,
    w_ptr,
    tgt_ptr,
    lse_ptr,
    ent_ptr,
    gl_ptr,
    ge_ptr,
    gh_ptr,
    gw_ptr,
    N,
    V,
    H,
    inv_t,
    tiles_per_split,
    WANT_H: tl.constexpr,
    WANT_W: tl.constexpr,
    UPCAST: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    split = tl.program_id(1)
    row_ok = rows < N
    tgt = tl.load(tgt_ptr + rows, mask=row_ok, other=-1)
    valid = row_ok & (tgt >= 0)
    rows64 = rows.to(tl.int64)
    lse = tl.load(lse_ptr + rows, mask=valid, other=0.0)
    ent = tl.load(ent_ptr + rows, mask=valid, other=0.0)
    g_logp = tl.load(gl_ptr + rows, mask=valid, other=0.0) * inv_t  # dz carries d(z)/d(h W^T) = 1/T
    g_ent = tl.load(ge_ptr + rows, mask=valid, other=0.0) * inv_t
    first_tile = split * tiles_per_split
    for tile in range(first_tile, first_tile + tiles_per_split):
        cols = tile * BLOCK_V + tl.arange(0, BLOCK_V)
        col_ok = cols < V
        cols64 = cols.to(tl.int64)
        z = _logits_tile(h_ptr, w_ptr, rows64, cols64, valid, col_ok, H, UPCAST, BLOCK_N, BLOCK_V, BLOCK_H)
        logp_all = tl.where(col_ok[None, :], z * inv_t - lse[:, None], 0.0)
        p = tl.where(col_ok[None, :], tl.exp(logp_all), 0.0)
        dz = tl.where(cols[None, :] == tgt[:, None], g_logp[:, None], 0.0)
        dz -= p * (g_logp[:, None] + g_ent[:, None] * (logp_all + ent[:, None]))
        dz = tl.where(valid[:, None] & col_ok[None, :], dz, 0.0)
        if not UPCAST:
            dz = dz.to(h_ptr.dtype.element_ty)
        for k0 in range(0, H, BLOCK_H):
            ks = k0 + tl.arange(0, BLOCK_H)
            k_ok = ks < H
            if WANT_H:
                b = tl.load(w_ptr + cols64[:, None] * H + ks[None, :], mask=col_ok[:, None] & k_ok[None, :], other=0.0)
                gh = _dot(dz, b, None, UPCAST)
                tl.atomic_add(gh_ptr + rows64[:, None] * H + ks[None, :], gh, mask=valid[:, None] & k_ok[None, :])
            if WANT_W:
                a = tl.load(h_ptr + rows64[:, None] * H + ks[None, :], mask=valid[:, None] & k_ok[None, :], other=0.0)
                gw = _dot(tl.trans(dz), a, None, UPCAST)
                tl.atomic_add(gw_ptr + cols64[:, None] * H + ks[None, :], gw, mask=col_ok[:, None] & k_ok[None, :])


# ---------------------------------------------------------------- launchers


def _upcast(x: torch.Tensor) -> bool:
    return x.dtype == torch.float32 or interpreting()


def _splits(row_blocks: int, tiles: int, device: torch.device, splits: int | None) -> int:
    if splits is None:  # enough programs to fill the device twice over
        sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1
        splits = triton.cdiv(2 * sms, row_blocks)
    return max(1, min(splits, tiles))


def forward_splits(hidden, weight, splits: int | None = None, **blocks) -> int:
    """How many vocabulary splits the forward grid uses (``splits`` caps it, ``None`` fills the device)."""
    blocks = {**BLOCKS, **blocks}
    row_blocks = max(1, triton.cdiv(hidden.shape[0], blocks["BLOCK_N"]))
    return _splits(row_blocks, triton.cdiv(weight.shape[0], blocks["BLOCK_V"]), hidden.device, splits)


def launch_forward(hidden, weight, targets, inv_t: float, partials, **blocks) -> None:
    """Fill ``partials`` ``[splits, 4, N]`` float32 with each split's (m, s, u, target logit) per row;
    ``targets`` int32, < 0 where ignored."""
    blocks = {**BLOCKS, **blocks}
    (n, h), v = hidden.shape, weight.shape[0]
    if n == 0:
        return
    splits = partials.shape[0]
    tiles = triton.cdiv(v, blocks["BLOCK_V"])
    _forward_kernel[(triton.cdiv(n, blocks["BLOCK_N"]), splits)](
        hidden,
        weight,
        targets,
        partials,
        n,
        v,
        h,
        inv_t,
        triton.cdiv(tiles, splits),
        UPCAST=_upcast(hidden),
        **blocks,
    )


def merge(partials: torch.Tensor, valid: torch.Tensor):
    """``(logp, entropy, logsumexp)`` from the splits' partial states."""
    m, s, u, z_target = partials.unbind(1)
    top = m.amax(0)
    scale = torch.exp(m - top)  # 0 for a split that saw no column (m = -inf)
    s_all = (scale * s).sum(0)
    u_all = (scale * (u + torch.where(s > 0, (m - top) * s, 0.0))).sum(0)
    log_s = torch.log(s_all)
    lse = top + log_s
    logp = torch.where(valid, z_target.sum(0) - lse, 0.0)
    return logp, torch.where(valid, log_s - u_all / s_all, 0.0), lse


def launch_backward(
    hidden,
    weight,
    targets,
    lse,
    entropy,
    g_logp,
    g_entropy,
    grad_h,
    grad_w,
    inv_t: float,
    splits: int | None = None,
    **blocks,
) -> None:
    """Add the gradients into ``grad_h`` / ``grad_w`` (float32, zeroed by the caller; ``None`` to skip)."""
    blocks = {**BLOCKS, **blocks}
    (n, h), v = hidden.shape, weight.shape[0]
    if n == 0 or (grad_h is None and grad_w is None):
        return
    row_blocks, tiles = triton.cdiv(n, blocks["BLOCK_N"]), triton.cdiv(v, blocks["BLOCK_V"])
    splits = _splits(row_blocks, tiles, hidden.device, splits)
    _backward_kernel[(row_blocks, splits)](
        hidden,
        weight,
        targets,
        lse,
        entropy,
        g_logp,
        g_entropy,
        lse if grad_h is None else grad_h,
        lse if grad_w is None else grad_w,
        n,
        v,
        h,
        inv_t,
        triton.cdiv(tiles, splits),
        WANT_H=grad_h is not None,
        WANT_W=grad_w is not None,
        UPCAST=_upcast(hidden),
        **blocks,
    )


class TritonLinearLogprobEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, valid, inv_t: float):
        hidden, weight = hidden.contiguous(), weight.contiguous()
        tgt = torch.where(valid, targets, -1).to(torch.int32).contiguous()
        partials = torch.empty(
            (forward_splits(hidden, weight), 4, hidden.shape[0]), dtype=torch.float32, device=hidden.device
        )
        launch_forward(hidden, weight, tgt, inv_t, partials)
        logp, entropy, lse = merge(partials, valid)
        ctx.save_for_backward(hidden, weight, tgt, lse, entropy)
        ctx.inv_t = inv_t
        return logp, entropy

    @staticmethod
    def backward(ctx, g_logp, g_entropy):
        hidden, weight, tgt, lse, entropy = ctx.saved_tensors
        zeros = torch.zeros_like(lse)
        g_logp = zeros if g_logp is None else g_logp.float().contiguous()
        g_entropy = zeros if g_entropy is None else g_entropy.float().contiguous()
        grad_h = (
            torch.zeros(hidden.shape, dtype=torch.float32, device=hidden.device) if ctx.needs_input_grad[0] else None
        )
        grad_w = (
            torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if ctx.needs_input_grad[1] else None
        )
        launch_backward(hidden, weight, tgt, lse, entropy, g_logp, g_entropy, grad_h, grad_w, ctx.inv_t)
        return (
            None if grad_h is None else grad_h.to(hidden.dtype),
            None if grad_w is None else grad_w.to(weight.dtype),
            None,
            None,
            None,
        )


def linear_logprob_entropy_triton(hidden, weight, targets, valid, temperature: float):
    return TritonLinearLogprobEntropy.apply(hidden, weight, targets, valid, 1.0 / temperature)
