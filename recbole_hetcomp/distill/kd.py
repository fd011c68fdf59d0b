"""Ranking-distillation baselines that HetComp is compared against, in pure torch.

Each loss distils from ONE target list per user: the ensemble's ranked top-K list of
unobserved items (``top``), the same target the HetComp losses of :mod:`.losses` use.

* :func:`rd_loss` -- Ranking Distillation (RD; Tang & Wang, KDD 2018),
* :func:`rrd_loss` -- Relaxed Ranking Distillation (RRD; Kang et al., CIKM 2020, "DE-RRD"),
* :func:`dcd_loss` -- Dual Correction Distillation (DCD; Lee & Kim, CIKM 2021),
* :func:`cldrd_loss` and :func:`cldrd_groups` -- curriculum learning for distillation
  (CL-DRD; Zeng, Zamani & Vinay, SIGIR 2022).

Notation (that of :mod:`.losses`)
---------------------------------
For a user ``u`` with score row ``a`` (``a_j`` = the student's score of item ``j``):

* ``Unobs(u)`` -- every item not in u's training items (``train_mask[u, j]`` false),
* ``T`` -- the target list ``top[u]`` of ``n`` real entries, best first; ``T_r`` its r-th entry
  (1-based), ``T[:n]`` its first ``n`` entries,
* ``Z(R) = sum_{j in R} exp(a_j)`` for a set of items ``R``,
* ``listmle(L, R) = - sum_k [ a_{L_k} - log( sum_{l >= k} exp(a_{L_l}) + Z(R) ) ]``
  (Plackett-Luce of the ordered list ``L`` above the unordered set ``R``),
* ``rank_S(i)`` -- the student's rank of item ``i`` among ``Unobs(u)``, 1-based:
  ``1 + #{j in Unobs(u) : a_j > a_i}`` (ties count in the item's favour; 1 is the top).

RD::

    w_a(r) = exp(-r / lam) / sum_{r'=1..n} exp(-r' / lam)                  (r = 1..n, 1-based)
    w_b(r) = tanh( max( mu * (rank_S(T_r) - r), 0 ) )
    w(r)   = w_a(r) * w_b(r) / sum_{r'} w_a(r') * w_b(r')   if dynamic,   w_a(r) otherwise
    L_RD   = - sum_r w(r) * log sigmoid(a_{T_r})

RRD::

    L_RRD = listmle(T, Unobs \\ T)

DCD (one "side" = a ranking of candidates for a query; see :func:`dcd_loss`)::

    L_DCD = sum_{users u} listmle(P_u, N_u)  +  sum_{items i} listmle(P_i, N_i)

    P = the candidates the student under-ranks (teacher order), N = those it over-ranks

CL-DRD, with group end positions ``g_1 < g_2 < ... < g_m`` into ``T`` and
``G_c = T[g_{c-1}:g_c]`` (``g_0 = 0``), ``R = Unobs \\ T[:g_m]``::

    L_CLDRD = - sum_c sum_{i in G_c} [ a_i - log( exp(a_i) + Z(G_{c+1} ∪ ... ∪ G_m) + Z(R) ) ]

Choices
-------
RD
  * Ranks are 1-based on both sides: the teacher position ``r`` of ``T_r`` runs 1..n and
    ``rank_S`` is 1 + the number of unobserved items scored strictly higher (0-based on both
    sides gives the same difference). ``rank_S`` is exact (from the full score row, without
    gradient) where the paper estimates it from sampled items.
  * ``w_a`` is normalised over the user's real (non-padding) positions. The hybrid product is
    renormalised to sum 1; a user whose product is 0 at every position (the student ranks
    every target item at or above its teacher position) contributes 0. Weights carry no
    gradient.
  * Only the distillation term: RD also trains the student on its own ground-truth loss (the
    paper's ``(1 - alpha) L_R + alpha L_D``); the caller adds that part and the balance. The
    paper's warm-up (position weights only for the first iterations) is the caller's
    ``dynamic`` switch.
  * Defaults ``lam = 1``, ``mu = 0.1``: those of the authors' released code (K = 10).
RRD
  * No sampling: the interesting items are the whole target list ``T`` in teacher order and
    the uninteresting items are ALL unobserved items outside ``T`` (the original samples
    interesting items from the teacher's ranking with rank-decaying probabilities and a few
    uninteresting ones uniformly; the HetComp authors drop that sampling, and full-catalogue
    scores make it unnecessary). It is the list term of HetComp's rank loss with the whole
    list: ``listmle(T, Unobs \\ T)``.
DCD
  * The teacher's ranking on each side is a weak order read from the ``top`` lists. User side:
    ``T_r`` has teacher rank ``r``; the other unobserved items are tied after the list (ranks
    ``n+1 .. |Unobs(u)|``). Item side (over the batch's users for whom the item is
    unobserved): users are ordered by the item's position in their list (1 first), users whose
    list lacks the item are tied after all that have it, users with equal positions are tied.
    A candidate of teacher rank interval ``[lo, hi]`` (``lo = hi`` without a tie) and student
    rank ``rho`` (1-based, among the query's unobserved candidates, ties in its favour) is
    under-ranked when ``d_up = rho - hi > 0`` and over-ranked when ``d_down = lo - rho > 0``.
    So a student whose order agrees with the teacher's weak order has loss exactly 0, and an
    item outside every list can only be pushed down (when the student ranks it inside the
    top ``n``).
  * The correction loss is RRD's relaxed list-wise form: the under-ranked candidates ``P`` in
    teacher order (ties: the student's current order) above the over-ranked ones ``N``, whose
    order is not distilled. The two sides are summed with weight 1 each; the paper's plain
    RRD term ``L_RKD`` is NOT included (the caller adds :func:`rrd_loss`), nor the base loss.
  * ``P`` comes from the teacher's list only, ``N`` from every unobserved candidate (on the user
    side: list items the student ranks too high and non-list items inside its top ``n``). As
    in any "``P`` above ``N``" form, an under-ranked candidate is pushed above an over-ranked
    one even where the teacher ranks it lower.
  * Sampling: with ``k=None`` (default) every under- and over-ranked candidate is used, which
    is deterministic and mirrors the no-sampling RRD above; ``eps`` then has no effect. With
    ``k`` given, up to ``k`` candidates of each kind are drawn per query without replacement
    with probability proportional to ``tanh(eps * d)`` (``d`` its discrepancy, RD's
    dynamic-weight form; Gumbel top-k, from ``generator``); a query with at most ``k``
    candidates of a kind keeps them all. The discrepancy definitions, the pools and this
    probability are this module's reading of the paper's discrepancy-based sampling.
  * The item side spans only the batch's users: unlike the other losses it is NOT a sum of
    per-user terms (a 1-user batch has no item-side term at all). ``item_side=False`` keeps
    the user side only.
  * Defaults ``eps = 0.1`` and ``k = None`` are this module's, not values taken from the paper.
  * Written from the paper's abstract and overview (its objective is the base loss plus ``L_RKD`` (RRD),
    ``L_UCD`` (user side) and ``L_ICD`` (item side)) and RRD's list-wise form: the method section's exact
    discrepancy and sampling formulas were not at hand, so the two correction terms here are this module's
    reading, to check against sections 3.2-3.4 of the paper. The student's loss
    (:class:`~recbole_hetcomp.model.hetcomp.HetComp` with ``kd_method: dcd``) is BPR + ``kd_weight`` *
    (``rrd_loss`` + this).
  * A training item listed in ``top`` is ignored here (DCD ranks unobserved candidates only).
CL-DRD
  * The paper trains in iterations whose teacher preference pairs go from coarse groups of
    the teacher's ranking to a finely ordered top; here a stage is a list of group end
    positions into ``T`` and the loss is the group-wise softmax above (every item of a group
    above every item of the lower groups and of ``R``, no order within a group) -- the same
    family as RRD; the paper's own loss over those preference pairs is not reproduced. With
    ``groups = [1, 2, ..., K]`` it equals :func:`rrd_loss`. List items past the last group end
    belong to ``R``.
  * Stage schedule (:func:`cldrd_groups`), three stages with boundaries at HetComp's own
    ``K//10`` and ``K//2`` prefixes (the paper's list sizes are for passage re-ranking and are
    not reused): stage 0 ``[K//10, K]`` (two unordered blocks), stage 1 ``[1, ..., K//10, K//2,
    K]`` (the top tenth ordered, then two blocks), stage 2 and later ``[1, 2, ..., K]`` (fully
    ordered). Each stage refines the previous one; empty boundaries (small K) are dropped.

Conventions
-----------
* ``scores`` float [B, I] (clamped to [-40, 40] by the caller); ``top`` long [B, K] with
  padding ``< 0`` at the end of a row (padding contributes nothing); ``train_mask`` [B, I] bool
  or 0/1, true on training items (column 0, RecBole's padding item, is true too). Items of
  ``top`` are unobserved items by contract (not checked, except in DCD). A training item that
  is not in ``top`` appears in no term.
* Every loss returns the unweighted SUM over the batch as a 0-dim tensor on ``scores.device``
  (for DCD's item side: the sum over items; see above).
* Logarithms are exact, not clamped at 1e-5 as in :mod:`.losses`: every exp is taken of the
  score minus the row's maximum over the scores that enter the loss (so none exceeds 1) and a
  denominator always holds its own term's exp; the log's argument is floored at the dtype's
  smallest normal number only so that a pathological underflow cannot give ``inf``. RD uses
  ``logsigmoid``. Gradients flow through the scores of list and tail items; ranks, weights and
  the choice of sets carry none.
* No Python loops over users, items or list positions.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from recbole_hetcomp.distill.ensemble import sorted_rows

__all__ = ["CLDRD_STAGES", "cldrd_groups", "cldrd_loss", "dcd_loss", "rd_loss", "rrd_loss"]

#: Number of distinct stages of :func:`cldrd_groups` (stage ``CLDRD_STAGES - 1`` and later are final).
CLDRD_STAGES = 3


# ---------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------
def _inputs(scores: torch.Tensor, top: torch.Tensor, train_mask: torch.Tensor):
    """Check shapes; return (top long, train bool, valid [B, K]) on ``scores.device``."""
    if scores.dim() != 2:
        raise ValueError(f"scores must be [B, I], got shape {tuple(scores.shape)}")
    b, n_items = scores.shape
    if top.dim() != 2 or top.shape[0] != b:
        raise ValueError(f"top must be [B, K] with B={b}, got {tuple(top.shape)}")
    if tuple(train_mask.shape) != (b, n_items):
        raise ValueError(f"train_mask must be [B, I]={b, n_items}, got {tuple(train_mask.shape)}")
    top = top.to(device=scores.device, dtype=torch.long)
    if bool((top >= n_items).any()):
        raise ValueError(f"top holds an item id >= I={n_items}")
    train = train_mask.to(device=scores.device)
    if train.dtype != torch.bool:
        train = train != 0
    return top, train, top >= 0


def _in_list(items: torch.Tensor, valid: torch.Tensor, n_items: int) -> torch.Tensor:
    """bool [B, I]: true on the real entries of each row of ``items`` (padding marks nothing)."""
    hits = torch.zeros(items.shape[0], n_items, dtype=torch.int32, device=items.device)
    hits.scatter_add_(1, items.clamp(min=0), valid.to(torch.int32))
    return hits > 0


def _shift(scores: torch.Tensor, used: torch.Tensor) -> torch.Tensor:
    """[B, 1] detached row maximum of the scores that enter the loss (0 for a row with none)."""
    m = scores.detach().masked_fill(~used, float("-inf")).amax(1, keepdim=True)
    return torch.where(torch.isfinite(m), m, torch.zeros_like(m))


def _log(x: torch.Tensor) -> torch.Tensor:
    return torch.log(torch.clamp(x, min=torch.finfo(x.dtype).tiny))


def _masked_exp(a: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """exp(a) where ``mask``, 0 elsewhere; the exp never sees a masked-out value (no inf * 0 in backward)."""
    zero = torch.zeros((), dtype=a.dtype, device=a.device)
    return torch.where(mask, torch.exp(torch.where(mask, a, zero)), zero)


def _tail_mass(a: torch.Tensor, tail: torch.Tensor) -> torch.Tensor:
    """[B]: Z(tail) of the shifted scores ``a`` [B, I]."""
    return _masked_exp(a, tail).sum(1)


def _listmle(a_list: torch.Tensor, valid: torch.Tensor, z_tail: torch.Tensor) -> torch.Tensor:
    """Sum over rows of listmle(L, R) for shifted list scores ``a_list`` [B, n] and Z(R) = ``z_tail`` [B]."""
    zero = torch.zeros((), dtype=a_list.dtype, device=a_list.device)
    e_list = _masked_exp(a_list, valid)
    suffix = torch.flip(torch.cumsum(torch.flip(e_list, [1]), 1), [1])  # sum_{l >= k} exp(a_{L_l})
    terms = a_list - _log(suffix + z_tail.unsqueeze(1))
    return -torch.where(valid, terms, zero).sum()


def _argsort_rows(x: torch.Tensor, descending: bool = False, stable: bool = False) -> torch.Tensor:
    """Long [R, C]: the permutation sorting each row of ``x`` (no gradient); ``stable`` keeps equal values in
    their column order (also when descending). On CPU through NumPy (about 3x faster than torch's sort here)."""
    if x.device.type != "cpu":
        return torch.sort(x, dim=1, descending=descending, stable=stable).indices
    a = x.numpy()
    if descending:
        a = -a if a.dtype.kind == "f" else np.iinfo(a.dtype).max - a  # order-reversing, ties kept as ties
    return torch.from_numpy(np.argsort(a, axis=1, kind="stable" if stable else "quicksort").astype(np.int64))


def _ranks_among(values: torch.Tensor, eligible: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """1-based rank of each query value among the row's eligible values: 1 + #{eligible values > query}."""
    ordered = sorted_rows(values.masked_fill(~eligible, float("-inf")))
    not_greater = torch.searchsorted(ordered, queries.contiguous(), right=True)
    return 1 + values.shape[1] - not_greater


def _ranks_of_eligible(values: torch.Tensor, eligible: torch.Tensor) -> torch.Tensor:
    """:func:`_ranks_among` of every value of the row as its own query, at the eligible entries (elsewhere: any
    value), from one sort: an entry's rank is 1 + the position where its run of equal values starts in the
    descending order (ties share the rank; the other entries sort last as -inf, below every finite value)."""
    masked = values.masked_fill(~eligible, float("-inf"))
    index = _argsort_rows(masked, descending=True)
    ordered = masked.gather(1, index)
    at = torch.arange(values.shape[1], device=values.device).expand_as(index)
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    first = torch.where(starts, at, torch.zeros_like(at)).cummax(1).values
    return torch.empty_like(index).scatter_(1, index, first + 1)


# ---------------------------------------------------------------------------
# RD
# ---------------------------------------------------------------------------
def rd_loss(
    scores: torch.Tensor,
    top: torch.Tensor,
    train_mask: torch.Tensor,
    *,
    lam: float = 1.0,
    mu: float = 0.1,
    dynamic: bool = True,
) -> torch.Tensor:
    """Ranking Distillation's distillation term ``- sum_r w(r) log sigmoid(a_{T_r})`` (Tang & Wang, KDD 2018).

    ``w`` is the position weight ``w_a(r) ∝ exp(-r / lam)`` (``r`` 1-based, normalised over the
    user's real positions) or, with ``dynamic``, the renormalised hybrid ``w_a(r) * w_b(r)`` with
    ``w_b(r) = tanh(max(mu * (rank_S(T_r) - r), 0))`` and ``rank_S`` the student's exact 1-based
    rank among the user's unobserved items. The student's own ground-truth loss, which RD adds,
    is not part of this function.

    Args:
        scores: float [B, I], already clamped to [-40, 40] by the caller.
        top: long [B, K], the target list in rank order; entries < 0 are padding (at the end).
        train_mask: [B, I] bool or 0/1, true where the item is a training item.
        lam: sharpness of the position weight (> 0).
        mu: sharpness of the ranking-discrepancy weight (> 0).
        dynamic: use the hybrid weight (True) or the position weight only (False).

    Returns:
        0-dim tensor: the sum over the batch's users.
    """
    if not lam > 0 or not mu > 0:
        raise ValueError(f"lam and mu must be > 0, got lam={lam}, mu={mu}")
    top, train, valid = _inputs(scores, top, train_mask)
    k = top.shape[1]
    dtype = scores.dtype
    zero = torch.zeros((), dtype=dtype, device=scores.device)
    a_list = scores.gather(1, top.clamp(min=0))
    with torch.no_grad():
        r = torch.arange(1, k + 1, device=scores.device, dtype=dtype).expand(top.shape[0], k)
        weight = torch.where(valid, torch.exp(-r / lam), zero)
        if dynamic:
            rank_s = _ranks_among(scores.detach(), ~train, a_list.detach()).to(dtype)
            weight = weight * torch.tanh(torch.clamp(mu * (rank_s - r), min=0))
        total = weight.sum(1, keepdim=True)
        weight = torch.where(total > 0, weight / torch.where(total > 0, total, torch.ones_like(total)), zero)
    log_sig = F.logsigmoid(torch.where(valid, a_list, zero))
    return -(weight * log_sig).sum()


# ---------------------------------------------------------------------------
# RRD
# ---------------------------------------------------------------------------
def rrd_loss(scores: torch.Tensor, top: torch.Tensor, train_mask: torch.Tensor) -> torch.Tensor:
    """Relaxed Ranking Distillation ``listmle(T, Unobs \\ T)`` (Kang et al., CIKM 2020).

    ``- sum_k [ a_{T_k} - log( sum_{l >= k} exp(a_{T_l}) + Z(Unobs \\ T) ) ]``: the whole target
    list, in teacher order, above all other unobserved items, whose order is not distilled.

    Args:
        scores: float [B, I], already clamped to [-40, 40] by the caller.
        top: long [B, K], the target list in rank order; entries < 0 are padding (at the end).
        train_mask: [B, I] bool or 0/1, true where the item is a training item.

    Returns:
        0-dim tensor: the sum over the batch's users.
    """
    top, train, valid = _inputs(scores, top, train_mask)
    listed = _in_list(top, valid, scores.shape[1])
    a = scores - _shift(scores, ~train | listed)
    z = _tail_mass(a, ~train & ~listed)
    return _listmle(a.gather(1, top.clamp(min=0)), valid, z)


# ---------------------------------------------------------------------------
# CL-DRD
# ---------------------------------------------------------------------------
def cldrd_groups(stage: int, k: int) -> list[int]:
    """Group end positions into a K-list for curriculum ``stage`` (0 coarsest; >= 2 fully ordered).

    * stage 0: ``[K//10, K]``,
    * stage 1: ``[1, 2, ..., K//10, K//2, K]``,
    * stage 2 and later: ``[1, 2, ..., K]``.

    Empty (0) and repeated boundaries are dropped, so e.g. ``K = 3`` gives ``[3]``, ``[1, 3]``,
    ``[1, 2, 3]``. Every stage's boundaries are a subset of the next stage's.
    """
    if isinstance(stage, bool) or not isinstance(stage, int) or stage < 0:
        raise ValueError(f"stage must be an int >= 0, got {stage!r}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    if stage == 0:
        ends = [k // 10, k]
    elif stage == 1:
        ends = list(range(1, k // 10 + 1)) + [k // 2, k]
    else:
        ends = list(range(1, k + 1))
    return sorted({e for e in ends if e > 0})


def _check_groups(groups) -> list[int]:
    ends = [int(g) for g in groups]
    if not ends or any(e < 1 for e in ends) or any(b <= a for a, b in zip(ends, ends[1:])):
        raise ValueError(f"groups must be a non-empty, strictly increasing list of positive ends, got {groups!r}")
    return ends


def cldrd_loss(scores: torch.Tensor, top: torch.Tensor, train_mask: torch.Tensor, groups) -> torch.Tensor:
    """Curriculum group loss (CL-DRD, Zeng et al., SIGIR 2022) for one stage's ``groups``.

    ``- sum_c sum_{i in G_c} [ a_i - log( exp(a_i) + Z(lower groups) + Z(Unobs \\ T[:g_m]) ) ]``
    with ``G_c = T[g_{c-1}:g_c]``: every item of a group above every item of the lower groups
    and every other unobserved item; no order within a group.

    Args:
        scores: float [B, I], already clamped to [-40, 40] by the caller.
        top: long [B, K], the target list in rank order; entries < 0 are padding (at the end).
        train_mask: [B, I] bool or 0/1, true where the item is a training item.
        groups: strictly increasing end positions into ``top`` (e.g. ``[10, 30, 100]``, or
            :func:`cldrd_groups`); ends beyond K are cut to K; list items past the last end
            belong to the tail.

    Returns:
        0-dim tensor: the sum over the batch's users.
    """
    ends = _check_groups(groups)
    top, train, valid = _inputs(scores, top, train_mask)
    k = top.shape[1]
    n_grouped = min(ends[-1], k)
    head, head_valid = top[:, :n_grouped], valid[:, :n_grouped]
    grouped = _in_list(head, head_valid, scores.shape[1])
    a = scores - _shift(scores, ~train | grouped)
    z = _tail_mass(a, ~train & ~grouped)
    if n_grouped == 0:
        return a.new_zeros(()) + 0 * z.sum()
    a_list = a.gather(1, head.clamp(min=0))
    bounds = torch.tensor(ends, device=scores.device)
    gid = torch.searchsorted(bounds, torch.arange(n_grouped, device=scores.device), right=True)  # [n]
    n_groups = len(ends)
    e_list = _masked_exp(a_list, head_valid)
    mass = e_list.new_zeros(top.shape[0], n_groups).index_add_(1, gid, e_list)  # Z(G_c)
    below = torch.flip(torch.cumsum(torch.flip(mass, [1]), 1), [1])  # Z(G_c ∪ ... ∪ G_m)
    lower = torch.cat([below[:, 1:], below.new_zeros(top.shape[0], 1)], 1)  # Z(G_{c+1} ∪ ... ∪ G_m)
    denom = e_list + lower[:, gid] + z.unsqueeze(1)
    zero = torch.zeros((), dtype=a.dtype, device=a.device)
    return -torch.where(head_valid, a_list - _log(denom), zero).sum()


# ---------------------------------------------------------------------------
# DCD
# ---------------------------------------------------------------------------
def _draw(candidates: torch.Tensor, d: torch.Tensor, k: int, eps: float, generator, dtype) -> torch.Tensor:
    """Up to ``k`` candidates per row, drawn without replacement with probability ∝ tanh(eps * d) (Gumbel top-k)."""
    weight = torch.tanh(eps * d.clamp(min=0).to(dtype))
    u = torch.rand(candidates.shape, generator=generator, dtype=dtype, device=candidates.device)
    u = u.clamp(min=torch.finfo(dtype).tiny, max=1 - torch.finfo(dtype).eps)
    keys = torch.where(candidates, torch.log(weight) - torch.log(-torch.log(u)), torch.full_like(u, float("-inf")))
    picked = keys.topk(min(k, keys.shape[1]), dim=1).indices
    return torch.zeros_like(candidates).scatter_(1, picked, True) & candidates


def _correction(x: torch.Tensor, pos: torch.Tensor, unlisted: int, k, eps, generator) -> torch.Tensor:
    """One side of DCD: sum over rows (queries) of listmle(P, N) over the row's candidates (columns).

    ``pos`` int [R, C]: the candidate's position in the teacher's list (1..K), ``unlisted`` (K + 1)
    for an eligible candidate outside it, larger for a candidate that is not eligible.
    """
    eligible = pos <= unlisted
    with torch.no_grad():
        xd = x.detach()
        # positions are small integers (1..K+2): a histogram per row and its running sum count them, exactly as
        # searching the sorted row would, in linear time (the searches were most of DCD's cost)
        below = pos.new_zeros(pos.shape[0], unlisted + 3, dtype=torch.long)
        below.scatter_add_(1, pos.long(), torch.ones(pos.shape, dtype=torch.long, device=pos.device))
        below = below.cumsum(1)  # below[r, v] = #{pos[r] <= v}
        lo = 1 + below.gather(1, pos.long() - 1)  # 1 + #{teacher strictly better}
        hi = below.gather(1, pos.long())  # #{teacher better or tied}
        rho = _ranks_of_eligible(xd, eligible)
        d_up = torch.where(eligible, rho - hi, torch.zeros_like(rho))
        d_down = torch.where(eligible, lo - rho, torch.zeros_like(rho))
        up, down = d_up > 0, d_down > 0
        if k is not None:
            up = _draw(up, d_up, k, eps, generator, x.dtype)
            down = _draw(down, d_down, k, eps, generator, x.dtype)
        n_up = up.sum(1)
        m = int(n_up.max()) if n_up.numel() else 0
        # P in teacher order (lo ascending), ties in the student's order: two stable sorts.
        by_score = _argsort_rows(xd.masked_fill(~up, float("-inf")), descending=True, stable=True)
        lo_key = torch.where(up, lo, torch.full_like(lo, pos.shape[1] + 1)).gather(1, by_score)
        order = by_score.gather(1, _argsort_rows(lo_key, stable=True))[:, :m]
        valid = torch.arange(m, device=x.device) < n_up.unsqueeze(1)
    a = x - _shift(x, eligible)
    return _listmle(a.gather(1, order), valid, _tail_mass(a, down))


def dcd_loss(
    scores: torch.Tensor,
    top: torch.Tensor,
    train_mask: torch.Tensor,
    *,
    k: int | None = None,
    eps: float = 0.1,
    item_side: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Dual Correction Distillation's correction terms ``L_UCD + L_ICD`` (Lee & Kim, CIKM 2021).

    User side, per user: the target items the student ranks below their teacher rank (``P``, in
    teacher order) above the unobserved items it ranks above theirs (``N``, unordered):
    ``listmle(P_u, N_u)``. Item side, per item, over the batch's users for whom it is unobserved:
    the same with users in place of items, the teacher's ranking of users for the item read from
    the item's position in each user's list (users without it tied after). The module docstring
    lists the exact definitions and choices; a student whose rankings agree with the teacher's
    on both sides has loss 0. The plain RRD term of DCD is :func:`rrd_loss`, added by the caller.

    Args:
        scores: float [B, I], already clamped to [-40, 40] by the caller.
        top: long [B, K], the target list in rank order; entries < 0 are padding (at the end).
        train_mask: [B, I] bool or 0/1, true where the item is a training item.
        k: None (default) uses every mis-ranked candidate; an int draws up to ``k`` under- and
            ``k`` over-ranked candidates per user (and per item) with probability ∝ ``tanh(eps * d)``.
        eps: sharpness of the discrepancy-based sampling (> 0); unused when ``k`` is None.
        item_side: add the item-side term (True) or return the user side only (False).
        generator: torch.Generator on ``scores.device`` for the draws when ``k`` is given.

    Returns:
        0-dim tensor: the user-side sum over the batch's users plus the item-side sum over items.
    """
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise ValueError(f"k must be None or an int >= 1, got {k!r}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    top, train, valid = _inputs(scores, top, train_mask)
    b, n_items = scores.shape
    unlisted = top.shape[1] + 1
    pos = torch.full((b, n_items), unlisted, dtype=torch.int32, device=scores.device)
    rank = torch.arange(1, top.shape[1] + 1, dtype=torch.int32, device=scores.device).expand(b, -1)
    pos.scatter_reduce_(1, top.clamp(min=0), torch.where(valid, rank, unlisted + 1), reduce="amin")
    pos.masked_fill_(train, unlisted + 1)
    loss = _correction(scores, pos, unlisted, k, eps, generator)
    if item_side and b > 1:
        cols = torch.unique(top[valid])
        if cols.numel():
            loss = loss + _correction(scores[:, cols].t(), pos[:, cols].t().contiguous(), unlisted, k, eps, generator)
    return loss
