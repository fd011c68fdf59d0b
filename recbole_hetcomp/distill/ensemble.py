"""The teacher ensemble g (spec section 3): importance-weighted fusion of ranked lists.

For user u and one chosen list per teacher x (a trajectory point's top-N unobserved
items, or the ranking of u's observed items):

    score_u(i) = sum_x  w_x * imp(rank of i in list_x(u))       (0 for items in no list)

``imp`` maps a 0-based rank r to an importance: ``exp`` exp(-r/tau) (default, tau=10),
``rrf`` 1/(rrf_k + r) (reciprocal-rank fusion), ``power`` (1/(r+1))**power.
Lists are long tensors padded with -1 at the end. Everything is vectorised over users
and teachers; dense [users, items] score blocks are built a chunk of users at a time.
"""

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
    """Float [M] of per-teacher weights (missing names weigh 1). Unknown names are an error."""
    weights = dict(weights or {})
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise ValueError(f"teacher_weights names unknown teachers {unknown}; teachers are {list(names)}")
    return torch.tensor([float(weights.get(n, 1.0)) for n in names], dtype=torch.float32)


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


def ensemble_top(lists, n_items, k, weights=None, chunk_users=1024, **imp):
    """The first ``k`` items of the ensemble ranking of each user.

    Args:
        lists: integer [M, U, L] as in :func:`ensemble_scores`.
        n_items: catalogue size I.
        k: list length. Only items that appear in some list are ranked; rows with fewer
           than ``k`` such items end with -1 padding.
        weights, **imp: as in :func:`ensemble_scores`.

    Returns:
        long [U, k], best first.
    """
    m, u, length = lists.shape
    out = torch.full((u, k), -1, dtype=torch.long, device=lists.device)
    for start in range(0, u, chunk_users):
        block = lists[:, start:start + chunk_users]
        scores = ensemble_scores(block, n_items, weights, **imp)
        top_val, top_idx = torch.topk(scores, min(k, n_items), dim=1)
        top_idx = torch.where(top_val > 0, top_idx, torch.full_like(top_idx, -1))
        out[start:start + block.shape[1], : top_idx.shape[1]] = top_idx
    return out


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


def csr_row_mask(indptr, items, rows, n_items):
    """bool [len(rows), n_items]: True at each row's CSR items and at column 0 (RecBole's padding item). The work
    is the rows' entries, not len(rows) times the longest row."""
    at, entries = csr_entries(indptr, items, rows)
    mask = torch.zeros(rows.numel(), n_items, dtype=torch.bool, device=rows.device)
    mask[at, entries] = True
    mask[:, 0] = True
    return mask
