"""The circuit tracker: which circuits of the big state fire, in what order; replay, plan, consolidate."""
from onebigstate.tracker.tracker import CircuitTracker, Plan, TrackerError

__all__ = ["CircuitTracker", "Plan", "TrackerError"]
