"""Baseline mixers. Each module registers itself with onebigstate.nets.register_mixer."""
