"""The teachers' training trajectories: choosing and recording points while a teacher trains
(:mod:`.recorder`) and keeping them on disk (:mod:`.store`)."""
