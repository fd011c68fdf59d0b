"""The teacher ensemble g (spec section 3): importance-weighted fusion of ranked lists.

For user u and one chosen list per teacher x (a trajectory point's top-N unobserved
items, or the ranking of u's observed items):

    score_u(i) = sum_x  w_x * imp(rank of i in list_x(u))       (0 for items in no list)

``imp`` maps a 0-based rank r to an importance: ``exp`` exp(-r/tau) (default, tau=10),
``rrf`` 1/(rrf_k + r) (reciprocal-rank fusion), ``power`` (1/(r+1))**power.
Lists are integer tensors padded with -1 at the end. Everything is vectorised over users
and teachers, a chunk of users at a time; :func:`ensemble_top` ranks only the listed items.
"""

import numpy as np
import torch

IMPORTANCE_KINDS = ("exp", "rrf", "power")


def importance(ranks, kind="exp", tau=10.0, rrf_k=60, power=0.05):
    """Importance of 0-based ``ranks`` (any shape, float result)."""
    r = ranks.to(torch.float32)
    if kind == "exp":
        if not tau > 0:
            raise ValueError(f"ensemble_tau must be > 0, got {tau}")
        return torch.exp(-r / tau)
    if kind == "rrf":
        return 1.0 / (rrf_k + r)
    if kind == "power":
        return (1.0 / (r + 1.0)) ** power
    raise ValueError(f"unknown ensemble_importance '{kind}': choose one of {', '.join(IMPORTANCE_KINDS)}")


def importance_from_config(config):
    """Keyword arguments of :func:`importance` read from a RecBole config."""
    return dict(
        kind=config["ensemble_importance"] or "exp",
        tau=float(config["ensemble_tau"] if config["ensemble_tau"] is not None else 10.0),
        rrf_k=float(config["ensemble_rrf_k"] if config["ensemble_rrf_k"] is not None else 60),
        power=float(config["ensemble_power"] if config["ensemble_power"] is not None else 0.05),
    )


def teacher_weight_vector(names, weights=None):
    """Float [M] of per-teacher weights (missing names weigh 1). Unknown names, and weights that leave no teacher
    above 0, are an error."""
    weights = dict(weights or {})
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise ValueError(f"teacher_weights names unknown teachers {unknown}; teachers are {list(names)}")
    vector = torch.tensor([float(weights.get(n, 1.0)) for n in names], dtype=torch.float32)
    if len(names) and not bool((vector > 0).any()):
        raise ValueError(f"teacher_weights={weights} gives every teacher weight 0: give at least one a weight above 0")
    return vector


def ensemble_scores(lists, n_items, weights=None, **imp):
    """Dense ensemble scores.

    Args:
        lists: integer [M, B, L] ranked item lists per teacher and user, -1 = padding (any integer dtype:
            the store's int32 lists are widened a block at a time).
        n_items: catalogue size I (item ids are in [0, I)).
        weights: float [M] teacher weights (default all 1).
        **imp: keyword arguments of :func:`importance`.

    Returns:
        float [B, I]: the summed importances (0 where an item is in no list).
    """
    lists = lists.long()
    m, b, length = lists.shape
    device = lists.device
    w = torch.ones(m, device=device) if weights is None else weights.to(device, torch.float32)
    per_rank = importance(torch.arange(length, device=device), **imp)  # [L]
    contrib = w.view(m, 1, 1) * per_rank.view(1, 1, length)  # [M, 1, L]
    valid = lists >= 0
    contrib = torch.where(valid, contrib.expand(m, b, length), torch.zeros((), device=device))
    out = torch.zeros(b, n_items, device=device)
    idx = lists.clamp_min(0).permute(1, 0, 2).reshape(b, m * length)
    out.scatter_add_(1, idx, contrib.permute(1, 0, 2).reshape(b, m * length))
    return out


def sorted_rows(x):
    """Each row of ``x`` (no gradient) in ascending order. On CPU through NumPy, whose values-only sort is several
    times faster than torch's (which also computes the permutation): the same values either way."""
    if x.device.type != "cpu":
        return x.sort(1).values
    return torch.from_numpy(np.sort(x.numpy(), axis=1))


def ensemble_top(lists, n_items, k, weights=None, chunk_users=1024, *, sparse=None, **imp):
    """The first ``k`` items of the ensemble ranking of each user.

    The scores are :func:`ensemble_scores`', bit for bit. Exactly tied scores rank the lower item
    id first (``torch.topk`` over the scores alone would leave their order to the implementation):
    the key ranked is the score's bits (monotone for floats above 0) above the complement of the
    item id. Two ways give the same lists:

    - sparse (when a user's M x L slots are at most half the catalogue): only a user's
      listed items can score above 0, so only they are ranked and nothing of size I is built.
      Each user's slots are sorted by (item, slot), and an item's score is its slots'
      contributions summed in slot order, the order in which :func:`ensemble_scores`
      scatter-adds them.
    - dense: :func:`ensemble_scores` of a chunk of users, every item ranked.

    Args:
        lists: integer [M, U, L] as in :func:`ensemble_scores`; a list holds an item at most once.
        n_items: catalogue size I (item ids are in [0, I)).
        k: list length. Only items that score above 0 (listed by a teacher of weight above 0)
           are ranked; rows with fewer than ``k`` such items end with -1 padding.
        weights, **imp: as in :func:`ensemble_scores`.
        sparse: force one way (tests); ``None`` chooses as above.

    Returns:
        long [U, k], best first.
    """
    m, u, length = lists.shape
    device = lists.device
    out = torch.full((u, k), -1, dtype=torch.long, device=device)
    width = m * length
    if not u or not width:
        return out
    if int(lists.max()) >= n_items:
        raise ValueError(f"the lists hold item {int(lists.max())}, outside the catalogue of {n_items} items")
    if sparse is None:
        sparse = width * 2 <= n_items  # the crossover measured on ml-100k's 1,683 items at M x L = 600
    w = torch.ones(m, device=device) if weights is None else weights.to(device, torch.float32)
    per_rank = importance(torch.arange(length, device=device), **imp)         # [L]
    contrib = (w.view(m, 1) * per_rank.view(1, length)).reshape(-1)           # [width] per slot, teacher-major
    kind = torch.int32 if (n_items + 1) * width < 2 ** 31 else torch.long      # the (item, slot) key's type
    ids = torch.arange(width, device=device, dtype=kind)
    for start in range(0, u, chunk_users):
        block = lists[:, start:start + chunk_users]
        if sparse:
            slots = block.to(kind).permute(1, 0, 2).reshape(-1, width)
            # (item, slot) in one key, sorted per user; padding (-1) becomes item I, after every real item
            key = sorted_rows(torch.where(slots >= 0, slots, n_items) * width + ids)
            item = torch.div(key, width, rounding_mode="floor")
            value = contrib[key - item * width]
            part = value.clone()
            for j in range(1, m):  # an item is in at most m lists: add the j-th slot after each run's first
                value[:, :-j] += part[:, j:].masked_fill(item[:, j:] != item[:, :-j], 0.0)
            keep = item < n_items
            keep[:, 1:] &= item[:, 1:] != item[:, :-1]
            keep &= value > 0
            top = _keyed_top(value, item, keep, k)
        else:
            top = _dense_top(ensemble_scores(block, n_items, w, **imp), k)
        out[start:start + block.shape[1], :top.shape[1]] = top
    return out


def _rank_key(value, item):
    """int64 keys ordering (value descending, item ascending) for float32 ``value`` > 0 and items < 2^31."""
    return (value.view(torch.int32).long() << 32) | ((1 << 31) - 1 - item).long()


def _keyed_top(value, item, keep, k):
    """long [B, <=k]: the ``item`` of the ``k`` largest kept ``value`` per row, ties to the lower item, -1 past
    the kept ones."""
    top = torch.topk(_rank_key(value, item).masked_fill_(~keep, -1), min(k, value.shape[1]), dim=1).indices
    return item.gather(1, top).long().masked_fill_(~keep.gather(1, top), -1)


def _dense_top(scores, k):
    """:func:`_keyed_top` of dense float [B, I] ``scores`` (items are the columns, kept where above 0), without
    int64 keys over the whole row (several times the cost): a float ``topk``, its k ordered by their keys, and,
    in the rows where items left out tie the last one kept, the places of the tied items given to the tied
    items of lowest id."""
    k = min(k, scores.shape[1])
    value, item = torch.topk(scores, k, dim=1)
    order = torch.sort(_rank_key(value, item), dim=1, descending=True).indices
    value, item = value.gather(1, order), item.gather(1, order)
    last = value[:, -1:]
    cut = torch.nonzero((last.view(-1) > 0) & ((scores == last).sum(1) > (value == last).sum(1))).view(-1)
    if cut.numel():
        above = (value[cut] > last[cut]).sum(1)                       # kept whatever the tie rule
        row, col = torch.nonzero(scores[cut] == last[cut], as_tuple=True)  # tied items, ascending per row
        count = torch.bincount(row, minlength=cut.numel())
        at = torch.arange(row.numel(), device=scores.device) - (torch.cumsum(count, 0) - count)[row]
        take = at < k - above[row]
        item[cut[row[take]], above[row[take]] + at[take]] = col[take]
    return item.masked_fill_(value <= 0, -1)


def csr_to_padded(indptr, items, users=None, pad=-1):
    """Rows of a CSR list store as a padded long [len(users), max_len] tensor (row order kept)."""
    indptr = torch.as_tensor(indptr, dtype=torch.long)
    items = torch.as_tensor(items, dtype=torch.long)
    if users is None:
        users = torch.arange(indptr.numel() - 1)
    users = torch.as_tensor(users, dtype=torch.long)
    starts, lengths = indptr[users], indptr[users + 1] - indptr[users]
    width = int(lengths.max()) if lengths.numel() else 0
    out = torch.full((users.numel(), max(width, 1)), pad, dtype=torch.long)
    if width:
        pos = torch.arange(width).unsqueeze(0)
        keep = pos < lengths.unsqueeze(1)
        src = (starts.unsqueeze(1) + pos)[keep]
        out[keep] = items[src]
    return out


def csr_entries(indptr, items, rows):
    """The CSR entries of ``rows``, flat: (the position in ``rows`` of each entry's row, its item), both long."""
    start = indptr[rows]
    count = indptr[rows + 1] - start
    at = torch.repeat_interleave(torch.arange(rows.numel(), device=rows.device), count)
    shift = torch.repeat_interleave(start - (torch.cumsum(count, 0) - count), count)
    return at, items[torch.arange(at.numel(), device=rows.device) + shift]


def entries_mask(rows, cols, shape):
    """bool ``shape``: True at the entries (``rows``, ``cols``) and at column 0 (RecBole's padding item)."""
    mask = torch.zeros(shape, dtype=torch.bool, device=rows.device)
    mask[rows, cols] = True
    mask[:, 0] = True
    return mask


def csr_row_mask(indptr, items, rows, n_items):
    """bool [len(rows), n_items]: True at each row's CSR items and at column 0 (RecBole's padding item). The work
    is the rows' entries, not len(rows) times the longest row."""
    at, entries = csr_entries(indptr, items, rows)
    return entries_mask(at, entries, (rows.numel(), n_items))
