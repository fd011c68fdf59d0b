"""HetComp's easy-to-hard curriculum: ranking discrepancy and dynamic knowledge construction.

This module holds, in pure torch and fully vectorised:

* :func:`ranking_discrepancy` -- ``D(u) = 1 - NDCG@k`` of the student's list
  against a teacher's list,
* the vectorised DKC (dynamic knowledge construction) step
  :func:`dkc_step` with its helpers :func:`gather_points`,
  :func:`dkc_threshold`, :func:`dkc_done` and :func:`point_shares`.

Ranking discrepancy
-------------------
With ``s_0..s_{k-1}`` the student's first ``k`` items, ``S`` the SET of the
teacher's first ``k`` items and position weights (``t`` = position in the
STUDENT's list, ``t = 0..k-1``)::

    g_t  = 2 ** exp(-t / 10) - 1
    NDCG = sum_t [s_t in S] g_t / log2(t + 2)  /  sum_t g_t / log2(t + 2)
    D    = 1 - NDCG

Only the first ``k`` entries of either list matter; the order inside the
teacher's top-``k`` does not (it is a set) but the student's order does.
``D`` is computed as ``(W - sum of the hit positions' w_t) / W`` with the
weights summed as integers in units of 2**-60 (exact in any order), divided in
float64 and returned as float32, so identical lists give exactly 0 and disjoint
lists exactly 1.

Dynamic knowledge construction (DKC)
------------------------------------
Each teacher ``x`` has ``T`` trajectory points (point ``T-1`` = its final
ranking), stored as ``teacher_tops[x, t, u, :]``.  State per (teacher, user):
``v[x, u]`` (current point, starts at 0) and ``last[x, u]`` (remembered
distance).  The step is applied every ``p`` epochs (``p = 10``) from epoch 10:

* first call: ``last = D(student, point v+1)`` for every pair with
  ``v < T-1``; nothing moves;
* later calls, for every pair with ``v < T-1``::

      now = D(student, point v+1)
      th  = alpha * 0.995 ** floor(epoch / p)          (alpha = 1.05)
      if last / now > th or last / now < 1:
          v    = v + 1
          last = D(student, point min(v+1, T-1))        (the NEW next point)
      else:
          keep v and last

* pairs with ``v == T-1`` are never touched.

Division by zero: when ``now == 0`` (the student matches the next point
exactly) the ratio is taken as ``+inf`` -- also when ``last == 0`` -- so the
pair advances.  ``last == 0 < now`` gives ratio 0 < 1, which advances too.
A NaN ``last`` (never initialised) makes both comparisons false, so the pair
holds.

Since ``th`` falls below 1 once ``floor(epoch / p) >= 10`` (``1.05 * 0.995**10
≈ 0.9987``), even a student whose distances never change (ratio exactly 1)
advances one point per call from epoch 100 on, so DKC always terminates.
"""

from __future__ import annotations

import math

import torch

from recbole_hetcomp.distill.ensemble import csr_to_padded, ensemble_top

__all__ = [
    "ranking_discrepancy",
    "gather_points",
    "dkc_threshold",
    "dkc_step",
    "dkc_done",
    "point_shares",
    "observed_top",
]

#: Upper bound on the entries of the [chunk users, items] position map built by the discrepancy
#: on CPU (one byte each while k <= 127): bounds its memory for large catalogues, and the fill of
#: a large map costs more than the chunks it saves (measured at 26k items: 4M entries is best).
#: On other devices both chunk bounds are 64 times larger.
MAX_CHUNK_ELEMS = 4 * 1024 * 1024

#: Users per chunk are chosen so that a chunk's [users, lists, k] temporaries hold about this
#: many elements: a few MB, reused from chunk to chunk (warm in cache, no fresh pages to fault).
CHUNK_LIST_ELEMS = 1 << 18

#: Position weights are summed as integers in units of 2 ** -60 (w_t of float64 kept to its last
#: bit down to w_t = 2 ** -8; the total, < 4 * 2 ** 60, fits int64): exact and independent of the
#: order of the sum, so identical lists give exactly 0 and disjoint lists exactly 1.
_FIXED_POINT = 2.0**60


def _position_weights(k: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """w_t = (2 ** exp(-t/10) - 1) / log2(t + 2) for t = 0..k-1."""
    t = torch.arange(k, device=device, dtype=dtype)
    return (torch.exp2(torch.exp(-t / 10.0)) - 1.0) / torch.log2(t + 2.0)


def _acc_dtype(device: torch.device) -> torch.dtype:
    # MPS has no float64; everywhere else divide in float64.
    return torch.float32 if device.type == "mps" else torch.float64


def _position_dtype(k: int) -> torch.dtype:
    """The smallest integer type that holds positions 0..k (k = 'not in the student's list')."""
    return torch.int8 if k <= 127 else torch.int16 if k <= 32767 else torch.int32


def _discrepancy(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """D for student [U, k] against teacher [..., U, k] (items may repeat) -> float32 [..., U]."""
    k = student.shape[-1]
    n_users = student.reshape(-1, k).shape[0]
    if teacher.shape[-2] != n_users:
        raise ValueError(f"user counts differ: {n_users} vs {teacher.shape[-2]}")
    lead = teacher.shape[:-2]
    source = teacher.reshape(-1, k)  # row l * U + u: list l of user u
    n_lists = source.shape[0] // max(n_users, 1)
    rows = torch.arange(n_users, device=teacher.device).unsqueeze(1) + \
        n_users * torch.arange(n_lists, device=teacher.device).unsqueeze(0)
    return _discrepancy_rows(student, source, rows, distinct=False).t().reshape(*lead, n_users)


def _discrepancy_rows(student: torch.Tensor, source: torch.Tensor, rows: torch.Tensor,
                      distinct: bool = True) -> torch.Tensor:
    """D for student [U, k] against the lists ``source[rows[u, l]]`` -> float32 [U, L].

    ``source`` is [R, k] (a view with a row stride is fine: the DKC step passes the first k
    items of every stored list), ``rows`` long [U, L], the L lists of each user.

    D = sum_t [s_t not in S] w_t / sum_t w_t is computed from the teacher's side, as
    1 - sum_{j in S} W_u(j) / sum_t w_t, where W_u(j) is the weight of the student's
    position(s) holding item j, 0 if the student does not rank j. A position map of each user's
    student list ([users, items], one byte per entry while k <= 127), built once for all L
    lists of the user, makes that one gather per teacher item, a table look-up and a row sum;
    weights are summed as integers (``_FIXED_POINT``), so the sum is exact in any order. Users
    go in chunks whose buffers are allocated once and reused (``CHUNK_LIST_ELEMS``), and only
    the entries a chunk set are reset for the next one.

    A student item repeated in its list weighs every position that holds it (the map keeps the
    first, whose table entry carries the others' weights). A repeated teacher item would count
    twice: with ``distinct=False`` repeats are found (one sort per list) and count once; the DKC
    step's top-k lists are distinct by construction and skip that. Items are ids >= 0; teacher
    items beyond every student item read an entry that is always 'absent'.
    """
    device = source.device
    n_users, n_lists = rows.shape
    k = source.shape[1]
    # ``source`` keeps its dtype (the curriculum's int32 lists): a chunk's rows are selected in it and
    # widened to the int64 that gather needs, never the whole of ``source``
    student = student.to(device=device, dtype=torch.long).reshape(n_users, k)
    rows = rows.to(device=device, dtype=torch.long)
    acc = _acc_dtype(device)
    weights = torch.round(_position_weights(k, device, acc) * _FIXED_POINT).to(torch.long)
    total = int(weights.sum())
    hit = torch.zeros(n_users, n_lists, dtype=torch.long, device=device)
    if hit.numel():
        absent = int(student.max()) + 1  # the map's last column: ranked by no student
        pos_dtype = _position_dtype(k)
        # chunks keep CPU temporaries warm; a GPU's caching allocator has no page faults to save
        scale = 1 if device.type == "cpu" else 64
        c = max(1, min(n_users, scale * CHUNK_LIST_ELEMS // (n_lists * k), scale * MAX_CHUNK_ELEMS // (absent + 1)))
        pos_map = torch.full((c, absent + 1), k, dtype=pos_dtype, device=device)
        positions = torch.arange(k, device=device, dtype=pos_dtype).expand(c, k)
        table = torch.empty(c, k + 1, dtype=torch.long, device=device)
        lists = torch.empty(c * n_lists, k, dtype=torch.long, device=device)
        picked = lists if source.dtype == torch.long else torch.empty(c * n_lists, k, dtype=source.dtype, device=device)
        pos = torch.empty(c, n_lists * k, dtype=pos_dtype, device=device)
        pos_long = torch.empty(c, n_lists * k, dtype=torch.long, device=device)
        hit_weights = torch.empty(c, n_lists * k, dtype=torch.long, device=device)
        for start in range(0, n_users, c):
            n = min(n_users, start + c) - start
            s, m = student[start : start + n], pos_map[:n]
            m.scatter_reduce_(1, s, positions[:n], reduce="amin")  # each item's first position
            # table[u, p]: the weights of every student position whose item is first seen at p
            t = table[:n].zero_()
            t.scatter_add_(1, m.gather(1, s).long(), weights.expand(n, k))
            li = lists[: n * n_lists]
            torch.index_select(source, 0, rows[start : start + n].reshape(-1), out=picked[: n * n_lists])
            if picked is not lists:
                li.copy_(picked[: n * n_lists])
            li.clamp_(max=absent)
            p = pos[:n]
            torch.gather(m, 1, li.view(n, n_lists * k), out=p)
            if not distinct:  # every repeat of an item in a teacher list but one weighs 0
                ordered, order = li.sort(-1)
                repeat = torch.zeros(li.shape, dtype=torch.bool, device=device)
                repeat.scatter_(-1, order[:, 1:], ordered[:, 1:] == ordered[:, :-1])
                p.masked_fill_(repeat.view(n, n_lists * k), k)
            pl = pos_long[:n]
            pl.copy_(p)
            hw = hit_weights[:n]
            torch.gather(t, 1, pl, out=hw)
            torch.sum(hw.view(n, n_lists, k), -1, out=hit[start : start + n])
            m.scatter_(1, s, k)  # back to 'absent' for the next chunk
    return ((total - hit).to(acc) / total).to(torch.float32)


def ranking_discrepancy(
    student_lists: torch.Tensor, teacher_lists: torch.Tensor, k: int = 50
) -> torch.Tensor:
    """D(u) = 1 - NDCG@k of each student list against the set of the teacher's first k items.

    Args:
        student_lists: long [U, >=k], the student's ranked lists (training
            items already excluded).
        teacher_lists: long [U, >=k], the teacher's ranked lists.
        k: list depth; only the first k entries of each list are read.

    Returns:
        float32 [U] on ``teacher_lists.device``, in [0, 1].
    """
    if student_lists.dim() != 2 or teacher_lists.dim() != 2:
        raise ValueError("student_lists and teacher_lists must be 2-D [U, >=k]")
    if student_lists.shape[0] != teacher_lists.shape[0]:
        raise ValueError(
            f"user counts differ: {student_lists.shape[0]} vs {teacher_lists.shape[0]}"
        )
    if k < 1 or student_lists.shape[1] < k or teacher_lists.shape[1] < k:
        raise ValueError(
            f"need 1 <= k <= list lengths, got k={k}, lengths "
            f"{student_lists.shape[1]} and {teacher_lists.shape[1]}"
        )
    return _discrepancy(student_lists[:, :k], teacher_lists[:, :k])


def gather_points(
    teacher_tops: torch.Tensor, v: torch.Tensor, users: torch.Tensor | None = None
) -> torch.Tensor:
    """out[x, j] = teacher_tops[x, v[x, users[j]], users[j]] -> [M, U', N].

    Args:
        teacher_tops: [M, T, U, N] trajectory lists (teacher, point, user, rank).
        v: long [M, U], the point index per (teacher, user).
        users: optional long [U'] index of the users to restrict to
            (default: all U users, in order).
    """
    m, n_points, n_users, n = teacher_tops.shape
    if v.numel() and (int(v.min()) < 0 or int(v.max()) >= n_points):
        raise ValueError(f"point indices v must be in [0, {n_points - 1}]")
    if users is not None and users.numel() and (int(users.min()) < 0 or int(users.max()) >= n_users):
        raise ValueError(f"users must be in [0, {n_users - 1}]")
    rows = _point_rows(teacher_tops, v, users)  # [M, U']
    return _select_rows(teacher_tops, rows.reshape(-1)).view(m, rows.shape[1], n)


def _point_rows(teacher_tops, v, users=None):
    """rows[x, j]: the row of (teacher x, point v[x, users[j]], user users[j]) in [M*T*U, N]."""
    m, n_points, n_users, _ = teacher_tops.shape
    device = teacher_tops.device
    v = v.to(device=device, dtype=torch.long)
    if users is None:
        user_idx = torch.arange(n_users, device=device)
    else:
        user_idx = users.to(device=device, dtype=torch.long)
        v = v[:, user_idx]
    teacher_idx = torch.arange(m, device=device).unsqueeze(1)
    return (teacher_idx * n_points + v) * n_users + user_idx.unsqueeze(0)


def _select_rows(teacher_tops, rows):
    """teacher_tops viewed as rows [M*T*U, N] (a view, also for ``tops[..., :k]``), the given
    rows -> [len(rows), N]: one ``index_select``, about twice as fast as advanced indexing
    over four dimensions."""
    return teacher_tops.reshape(-1, teacher_tops.shape[-1]).index_select(0, rows)


def dkc_threshold(epoch: int, alpha: float = 1.05, p: int = 10) -> float:
    """th = alpha * 0.995 ** floor(epoch / p)."""
    return float(alpha) * 0.995 ** math.floor(epoch / p)


def dkc_step(
    student_lists: torch.Tensor,
    teacher_tops: torch.Tensor,
    v: torch.Tensor,
    last: torch.Tensor,
    epoch: int,
    *,
    first: bool,
    alpha: float = 1.05,
    p: int = 10,
    k: int = 50,
):
    """One vectorised DKC update for all (teacher, user) pairs; inputs are not mutated.

    Args:
        student_lists: long [U, >=k], the student's current lists.
        teacher_tops: [M, T, U, N] teacher trajectory lists, N >= k.
        v: long [M, U], current point per pair.
        last: float [M, U], remembered distance per pair.
        epoch: current epoch (sets the threshold).
        first: True on the first call (only stores ``last``).
        alpha, p, k: threshold base, step period, list depth.

    Returns:
        (new_v long [M, U], new_last [M, U] in ``last``'s dtype,
        advanced bool [M, U]).
    """
    m, n_points, n_users, n = teacher_tops.shape
    if tuple(v.shape) != (m, n_users) or tuple(last.shape) != (m, n_users):
        raise ValueError(f"v and last must be [M, U]={m, n_users}")
    if student_lists.dim() != 2 or student_lists.shape[0] != n_users:
        raise ValueError(f"student_lists must be [U={n_users}, >=k]")
    if k < 1 or n < k or student_lists.shape[1] < k:
        raise ValueError(f"need k <= N={n} and k <= {student_lists.shape[1]}, got k={k}")

    device = teacher_tops.device
    v = v.to(device=device, dtype=torch.long)
    last = last.to(device)
    student = student_lists[:, :k].to(device)
    final = n_points - 1
    active = v < final

    heads = teacher_tops[..., :k]  # a view: gather only the first k items of each list

    def distances(*points):
        """D(student, point ``p[x, u]`` of teacher x) -> [M, U] for each ``p`` in ``points``, in
        one discrepancy call over the rows of every user's lists ([U, len(points) * M]), so the
        student's position map is built once for all of them."""
        rows = torch.cat([_point_rows(heads, p).t() for p in points], dim=1)  # [U, len * M]
        d = _discrepancy_rows(student, heads.reshape(-1, k), rows).t().to(last.dtype)
        return d.split(m) if len(points) > 1 else d

    if first:
        now = distances(torch.clamp(v + 1, max=final))
        new_last = torch.where(active, now, last)
        return v.clone(), new_last, torch.zeros_like(active)

    # the distance to the point after next matters only where a pair advances; it is computed
    # for every pair in the same call as ``now``, which shares the student's position map
    now, after = distances(torch.clamp(v + 1, max=final), torch.clamp(v + 2, max=final))
    th = dkc_threshold(epoch, alpha=alpha, p=p)
    inf = torch.full_like(now, math.inf)
    ratio = torch.where(now > 0, last / torch.where(now > 0, now, torch.ones_like(now)), inf)
    advanced = active & ((ratio > th) | (ratio < 1))
    new_v = v + advanced.long()
    new_last = torch.where(advanced, after, last)
    return new_v, new_last, advanced


def dkc_done(v: torch.Tensor, T: int) -> bool:
    """True when every (teacher, user) pair has reached the final point T-1."""
    return bool((v >= T - 1).all())


def point_shares(v: torch.Tensor, T: int) -> torch.Tensor:
    """float32 [M, T]: per teacher, the share of users at each point (rows sum to 1; zeros if U == 0)."""
    m, n_users = v.shape
    counts = torch.zeros(m, T, dtype=torch.float32, device=v.device)
    counts.scatter_add_(1, v.long().clamp(0, T - 1), torch.ones(v.shape, dtype=torch.float32, device=v.device))
    return counts / max(n_users, 1)


def observed_top(trajectories, n_items, p_obs, weights=None, imp=None, device="cpu", chunk_users=1024):
    """Pobs [U, p_obs]: the ensemble's first ``p_obs`` training items of each user, from every teacher's ranking
    of them (its CSR ``obs_indptr``/``obs_items``). Users go a chunk at a time in order of their number of
    training items, each chunk padded to its own longest list, so the padding stays small and memory follows
    the chunk: one padded [U, longest user] block would be 8 GB a teacher at ml-20m. Each user's row depends on
    its own lists only, so the order of the chunks does not change it."""
    n_users = trajectories[0].obs_indptr.numel() - 1
    out = torch.full((n_users, p_obs), -1, dtype=torch.long, device=device)
    indptr = torch.as_tensor(trajectories[0].obs_indptr, dtype=torch.long)
    by_length = torch.argsort(indptr[1:] - indptr[:-1], stable=True)
    for start in range(0, n_users, chunk_users):
        users = by_length[start:start + chunk_users]
        obs = [csr_to_padded(t.obs_indptr, t.obs_items, users) for t in trajectories]
        width = max(o.shape[1] for o in obs)
        obs = torch.stack([torch.nn.functional.pad(o, (0, width - o.shape[1]), value=-1) for o in obs])
        out[users.to(device)] = ensemble_top(obs.to(device), n_items, p_obs, weights, **(imp or {}))
    return out


class Curriculum:
    """DKC state of one student run over the teachers' stored trajectories.

    Holds every teacher's points as int32 [M, T, U, N] (item ids fit, and it halves the largest state
    of a run: 1.3 GB at ml-20m's shape), the current point ``v`` [M, U] and
    the remembered distance ``last`` [M, U]. :meth:`targets` rebuilds the ensemble target
    T(u) [U, K] from the current points; :attr:`observed` is Pobs [U, P], built once from
    the final points' rankings of the training items (as in the released code).
    RecBole's padding user 0 starts, and stays, at the final point.
    """

    def __init__(self, trajectories, n_items, *, k_target=100, p_obs=10, weights=None, imp=None,
                 alpha=1.05, period=10, start=10, k=50, enabled=True, device="cpu"):
        self.names = [t.teacher for t in trajectories]
        self.tops = torch.stack([t.top for t in trajectories]).to(device=device, dtype=torch.int32)
        m, n_points, n_users, n = self.tops.shape
        if n < k_target or n < k:
            raise ValueError(f"the stored lists hold N={n} items per user, fewer than hetcomp_k={k_target} "
                             f"or dkc_k={k}: rebuild the teachers with trajectory_top_n >= {max(k_target, k)}")
        self.n_items, self.k_target, self.k = n_items, k_target, k
        self.alpha, self.period, self.start = alpha, period, start
        self.enabled = enabled
        self.weights = None if weights is None else weights.to(device)
        self.imp = dict(imp or {})
        self.n_points = n_points
        self.v = torch.zeros(m, n_users, dtype=torch.long, device=device)
        if not enabled:
            self.v.fill_(n_points - 1)
        self.v[:, 0] = n_points - 1
        self.last = torch.full((m, n_users), float("nan"), device=device)
        self.started = False
        self.history = []

        self.observed = observed_top(trajectories, n_items, p_obs, self.weights, self.imp, device)

    @property
    def done(self):
        return dkc_done(self.v, self.n_points)

    def due(self, epoch):
        """Whether a DKC step runs at the start of ``epoch`` (every ``period`` epochs from ``start``)."""
        return (self.enabled and not self.done and epoch >= self.start
                and (epoch - self.start) % self.period == 0)

    def targets(self):
        """T(u) for every user: long [U, K] from each teacher's current point."""
        return ensemble_top(gather_points(self.tops, self.v), self.n_items, self.k_target,
                            self.weights, **self.imp)

    def shares(self):
        return point_shares(self.v, self.n_points)

    def step(self, student_lists, epoch):
        """One DKC step given the student's top-k unobserved lists (long [U, >=k]); returns
        the number of (teacher, user) pairs that advanced."""
        self.v, self.last, advanced = dkc_step(student_lists, self.tops, self.v, self.last, epoch,
                                               first=not self.started, alpha=self.alpha, p=self.period,
                                               k=self.k)
        self.started = True
        n_adv = int(advanced.sum())
        self.history.append({"epoch": int(epoch), "advanced": n_adv,
                             "shares": self.shares().cpu().tolist(), "done": self.done})
        return n_adv
