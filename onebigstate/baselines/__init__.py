"""Baseline mixers. Each module registers itself with onebigstate.nets.register_mixer."""
from onebigstate.baselines import lstm, mamba, transformer  # noqa: F401,E402
from onebigstate.baselines import deltanet  # noqa: F401,E402
from onebigstate.baselines import hopfield, titans  # noqa: F401,E402
from onebigstate.baselines import s4_dense, s4d  # noqa: F401,E402
