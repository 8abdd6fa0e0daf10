"""Fit a training run into `training.max_minutes`: measure a few steps, then plan the step count."""

from __future__ import annotations

import copy
import logging
import math
import statistics
import time
from dataclasses import asdict, dataclass, replace

import torch

from vectorizer.neck import neck_cost

log = logging.getLogger(__name__)
SAFETY = 0.95          # plan to end this share of the way into the time left
WARMUP_STEPS = 2       # the first steps build kernels and buffers: not timed
TIMED_STEPS = 6
FINAL_SECONDS = 10.0   # checkpoint writes at the end, beside the centring pass measured below


@dataclass(frozen=True)
class Costs:
    """Seconds measured on this machine for this model, batch size and input size."""

    step: float        # one optimizer step on an augmented training batch
    per_image: float   # one image through the model in eval mode (validation, centring mean)


@dataclass(frozen=True)
class Plan:
    """How many optimizer steps the run takes; the last epoch may be cut short."""

    steps: int
    steps_per_epoch: int
    max_minutes: float | None = None
    step_seconds: float | None = None
    initial_steps: int | None = None   # the first plan's steps, when epochs ran at another pace

    @property
    def epochs(self) -> int:
        return math.ceil(self.steps / self.steps_per_epoch)

    @classmethod
    def from_dict(cls, data: dict) -> Plan:
        return cls(**{key: data[key] for key in cls.__dataclass_fields__ if key in data})

    def steps_before(self, epoch: int) -> int:
        return min(self.steps, epoch * self.steps_per_epoch)

    def steps_in(self, epoch: int) -> int:
        return max(0, min(self.steps_per_epoch, self.steps - epoch * self.steps_per_epoch))

    def to_dict(self) -> dict:
        return {**asdict(self), "epochs": round(self.steps / self.steps_per_epoch, 2)}


class BudgetError(ValueError):
    """`training.max_minutes` leaves no time to train; the message names the key."""


def fit_steps(max_steps: int, steps_per_epoch: int, seconds_left: float, costs: Costs,
              val_images: int, mean_images: int, after: float = 0.0) -> int:
    """The most steps (at most `max_steps`) whose training, per-epoch validation, the work
    `after` the epochs (seconds: the neck's fit) and the final centring pass end within
    `seconds_left` (times SAFETY)."""
    available = (seconds_left * SAFETY - FINAL_SECONDS - mean_images * costs.per_image
                 - after)
    validation = val_images * costs.per_image
    steps = 0
    for epoch in range(math.ceil(max_steps / steps_per_epoch)):
        room = available - (epoch + 1) * validation - steps * costs.step
        fitting = min(steps_per_epoch, max_steps - steps, int(room // costs.step))
        if fitting <= 0:
            break
        steps += fitting
        if fitting < steps_per_epoch:
            break
    return steps


def measure_costs(trainer, steps: int = TIMED_STEPS) -> Costs:
    """Time real training steps and an eval batch on a copy of the model (the run is untouched)."""
    trainer.train_mode()
    model = copy.deepcopy(trainer.model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-6)
    generator = torch.Generator().manual_seed(trainer.config.training.seed + 1)
    rows = trainer.train_rows
    batch_size = trainer.config.model.batch_size
    seconds = []
    for _ in range(WARMUP_STEPS + steps):
        picked = rows[torch.randint(len(rows), (batch_size,), generator=generator)]
        began = time.perf_counter()
        trainer.step(model, optimizer, picked, generator)
        seconds.append(time.perf_counter() - began)
    eval_rows = rows[:min(len(rows), 2 * batch_size)]
    trainer.predict(model, eval_rows)  # the first pass of a batch shape builds its kernels
    began = time.perf_counter()
    trainer.predict(model, eval_rows)
    per_image = (time.perf_counter() - began) / max(1, len(eval_rows))
    return Costs(step=statistics.median(seconds[WARMUP_STEPS:]), per_image=per_image)


def plan_run(trainer, deadline: float | None) -> Plan:
    """All epochs without a budget; with one, as many steps as fit before `deadline`
    (a `time.monotonic()` value)."""
    steps_per_epoch, epochs = trainer.steps_per_epoch, trainer.max_epochs
    budget = trainer.config.training.max_minutes
    if budget is None or deadline is None:
        return Plan(epochs * steps_per_epoch, steps_per_epoch)
    with torch.random.fork_rng(devices=[]):  # dropout in the copy must not move the run's RNG
        costs = measure_costs(trainer)
        trainer.neck_cost = neck_cost(trainer)
    seconds_left = deadline - time.monotonic()
    steps = fit_steps(epochs * steps_per_epoch, steps_per_epoch, seconds_left, costs,
                      val_images=len(trainer.val_rows),
                      mean_images=min(trainer.mean_sample, len(trainer.train_rows)),
                      after=trainer.neck_cost.seconds(costs.per_image))
    if steps < 1:
        raise BudgetError(
            f"training.max_minutes: {budget:g} minutes leave no time to train on this machine "
            f"({seconds_left:.0f} s left after loading the catalog, {costs.step:.2f} s per step); "
            "raise it, or remove it to train every epoch")
    result = Plan(steps, steps_per_epoch, budget, round(costs.step, 3))
    log.info("time budget %g min: %.2f s per step, %.1f s per validation, %.0f s after the "
             "epochs; training %d steps (%.2f of %d epochs)", budget, costs.step,
             len(trainer.val_rows) * costs.per_image, trainer.neck_cost.seconds(costs.per_image),
             steps, steps / steps_per_epoch, epochs)
    return result


def replan_after_epoch(trainer, epochs_done: int, train_seconds: float, val_seconds: float,
                       seconds_left: float) -> None:
    """Refit the rest of the run to the pace the epoch just ended ran at: fewer steps when it
    ran slower than planned, more (up to every epoch) when faster, so that the run ends within
    the budget and uses it (this machine's speed drifts by +-10 % within minutes, and the six
    timed steps often read slower than the epochs run). Validation and the neck's feature pass
    are re-costed at the pace the validation ran. The one-cycle schedule is refitted to the new
    total."""
    plan = trainer.plan
    done = plan.steps_before(epochs_done)
    if plan.max_minutes is None or done >= plan.steps:
        return
    step_seconds = train_seconds / max(1, plan.steps_in(epochs_done - 1))
    costs = Costs(step=step_seconds, per_image=val_seconds / max(1, len(trainer.val_rows)))
    rest = fit_steps(trainer.max_epochs * plan.steps_per_epoch - done, plan.steps_per_epoch,
                     seconds_left, costs, val_images=len(trainer.val_rows),
                     mean_images=min(trainer.mean_sample, len(trainer.train_rows)),
                     after=trainer.neck_cost.seconds(costs.per_image))
    if done + rest == plan.steps:
        return
    log.info("time budget: epoch %d ran at %.2f s per step (planned %.2f); training %d steps "
             "instead of %d", epochs_done, step_seconds, plan.step_seconds or 0.0, done + rest,
             plan.steps)
    trainer.schedule(replace(plan, steps=done + rest, step_seconds=round(step_seconds, 3),
                             initial_steps=plan.initial_steps or plan.steps), done_steps=done)
