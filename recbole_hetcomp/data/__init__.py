"""Datasets: the GroupLens MovieLens conversion (:mod:`.movielens`), the CiteULike-t split of the
HetComp paper (:mod:`.citeulike`), and the checks of atomic files and splits (:mod:`.checks`)."""
