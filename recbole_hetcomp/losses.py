"""HetComp distillation losses (Kang et al., WWW 2023), in pure torch.

This module holds the two list-wise losses that HetComp uses to distil the
ensemble's knowledge into the student:

* :func:`overall_loss` -- the set-level ("overall") loss,
* :func:`rank_loss` -- the Plackett-Luce (ListMLE) ranking loss.

Notation
--------
For a user ``u`` with score row ``a`` (``a_j`` = the student's score of item
``j``):

* ``obs(u)``   -- u's training items (``train_mask[u, j]`` true),
* ``Unobs(u)`` -- every item not in ``obs(u)``,
* ``Pobs``     -- the ``P`` observed items to push up (``observed[u]``), in
  the ensemble's order,
* ``T``        -- the ensemble's target list of ``K`` unobserved items
  (``top[u]``), in teacher order; ``T[:n]`` is its first ``n`` entries,
* ``Z(R) = sum_{j in R} exp(a_j)`` for a set of items ``R``.

Overall (set-level) loss, with ``R = Unobs \\ T``::

    L_overall = - sum_{i in Pobs ∪ T} [ a_i - log( exp(a_i) + Z(R) ) ]

ListMLE with a tail (Plackett-Luce over the list ``L`` followed by the
unordered set ``R``; ``L_k`` is the k-th list item)::

    listmle(L, R) = - sum_k [ a_{L_k} - log( sum_{l >= k} exp(a_{L_l}) + Z(R) ) ]

Rank loss (``//`` is floor division)::

    L_rank = listmle(Pobs,     Unobs \\ T[:K//2])
           + ( listmle(T[:K//2],  Unobs \\ T[:K//2])
             + listmle(T[:K//10], Unobs \\ T[:K//10]) ) / 2

Observed and unobserved items never share a denominator: ``Pobs`` is ranked
above a tail made of unobserved items only, and a training item that is not
in ``Pobs`` appears in no term at all.

Conventions
-----------
* ``K`` is the number of columns of ``top``.  ``K//2`` and ``K//10`` are floor
  divisions, so e.g. ``K = 7`` gives ``T[:3]`` and ``T[:0]``; an empty list
  contributes exactly 0 (the ``K//10`` term vanishes whenever ``K < 10``).
* Padding: entries ``< 0`` in ``observed`` or ``top`` are padding and
  contribute nothing (they are neither list items nor removed from a tail).
  Padding sits at the end of a row (a user with fewer than ``P`` training
  items has ``-1`` at the end of its ``observed`` row).  The prefixes
  ``T[:K//2]`` and ``T[:K//10]`` are taken by column, so a padded row simply
  has fewer real items in them.
* Every logarithm is ``log(clamp(x, min=1e-5))``.
* First-order gradients only (the backward is written by hand; a double backward raises).
* Both losses return the unweighted SUM over the batch's users as a 0-dim
  tensor (no mean).
* ``scores`` are expected to be clamped to ``[-40, 40]`` by the caller;
  ``exp`` is then applied directly (``exp(40) * 1e5 ≈ 2.4e22`` fits in
  float32).  Tails are built from masks, never by subtracting list items
  from a total, so there is no catastrophic cancellation.
* Everything stays on ``scores.device``; no Python loops over users or items.
* Speed: only the tail mass ``Z`` touches all ``I`` items. Both losses go through one
  hand-written autograd function (``_ListsOverTail``) that makes a few passes over the
  [B, I] scores (exp, mask, sum; backward: one product) and leaves every list term to
  autograd on [B, n] tensors; ``Z(Unobs \\ T[:K//10])`` is ``Z(Unobs \\ T[:K//2])`` plus
  list items, so the rank loss needs one [B, I] mask, not two. ``tests/test_losses.py``
  checks values and gradients against a per-user reference written from the formulas.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

__all__ = ["LOG_CLAMP_MIN", "overall_loss", "rank_loss"]

#: Lower clamp applied to the argument of every logarithm in the losses.
LOG_CLAMP_MIN = 1e-5


def _safe_log(x: torch.Tensor) -> torch.Tensor:
    return torch.log(torch.clamp(x, min=LOG_CLAMP_MIN))


def _check_inputs(scores, observed, top, train_mask):
    if scores.dim() != 2:
        raise ValueError(f"scores must be [B, I], got shape {tuple(scores.shape)}")
    b, n_items = scores.shape
    if observed.dim() != 2 or observed.shape[0] != b:
        raise ValueError(f"observed must be [B, P] with B={b}, got {tuple(observed.shape)}")
    if top.dim() != 2 or top.shape[0] != b:
        raise ValueError(f"top must be [B, K] with B={b}, got {tuple(top.shape)}")
    if tuple(train_mask.shape) != (b, n_items):
        raise ValueError(
            f"train_mask must be [B, I]={b, n_items}, got {tuple(train_mask.shape)}"
        )
    device = scores.device
    observed = observed.to(device=device, dtype=torch.long)
    top = top.to(device=device, dtype=torch.long)
    train = train_mask.to(device=device)
    if train.dtype != torch.bool:
        train = train != 0
    return observed, top, train


def _kept(train: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """uint8 [B, I]: 1 where the item is unobserved and not in the row of ``items``, else 0.

    uint8, not bool: multiplying float scores by a uint8 mask is about twice as fast on CPU
    as ``masked_fill_`` or a bool product. Padding (< 0) leaves its row unchanged (``amin``
    with 1).
    """
    kept = 1 - train.view(torch.uint8)
    kept.scatter_reduce_(1, items.clamp(min=0), (items < 0).to(torch.uint8), reduce="amin")
    return kept


def _extra_tail_items(rest: torch.Tensor, head: torch.Tensor, train: torch.Tensor) -> torch.Tensor:
    """Bool [B, n]: the entries of ``rest`` that are real, unobserved and not in ``head``, each once.

    With ``head`` = T[:K//10] and ``rest`` = T[K//10:K//2]: Z(Unobs \\ T[:K//10]) equals
    Z(Unobs \\ T[:K//2]) plus the exp-scores of these entries (a repeated item counts at its
    first occurrence only). Adding them keeps the sum free of cancellation.
    """
    real = rest >= 0
    observed = train.gather(1, rest.clamp(min=0))
    in_head = (rest.unsqueeze(2) == head.unsqueeze(1)).any(2)
    n = rest.shape[1]
    earlier = torch.ones(n, n, dtype=torch.bool, device=rest.device).tril(-1)  # [k, l]: l < k
    repeated = ((rest.unsqueeze(2) == rest.unsqueeze(1)) & earlier).any(2)
    return real & ~observed & ~in_head & ~repeated


def _listmle(a_list: torch.Tensor, valid: torch.Tensor, z_tail: torch.Tensor) -> torch.Tensor:
    """Sum over the batch of listmle(L, R) for list scores ``a_list`` [B, n] and Z(R) = ``z_tail`` [B]."""
    if a_list.shape[1] == 0:
        return a_list.new_zeros(())
    zero = torch.zeros((), dtype=a_list.dtype, device=a_list.device)
    e_list = torch.where(valid, torch.exp(a_list), zero)
    # suffix[k] = sum_{l >= k} exp(a_{L_l}) (reverse cumulative sum).
    suffix = torch.flip(torch.cumsum(torch.flip(e_list, [1]), 1), [1])
    terms = a_list - _safe_log(suffix + z_tail.unsqueeze(1))
    return -torch.where(valid, terms, zero).sum()


def _overall_terms(a_list, valid, z_r):
    terms = a_list - _safe_log(torch.exp(a_list) + z_r.unsqueeze(1))
    zero = torch.zeros((), dtype=a_list.dtype, device=a_list.device)
    return -torch.where(valid, terms, zero).sum()


def _rank_terms(p, tenth_len, extra):
    """The rank loss on list scores [Pobs | T[:K//2]] given Z(Unobs \\ T[:K//2])."""
    def terms(a_list, valid, z_half):
        a_obs, v_obs = a_list[:, :p], valid[:, :p]
        a_half, v_half = a_list[:, p:], valid[:, p:]
        loss = _listmle(a_obs, v_obs, z_half)
        half_term = _listmle(a_half, v_half, z_half)
        if tenth_len == 0:
            return loss + half_term / 2
        zero = torch.zeros((), dtype=a_list.dtype, device=a_list.device)
        z_tenth = z_half + torch.where(extra, torch.exp(a_half[:, tenth_len:]), zero).sum(1)
        tenth_term = _listmle(a_half[:, :tenth_len], v_half[:, :tenth_len], z_tenth)
        return loss + (half_term + tenth_term) / 2
    return terms


class _ListsOverTail(torch.autograd.Function):
    """loss(a) = f(a[L], Z) with Z = sum_j kept_j * exp(a_j), fused by hand.

    Only the tail mass Z touches all I items; ``f`` acts on the [B, n] list scores. Forward
    computes ``exp(a)`` masked in place, Z, ``f``, and the gradients of ``f`` with respect to
    the list scores and Z (autograd on [B, n] tensors); backward is then one [B, I] product,
    ``dZ * exp(a) * kept``, with the list gradients added at the list positions.
    Autograd's own chain (exp, where, sum, a gather per list, each with its backward) makes
    about twice as many passes over [B, I], which dominated a HetComp epoch.
    """

    @staticmethod
    def forward(ctx, scores, items, kept, fn):
        tail, index, a_list, z = _tail_and_lists(scores.detach(), items, kept)
        with torch.enable_grad():
            a_list.requires_grad_(True)
            z.requires_grad_(True)
            loss = fn(a_list, items >= 0, z)
            if loss.requires_grad:
                g_list, g_z = torch.autograd.grad(loss, [a_list, z], allow_unused=True)
            else:  # every term is empty (no Pobs, K <= 1): the loss is a constant 0
                g_list = g_z = None
        g_list = torch.zeros_like(a_list) if g_list is None else g_list
        g_z = torch.zeros_like(z) if g_z is None else g_z
        ctx.save_for_backward(tail, index, g_list, g_z)
        return loss.detach()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        tail, index, g_list, g_z = ctx.saved_tensors
        grad = tail * (g_z * grad_out).unsqueeze(1)
        grad.scatter_add_(1, index, g_list * grad_out)
        return grad, None, None, None


def _tail_and_lists(scores, items, kept):
    """exp(a) * kept [B, I], the list index, the list scores a[L] and Z = the tail's row sums."""
    tail = torch.exp(scores).mul_(kept)
    index = items.clamp(min=0)
    return tail, index, scores.gather(1, index), tail.sum(1)


def _lists_over_tail(scores, items, kept, fn):
    """``fn(a[L], valid, Z)``, through :class:`_ListsOverTail` when a gradient is wanted."""
    if torch.is_grad_enabled() and scores.requires_grad:
        return _ListsOverTail.apply(scores, items, kept, fn)
    _, _, a_list, z = _tail_and_lists(scores, items, kept)
    return fn(a_list, items >= 0, z)


def overall_loss(
    scores: torch.Tensor,
    observed: torch.Tensor,
    top: torch.Tensor,
    train_mask: torch.Tensor,
) -> torch.Tensor:
    """Set-level loss ``- sum_{i in Pobs ∪ T} [a_i - log(exp(a_i) + Z(Unobs \\ T))]``.

    Args:
        scores: float [B, I], already clamped to [-40, 40] by the caller.
        observed: long [B, P], the observed items to push up (Pobs); entries
            < 0 are padding (at the end of a row) and contribute nothing.
        top: long [B, K], the ensemble's target list T of unobserved items;
            entries < 0 are padding and contribute nothing.
        train_mask: [B, I] bool or 0/1, true where the item is a training item.

    Returns:
        0-dim tensor: the sum over the batch's users (logs clamped at 1e-5).
    """
    observed, top, train = _check_inputs(scores, observed, top, train_mask)
    items = torch.cat([observed, top], dim=1)
    return _lists_over_tail(scores, items, _kept(train, top), _overall_terms)  # R = Unobs \ T


def rank_loss(
    scores: torch.Tensor,
    observed: torch.Tensor,
    top: torch.Tensor,
    train_mask: torch.Tensor,
) -> torch.Tensor:
    """Ranking loss ``listmle(Pobs, U\\T[:K//2]) + (listmle(T[:K//2], U\\T[:K//2]) + listmle(T[:K//10], U\\T[:K//10])) / 2``.

    ``U`` = Unobs (items not in ``train_mask``); ``K`` = ``top.shape[1]``;
    ``K//2`` and ``K//10`` are floor divisions and an empty list (e.g. ``K//10 == 0``
    for ``K < 10``) contributes 0.

    Args:
        scores: float [B, I], already clamped to [-40, 40] by the caller.
        observed: long [B, P], Pobs in ensemble order; entries < 0 are padding
            (at the end of a row) and contribute nothing.
        top: long [B, K], T in teacher order; entries < 0 are padding and
            contribute nothing.
        train_mask: [B, I] bool or 0/1, true where the item is a training item.

    Returns:
        0-dim tensor: the sum over the batch's users (logs clamped at 1e-5).
    """
    observed, top, train = _check_inputs(scores, observed, top, train_mask)
    k = top.shape[1]
    half, tenth = top[:, : k // 2], top[:, : k // 10]
    extra = _extra_tail_items(half[:, tenth.shape[1]:], tenth, train)  # T[K//10:K//2] in Unobs \ T[:K//10]
    fn = _rank_terms(observed.shape[1], tenth.shape[1], extra)
    items = torch.cat([observed, half], dim=1)
    return _lists_over_tail(scores, items, _kept(train, half), fn)  # R = Unobs \ T[:K//2]
