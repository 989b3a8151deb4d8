"""The Ray engine: the same audit over a pool of Ray actors (``engine: ray``).

- :mod:`.cluster`: joining Ray (an optional extra) and the pool of actors;
- :mod:`.job`: what the driver sends the workers and what each work unit sends back;
- :mod:`.worker`: the actor, running the local engine's steps on its work units;
- :mod:`.schedule`: work units over the actors, results back in unit order;
- :mod:`.driver`: the passes, merged into the local engine's results.

Nothing here imports Ray until an audit runs on it.
"""

from .driver import audit_on_ray, compare_on_ray

__all__ = ["audit_on_ray", "compare_on_ray"]
