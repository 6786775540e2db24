"""Triton kernels for the ``[B, T]`` advantage ops (GAE, turn GAE, returns) and masked moments.

Invariant: same results as the references in ``advantages`` (float32 accumulation).
Each program owns ``BLOCK_B`` whole rows and walks them in ``BLOCK_T`` tiles; inside a
tile every recurrence is an ``associative_scan`` and one float32 carry per row links
the tiles, so each input byte is read once (GAE) and each output written once (turn
GAE writes a candidate then the answer). Backward recurrences scan tiles laid out
back to front: element ``i`` of a tile is time ``t = end - 1 - i``.

Two combine rules cover everything:
- ``_compose``: affine maps ``x -> a * x + b`` applied in scan order (later elements
  wrap earlier ones), for ``S_t = a_t * S_next + b_t``;
- ``_last_valid``: the most recent element whose flag is set, for "the next (or
  previous) policy token's value / turn id".
Each program also writes its rows' partial (sum, sum_sq, count) of the advantages.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

GAE_BLOCKS = {"BLOCK_B": 1, "BLOCK_T": 1024}


@triton.jit
def _compose(a1, b1, a2, b2):
    return a2 * a1, a2 * b1 + b2


@triton.jit
def _last_valid(f1, x1, f2, x2):
    return tl.maximum(f1, f2), tl.where(f2 != 0, x2, x1)


@triton.jit
def _last_valid2(f1, x1, y1, f2, x2, y2):
    return tl.maximum(f1, f2), tl.where(f2 != 0, x2, x1), tl.where(f2 != 0, y2, y1)


@triton.jit
def _last_column(x, cols, BLOCK_T: tl.constexpr):
    return tl.sum(tl.where(cols[None, :] == BLOCK_T - 1, x, 0), axis=1)


@triton.jit
def _gae_kernel(
    r_ptr,
    v_ptr,
    m_ptr,
    adv_ptr,
    ret_ptr,
    part_ptr,
    B,
    T,
    gamma,
    decay,
    HAS_VALUES: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_T: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.arange(0, BLOCK_T)
    row_ok = rows < B
    next_value = tl.zeros([BLOCK_B], dtype=tl.float32)  # value of the first policy token after the tile
    carry = tl.zeros([BLOCK_B], dtype=tl.float32)  # running advantage at the tile's end
    total = tl.zeros([BLOCK_B], dtype=tl.float32)
    total_sq = tl.zeros([BLOCK_B], dtype=tl.float32)
    count = tl.zeros([BLOCK_B], dtype=tl.float32)
    for start in range(0, T, BLOCK_T):
        t = T - 1 - start - cols
        ok = row_ok[:, None] & (t >= 0)[None, :]
        at = rows[:, None] * T + t[None, :]
        m = tl.load(m_ptr + at, mask=ok, other=0) != 0
        r = tl.load(r_ptr + at, mask=ok, other=0).to(tl.float32)
        if HAS_VALUES:
            v = tl.load(v_ptr + at, mask=ok, other=0).to(tl.float32)
            ok1 = ok & (t + 1 < T)[None, :]
            m1 = (tl.load(m_ptr + at + 1, mask=ok1, other=0) != 0).to(tl.int32)
            v1 = tl.load(v_ptr + at + 1, mask=ok1, other=0).to(tl.float32)
            seen, v_next = tl.associative_scan((m1, v1), 1, _last_valid)
            v_next = tl.where(seen != 0, v_next, next_value[:, None])
            next_value = _last_column(v_next, cols, BLOCK_T)
            delta = tl.where(m, r + gamma * v_next - v, 0.0)
        else:
            delta = tl.where(m, r, 0.0)
        scale, shift = tl.associative_scan((tl.where(m, decay, 1.0), delta), 1, _compose)
        running = scale * carry[:, None] + shift
        carry = _last_column(running, cols, BLOCK_T)
        adv = tl.where(m, running, 0.0)
        tl.store(adv_ptr + at, adv, mask=ok)
        if HAS_VALUES:
            tl.store(ret_ptr + at, tl.where(m, running + v, 0.0), mask=ok)
        total += tl.sum(adv, axis=1)
        total_sq += tl.sum(adv * adv, axis=1)
        count += tl.sum(m.to(tl.float32), axis=1)
    tl.store(part_ptr + rows * 3, total, mask=row_ok)
    tl.store(part_ptr + rows * 3 + 1, total_sq, mask=row_ok)
    tl.store(part_ptr + rows * 3 + 2, count, mask=row_ok)


@triton.jit
def _turn_gae_kernel(
    r_ptr,
    v_ptr,
    m_ptr,
    id_ptr,
    adv_ptr,
    ret_ptr,
    part_ptr,
    B,
    T,
    gamma,
    decay,
    BLOCK_B: tl.constexpr,
    BLOCK_T: tl.constexpr,
):
    """Pass 1 (back to front): ``X_t`` = return of the turn that starts at the first turn token
    at or after ``t``, were it to start at ``t``:  ``X_t = r_t + X_next`` inside a turn and
    ``X_t = r_t + decay * X_next + (gamma - decay) * V_next`` at a turn's last token. At a
    turn's first token ``X`` is its return and ``X - V`` its advantage. Pass 2 (front to back)
    broadcasts those from each turn's first token to the rest of the turn."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.arange(0, BLOCK_T)
    row_ok = rows < B
    next_value = tl.zeros([BLOCK_B], dtype=tl.float32)
    next_id = tl.full([BLOCK_B], -1, dtype=tl.int32)
    carry = tl.zeros([BLOCK_B], dtype=tl.float32)
    for start in range(0, T, BLOCK_T):
        t = T - 1 - start - cols
        ok = row_ok[:, None] & (t >= 0)[None, :]
        at = rows[:, None] * T + t[None, :]
        ids = tl.load(id_ptr + at, mask=ok, other=-1).to(tl.int32)
        turn = (tl.load(m_ptr + at, mask=ok, other=0) != 0) & (ids >= 0)
        r = tl.load(r_ptr + at, mask=ok, other=0).to(tl.float32)
        v = tl.load(v_ptr + at, mask=ok, other=0).to(tl.float32)
        ok1 = ok & (t + 1 < T)[None, :]
        ids1 = tl.load(id_ptr + at + 1, mask=ok1, other=-1).to(tl.int32)
        turn1 = ((tl.load(m_ptr + at + 1, mask=ok1, other=0) != 0) & (ids1 >= 0)).to(tl.int32)
        v1 = tl.load(v_ptr + at + 1, mask=ok1, other=0).to(tl.float32)
        seen, v_next, id_next = tl.associative_scan((turn1, v1, ids1), 1, _last_valid2)
        v_next = tl.where(seen != 0, v_next, next_value[:, None])
        id_next = tl.where(seen != 0, id_next, next_id[:, None])
        next_value = _last_column(v_next, cols, BLOCK_T)
        next_id = _last_column(id_next, cols, BLOCK_T)
        same = id_next == ids
        a = tl.where(turn, tl.where(same, 1.0, decay), 1.0)
        b = tl.where(turn, r + tl.where(same, 0.0, gamma - decay) * v_next, 0.0)
        scale, shift = tl.associative_scan((a, b), 1, _compose)
        x = scale * carry[:, None] + shift
        carry = _last_column(x, cols, BLOCK_T)
        tl.store(adv_ptr + at, x - v, mask=ok & turn)
        tl.store(ret_ptr + at, x, mask=ok & turn)
    tl.debug_barrier()  # pass 2 reads what other threads of this program wrote in pass 1
    prev_id = tl.full([BLOCK_B], -1, dtype=tl.int32)
    turn_adv = tl.zeros([BLOCK_B], dtype=tl.float32)
    turn_ret = tl.zeros([BLOCK_B], dtype=tl.float32)
    total = tl.zeros([BLOCK_B], dtype=tl.float32)
    total_sq = tl.zeros([BLOCK_B], dtype=tl.float32)
    count = tl.zeros([BLOCK_B], dtype=tl.float32)
    for start in range(0, T, BLOCK_T):
        t = start + cols
        ok = row_ok[:, None] & (t < T)[None, :]
        at = rows[:, None] * T + t[None, :]
        ids = tl.load(id_ptr + at, mask=ok, other=-1).to(tl.int32)
        turn = (tl.load(m_ptr + at, mask=ok, other=0) != 0) & (ids >= 0)
        ok0 = ok & (t >= 1)[None, :]
        ids0 = tl.load(id_ptr + at - 1, mask=ok0, other=-1).to(tl.int32)
        turn0 = ((tl.load(m_ptr + at - 1, mask=ok0, other=0) != 0) & (ids0 >= 0)).to(tl.int32)
        seen, id_prev = tl.associative_scan((turn0, ids0), 1, _last_valid)
        id_prev = tl.where(seen != 0, id_prev, prev_id[:, None])
        prev_id = _last_column(id_prev, cols, BLOCK_T)
        first = (turn & (id_prev != ids)).to(tl.int32)
        cand_adv = tl.load(adv_ptr + at, mask=ok & turn, other=0)
        cand_ret = tl.load(ret_ptr + at, mask=ok & turn, other=0)
        seen, first_adv, first_ret = tl.associative_scan((first, cand_adv, cand_ret), 1, _last_valid2)
        first_adv = tl.where(seen != 0, first_adv, turn_adv[:, None])  # a turn open since an earlier tile
        first_ret = tl.where(seen != 0, first_ret, turn_ret[:, None])
        turn_adv = _last_column(first_adv, cols, BLOCK_T)
        turn_ret = _last_column(first_ret, cols, BLOCK_T)
        adv = tl.where(turn, first_adv, 0.0)
        ret = tl.where(turn, first_ret, 0.0)
        tl.store(adv_ptr + at, adv, mask=ok)
        tl.store(ret_ptr + at, ret, mask=ok)
        total += tl.sum(adv, axis=1)
        total_sq += tl.sum(adv * adv, axis=1)
        count += tl.sum(turn.to(tl.float32), axis=1)
    tl.store(part_ptr + rows * 3, total, mask=row_ok)
    tl.store(part_ptr + rows * 3 + 1, total_sq, mask=row_ok)
    tl.store(part_ptr + rows * 3 + 2, count, mask=row_ok)


@triton.jit
def _moments_kernel(x_ptr, m_ptr, part_ptr, B, T, BLOCK_B: tl.constexpr, BLOCK_T: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.arange(0, BLOCK_T)
    row_ok = rows < B
    total = tl.zeros([BLOCK_B], dtype=tl.float32)
    total_sq = tl.zeros([BLOCK_B], dtype=tl.float32)
    count = tl.zeros([BLOCK_B], dtype=tl.float32)
    for start in range(0, T, BLOCK_T):
        t = start + cols
        ok = row_ok[:, None] & (t < T)[None, :]
        at = rows[:, None] * T + t[None, :]
        keep = tl.load(m_ptr + at, mask=ok, other=0) != 0
        x = tl.where(keep, tl.load(x_ptr + at, mask=ok, other=0).to(tl.float32), 0.0)
        total += tl.sum(x, axis=1)
        total_sq += tl.sum(x * x, axis=1)
        count += tl.sum(keep.to(tl.float32), axis=1)
    tl.store(part_ptr + rows * 3, total, mask=row_ok)
    tl.store(part_ptr + rows * 3 + 1, total_sq, mask=row_ok)
    tl.store(part_ptr + rows * 3 + 2, count, mask=row_ok)


# ---------------------------------------------------------------- launchers (outputs passed in)


def _flags(mask: torch.Tensor) -> torch.Tensor:
    flags = mask if mask.dtype == torch.bool else mask != 0
    return flags.contiguous().view(torch.uint8)


def _grid(rows: int, blocks: dict) -> tuple[int]:
    return (triton.cdiv(rows, blocks["BLOCK_B"]),)


def launch_gae(rewards, values, mask, gamma: float, lam: float, adv, ret, partials, **blocks) -> None:
    """Fill ``adv``, ``ret`` (float32 ``[B, T]``) and ``partials`` (float32 ``[B, 3]``).
    ``values=None`` gives discounted returns in ``adv`` (``ret`` is not written)."""
    blocks = {**GAE_BLOCKS, **blocks}
    rows, steps = rewards.shape
    if rows == 0 or steps == 0:
        partials.zero_()
        return
    v = rewards if values is None else values.contiguous()
    _gae_kernel[_grid(rows, blocks)](
        rewards.contiguous(),
        v,
        _flags(mask),
        adv,
        ret,
        partials,
        rows,
        steps,
        gamma,
        gamma * lam,
        HAS_VALUES=values is not None,
        **blocks,
    )


def launch_turn_gae(rewards, values, mask, turn_ids, gamma: float, lam: float, adv, ret, partials, **blocks) -> None:
    blocks = {**GAE_BLOCKS, **blocks}
    rows, steps = rewards.shape
    if rows == 0 or steps == 0:
        partials.zero_()
        return
    if turn_ids.dtype == torch.int64 and steps and int(turn_ids.max()) >= 2**31:
        raise ValueError("turn_ids must be below 2**31")
    _turn_gae_kernel[_grid(rows, blocks)](
        rewards.contiguous(),
        values.contiguous(),
        _flags(mask),
        turn_ids.to(torch.int32).contiguous(),
        adv,
        ret,
        partials,
        rows,
        steps,
        gamma,
        gamma * lam,
        **blocks,
    )


def launch_masked_moments(x, mask, partials, **blocks) -> None:
    blocks = {**GAE_BLOCKS, **blocks}
    rows, steps = x.shape
    if rows == 0 or steps == 0:
        partials.zero_()
        return
    _moments_kernel[_grid(rows, blocks)](x.contiguous(), _flags(mask), partials, rows, steps, **blocks)


def _outputs(like: torch.Tensor, count: int) -> list[torch.Tensor]:
    out = [torch.empty(like.shape, dtype=torch.float32, device=like.device) for _ in range(count)]
    return [*out, torch.empty((like.shape[0], 3), dtype=torch.float32, device=like.device)]


def gae_triton(rewards, values, mask, gamma: float, lam: float):
    adv, ret, partials = _outputs(rewards, 2)
    launch_gae(rewards, values, mask, gamma, lam, adv, ret, partials)
    return adv, ret, partials


def turn_gae_triton(rewards, values, mask, turn_ids, gamma: float, lam: float):
    adv, ret, partials = _outputs(rewards, 2)
    launch_turn_gae(rewards, values, mask, turn_ids, gamma, lam, adv, ret, partials)
    return adv, ret, partials


def discounted_returns_triton(rewards, mask, gamma: float):
    returns, partials = _outputs(rewards, 1)
    launch_gae(rewards, None, mask, gamma, 1.0, returns, returns, partials)
    return returns, partials


def masked_moments_triton(x, mask):
    (partials,) = _outputs(x, 0)
    launch_masked_moments(x, mask, partials)
    return partials
