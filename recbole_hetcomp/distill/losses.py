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
* First-order gradients only (the backward is written by hand; ``create_graph=True`` raises).
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
* The student trains through :func:`factorised_loss`: the same losses of
  ``clamp(U @ V.T)`` computed from the factors in a workspace it reuses batch after batch,
  with the clamp folded in, so no [B, I] float tensor is allocated per batch (on a CPU the
  page faults of fresh [B, I] tensors cost more than their arithmetic), and its training items
  as :class:`TrainEntries`, so the tail is zeroed at them instead of masked over [B, I] (the rank
  loss still builds a bool [B, I] to look up its T[K//10:K//2] items).
  ``benchmarks/loss_speed.py`` times the paths side by side.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from recbole_hetcomp.distill.ensemble import entries_mask

__all__ = ["LOG_CLAMP_MIN", "TrainEntries", "clamp_scores", "factorised_loss", "first_order_only", "overall_loss", "rank_loss"]

#: Lower clamp applied to the argument of every logarithm in the losses.
LOG_CLAMP_MIN = 1e-5


class TrainEntries(NamedTuple):
    """The training items of a batch as entries instead of a [B, I] mask: ``rows`` and ``cols`` (long, flat, any
    order) and the mask's ``shape``; column 0 (RecBole's padding item) is a training item of every row without an
    entry. :func:`factorised_loss` takes it in place of ``train_mask`` and then zeroes the tail at these entries
    instead of masking every score (a bool ``masked_fill_`` over [B, I] cost more than the exp and the matmul
    together), with the same values and gradients, bit for bit.
    """

    rows: torch.Tensor
    cols: torch.Tensor
    shape: tuple

    def observed(self, items):
        """bool, the shape of ``items`` [B, n]: whether each entry is a training item of its row (column 0 and
        padding, < 0, are)."""
        return entries_mask(self.rows, self.cols, self.shape).gather(1, items.clamp(min=0))

    def to(self, device):
        return TrainEntries(self.rows.to(device), self.cols.to(device), self.shape)


def _safe_log(x: torch.Tensor) -> torch.Tensor:
    return torch.log(torch.clamp(x, min=LOG_CLAMP_MIN))


def first_order_only(what):
    """Raise unless a hand-written backward runs for first-order gradients only. Under ``create_graph=True``
    (grad mode on in backward) its result would carry no second-order part, silently where another term of the
    same loss is twice differentiable (``once_differentiable`` guards only an upstream gradient that itself
    requires grad), so the check is explicit."""
    if torch.is_grad_enabled():
        raise RuntimeError(f"{what}: first-order gradients only (a hand-written backward); create_graph=True "
                           "cannot differentiate it again")


def _check_inputs(shape, device, observed, top, train_mask):
    b, n_items = shape
    if observed.dim() != 2 or observed.shape[0] != b:
        raise ValueError(f"observed must be [B, P] with B={b}, got {tuple(observed.shape)}")
    if top.dim() != 2 or top.shape[0] != b:
        raise ValueError(f"top must be [B, K] with B={b}, got {tuple(top.shape)}")
    if tuple(train_mask.shape) != (b, n_items):
        raise ValueError(
            f"train_mask must be [B, I]={b, n_items}, got {tuple(train_mask.shape)}"
        )
    observed = observed.to(device=device, dtype=torch.long)
    top = top.to(device=device, dtype=torch.long)
    train = train_mask.to(device)
    if isinstance(train, torch.Tensor) and train.dtype != torch.bool:
        train = train != 0
    return observed, top, train


def _check_scores(scores):
    if scores.dim() != 2:
        raise ValueError(f"scores must be [B, I], got shape {tuple(scores.shape)}")
    return tuple(scores.shape), scores.device


def _outside_tail(train, items: torch.Tensor):
    """bool [B, I]: true where the item is observed or in the row of ``items`` (not in the tail).

    A bool mask for ``masked_fill_``: a float product with a uint8 mask converts the mask to a
    [B, I] float first. Padding (< 0) leaves its row unchanged (``amax`` with 0). With
    :class:`TrainEntries`, the pair (entries, ``items``) instead, for :func:`_zero_outside_`.
    """
    if isinstance(train, TrainEntries):  # kept as entries: the tail is zeroed there and at ``items``
        return train, items
    outside = train.clone()
    outside.view(torch.uint8).scatter_reduce_(1, items.clamp(min=0), (items >= 0).to(torch.uint8), reduce="amax")
    return outside


def _extra_tail_items(rest: torch.Tensor, head: torch.Tensor, train) -> torch.Tensor:
    """Bool [B, n]: the entries of ``rest`` that are real, unobserved and not in ``head``, each once.

    With ``head`` = T[:K//10] and ``rest`` = T[K//10:K//2]: Z(Unobs \\ T[:K//10]) equals
    Z(Unobs \\ T[:K//2]) plus the exp-scores of these entries (a repeated item counts at its
    first occurrence only). Adding them keeps the sum free of cancellation.
    """
    real = rest >= 0
    observed = train.observed(rest) if isinstance(train, TrainEntries) else train.gather(1, rest.clamp(min=0))
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


def _zero_outside_(tail, outside):
    """``tail`` with 0 where ``outside``: a bool [B, I] mask, or (:class:`TrainEntries`, list items [B, n]) whose
    entries are zeroed one by one (padding, < 0, lands on column 0, a training entry of every row)."""
    if isinstance(outside, torch.Tensor):
        return tail.masked_fill_(outside, 0)
    train, items = outside
    tail.index_put_((train.rows, train.cols), tail.new_zeros(()))
    tail[:, 0] = 0
    return tail.scatter_(1, items.clamp(min=0), 0.0)


def _lists_and_tail_(ws, items, outside, fn, clamp=None, grads=True):
    """The loss and its gradients' parts, computed in place on the raw scores ``ws`` [B, I].

    ``ws`` belongs to the caller and is overwritten with the tail: ``exp(a)``, 0 where ``outside``; ``a`` the
    scores clamped to [-clamp, clamp] (``clamp`` None: as they are). Returns (loss, tail,
    index, dloss/da[L], dloss/dZ, clamped): ``clamped`` says whether any score was moved (its
    tail entry then still carries the forward's exp(a), to be zeroed in backward: see
    :func:`_unclamped_grad_`). Without ``grads`` only the loss is computed (the gradients'
    parts are None).
    """
    index = items.clamp(min=0)
    a_list = ws.gather(1, index)
    clamped = False
    if clamp is not None and ws.numel():
        low, high = torch.aminmax(ws)
        clamped = bool(low < -clamp or high > clamp)
        if clamped:
            ws.clamp_(-clamp, clamp)
    tail = _zero_outside_(ws.exp_(), outside)
    z = tail.sum(1)
    with torch.set_grad_enabled(grads):
        if grads:
            a_list.requires_grad_(True)
            z.requires_grad_(True)
        a = a_list.clamp(-clamp, clamp) if clamped else a_list
        loss = fn(a, items >= 0, z)
        if not grads:
            return loss, tail, index, None, None, clamped
        if loss.requires_grad:
            g_list, g_z = torch.autograd.grad(loss, [a_list, z], allow_unused=True)
        else:  # every term is empty (no Pobs, K <= 1): the loss is a constant 0
            g_list = g_z = None
    g_list = torch.zeros_like(a_list) if g_list is None else g_list
    g_z = torch.zeros_like(z) if g_z is None else g_z
    return loss.detach(), tail, index, g_list, g_z, clamped


def _unclamped_grad_(grad, raw, clamp, in_place=True):
    """Zero ``grad`` in place (or, not ``in_place``, a copy of it) where the raw score is outside [-clamp, clamp],
    as the gradient of ``torch.clamp`` does (a score exactly at the bound keeps its gradient).

    One fused pass (``hardtanh_backward``, which keeps the gradient strictly inside its
    bounds, given the next representable values beyond +-clamp) instead of comparisons,
    a logical or and a masked fill, each slower than the whole rest of the tail's work.
    """
    bound = torch.nextafter(torch.tensor(clamp, dtype=raw.dtype), torch.tensor(math.inf, dtype=raw.dtype)).item()
    if not in_place:
        return torch.ops.aten.hardtanh_backward(grad, raw, -bound, bound)
    return torch.ops.aten.hardtanh_backward.grad_input(grad, raw, -bound, bound, grad_input=grad)


class _ClampScores(torch.autograd.Function):
    """``scores.clamp(-bound, bound)`` whose backward is one fused pass (:func:`_unclamped_grad_`) instead of
    ``torch.clamp``'s comparisons, logical and and ``where``: the same values, and the same gradients bit for bit
    for finite scores and a finite bound (a NaN score's gradient may pass where ``torch.clamp`` gives it 0; an
    infinite score at an infinite bound loses its gradient)."""

    @staticmethod
    def forward(ctx, scores, bound):
        ctx.save_for_backward(scores)
        ctx.bound = bound
        return scores.clamp(-bound, bound)

    @staticmethod
    def backward(ctx, grad):
        (scores,) = ctx.saved_tensors
        return _unclamped_grad_(grad, scores, ctx.bound, in_place=False), None


def clamp_scores(scores: torch.Tensor, bound: float) -> torch.Tensor:
    """``scores.clamp(-bound, bound)``, with the same gradient (a score exactly at a bound keeps it), from one pass
    over [B, I] in backward where ``torch.clamp`` makes four: what a student's [B, I] scores go through before a
    loss that takes them whole (a RecBole student, the KD baselines)."""
    if torch.is_grad_enabled() and scores.requires_grad:
        return _ClampScores.apply(scores, float(bound))
    return scores.clamp(-bound, bound)


def _tail_grad_(tail, index, g_list, g_z, grad_out, unclamp=None, overwrite=True):
    """dloss/da [B, I]: the tail's share (passed through ``unclamp``, which zeroes clamped
    scores' gradients in place, if given) plus the list items' gradients (whose clamp is in
    ``g_list`` already). Written over ``tail`` if ``overwrite``, else into a new tensor (the
    graph can then be run backward again, with ``retain_graph``)."""
    scale = (g_z * grad_out).unsqueeze(1)
    grad = tail.mul_(scale) if overwrite else tail * scale
    if unclamp is not None:
        unclamp(grad)
    return grad.scatter_add_(1, index, g_list * grad_out)


class _ListsOverTail(torch.autograd.Function):
    """loss(a) = f(a[L], Z) with Z = sum of exp(a_j) over the tail (items not ``outside``), fused by hand.

    Only the tail mass Z touches all I items; ``f`` acts on the [B, n] list scores. Forward
    computes ``exp(a)`` masked in place, Z, ``f``, and the gradients of ``f`` with respect to
    the list scores and Z (autograd on [B, n] tensors); backward is then one [B, I] product,
    ``dZ * exp(a)`` over the tail, with the list gradients added at the list positions.
    Autograd's own chain (exp, where, sum, a gather per list, each with its backward) makes
    about twice as many passes over [B, I], which dominated a HetComp epoch.
    """

    @staticmethod
    def forward(ctx, scores, items, outside, fn):
        loss, tail, index, g_list, g_z, _ = _lists_and_tail_(scores.detach().clone(), items, outside, fn)
        ctx.save_for_backward(tail, index, g_list, g_z)
        return loss

    @staticmethod
    def backward(ctx, grad_out):
        first_order_only("overall_loss / rank_loss")
        return _tail_grad_(*ctx.saved_tensors, grad_out, overwrite=False), None, None, None


class _FactorisedListsOverTail(torch.autograd.Function):
    """The same loss for scores ``a = U @ V.T`` given as factors, clamped inside.

    The [B, I] scores are written into ``workspace`` (reused batch after batch) and every
    [B, I] step works in place there: fresh [B, I] tensors cost more in page faults than
    their arithmetic (about 20 ms each at B=750, I=22,383 on a 2-core CPU). When the clamp
    moved a score, backward recomputes the raw scores (one small matmul) into the second half
    of the workspace to zero their gradients. Backward overwrites the saved tail with the
    scores' gradient, so a second backward through the same graph, or a second forward into
    the same workspace before the first one's backward, raises (autograd's version check)
    instead of giving wrong gradients.
    """

    @staticmethod
    def forward(ctx, users, item_table, items, outside, fn, clamp, workspace):
        shape = (users.shape[0], item_table.shape[0])
        ws = torch.mm(users.detach(), item_table.detach().t(), out=_workspace_view(workspace, *shape))
        loss, tail, index, g_list, g_z, clamped = _lists_and_tail_(ws, items, outside, fn, clamp)
        ctx.clamp = clamp if clamped else None
        ctx.workspace = workspace
        ctx.save_for_backward(tail, index, g_list, g_z, users, item_table)
        return loss

    @staticmethod
    def backward(ctx, grad_out):
        first_order_only("factorised_loss")
        tail, index, g_list, g_z, users, item_table = ctx.saved_tensors

        def unclamp(grad):
            raw = torch.mm(users, item_table.t(), out=_workspace_view(ctx.workspace, *grad.shape, part=1))
            _unclamped_grad_(grad, raw, ctx.clamp)

        grad = _tail_grad_(tail, index, g_list, g_z, grad_out, unclamp if ctx.clamp is not None else None)
        want_users, want_table = ctx.needs_input_grad[:2]
        # (U^T G)^T, not G^T U: the same product, about 3x faster on CPU for a wide G
        return (grad @ item_table if want_users else None, (users.t() @ grad).t() if want_table else None,
                None, None, None, None, None)


def _workspace_view(workspace, b, n_items, part=0):
    """[b, n_items] view of ``workspace``'s first (``part`` 0) or second (1) b * n_items floats;
    None (allocate) without a workspace or for a second part it does not hold."""
    n = b * n_items
    if workspace is None or (part == 1 and workspace.numel() < 2 * n):
        return None
    if workspace.numel() < n:
        raise ValueError(f"workspace holds {workspace.numel()} floats, needs {n} ([{b}, {n_items}])")
    return workspace.view(-1)[part * n: (part + 1) * n].view(b, n_items)


def _lists_over_tail(scores, items, outside, fn):
    """``fn(a[L], valid, Z)``, through :class:`_ListsOverTail` when a gradient is wanted."""
    if torch.is_grad_enabled() and scores.requires_grad:
        return _ListsOverTail.apply(scores, items, outside, fn)
    return _lists_and_tail_(scores.detach().clone(), items, outside, fn, grads=False)[0]


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
    parts = _overall_parts(*_check_inputs(*_check_scores(scores), observed, top, train_mask))
    return _lists_over_tail(scores, *parts)


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
    parts = _rank_parts(*_check_inputs(*_check_scores(scores), observed, top, train_mask))
    return _lists_over_tail(scores, *parts)


def _overall_parts(observed, top, train):
    """(list items, mask of what is outside the tail, list terms) of the overall loss: lists Pobs and T, R = Unobs \\ T."""
    return torch.cat([observed, top], dim=1), _outside_tail(train, top), _overall_terms


def _rank_parts(observed, top, train):
    """(list items, mask of what is outside the tail, list terms) of the rank loss: lists Pobs and T[:K//2], tail
    R = Unobs \\ T[:K//2] (T[:K//10]'s tail adds T[K//10:K//2] back)."""
    k = top.shape[1]
    half, tenth = top[:, : k // 2], top[:, : k // 10]
    extra = _extra_tail_items(half[:, tenth.shape[1]:], tenth, train)  # T[K//10:K//2] in Unobs \ T[:K//10]
    fn = _rank_terms(observed.shape[1], tenth.shape[1], extra)
    return torch.cat([observed, half], dim=1), _outside_tail(train, half), fn


_PARTS = {"overall": _overall_parts, "rank": _rank_parts}


def factorised_loss(
    mode: str,
    users: torch.Tensor,
    item_table: torch.Tensor,
    observed: torch.Tensor,
    top: torch.Tensor,
    train_mask: torch.Tensor,
    *,
    clamp: float | None = None,
    workspace: torch.Tensor | None = None,
) -> torch.Tensor:
    """``overall_loss`` or ``rank_loss`` (``mode``) of the scores ``users @ item_table.T``,
    clamped to [-clamp, clamp] first when ``clamp`` is given.

    Same values and gradients as ``overall_loss(scores.clamp(-clamp, clamp), ...)``, with
    gradients for the two factors; the [B, I] scores never exist as an autograd tensor.
    ``workspace``, a float tensor of at least B * I elements on the factors' device, holds the
    scores and then their gradient, so a training loop allocates no [B, I] float tensor
    batch after batch (what the HetComp student does); with 2 * B * I elements the backward
    of a batch whose scores were clamped allocates none either. One graph per workspace at a time:
    run its backward before the next forward into the same workspace. ``train_mask`` is a [B, I]
    mask or the same training items as :class:`TrainEntries` (what the student passes: the tail is
    then zeroed at the entries, with no ``masked_fill_`` over [B, I]).
    """
    if mode not in _PARTS:
        raise ValueError(f"mode must be 'overall' or 'rank', got {mode!r}")
    if users.dim() != 2 or item_table.dim() != 2 or users.shape[1] != item_table.shape[1]:
        raise ValueError(f"users [B, d] and item_table [I, d] must share d, got {tuple(users.shape)} "
                         f"and {tuple(item_table.shape)}")
    shape = (users.shape[0], item_table.shape[0])
    items, outside, fn = _PARTS[mode](*_check_inputs(shape, users.device, observed, top, train_mask))
    clamp = None if clamp is None else float(clamp)
    if torch.is_grad_enabled() and (users.requires_grad or item_table.requires_grad):
        return _FactorisedListsOverTail.apply(users, item_table, items, outside, fn, clamp, workspace)
    ws = torch.mm(users, item_table.t(), out=_workspace_view(workspace, *shape))
    return _lists_and_tail_(ws, items, outside, fn, clamp, grads=False)[0]
