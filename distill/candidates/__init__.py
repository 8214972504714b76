"""Candidate relations before judgement: the `Candidate` model and its frame form (`model`), and the
model-free generators (`generators`). No score here is final."""
