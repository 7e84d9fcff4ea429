"""Many processes, one model: data parallel training, a shared lifelong state, a sharded state.

- :mod:`~onebigstate.distributed.launch`: process groups (torchrun, local gloo processes).
- :mod:`~onebigstate.distributed.shared_state`: the deltas every process wrote, summed into
  every copy of S at a sync point (sparse pairs or a dense all-reduce, chosen by size).
- :mod:`~onebigstate.distributed.sharded`: S split by columns over the processes.

See ``docs/results/distributed.md`` for what each costs.
"""
from onebigstate.distributed import sharded  # noqa: E402,F401  (registers the 'sharded' state store)
