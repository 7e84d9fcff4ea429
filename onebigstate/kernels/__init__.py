"""Ops of the OBS recurrence: shared step math, the reference loop and the reversible path."""
from onebigstate.kernels.scan import ScanInputs, ScanOutputs, obs_scan
from onebigstate.kernels.step import Carry, StepConfig, StepParams

__all__ = ["obs_scan", "ScanInputs", "ScanOutputs", "StepConfig", "StepParams", "Carry"]
