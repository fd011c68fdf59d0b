"""The fitted fusion (spec section 3b): teacher weights and importance chosen on validation only.

Given every teacher's final top-N list per user and each user's validation items, the fit picks
the non-negative teacher weights ``w`` (a teacher may get 0) and the importance function with its
parameter (``exp`` tau, ``rrf`` k, ``power``) that maximise a ranking metric of the fused lists,
``score_u(i) = sum_x w_x * imp(rank_x(i))`` (spec section 3). The test split is never an input.

Scoring without RecBole. :func:`prepare` turns the lists into, per user, the distinct items of
the union of the lists (at most M x N), the rank of each in every teacher's list, and whether it
is a validation item. A candidate fusion is then ``sum_x w_x * imp(rank_x)`` over those items,
a top-K and a gather of the hits, on whole [users, items of the union] tensors: no dataloader,
no [users, catalogue] matrix. Items in no list score 0, as in the ensemble model; every teacher
lists N >= K items, so the fused top-K always comes from the union and the score equals RecBole's
full-ranking metric of that fusion (up to the order of exactly tied scores).

Search (``method``):

- ``greedy`` (default): for each importance candidate, greedy selection with replacement
  (Caruana et al., ICML 2004) over the teachers. It starts from the best single teacher, then
  adds one more unit of weight to whichever teacher raises the metric most, and stops after
  ``patience`` steps without a gain or after ``max_steps``; the weights are the counts, so a
  teacher never picked gets 0. Starting from one teacher makes the fit at least as good as the
  best single teacher on validation (spec 3b).
- ``coordinate``: for each importance candidate, coordinate ascent from equal weights: each
  teacher's weight in turn takes the best value of ``weight_grid`` with the others fixed,
  rounds until none changes.
- ``bagged``: bagged ensemble selection (Caruana et al., ICML 2004, section 4.3). ``bags`` random
  halves of the users are drawn once (by ``seed``); for each importance candidate the greedy
  search runs on each half, and the weights are the mean over the halves of each half's weights
  divided by their sum (so they sum to 1). A teacher no half picks gets 0. The candidate is then
  scored on all the users; should the best single teacher score higher there, it is kept alone
  instead, so this search too is never below the best single teacher on validation. Averaging
  over halves keeps a weight that one lucky group of users earned from deciding the fusion: it
  trades a little validation score for held-out score, and costs about ``bags / 2`` greedy fits.

The importance candidate with the best score wins. Ties, everywhere, keep the earlier candidate:
the grid lists the released default (exp, tau 10) first. Sums run over the teachers in a fixed
order, so a fit repeats bit for bit on one machine.
"""

from dataclasses import dataclass, field

import torch

from recbole_hetcomp.distill.ensemble import IMPORTANCE_KINDS, importance

#: Importance candidates searched by default, the released default first.
DEFAULT_GRID = {"exp": [10.0, 2.0, 5.0, 20.0, 30.0, 50.0, 100.0], "rrf": [60.0, 1.0, 10.0, 30.0, 120.0],
                "power": [0.05, 0.2, 0.5, 1.0, 2.0]}
#: The keyword of :func:`~recbole_hetcomp.distill.ensemble.importance` that holds each kind's parameter.
PARAMETER = {"exp": "tau", "rrf": "rrf_k", "power": "power"}
#: Metrics the fit computes (RecBole's definitions, binary relevance).
METRICS = ("recall", "ndcg", "precision", "hit", "mrr")
METHODS = ("greedy", "coordinate", "bagged")
DEFAULT_WEIGHT_GRID = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)


@dataclass
class FitProblem:
    """What a fusion is scored on, for U users with at least one validation item.

    ``ranks`` int32 [U, S, M]: the 0-based rank of each candidate item in each teacher's list,
    ``n`` (the list length) where it is absent or the slot is padding; ``hits`` bool [U, S]:
    the candidate is a validation item; ``n_pos`` int [U]: the user's validation items (those in
    no list count too, as in RecBole's recall).
    """

    ranks: torch.Tensor
    hits: torch.Tensor
    n_pos: torch.Tensor
    n: int

    @property
    def n_users(self):
        return int(self.hits.shape[0])

    def subset(self, rows):
        rows = torch.as_tensor(rows, dtype=torch.long)
        return FitProblem(self.ranks[rows], self.hits[rows], self.n_pos[rows], self.n)


def prepare(lists, pos_indptr, pos_items, chunk_users=8192):
    """A :class:`FitProblem` from ``lists`` integer [M, U, N] (-1 = padding) and the validation items
    of the same U users as CSR (``pos_indptr`` [U + 1], ``pos_items``). Users without validation
    items are dropped (RecBole does not evaluate them). Users go ``chunk_users`` at a time (the
    temporaries are [chunk, M * N] longs), each block padded to the widest user of all: the result is
    the same for any chunk size."""
    m, u, n = lists.shape
    indptr = torch.as_tensor(pos_indptr, dtype=torch.long)
    pos = torch.as_tensor(pos_items, dtype=torch.long)
    if indptr.numel() != u + 1:
        raise ValueError(f"the validation items are given for {indptr.numel() - 1} users, the lists for {u}")
    blocks = []
    for a in range(0, u, chunk_users):
        b = min(u, a + chunk_users)
        part = torch.as_tensor(lists[:, a:b], dtype=torch.long)
        blocks.append(_prepare_block(part, indptr[a:b + 1] - indptr[a], pos[indptr[a]:indptr[b]]))
    width = max([r.shape[1] for r, _, _ in blocks] + [1])
    kept = sum(r.shape[0] for r, _, _ in blocks)
    ranks = torch.full((kept, width, m), n, dtype=torch.int32)
    hits = torch.zeros(kept, width, dtype=torch.bool)
    at = 0
    for r, h, _ in blocks:
        ranks[at:at + r.shape[0], :r.shape[1]] = r
        hits[at:at + r.shape[0], :r.shape[1]] = h
        at += r.shape[0]
    n_pos = torch.cat([p for _, _, p in blocks]) if blocks else torch.zeros(0, dtype=torch.long)
    return FitProblem(ranks, hits, n_pos, n)


def prepare_sample(lists, pos_indptr, pos_items, most=None, seed=0):
    """(:class:`FitProblem`, U) for at most ``most`` of the U users with validation items: a sample drawn by ``seed``
    (:func:`sample_users`), and only those users' lists are prepared, so past ``most`` users the cost stops growing
    with the users (but for the selection itself). The users and their rows are those of
    ``prepare(...).subset(sample_users(U, most, seed))``; the padding may be narrower."""
    indptr = torch.as_tensor(pos_indptr, dtype=torch.long)
    pos = torch.as_tensor(pos_items, dtype=torch.long)
    n_pos = indptr[1:] - indptr[:-1]
    kept = torch.nonzero(n_pos > 0).view(-1)
    if most is None or kept.numel() <= most:
        return prepare(lists, indptr, pos), int(kept.numel())
    rows = kept[sample_users(kept.numel(), most, seed)]
    counts = n_pos[rows]
    sub = torch.zeros(rows.numel() + 1, dtype=torch.long)
    sub[1:] = torch.cumsum(counts, 0)
    at = torch.repeat_interleave(indptr[rows] - sub[:-1], counts) + torch.arange(int(sub[-1]))  # each item's old slot
    return prepare(lists[:, rows], sub, pos[at]), int(kept.numel())


def _prepare_block(lists, indptr, pos):
    """(ranks, hits, n_pos) of :func:`prepare` for one block of users (long ``lists`` [M, U, N], CSR rebased to
    the block), at the block's own width."""
    m, u, n = lists.shape
    n_pos = indptr[1:] - indptr[:-1]
    keep = torch.nonzero(n_pos > 0).view(-1)
    slots = lists.permute(1, 0, 2).reshape(u, m * n)                     # [U, M*N] item per slot
    rank = torch.arange(n).repeat(m).expand(u, m * n)                     # its rank in its list
    teacher = torch.arange(m).repeat_interleave(n).expand(u, m * n)       # and whose list it is
    big = int(max(int(slots.max()) if slots.numel() else 0, int(pos.max()) if pos.numel() else 0)) + 2
    key = torch.where(slots >= 0, slots, torch.full_like(slots, big))     # padding sorts last
    order = torch.argsort(key, dim=1, stable=True)
    key, rank, teacher = key.gather(1, order), rank.gather(1, order), teacher.gather(1, order)
    new = torch.ones_like(key, dtype=torch.bool)
    new[:, 1:] = key[:, 1:] != key[:, :-1]
    group = torch.cumsum(new.long(), dim=1) - 1                           # distinct item index per slot
    real = key < big
    width = int(group[real].max()) + 1 if bool(real.any()) else 1
    ranks = torch.full((u, width + 1, m), n, dtype=torch.int32)           # column `width`: padding's bin
    col = torch.where(real, group, torch.full_like(group, width))
    rows = torch.arange(u).unsqueeze(1).expand_as(col)
    ranks[rows[real], col[real], teacher[real]] = rank[real].to(torch.int32)
    items = torch.full((u, width + 1), -1, dtype=torch.long)
    items[rows[real], col[real]] = key[real]
    ranks, items = ranks[:, :width], items[:, :width]
    # membership of (user, item) in the validation set, by searching sorted user * big + item keys
    pos_user = torch.repeat_interleave(torch.arange(u), n_pos)
    pos_key = torch.sort(pos_user * big + pos).values
    cand_key = torch.arange(u).unsqueeze(1) * big + items
    at = torch.searchsorted(pos_key, cand_key).clamp_max(max(pos_key.numel() - 1, 0))
    hits = (items >= 0) & (pos_key[at] == cand_key) if pos_key.numel() else torch.zeros_like(items, dtype=torch.bool)
    return ranks[keep], hits[keep], n_pos[keep]


def parse_metric(metric, key="valid_metric"):
    """``'Recall@50'`` -> ``('recall', 50)``; ``ValueError`` naming ``key`` (the config key the metric came
    from) for a metric the fit cannot compute."""
    name, _, k = str(metric).lower().partition("@")
    if name not in METRICS or not k.isdigit() or int(k) < 1:
        raise ValueError(f"{key}={metric}: the ensemble fit maximises one of "
                         f"{', '.join(m.capitalize() for m in METRICS)} at a cut-off, e.g. Recall@50; "
                         f"set {key} to one, or ensemble_fit to False")
    return name, int(k)


def _metric(hits_at, n_pos, name, k):
    """Mean over users of ``name``@k from bool [U, k'] hits of the ranked top-k' (k' <= k: the rest are misses)."""
    h = hits_at.to(torch.float64)
    if name == "recall":
        per_user = h.sum(1) / n_pos.to(torch.float64)
    elif name == "precision":
        per_user = h.sum(1) / k
    elif name == "hit":
        per_user = (h.sum(1) > 0).to(torch.float64)
    elif name == "mrr":
        first = torch.where(hits_at.any(1), hits_at.to(torch.int8).argmax(1), torch.full_like(n_pos, -1))
        per_user = torch.where(first >= 0, 1.0 / (first.to(torch.float64) + 1.0), torch.zeros((), dtype=torch.float64))
    else:  # ndcg
        discount = 1.0 / torch.log2(torch.arange(2, h.shape[1] + 2, dtype=torch.float64))
        dcg = (h * discount).sum(1)
        ideal = torch.cumsum(1.0 / torch.log2(torch.arange(2, k + 2, dtype=torch.float64)), 0)
        per_user = dcg / ideal[n_pos.clamp(1, k).long() - 1]
    return float(per_user.mean()) if per_user.numel() else 0.0


class _Scorer:
    """Scores weight vectors under one importance function on one problem."""

    def __init__(self, problem, kind, param, metric, k):
        if k > problem.n:  # the fused top-k must come from the lists, or the score is not RecBole's metric
            raise ValueError(f"{metric}@{k} ranks more items than the teachers' lists hold ({problem.n} each): "
                             f"score at a cut-off of at most {problem.n}, or record longer lists")
        r = problem.ranks
        present = r < problem.n
        imp = importance(r.clamp_max(problem.n - 1), kind=kind, **{PARAMETER[kind]: param})
        # M x [U, S], each contiguous: a strided view (unbind of the last axis) made every product several times slower
        self.parts = torch.where(present, imp, torch.zeros((), dtype=imp.dtype)).permute(2, 0, 1).contiguous()
        # the top-k of a user whose lists are padded (a catalogue smaller than N) holds fewer items: misses
        self.problem, self.metric, self.k, self.depth = problem, metric, k, min(k, problem.hits.shape[1])
        self.evaluations = 0
        self._score, self._term = torch.empty_like(self.parts[0]), torch.empty_like(self.parts[0])

    def __call__(self, weights):
        self.evaluations += 1
        score, term = self._score.zero_(), self._term
        for w, part in zip(weights, self.parts):  # a fixed order: bit-identical repeats
            if w:
                score += torch.mul(part, float(w), out=term)  # the product, then the sum: as w * part, rounded alike
        top = torch.topk(score, self.depth, dim=1).indices
        return _metric(self.problem.hits.gather(1, top), self.problem.n_pos, self.metric, self.k)


def _singles(scorer, m):
    """Each of the ``m`` teachers alone, under ``scorer``."""
    return [scorer([1.0 if j == x else 0.0 for j in range(m)]) for x in range(m)]


def _best_of(singles):
    """The index of the best score (ties: the earlier teacher)."""
    return max(range(len(singles)), key=lambda x: (singles[x], -x))


def _greedy(scorer, m, max_steps, patience):
    singles = _singles(scorer, m)
    best_x = _best_of(singles)
    counts = [0.0] * m
    counts[best_x] = 1.0
    best, best_counts, current, stale = singles[best_x], list(counts), singles[best_x], 0
    trace = [{"step": 1, "add": best_x, "score": best}]
    for step in range(2, max_steps + 1):
        tried = []
        for x in range(m):
            cand = list(counts)
            cand[x] += 1.0
            tried.append((scorer(cand), -x, cand))
        current, neg_x, counts = max(tried, key=lambda t: (t[0], t[1]))
        trace.append({"step": step, "add": -neg_x, "score": current})
        if current > best:
            best, best_counts, stale = current, list(counts), 0
        else:
            stale += 1
            if stale >= patience:
                break
    return best, best_counts, trace, singles


def _coordinate(scorer, m, weight_grid, max_rounds=5):
    weights = [1.0] * m
    best = scorer(weights)
    trace = [{"round": 0, "weights": list(weights), "score": best}]
    for rnd in range(1, max_rounds + 1):
        changed = False
        for x in range(m):
            for v in weight_grid:
                if v == weights[x]:
                    continue
                cand = list(weights)
                cand[x] = float(v)
                if not any(cand):
                    continue
                s = scorer(cand)
                if s > best:
                    best, weights, changed = s, cand, True
        trace.append({"round": rnd, "weights": list(weights), "score": best})
        if not changed:
            break
    return best, weights, trace, None


def draw_bags(n_users, bags, seed=0):
    """``bags`` random halves of ``range(n_users)`` (sorted long tensors), drawn by ``seed``: the bags of the
    ``bagged`` search, the same for every importance candidate."""
    gen = torch.Generator().manual_seed(int(seed))
    half = max(1, n_users // 2)
    return [torch.randperm(n_users, generator=gen)[:half].sort().values for _ in range(bags)]


def _bagged(problem, kind, param, name, k, max_steps, patience, bags):
    """(score on all of ``problem``, weights, trace, single-teacher scores, scorer) of the bagged search under one
    importance."""
    m = problem.ranks.shape[2]
    total = torch.zeros(m, dtype=torch.float64)
    trace, evaluations = [], 0
    for b, rows in enumerate(bags):
        scorer = _Scorer(problem.subset(rows), kind, param, name, k)
        score, counts, _, _ = _greedy(scorer, m, max_steps, patience)
        evaluations += scorer.evaluations
        counts = torch.tensor(counts, dtype=torch.float64)
        total += counts / counts.sum()  # greedy always picks one teacher: the sum is >= 1
        trace.append({"bag": b, "score": score, "weights": counts.tolist()})
    weights = (total / len(bags)).tolist()
    scorer = _Scorer(problem, kind, param, name, k)
    score, singles = scorer(weights), _singles(scorer, m)
    best_x = _best_of(singles)
    if singles[best_x] > score:  # as greedy: never below the best single teacher on the users it fits
        score, weights = singles[best_x], [float(x == best_x) for x in range(m)]
    scorer.evaluations += evaluations
    return score, weights, trace, singles, scorer


@dataclass
class Fusion:
    """A chosen fusion: importance ``kind`` with its parameter, and one weight per teacher."""

    teachers: list
    kind: str
    param: float
    weights: list
    score: float = float("nan")
    trace: list = field(default_factory=list)

    def config(self):
        """The config keys that make the ensemble, the student's targets and DKC use this fusion."""
        key = {"exp": "ensemble_tau", "rrf": "ensemble_rrf_k", "power": "ensemble_power"}[self.kind]
        return {"ensemble_importance": self.kind, key: self.param,
                "teacher_weights": {t: float(w) for t, w in zip(self.teachers, self.weights)}}

    def active(self, trajectories):
        """The ``trajectories`` (anything with a ``teacher`` name) whose teacher weighs above 0, in their order."""
        weights = dict(zip(self.teachers, self.weights))
        return [t for t in trajectories if weights[t.teacher] > 0]

    def describe(self):
        weights = ", ".join(f"{t} {w:g}" for t, w in zip(self.teachers, self.weights))
        return f"{self.kind} {PARAMETER[self.kind]}={self.param:g}; weights {weights}"

    def as_row(self):
        """This fusion as a result row records it (an ensemble row's ``fusion``): importance kind, its parameter,
        each teacher's weight, and :meth:`describe`'s text."""
        return {"kind": self.kind, "param": self.param, "weights": dict(zip(self.teachers, self.weights)),
                "text": self.describe()}


def check_grid(grid):
    """``grid`` ({kind: [parameters]}) names known kinds with valid parameters; returns it as floats."""
    if not isinstance(grid, dict) or not grid:
        raise ValueError(f"ensemble_fit_grid={grid!r} must map importance kinds ({', '.join(IMPORTANCE_KINDS)}) "
                         "to lists of parameters, e.g. {exp: [5, 10, 30], rrf: [60]}")
    out = {}
    for kind, params in grid.items():
        if kind not in PARAMETER:
            raise ValueError(f"ensemble_fit_grid names '{kind}': choose among {', '.join(IMPORTANCE_KINDS)}")
        if not isinstance(params, (list, tuple)) or not params:
            raise ValueError(f"ensemble_fit_grid[{kind}]={params!r} must be a non-empty list of numbers")
        for p in params:
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not p > 0:
                raise ValueError(f"ensemble_fit_grid[{kind}] holds {p!r}: each {PARAMETER[kind]} must be a number > 0")
        out[kind] = [float(p) for p in params]
    return out


def fit_fusion(problem, teachers, metric="recall@50", *, grid=None, method="greedy", max_steps=20, patience=2,
               weight_grid=DEFAULT_WEIGHT_GRID, weights=None, fixed_importance=None, bags=10, seed=0):
    """The best :class:`Fusion` of ``teachers`` on ``problem`` (a :class:`FitProblem`).

    ``bags`` and ``seed``: the ``bagged`` search's number of random halves and their draw;
    ``weights``: keep these teacher weights (the user's), search only the importance;
    ``fixed_importance`` (``(kind, param)``): keep it, search only the weights. The returned
    fusion's ``trace`` lists every importance candidate with its best score and search path.
    """
    name, k = parse_metric(metric)
    if method not in METHODS:
        raise ValueError(f"ensemble_fit_method={method!r}: choose one of {', '.join(METHODS)}")
    m = problem.ranks.shape[2]
    if m != len(teachers):
        raise ValueError(f"{len(teachers)} teacher names for lists of {m} teachers")
    candidates = [fixed_importance] if fixed_importance else [
        (kind, p) for kind, params in check_grid(grid or DEFAULT_GRID).items() for p in params]
    bagged = method == "bagged" and weights is None  # given weights: only the importance is searched
    if bagged:
        if isinstance(bags, bool) or not isinstance(bags, int) or bags < 1:
            raise ValueError(f"ensemble_fit_bags={bags!r}: must be an integer > 0")
        drawn = draw_bags(problem.n_users, bags, seed)
    best, trace = None, []
    for kind, param in candidates:
        singles = None
        if bagged:
            score, chosen, path, singles, scorer = _bagged(problem, kind, float(param), name, k, max_steps, patience,
                                                           drawn)
        else:
            scorer = _Scorer(problem, kind, float(param), name, k)
            if weights is not None:
                score, chosen, path = scorer(list(weights)), list(weights), []
            elif method == "coordinate":
                score, chosen, path, _ = _coordinate(scorer, m, weight_grid)
            else:
                score, chosen, path, singles = _greedy(scorer, m, max_steps, patience)
        entry = {"kind": kind, "param": float(param), "score": score, "weights": chosen,
                 "evaluations": scorer.evaluations, "path": path}
        if singles is not None:
            entry["single_teacher_scores"] = singles
        trace.append(entry)
        if best is None or score > best.score:
            best = Fusion(list(teachers), kind, float(param), [float(w) for w in chosen], score)
    best.trace = trace
    return best


def score_fusion(problem, fusion, metric):
    """``metric`` (``'recall@50'``) of ``fusion`` on ``problem``."""
    name, k = parse_metric(metric)
    return _Scorer(problem, fusion.kind, fusion.param, name, k)(fusion.weights)


def single_teacher_scores(problem, metric):
    """``metric`` of each teacher's own list on ``problem``, in teacher order. A single teacher ranks as its own list
    under every importance function (each decreases with the rank), so the released default scores it."""
    name, k = parse_metric(metric)
    return _singles(_Scorer(problem, "exp", 10.0, name, k), problem.ranks.shape[2])


def best_single_teacher(problem, metric):
    """(index, score) of the teacher whose own list scores best on ``problem`` (ties: the earlier teacher)."""
    singles = single_teacher_scores(problem, metric)
    best = _best_of(singles)
    return best, singles[best]


def sample_users(n_users, most, seed=0):
    """The rows a fit scores: all of ``range(n_users)`` when ``most`` is None or not below it, else a sample of
    ``most`` drawn by ``seed`` (sorted, long)."""
    if most is None or n_users <= most:
        return torch.arange(n_users)
    return torch.randperm(n_users, generator=torch.Generator().manual_seed(int(seed)))[:most].sort().values


def halves(n_users, seed=0):
    """Two disjoint halves of ``range(n_users)``, drawn by ``seed`` (long tensors)."""
    order = torch.randperm(n_users, generator=torch.Generator().manual_seed(int(seed)))
    return order[: n_users // 2].sort().values, order[n_users // 2:].sort().values
