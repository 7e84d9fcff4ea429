"""Tasks by name, each with its typed params.

    @register_task("mqar", MQARConfig)
    class MQARTask(Task): ...

    task = build_task(TaskConfig(name="mqar", params={"seq_len": 64}))

Unknown names and unknown or ill-typed params raise :class:`ConfigError` naming the key.
Registering happens on import, one way: ``onebigstate/tasks/__init__.py`` imports every task
module, whose decorators fill ``TASKS``; this module imports none of them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from pydantic import ValidationError

from onebigstate.config import ConfigError, StrictModel
from onebigstate.tasks.base import Task, TaskConfig


@dataclass
class TaskEntry:
    cls: Callable[[TaskConfig, StrictModel], Task]
    config: type[StrictModel]


TASKS: dict[str, TaskEntry] = {}


def register_task(name: str, config: type[StrictModel]):
    def deco(cls):
        if name in TASKS:
            raise ValueError(f"task '{name}' registered twice")
        TASKS[name] = TaskEntry(cls, config)
        return cls
    return deco


def task_params(name: str, params: dict | None) -> StrictModel:
    """Validate a task's params against its config class."""
    if name not in TASKS:
        raise ConfigError(f"unknown task '{name}'; known: {sorted(TASKS)}")
    try:
        return TASKS[name].config.model_validate(params or {})
    except ValidationError as err:
        msgs = "; ".join(f"{'.'.join(map(str, e['loc'])) + ': ' if e['loc'] else ''}"
                         f"{e['msg'].replace('Value error, ', '')}" for e in err.errors())
        raise ConfigError(f"invalid params for task '{name}': {msgs}") from None


def build_task(cfg: TaskConfig) -> Task:
    params = task_params(cfg.name, cfg.params)
    return TASKS[cfg.name].cls(cfg, params)
