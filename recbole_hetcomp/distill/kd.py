"""Ranking-distillation baselines that HetComp is compared against, in pure torch.

Each loss distils from ONE target list per user: the ensemble's ranked top-K list of
unobserved items (``top``), the same target the HetComp losses of :mod:`.losses` use.

* :func:`rd_loss` -- Ranking Distillation (RD; Tang & Wang, KDD 2018),
* :func:`rrd_loss` -- Relaxed Ranking Distillation (RRD; Kang et al., CIKM 2020, "DE-RRD"),
* :func:`dcd_discrepancies`, :func:`dcd_sample`, :func:`dcd_correction`, :func:`dcd_item_lists` -- Dual
  Correction Distillation (DCD; Lee & Kim, CIKM 2021) as its authors' released code computes it
  (``kd_method: dcd``),
* :func:`cldrd_labels` and :func:`cldrd_loss` -- curriculum learning for distillation (CL-DRD; Zeng, Zamani &
  Vinay, SIGIR 2022) as its authors' released code computes it (``kd_method: cldrd``),
* :func:`dcd_overview_loss` (``kd_method: dcd_overview``) and :func:`cldrd_group_loss` with
  :func:`cldrd_group_ends` (``kd_method: cldrd_group``) -- our earlier readings of those two papers, written
  from their overviews before their code was read. They stay so that the rows recorded with them keep their
  meaning; the differences are listed under their choices below.

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

DCD (``dcd``; the student's loss adds BPR and :func:`rrd_loss`). One side is a teacher-ranked list per query:
user ``u``'s target list ``T`` (items), or item ``i``'s teacher top users ``V_i`` (:func:`dcd_item_lists`).
For the entry at teacher rank ``t`` (0-based) and the student's rank ``rho`` of it among the list's entries only::

    under = tanh(eps * max(rho - t, 0)),   over = tanh(eps * max(t - rho, 0))
    P = up to p_n entries drawn with probability ∝ under, in teacher order;  N = up to p_n drawn ∝ over
    L_DCD = sum_{batch users u} listmle(P_u, N_u)  +  sum_{batch items i} listmle(P_i, N_i)

CL-DRD (``cldrd``), over the teacher's top ``C`` candidates ``T[:C]`` with labels ``y`` (:func:`cldrd_labels`)
and ``p`` the student's 1-based position of a candidate among them::

    L_CLDRD = sum_u sum_{(i, j) : y_i > y_j} |1/p_i - 1/p_j| * log(1 + exp(-(a_i - a_j)))

DCD, our overview reading (``dcd_overview``; one "side" = a ranking of candidates for a query; see
:func:`dcd_overview_loss`)::

    L_DCD = sum_{users u} listmle(P_u, N_u)  +  sum_{items i} listmle(P_i, N_i)

    P = the candidates the student under-ranks (teacher order), N = those it over-ranks

CL-DRD, our group reading (``cldrd_group``), with group end positions ``g_1 < g_2 < ... < g_m`` into ``T`` and
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
DCD (``dcd``, its authors' released code, repository ``dudwns511/DCD_CIKM21``)
  * User side: the teacher's list is the ensemble's target ``T`` (K items), so the discrepancies, draws and
    loss involve list items only; ``rho`` ranks the student among the list (equal scores: teacher order).
  * Item side: the ensemble is a fusion of per-user lists, with no score comparable across users, so the
    teacher's top users of item ``i`` are read from those lists (:func:`dcd_item_lists`): the users whose list
    holds ``i``, by its position there; as many as the list is long (K), where the authors score every user
    with the teacher and keep the top 500 (as they keep 500 items a user). Users holding ``i`` at the same
    position are tied, and ties are common (K positions for up to U users): the discrepancy is then
    measured against the tied block, not a made-up order, so the student may order a block either way. The cut
    at K goes through a tie in a fixed pseudo-random order of the users. The item side
    runs over the batch's distinct positive items (``hetcomp_batch: users``: the batch users' training items).
  * Draws (:func:`dcd_sample`): up to ``p_n`` (``dcd_sample``, 10) of each kind per query, without replacement,
    with probability ∝ the weight (the authors: ``torch.multinomial`` of ``p_n``, which needs ``p_n``
    positive weights; here a query with fewer keeps them all). ``eps`` (``dcd_eps``, 0.1) and ``p_n`` are
    values of ours: the released code does not fix them.
  * The weights are recomputed from the student's scores every ``dcd_refresh`` (3) epochs, as the authors
    do, and held between; the loss uses the student's current scores.
  * Objective: BPR + ``kd_weight`` * (RRD + UCD + ICD), the paper's base + ``L_RKD`` + ``L_UCD`` + ``L_ICD`` with
    one weight for the three (the paper weighs each). The authors' ``run_dcd.py`` leaves the RRD term out
    (``dcd_rrd: False`` does so too). Without it nothing ranks the list above the other items: ``P`` and ``N``
    are both list items and ``listmle(P, N)`` raises ``P`` by what it lowers ``N``. Only BPR is left to do
    that. In a trial on ml-1m (not recorded) that student's validation score peaked early and declined, below
    MF without KD.
DCD, our overview reading (``dcd_overview``)
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
    ``L_UCD`` (user side) and ``L_ICD`` (item side)) and RRD's list-wise form. The student's loss
    (:class:`~recbole_hetcomp.model.hetcomp.HetComp` with ``kd_method: dcd``) is BPR + ``kd_weight`` *
    (``rrd_loss`` + this).
  * NOT the authors' released code (read since; repository ``dudwns511/DCD_CIKM21``), which differs in ways
    that matter, so rows of this loss are "DCD as read from the paper's overview", not a reproduction:
    (1) it ranks the student among the teacher's list only (its discrepancies over a list are a permutation
    difference), where ``rho`` here counts every unobserved item; (2) its over-ranked set holds list items
    only, where ``N`` here also takes non-list items inside the student's top ``n``; (3) its item side ranks,
    for each of the batch's positive items, the teacher's top users of that item across all users, where
    here it spans the batch's users; (4) its objective is base + ``UCD_lambda`` * UCD + ``ICD_lambda`` *
    ICD, without the RRD term added here; (5) it samples ``p_n`` candidates of each kind with probability
    ``tanh(ep * d)`` and refreshes the discrepancies every 3 epochs.
  * A training item listed in ``top`` is ignored here (DCD ranks unobserved candidates only).
CL-DRD (``cldrd``, its authors' released code, repository ``HansiZeng/CL-DRD``)
  * Candidates: the ensemble's top ``C`` (``cldrd_candidates``, 30, the authors' number) of ``T``; nothing
    outside them enters this loss.
  * The student's loss adds its own BPR loss (``cldrd_base: True``), as for RD, RRD and DCD here. The authors
    fine-tune a pretrained retriever, which already ranks the whole collection, with this loss alone
    (``cldrd_base: False``). Our student starts from scratch, and with that objective it learnt nothing of the
    items outside its 30 candidates: on ml-1m it scored under half of MF without KD's test Recall@20
    (benchmarks/results/student_variants.md, ``cldrd_base=False``).
  * Stages (:func:`cldrd_labels`): the authors' label sets, scaled to ``C``: an ordered top with labels
    ``1/r`` growing over 1/6, 1/3, 2/3 and all of the candidates (5, 10, 20, 30 of 30), the rest split into
    -0.25 and -0.5; a stage every ``cldrd_stage_epochs`` epochs, the authors training each iteration
    to its end before the next.
  * Loss (:func:`cldrd_loss`): the pairwise position-weighted loss of the authors' code, summed over pairs and
    users like every loss here. The authors average over the batch's pairs, which for a loss used alone only
    scales it (with C candidates every query has as many pairs). Beside BPR, a sum over interactions, that mean
    makes the term vanish (in a trial on ml-1m, not recorded, the student scored level with MF without KD).
CL-DRD, our group reading (``cldrd_group``)
  * The paper trains in iterations whose teacher preference pairs go from coarse groups of
    the teacher's ranking to a finely ordered top; here a stage is a list of group end
    positions into ``T`` and the loss is the group-wise softmax above (every item of a group
    above every item of the lower groups and of ``R``, no order within a group) -- the same
    family as RRD; the paper's own loss over those preference pairs is not reproduced. With
    ``groups = [1, 2, ..., K]`` it equals :func:`rrd_loss`. List items past the last group end
    belong to ``R``.
  * NOT the authors' released code (read since; repository ``HansiZeng/CL-DRD``), so rows of this loss are
    "a CL-DRD-like curriculum", not a reproduction: (1) its loss is pairwise, LambdaRank-like: for every
    candidate pair with teacher label ``y_i > y_j``, ``|1/p_i - 1/p_j| * log(1 + exp(-(s_i - s_j)))`` with
    ``p`` the student's current 1-based position among the candidates, averaged over pairs; (2) every
    iteration keeps the teacher's top group fully ordered (labels ``1/r``) and makes only the lower groups
    coarse, the ordered prefix growing 5, 10, 30 of 30 candidates, where stage 0 here leaves the top block
    unordered; (3) nothing outside its 30 teacher-ranked candidates enters the loss, where ``R`` here holds
    every other unobserved item.
  * Stage schedule (:func:`cldrd_group_ends`), three stages with boundaries at HetComp's own
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
from recbole_hetcomp.distill.losses import first_order_only

__all__ = ["CLDRD_GROUP_STAGES", "CLDRD_STAGES", "cldrd_group_ends", "cldrd_group_loss", "cldrd_labels", "cldrd_loss",
           "dcd_correction", "dcd_discrepancies", "dcd_item_lists", "dcd_overview_loss", "dcd_sample", "rd_loss",
           "rrd_loss"]

#: Number of distinct stages of :func:`cldrd_group_ends` (stage ``CLDRD_GROUP_STAGES - 1`` and later are final).
CLDRD_GROUP_STAGES = 3


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


def _listed(index, valid):
    """(rows, items) of the real entries of the lists ``index`` [B, n] (padding left out)."""
    rows, cols = valid.nonzero(as_tuple=True)
    return rows, index[rows, cols]


def _shifted_tail(scores, items, valid, train):
    """(``exp(a)`` over the tail ``Unobs \\ L``, 0 elsewhere, [B, I]; the list's ``a`` [B, n]) with ``a = scores - m``,
    ``m`` the row maximum over ``Unobs ∪ L`` (:func:`_shift`): the numbers of ``_tail_mass`` and ``a.gather``, with
    no [B, I] mask of the list. Training items become -inf (``exp`` then gives 0), listed items 0."""
    index = items.clamp(min=0)
    inf = float("-inf")
    raw_list = scores.gather(1, index)
    tail = scores.masked_fill(train, inf)
    m = tail.amax(1, keepdim=True)
    if index.shape[1]:  # the list's items count too (an observed item on the list: not by contract, but kept)
        m = torch.maximum(m, raw_list.masked_fill(~valid, inf).amax(1, keepdim=True))
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    tail.sub_(m).exp_()
    tail.index_put_(_listed(index, valid), tail.new_zeros(()))  # the list's items leave the tail
    return tail, raw_list - m


class _ListsAboveTail(torch.autograd.Function):
    """``fn(a[L], valid, Z)`` with ``Z`` the tail mass of :func:`_shifted_tail`, fused by hand.

    The same values as the autograd chain ``a = scores - _shift(scores, ~train | listed)``,
    ``_tail_mass(a, ~train & ~listed)``, ``a.gather(1, L)``, and, for finite scores, the same first-order
    gradients bit for bit (a zero may differ in sign): the same arithmetic on the same numbers, except that the
    tail's gradient multiplies the zeros outside the tail where the chain's ``where`` drops them (the same
    zeros, unless the incoming gradient is not finite: those entries are then masked, as the chain masks them).
    Forward makes five passes over [B, I], backward one product (into a new tensor, so that a backward can run
    again, as ``gradcheck`` does). Autograd's chain made about three times as many, each into a fresh [B, I]
    tensor, and was most of an RRD step on a large catalogue (``benchmarks/kd_speed.py``). ``fn`` runs under
    autograd on the [B, n] list scores and Z, its backward seeded with the incoming gradient, as the chain's is.
    First-order only: ``create_graph=True`` raises (:func:`~recbole_hetcomp.distill.losses.first_order_only`).
    """

    @staticmethod
    def forward(ctx, scores, items, valid, train, fn):
        tail, a_list = _shifted_tail(scores, items, valid, train)
        with torch.enable_grad():
            a_list.requires_grad_(True)
            z = tail.sum(1).requires_grad_(True)
            loss = fn(a_list, valid, z)
        ctx.graph = (loss, a_list, z)
        ctx.save_for_backward(tail, items.clamp(min=0), valid, train)
        return loss.detach()

    @staticmethod
    def backward(ctx, grad_out):
        first_order_only("rrd_loss / cldrd_group_loss")
        loss, a_list, z = ctx.graph
        tail, index, valid, train = ctx.saved_tensors
        g_list, g_z = torch.autograd.grad(loss, [a_list, z], grad_out, retain_graph=True, allow_unused=True)
        g_z = (torch.zeros_like(z) if g_z is None else g_z).unsqueeze(1)
        grad = tail * g_z  # a new tensor: backward may run again
        if not bool(torch.isfinite(g_z).all()):  # 0 * inf outside the tail: masked instead, as the chain does
            outside = train.clone()
            outside[_listed(index, valid)] = True
            grad.masked_fill_(outside, 0)
        return (grad if g_list is None else grad.scatter_add_(1, index, g_list)), None, None, None, None


def _lists_above_tail(scores, items, valid, train, fn):
    """``fn(a[L], valid, Z)`` of :class:`_ListsAboveTail`, through it when a gradient is wanted."""
    if torch.is_grad_enabled() and scores.requires_grad:
        return _ListsAboveTail.apply(scores, items, valid, train, fn)
    tail, a_list = _shifted_tail(scores, items, valid, train)
    return fn(a_list, valid, tail.sum(1))


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
    at = torch.arange(1, values.shape[1] + 1, device=values.device).expand_as(index)
    tied = (ordered[:, 1:] == ordered[:, :-1]) & torch.isfinite(ordered[:, 1:])  # -inf entries: any rank will do
    rows = tied.any(1).nonzero().view(-1)
    if rows.numel():  # rows with equal scores (rare): each run of equal values takes the rank of its start
        starts = torch.ones(rows.numel(), index.shape[1], dtype=torch.bool, device=values.device)
        starts[:, 1:] = ~tied[rows]
        at = at.clone()
        at[rows] = torch.where(starts, at[rows], torch.zeros_like(starts, dtype=at.dtype)).cummax(1).values
    return torch.empty_like(index).scatter_(1, index, at)


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
    return _lists_above_tail(scores, top, valid, train, _listmle)


# ---------------------------------------------------------------------------
# CL-DRD
# ---------------------------------------------------------------------------
def cldrd_group_ends(stage: int, k: int) -> list[int]:
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


def cldrd_group_loss(scores: torch.Tensor, top: torch.Tensor, train_mask: torch.Tensor, groups) -> torch.Tensor:
    """Curriculum group loss (CL-DRD, Zeng et al., SIGIR 2022) for one stage's ``groups``.

    ``- sum_c sum_{i in G_c} [ a_i - log( exp(a_i) + Z(lower groups) + Z(Unobs \\ T[:g_m]) ) ]``
    with ``G_c = T[g_{c-1}:g_c]``: every item of a group above every item of the lower groups
    and every other unobserved item; no order within a group.

    Args:
        scores: float [B, I], already clamped to [-40, 40] by the caller.
        top: long [B, K], the target list in rank order; entries < 0 are padding (at the end).
        train_mask: [B, I] bool or 0/1, true where the item is a training item.
        groups: strictly increasing end positions into ``top`` (e.g. ``[10, 30, 100]``, or
            :func:`cldrd_group_ends`); ends beyond K are cut to K; list items past the last end
            belong to the tail.

    Returns:
        0-dim tensor: the sum over the batch's users.
    """
    ends = _check_groups(groups)
    top, train, valid = _inputs(scores, top, train_mask)
    k = top.shape[1]
    n_grouped = min(ends[-1], k)
    bounds = torch.tensor(ends, device=scores.device)
    gid = torch.searchsorted(bounds, torch.arange(n_grouped, device=scores.device), right=True)  # [n]

    def terms(a_list, head_valid, z):
        if n_grouped == 0:
            return a_list.new_zeros(()) + 0 * z.sum()
        e_list = _masked_exp(a_list, head_valid)
        mass = e_list.new_zeros(top.shape[0], len(ends)).index_add_(1, gid, e_list)  # Z(G_c)
        below = torch.flip(torch.cumsum(torch.flip(mass, [1]), 1), [1])  # Z(G_c ∪ ... ∪ G_m)
        lower = torch.cat([below[:, 1:], below.new_zeros(top.shape[0], 1)], 1)  # Z(G_{c+1} ∪ ... ∪ G_m)
        denom = e_list + lower[:, gid] + z.unsqueeze(1)
        zero = torch.zeros((), dtype=a_list.dtype, device=a_list.device)
        return -torch.where(head_valid, a_list - _log(denom), zero).sum()

    return _lists_above_tail(scores, top[:, :n_grouped], valid[:, :n_grouped], train, terms)


# ---------------------------------------------------------------------------
# DCD
# ---------------------------------------------------------------------------
def _draw(candidates: torch.Tensor, d: torch.Tensor, k: int, eps: float, generator, dtype) -> torch.Tensor:
    """Up to ``k`` candidates per row, drawn without replacement with probability ∝ tanh(eps * d) (Gumbel top-k)."""
    weight = torch.tanh(eps * d.clamp(min=0).to(dtype))
    return dcd_sample(torch.where(candidates, weight, torch.zeros_like(weight)), k, generator)


def _correction(x: torch.Tensor, pos: torch.Tensor, unlisted: int, k, eps, generator) -> torch.Tensor:
    """One side of DCD: sum over rows (queries) of listmle(P, N) over the row's candidates (columns).

    ``pos`` int64 [R, C]: the candidate's position in the teacher's list (1..K), ``unlisted`` (K + 1)
    for an eligible candidate outside it, K + 2 for a candidate that is not eligible.
    """
    eligible = pos <= unlisted
    with torch.no_grad():
        xd = x.detach()
        # positions are small integers (1..K+2): a histogram per row and its running sum count them, exactly as
        # searching the sorted row would, in linear time (the searches were most of DCD's cost)
        below = pos.new_zeros(pos.shape[0], unlisted + 3)
        below.scatter_add_(1, pos, torch.ones_like(pos))
        below = below.cumsum(1)  # below[r, v] = #{pos[r] <= v}
        lo = 1 + below.gather(1, pos - 1)  # 1 + #{teacher strictly better}
        hi = below.gather(1, pos)  # #{teacher better or tied}
        rho = _ranks_of_eligible(xd, eligible)
        up, down = eligible & (rho > hi), eligible & (lo > rho)  # d_up = rho - hi > 0, d_down = lo - rho > 0
        if k is not None:
            up = _draw(up, rho - hi, k, eps, generator, x.dtype)
            down = _draw(down, lo - rho, k, eps, generator, x.dtype)
        n_up = up.sum(1)
        m = int(n_up.max()) if n_up.numel() else 0
        # P in teacher order (lo ascending), ties in the student's order (rho ascending: equal scores share rho),
        # then the column: one stable sort of a key below (C + 1)^2 (the column order is the stable sort's)
        c = pos.shape[1]
        key = (lo * (c + 1) + rho).masked_fill_(~up, (c + 1) ** 2)
        order = _argsort_rows(key, stable=True)[:, :m]
        valid = torch.arange(m, device=x.device) < n_up.unsqueeze(1)
    a = x - _shift(x, eligible)
    return _listmle(a.gather(1, order), valid, _tail_mass(a, down))


def _count_not_greater(asc: torch.Tensor, rows: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """#{entries of ``asc[rows[e]]`` <= ``values[e]``} for each e, ``asc`` [R, C] sorted ascending per row: a
    bisection of every query at once (log2(C) halving steps over the queries, no pass over [R, C])."""
    c = asc.shape[1]
    flat, base = asc.reshape(-1), rows * c - 1
    count = torch.zeros_like(rows)
    step = 1 << (c.bit_length() - 1)
    while step:
        cand = count + step
        count += ((flat.gather(0, (base + cand).clamp(max=flat.numel() - 1)) <= values) & (cand <= c)) * step
        step >>= 1
    return count


def _correction_unsampled(xd, blocked, rows, cols, teacher, pick, in_order=False) -> torch.Tensor:
    """:func:`_correction` with ``k=None`` (every mis-ranked candidate), from one values-only sort of each row and
    work on the listed cells alone, never building the [R, C] positions.

    ``xd`` [R, C] the detached scores of the candidates (columns) of each query (row), ``blocked`` [R, C] true on
    the candidates that are not eligible; the listed cells, one per (row, column) and all eligible: ``rows``,
    ``cols`` and their teacher position ``teacher`` (1..K); ``in_order``: the cells come sorted by row, then
    position, and a row's positions are distinct (a user's list); ``pick(rows, cols)`` the scores of cells, with
    gradient. Every bound a rank is compared with is at most the row's number ``L`` of listed cells (a listed
    cell's ``lo`` and ``hi``; an unlisted candidate's ``lo = L + 1``, and it is never under-ranked: its ``hi`` is
    every eligible candidate). So an unlisted candidate is over-ranked exactly when its score is at least the
    row's ``L``-th largest, and only the listed cells need their rank, by bisection in the sorted row. Ties are
    exact as in :func:`_correction`: a rank counts the strictly greater scores, P's ties go by rank, then column.
    """
    r_count, c = xd.shape
    dev = xd.device
    with torch.no_grad():
        masked = xd.masked_fill(blocked, float("-inf"))
        asc = sorted_rows(masked)  # ascending; blocked candidates first, as -inf
        n_listed = torch.bincount(rows, minlength=r_count)
        start = torch.cumsum(n_listed, 0) - n_listed  # where each row's cells begin in (row, position) order
        at = torch.arange(rows.numel(), device=dev)
        if in_order:  # distinct positions: lo = hi = 1 + the cell's index in its row
            lo = hi = 1 + at - start[rows]
        else:  # sorted by (row, position), a run of equal keys spans [first, last]:
            # lo = 1 + #{strictly better} = 1 + first - start, hi = #{better or tied} = 1 + last - start
            key = rows * (int(teacher.max()) + 1 if teacher.numel() else 1) + teacher
            by = _argsort_rows(key.unsqueeze(0))[0]  # ties may go in any order
            ordered = key[by]
            new_run = torch.ones_like(ordered, dtype=torch.bool)
            new_run[1:] = ordered[1:] != ordered[:-1]
            first = torch.where(new_run, at, torch.zeros_like(at)).cummax(0).values
            run_end = torch.ones_like(new_run)
            run_end[:-1] = new_run[1:]
            last = torch.where(run_end, at, torch.full_like(at, ordered.numel())).flip(0).cummin(0).values.flip(0)
            lo, hi = torch.empty_like(at), torch.empty_like(at)
            lo[by], hi[by] = 1 + first - start[rows[by]], 1 + last - start[rows[by]]
        rho = 1 + c - _count_not_greater(asc, rows, xd[rows, cols])  # 1 + #{eligible scored strictly higher}
        up, down = rho > hi, rho < lo
        # unlisted over-ranked candidates: eligible, scored at least the row's L-th largest, not listed
        nth = asc.gather(1, (c - n_listed).clamp(min=0, max=c - 1).unsqueeze(1))
        nth = torch.where(n_listed.unsqueeze(1) > 0, nth, torch.full_like(nth, float("inf")))
        t_rows, t_cols = (masked >= nth).nonzero(as_tuple=True)
        is_listed = torch.zeros(r_count, c, dtype=torch.bool, device=dev)
        is_listed[rows, cols] = True
        unlisted = ~is_listed[t_rows, t_cols]
        d_rows, d_cols = torch.cat([rows[down], t_rows[unlisted]]), torch.cat([cols[down], t_cols[unlisted]])
        # P: the under-ranked cells by row, then teacher rank, then student rank (equal scores tie), then column
        p_rows, p_cols = rows[up], cols[up]
        within = (lo[up] * (c + 1) + rho[up]) * c + p_cols  # distinct within a row, below (K + 1)(C + 1)C
        span = (int(lo.max()) + 1 if lo.numel() else 1) * (c + 1) * c
        if r_count * span < 2 ** 63:  # one key for (row, within): one sort
            by = _argsort_rows((p_rows * span + within).unsqueeze(0))[0]
        else:  # too large for int64 (a catalogue of millions): by within, then stably by row
            by = torch.sort(within).indices
            by = by[torch.sort(p_rows[by], stable=True).indices]
        p_rows, p_cols = p_rows[by], p_cols[by]
        n_up = torch.bincount(p_rows, minlength=r_count)
        m = int(n_up.max()) if n_up.numel() else 0
        slot = torch.arange(p_rows.numel(), device=dev) - (torch.cumsum(n_up, 0) - n_up)[p_rows]
        order_rows = torch.zeros(r_count, m, dtype=torch.long, device=dev)
        order_cols = torch.zeros(r_count, m, dtype=torch.long, device=dev)
        order_rows[p_rows, slot], order_cols[p_rows, slot] = p_rows, p_cols
        valid = torch.arange(m, device=dev) < n_up.unsqueeze(1)
        best = asc[:, -1:]
        shift = torch.where(torch.isfinite(best), best, torch.zeros_like(best))  # _shift: max over the eligible
    # Z(N) per row (an index_add: its order of summation differs from a row sum's, so Z agrees with the every-cell
    # path to rounding; on CUDA its atomic adds also vary from run to run in the last bits)
    z = torch.zeros(r_count, dtype=xd.dtype, device=dev).index_add(
        0, d_rows, torch.exp(pick(d_rows, d_cols) - shift[d_rows, 0]))
    a_list = pick(order_rows.view(-1), order_cols.view(-1)).view(r_count, m) - shift
    return _listmle(a_list, valid, z)


def dcd_overview_loss(
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
    if k is not None:
        return _dcd_every_cell(scores, top, valid, train, k, eps, generator, item_side)
    b, n_items = scores.shape
    # the list's unobserved items, each at its first listing: (user, item, position), by user then position
    listed = valid & ~train.gather(1, top.clamp(min=0))
    users = torch.arange(b, device=scores.device).unsqueeze(1).expand_as(top)[listed]
    ranks = torch.arange(1, top.shape[1] + 1, device=scores.device).expand_as(top)[listed]
    items = top[listed]
    spare = -1 - torch.arange(top.shape[1], device=scores.device)  # distinct negatives: they never repeat
    ordered = torch.sort(torch.where(listed, top, spare), dim=1).values  # [B, K]: no pass over [B, I]
    if bool((ordered[:, 1:] == ordered[:, :-1]).any()):
        key = users * n_items + items  # a list names an item twice: keep its first listing, the smallest position
        first = torch.full((b * n_items,), top.shape[1] + 1, dtype=torch.long, device=scores.device)
        kept = first.scatter_reduce_(0, key, ranks, reduce="amin")[key] == ranks
        users, items, ranks = users[kept], items[kept], ranks[kept]
    loss = _correction_unsampled(scores.detach(), train, users, items, ranks, lambda r, c: scores[r, c],
                                 in_order=True)
    if item_side and b > 1 and items.numel():
        # an item in no list (or listed only where observed) has no under-ranked user: only the listed items
        column = torch.full((n_items,), -1, dtype=torch.long, device=scores.device)
        cols = torch.bincount(items, minlength=n_items).nonzero().view(-1)
        column[cols] = torch.arange(cols.numel(), device=scores.device)
        xd = scores.detach()[:, cols].t().contiguous()
        loss = loss + _correction_unsampled(xd, train[:, cols].t(), column[items], users, ranks,
                                            lambda r, c: scores[c, cols[r]])
    return loss


def _dcd_every_cell(scores, top, valid, train, k, eps, generator, item_side) -> torch.Tensor:
    """:func:`dcd_overview_loss` through :func:`_correction` on the [B, I] (and [C, B]) positions: the path with sampling,
    and with ``k=None`` the reference the faster unsampled path is tested against."""
    unlisted = top.shape[1] + 1
    loss = _correction(scores, _positions(top, valid, train), unlisted, k, eps, generator)
    if item_side and scores.shape[0] > 1:
        cols = torch.unique(top[valid])  # the listed items: an item outside every list has no under-ranked user
        if cols.numel():
            pos = _positions(top, valid, train, cols).t().contiguous()
            loss = loss + _correction(scores[:, cols].t(), pos, unlisted, k, eps, generator)
    return loss


def _positions(top: torch.Tensor, valid: torch.Tensor, train: torch.Tensor, cols: torch.Tensor | None = None):
    """int64 [B, C]: each user's teacher position (1..K, the first listing) of each of the items ``cols`` (sorted;
    None: every item), K + 1 for an unobserved item outside the list, K + 2 for a training item."""
    b, k = top.shape
    unlisted = k + 1
    at = top.clamp(min=0)
    if cols is not None:  # the column of each listed item among cols (padding: any column; its K + 2 lowers nothing)
        at = torch.searchsorted(cols, at).clamp(max=cols.numel() - 1)
        train = train[:, cols]
    pos = torch.full(train.shape, unlisted, dtype=torch.long, device=top.device)
    rank = torch.arange(1, k + 1, device=top.device).expand(b, -1)
    pos.scatter_reduce_(1, at, torch.where(valid, rank, unlisted + 1), reduce="amin")
    return pos.masked_fill_(train, unlisted + 1)


# ---------------------------------------------------------------------------
# DCD, in the form of its authors' released code
# ---------------------------------------------------------------------------
def _list_ranks(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """long [R, L]: each entry's 0-based position in its row's descending order of ``values`` (no gradient) among
    the row's valid entries; equal values keep their column order (a stable sort); invalid entries come last."""
    masked = values.detach().masked_fill(~valid, float("-inf"))
    order = _argsort_rows(masked, descending=True, stable=True)
    at = torch.arange(values.shape[1], device=values.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, at)


def _tie_blocks(ranks: torch.Tensor, valid: torch.Tensor):
    """(lo, hi) long [R, L]: the first and last column of each entry's block of equal teacher ``ranks`` (non-decreasing
    along each row's valid prefix); without ``ranks`` every entry is its own block (lo = hi = its column)."""
    at = torch.arange(valid.shape[1], device=valid.device).expand_as(valid)
    if ranks is None:
        return at, at
    keyed = torch.where(valid, ranks, torch.full_like(ranks, torch.iinfo(ranks.dtype).max)).contiguous()
    lo = torch.searchsorted(keyed, keyed, right=False)
    return lo, torch.searchsorted(keyed, keyed, right=True) - 1


def dcd_discrepancies(list_scores: torch.Tensor, valid: torch.Tensor, eps: float, ranks: torch.Tensor | None = None):
    """DCD's discrepancy weights over teacher-ranked lists: ``(under, over)``, float [R, L], no gradient.

    Row ``r`` is one query's teacher list in teacher order (padding, ``valid`` false, only at the end); ``rho`` is
    the student's 0-based rank of each entry among the row's valid entries (:func:`_list_ranks`). The teacher's
    rank of the entry in column ``t`` is ``t``; with ``ranks`` (long [R, L], non-decreasing along the valid prefix)
    entries of equal ``ranks`` are tied and share the block of columns ``[lo, hi]``, so the student may order
    them either way: ``under = tanh(eps * max(rho - hi, 0))`` (the student ranks the entry below the teacher's
    block), ``over = tanh(eps * max(lo - rho, 0))``; both 0 at padding. An entry is never both.
    """
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    with torch.no_grad():
        rho = _list_ranks(list_scores, valid)
        lo, hi = _tie_blocks(ranks, valid)
        zero = torch.zeros((), dtype=list_scores.dtype, device=list_scores.device)
        under = torch.where(valid, torch.tanh(eps * (rho - hi).clamp(min=0).to(list_scores.dtype)), zero)
        over = torch.where(valid, torch.tanh(eps * (lo - rho).clamp(min=0).to(list_scores.dtype)), zero)
    return under, over


def dcd_sample(weights: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """bool [R, L]: up to ``k`` entries of each row drawn without replacement with probability proportional to
    ``weights`` (>= 0; Gumbel top-k, uniform numbers from ``generator``). An entry of weight 0 is never drawn, so
    a row with at most ``k`` positive weights keeps all of them."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    positive = weights > 0
    dtype = weights.dtype
    u = torch.rand(weights.shape, generator=generator, dtype=dtype, device=weights.device)
    u = u.clamp(min=torch.finfo(dtype).tiny, max=1 - torch.finfo(dtype).eps)
    one = torch.ones((), dtype=dtype, device=weights.device)
    keys = torch.where(positive, torch.log(torch.where(positive, weights, one)) - torch.log(-torch.log(u)),
                       torch.full_like(u, float("-inf")))
    picked = keys.topk(min(k, keys.shape[1]), dim=1).indices
    return torch.zeros_like(positive).scatter_(1, picked, True) & positive


def dcd_correction(list_scores: torch.Tensor, under: torch.Tensor, over: torch.Tensor,
                   ranks: torch.Tensor | None = None) -> torch.Tensor:
    """One side of DCD: the sum over rows of ``listmle(P, N)`` on a teacher-ranked list's scores.

    ``list_scores`` float [R, L] (with gradient), row ``r`` one query's list in teacher order; ``under``, ``over``
    bool [R, L] the drawn under- and over-ranked entries (disjoint, e.g. from :func:`dcd_sample`). ``P`` is the
    under-ranked entries in teacher (column) order, ``N`` the over-ranked ones, unordered:
    ``- sum_k [ a_{P_k} - log( sum_{l >= k} exp(a_{P_l}) + sum_{j in N} exp(a_j) ) ]``. A row without ``P`` gives 0.
    With ``ranks`` (as in :func:`dcd_discrepancies`), ``P``'s entries of one tied block keep the student's order.
    """
    if under.shape != list_scores.shape or over.shape != list_scores.shape:
        raise ValueError(f"under and over must be shaped like list_scores {tuple(list_scores.shape)}")
    if bool((under & over).any()):
        raise ValueError("an entry is drawn as both under- and over-ranked")
    with torch.no_grad():
        n_up = under.sum(1)
        m = int(n_up.max()) if n_up.numel() else 0
        width = list_scores.shape[1]
        if ranks is None:  # teacher order is the column order
            key = torch.arange(width, device=under.device).expand_as(under)
        else:  # teacher rank, then (ties) the student's order
            key = ranks.clamp(min=0) * width + _list_ranks(list_scores, torch.ones_like(under))
        fill = int(key.max()) + 1 if key.numel() else 0
        order = _argsort_rows(key.masked_fill(~under, fill), stable=True)[:, :m]  # the drawn entries first, in order
        valid = torch.arange(m, device=list_scores.device) < n_up.unsqueeze(1)
    a = list_scores - _shift(list_scores, under | over)
    return _listmle(a.gather(1, order), valid, _tail_mass(a, over))


def dcd_item_lists(top: torch.Tensor, n_items: int, length: int):
    """The teacher's top users of each item, read from the per-user target lists ``top`` [U, K] (padding < 0 at the
    end of a row, no item twice in a row): ``(users, positions)``, long [I, length] each, -1 padding at the end.

    An item's users are those whose list holds it, by its position there (best first). Users holding it at the
    same position are tied (``positions`` says so; :func:`dcd_discrepancies` lets the student order them either
    way); among them the row, and the cut at ``length``, follow a fixed pseudo-random order of the users (a
    multiplicative hash of the user id), so that no range of ids is favoured where a tie is cut.
    """
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"length must be an int >= 1, got {length!r}")
    n_users, k = top.shape
    valid = top >= 0
    users = torch.arange(n_users, device=top.device).unsqueeze(1).expand_as(top)[valid]
    pos = torch.arange(k, device=top.device).expand_as(top)[valid]
    items = top[valid].long()
    scramble = (users * 2654435761) % (1 << 32)  # a bijection of the ids below 2**32 (the multiplier is odd)
    order = torch.sort((items * k + pos) * (1 << 32) + scramble).indices  # distinct keys: any sort gives this
    items, users, pos = items[order], users[order], pos[order]
    count = torch.bincount(items, minlength=n_items)
    slot = torch.arange(items.numel(), device=top.device) - (torch.cumsum(count, 0) - count)[items]
    keep = slot < length
    out = torch.full((n_items, length), -1, dtype=torch.long, device=top.device)
    at = torch.full_like(out, -1)
    out[items[keep], slot[keep]] = users[keep]
    at[items[keep], slot[keep]] = pos[keep]
    return out, at


# ---------------------------------------------------------------------------
# CL-DRD, in the form of its authors' released code
# ---------------------------------------------------------------------------
#: Number of stages of :func:`cldrd_labels` (stage ``CLDRD_STAGES - 1`` and later are final).
CLDRD_STAGES = 4
_CLDRD_ORDERED = ((1, 6), (1, 3), (2, 3), (1, 1))  # the ordered top per stage: 5, 10, 20, 30 of the authors' 30


def cldrd_labels(stage: int, n: int) -> torch.Tensor:
    """float64 [n]: CL-DRD's teacher labels of ``n`` candidates in teacher order at curriculum ``stage``.

    The top ``m = max(1, n * f rounded half up)`` candidates get ``1 / r`` (r = 1..m), with ``f`` = 1/6, 1/3, 2/3, 1 at
    stages 0, 1, 2, 3 and later (for the authors' 30 candidates: 5, 10, 20, 30); of the other ``n - m``, the
    first ``(n - m) // 2`` get -0.25 and the rest -0.5. So ``n = 30`` gives the authors' label sets: 5 ordered,
    12 at -0.25, 13 at -0.5; then 10, 10, 10; then 20, 5, 5; then 30 ordered.
    """
    if isinstance(stage, bool) or not isinstance(stage, int) or stage < 0:
        raise ValueError(f"stage must be an int >= 0, got {stage!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    num, den = _CLDRD_ORDERED[min(stage, CLDRD_STAGES - 1)]
    m = max(1, (2 * n * num + den) // (2 * den))  # n * num / den rounded half up
    mid = (n - m) // 2
    ordered = 1.0 / torch.arange(1, m + 1, dtype=torch.float64)
    return torch.cat([ordered, torch.full((mid,), -0.25, dtype=torch.float64),
                      torch.full((n - m - mid,), -0.5, dtype=torch.float64)])


def cldrd_loss(scores: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """CL-DRD's pairwise loss over each query's candidates: the sum over rows and over each row's pairs.

    ``scores`` float [R, C] (with gradient), the student's scores of each row's ``C`` candidates; ``labels`` [C]
    or [R, C] the teacher labels (:func:`cldrd_labels`); ``valid`` bool [R, C]. For the valid pairs ``(i, j)`` of
    a row with ``labels_i > labels_j``: ``|1/p_i - 1/p_j| * log(1 + exp(-(s_i - s_j)))``, ``p`` the 1-based
    position of the candidate in the student's descending order of the row's valid candidates (ties: column
    order; no gradient). A row without such a pair gives 0. The authors average over the batch's pairs instead
    (see the module's choices).
    """
    if scores.dim() != 2 or valid.shape != scores.shape:
        raise ValueError(f"scores and valid must be [R, C] alike, got {tuple(scores.shape)}, {tuple(valid.shape)}")
    labels = labels.to(device=scores.device, dtype=scores.dtype).expand_as(scores)
    with torch.no_grad():
        inv = 1.0 / (1 + _list_ranks(scores, valid)).to(scores.dtype)
        weight = (inv.unsqueeze(2) - inv.unsqueeze(1)).abs()
        pair = valid.unsqueeze(2) & valid.unsqueeze(1) & (labels.unsqueeze(2) > labels.unsqueeze(1))
    terms = F.softplus(-(scores.unsqueeze(2) - scores.unsqueeze(1))) * weight
    zero = torch.zeros((), dtype=scores.dtype, device=scores.device)
    return torch.where(pair, terms, zero).sum()
