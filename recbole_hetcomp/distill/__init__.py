"""The algorithm, in pure torch (no RecBole import): the ensemble's fusion (:mod:`.ensemble`), the
curriculum (:mod:`.curriculum`: ranking discrepancy and DKC) and the student's losses (:mod:`.losses`)."""
