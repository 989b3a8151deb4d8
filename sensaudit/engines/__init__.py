"""The engines that run an audit: the local process (in :mod:`sensaudit.pipeline.passes`) and a pool
of Ray actors."""
