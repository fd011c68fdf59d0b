"""Ray: a local or cluster session and the teachers as Ray tasks (:mod:`.parallel`), Ray Tune searches
(:mod:`.tune`) and their yaml search spaces (:mod:`.search_space`). The only layer that imports Ray."""
