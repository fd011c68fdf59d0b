"""A run: training and evaluating any model on one split (:mod:`.training`), the teachers with their
trajectories (:mod:`.teachers`), the pre-flight checks (:mod:`.preflight`), the whole pipeline
(:mod:`.pipeline`), its result files and plots (:mod:`.results`, :mod:`.plots`), and using a trained
model (:mod:`.inference`)."""
