"""Training runs: config, optimizer groups, checkpoints and the resumable training loop."""
from onebigstate.training.checkpoint import Checkpoint, CheckpointError, read_checkpoint, save_checkpoint
from onebigstate.training.config import RunConfig, TrainConfig
from onebigstate.training.loading import LoadedRun, load_run
from onebigstate.training.optim import build_optimizer, build_scheduler
from onebigstate.training.trainer import TrainingDiverged, evaluate, model_from_checkpoint, train

__all__ = ["RunConfig", "TrainConfig", "Checkpoint", "CheckpointError", "read_checkpoint", "save_checkpoint",
           "build_optimizer", "build_scheduler", "TrainingDiverged", "evaluate", "model_from_checkpoint", "train",
           "LoadedRun", "load_run"]
