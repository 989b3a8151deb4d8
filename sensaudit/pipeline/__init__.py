"""The audit, engine-free: its plan (plan.py: the passes, what each feeds, the merges, the
judging), the work on one chunk of rows (steps.py), probing the models, ranking and verdicts,
the replay of kept rows, example rows and compare's statistics. The engines
(:mod:`sensaudit.engines`) run the plan."""
