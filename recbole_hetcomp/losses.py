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
* Both losses return the unweighted SUM over the batch's users as a 0-dim
  tensor (no mean).
* ``scores`` are expected to be clamped to ``[-40, 40]`` by the caller;
  ``exp`` is then applied directly (``exp(40) * 1e5 ≈ 2.4e22`` fits in
  float32).  Tails are built from masks, never by subtracting list items
  from a total, so there is no catastrophic cancellation.
* Everything stays on ``scores.device``; no Python loops over users or items.
"""

from __future__ import annotations

import torch

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


def _members(items: torch.Tensor, n_items: int) -> torch.Tensor:
    """Bool [B, I]: True where the item occurs (non-padding) in the row of ``items``.

    Padding (< 0) is routed to an extra dummy column that is dropped, so it
    never marks a real item.
    """
    b = items.shape[0]
    idx = torch.where(items >= 0, items, torch.full_like(items, n_items))
    out = torch.zeros(b, n_items + 1, dtype=torch.bool, device=items.device)
    out.scatter_(1, idx, True)
    return out[:, :n_items]


def _tail_mass(exp_a: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Z(R) per user: sum of exp(a_j) over items where ``keep`` is True -> [B]."""
    return torch.where(keep, exp_a, torch.zeros((), dtype=exp_a.dtype, device=exp_a.device)).sum(1)


def _gather_list(scores: torch.Tensor, items: torch.Tensor):
    """Scores of the list items -> ([B, n] scores, [B, n] validity mask)."""
    valid = items >= 0
    a_list = scores.gather(1, items.clamp(min=0))
    return a_list, valid


def _listmle(scores: torch.Tensor, items: torch.Tensor, z_tail: torch.Tensor) -> torch.Tensor:
    """Sum over the batch of listmle(items, R) with Z(R) = ``z_tail`` [B]."""
    if items.shape[1] == 0:
        return scores.new_zeros(())
    a_list, valid = _gather_list(scores, items)
    zero = torch.zeros((), dtype=scores.dtype, device=scores.device)
    e_list = torch.where(valid, torch.exp(a_list), zero)
    # suffix[k] = sum_{l >= k} exp(a_{L_l}) (reverse cumulative sum).
    suffix = torch.flip(torch.cumsum(torch.flip(e_list, [1]), 1), [1])
    terms = a_list - _safe_log(suffix + z_tail.unsqueeze(1))
    return -torch.where(valid, terms, zero).sum()


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
    n_items = scores.shape[1]
    exp_a = torch.exp(scores)
    keep = ~(train | _members(top, n_items))  # R = Unobs \ T
    z_r = _tail_mass(exp_a, keep)
    del keep

    items = torch.cat([observed, top], dim=1)
    a_list, valid = _gather_list(scores, items)
    terms = a_list - _safe_log(torch.exp(a_list) + z_r.unsqueeze(1))
    zero = torch.zeros((), dtype=scores.dtype, device=scores.device)
    return -torch.where(valid, terms, zero).sum()


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
    n_items = scores.shape[1]
    k = top.shape[1]
    half, tenth = top[:, : k // 2], top[:, : k // 10]
    exp_a = torch.exp(scores)

    keep = ~(train | _members(half, n_items))  # Unobs \ T[:K//2]
    z_half = _tail_mass(exp_a, keep)
    del keep
    loss = _listmle(scores, observed, z_half)
    half_term = _listmle(scores, half, z_half)

    if tenth.shape[1] > 0:
        keep = ~(train | _members(tenth, n_items))  # Unobs \ T[:K//10]
        z_tenth = _tail_mass(exp_a, keep)
        del keep
        tenth_term = _listmle(scores, tenth, z_tenth)
    else:
        tenth_term = scores.new_zeros(())
    return loss + (half_term + tenth_term) / 2
