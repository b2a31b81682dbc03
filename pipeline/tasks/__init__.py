"""One :class:`Task` per kind of competition; the stages ask it and never branch on the kind."""

from pipeline.config import Competition
from pipeline.tasks.base import CVResult, Plan, Task
from pipeline.tasks.image import ImageTask
from pipeline.tasks.tabular import TabularTask

TASKS: dict[str, type] = {"tabular": TabularTask, "image": ImageTask}

__all__ = ["CVResult", "Plan", "Task", "for_competition"]


def for_competition(comp: Competition) -> Task:
    return TASKS[comp.kind](comp)
