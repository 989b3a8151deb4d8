"""The engines that run an audit's plan (:mod:`sensaudit.pipeline.plan`): :mod:`.local`, this
process over every chunk of the data, and :mod:`.ray`, a pool of Ray actors over work units.
Each implements the plan's :class:`~sensaudit.pipeline.plan.Engine` passes; neither holds the
audit's sequence, which :func:`~sensaudit.pipeline.plan.run` owns."""
