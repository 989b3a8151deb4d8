"""The Ray engine: the same audit over a pool of Ray actors (``engine: ray``).

- :mod:`.cluster`: joining Ray (an optional extra) and the pool of actors;
- :mod:`.job`: what the driver sends the workers and what each work unit sends back;
- :mod:`.worker`: the actor, running the plan's steps (:mod:`sensaudit.pipeline.steps`) on its
  work units;
- :mod:`.schedule`: work units over the actors, results back in unit order;
- :mod:`.driver`: :class:`~.driver.RayEngine`, the plan's passes over the units, merged with the
  plan's merges.

The entry points are :func:`.driver.audit_on_ray` and :func:`.driver.compare_on_ray`. Nothing
here imports Ray until an audit runs on it.
"""
