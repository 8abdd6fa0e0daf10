"""training.max_minutes: steps fitted to the time left, kept on resume, clear when too small."""

import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from config import load_config
from tests.fixtures_demo import write_demo_config
from vectorizer import budget
from vectorizer import train as training
from vectorizer.budget import BudgetError, Costs, Plan, fit_steps, replan_after_epoch
from vectorizer.neck import NeckCost


def test_every_step_when_the_time_allows():
    costs = Costs(step=1.0, per_image=0.01)
    assert fit_steps(50, 10, seconds_left=10_000, costs=costs, val_images=100,
                     mean_images=100) == 50


def test_the_steps_fill_the_time_left_after_validation_and_centring():
    costs = Costs(step=1.0, per_image=0.01)  # validation 1 s per epoch, centring 2 s
    # 100.5 s x SAFETY 0.95 - 10 s final - 2 s centring = 83.5 s; an epoch: 10 steps + 1 s:
    # 7 whole epochs take 77 s, and 5 steps of the eighth with its validation end at 83 s
    assert fit_steps(1000, 10, seconds_left=100.5, costs=costs, val_images=100,
                     mean_images=200) == 75


def test_no_time_no_steps():
    costs = Costs(step=5.0, per_image=0.01)
    assert fit_steps(100, 10, seconds_left=12, costs=costs, val_images=100, mean_images=0) == 0


def test_a_plan_counts_its_last_partial_epoch():
    plan = Plan(steps=25, steps_per_epoch=10)
    assert plan.epochs == 3 and [plan.steps_in(e) for e in range(4)] == [10, 10, 5, 0]
    assert plan.steps_before(3) == 25 and plan.to_dict()["epochs"] == 2.5
    assert Plan.from_dict(plan.to_dict()) == plan


def demo_config(tmp_path: Path, demo_env, name: str, **overrides):
    folder = tmp_path / name
    folder.mkdir()
    config = load_config(write_demo_config(folder, **overrides))
    config.paths.images_dataframe_path = demo_env.config.paths.images_dataframe_path
    return config


def test_a_generous_budget_trains_every_epoch_and_is_recorded(demo_env, tmp_path):
    config = demo_config(tmp_path, demo_env, "a", training__epochs=2, training__max_minutes=600)
    meta = training.train(config, limit=96, progress=False)
    assert meta["plan"]["max_minutes"] == 600 and meta["plan"]["epochs"] == 2
    assert meta["plan"]["steps"] == 2 * meta["plan"]["steps_per_epoch"]
    assert meta["plan"]["step_seconds"] > 0  # measured, not the full plan without a budget


def test_a_budget_too_small_to_train_names_the_key(demo_env, tmp_path):
    config = demo_config(tmp_path, demo_env, "b", training__max_minutes=0.001)
    with pytest.raises(BudgetError, match=r"training\.max_minutes: 0\.001 minutes leave no time"):
        training.train(config, limit=96, progress=False)
    assert not Path(config.paths.trained_model_path).exists()


def test_a_resumed_run_keeps_the_interrupted_runs_plan(demo_env, tmp_path, monkeypatch):
    # the machine's speed is the input here, not what is tested: fixed costs give a fixed plan
    costs = iter([Costs(step=20.0, per_image=0.0), Costs(step=0.01, per_image=0.0)])
    monkeypatch.setattr(budget, "measure_costs", lambda trainer: next(costs))
    monkeypatch.setattr(budget, "FINAL_SECONDS", 0.0)
    config = demo_config(tmp_path, demo_env, "c", training__epochs=4, training__max_minutes=1)
    original, seen, lag = training.Trainer.train_epoch, [], [0.0]

    def interrupted_after_one(self, epoch):
        seen.append((epoch, self.plan.steps))
        if len(seen) == 2:
            raise KeyboardInterrupt
        lag[0] += 20.0  # the epoch runs at the timed pace: the plan stays
        return original(self, epoch)

    monkeypatch.setattr(training.Trainer, "train_epoch", interrupted_after_one)
    with pytest.raises(KeyboardInterrupt):
        training.train(config, limit=96, progress=False, clock=lambda: time.monotonic() + lag[0])
    planned = seen[0][1]
    assert planned == 2  # ~55 s left at 20 s per step, of 4 epochs of one step each
    monkeypatch.setattr(training.Trainer, "train_epoch", original)
    meta = training.train(config, limit=96, progress=False)  # would plan 4 epochs if re-measured
    assert meta["plan"]["steps"] == planned
    assert torch.load(config.paths.trained_model_path, weights_only=True)["meta"]["plan"] == \
        meta["plan"]


def test_a_run_that_falls_behind_its_plan_takes_fewer_steps(demo_env, tmp_path, monkeypatch):
    """The plan said every epoch fits; each epoch then takes 20 s (a slower machine than the
    timed steps showed), so after each epoch the rest is refitted to the time left."""
    monkeypatch.setattr(budget, "measure_costs", lambda trainer: Costs(step=0.01, per_image=0.0))
    config = demo_config(tmp_path, demo_env, "d", training__epochs=4, training__max_minutes=1)
    lag, original, seen = [0.0], training.Trainer.train_epoch, []

    def slow(self, epoch):
        lag[0] += 20.0
        seen.append(self.plan.steps)
        return original(self, epoch)

    monkeypatch.setattr(training.Trainer, "train_epoch", slow)
    meta = training.train(config, limit=96, progress=False,
                          clock=lambda: time.monotonic() + lag[0])
    # 60 s budget, 4 epochs of one step each: after the first (20 s), 40 s left x SAFETY 0.95
    # - 10 s final = 28 s: one more 20 s epoch; after the second nothing more fits
    assert seen == [4, 2]  # two epochs ran, the second already under the new plan
    assert meta["plan"]["steps"] == 2 and meta["plan"]["initial_steps"] == 4
    assert meta["plan"]["step_seconds"] >= 20.0
    assert not training.resume_path(Path(config.paths.trained_model_path)).exists()


def test_a_run_on_pace_keeps_its_plan(demo_env, tmp_path, monkeypatch):
    monkeypatch.setattr(budget, "measure_costs", lambda trainer: Costs(step=0.01, per_image=0.0))
    config = demo_config(tmp_path, demo_env, "e", training__epochs=3, training__max_minutes=600)
    meta = training.train(config, limit=96, progress=False)
    assert meta["plan"]["steps"] == 3 and meta["plan"]["initial_steps"] is None


def test_a_run_ahead_of_its_plan_takes_more_steps_up_to_every_epoch(demo_env, tmp_path,
                                                                     monkeypatch):
    """The timed steps read 20 s each (slower than the epochs then run), so the first plan
    fits 2 of 4 one-step epochs; the first epoch ends at once, and the rest is refitted: all
    4 fit in the time left, and no more than the configured epochs."""
    monkeypatch.setattr(budget, "measure_costs", lambda trainer: Costs(step=20.0, per_image=0.0))
    monkeypatch.setattr(budget, "FINAL_SECONDS", 0.0)
    config = demo_config(tmp_path, demo_env, "f", training__epochs=4, training__max_minutes=1)
    original, seen = training.Trainer.train_epoch, []

    def recorded(self, epoch):
        seen.append(self.plan.steps)
        return original(self, epoch)

    monkeypatch.setattr(training.Trainer, "train_epoch", recorded)
    meta = training.train(config, limit=96, progress=False)
    assert seen == [2, 4, 4, 4]
    assert meta["plan"]["steps"] == 4 and meta["plan"]["initial_steps"] == 2


def test_the_necks_feature_pass_is_recosted_at_the_validations_pace():
    """The neck embeds 10,000 images after the epochs; the plan costed them at the timed eval
    batch's pace. When validation then runs 10x faster than that, the neck's time shrinks with
    it and the freed time goes to steps (one noisy eval timing once cost a whole epoch)."""
    def after_first_epoch(val_seconds):
        scheduled = []
        trainer = SimpleNamespace(
            plan=Plan(30, 10, max_minutes=30, step_seconds=1.0), max_epochs=4, mean_sample=0,
            train_rows=list(range(1000)), val_rows=list(range(100)),
            neck_cost=NeckCost(images=10_000, fit_seconds=10.0),
            schedule=lambda plan, done_steps: scheduled.append(plan.steps))
        # the epoch ran on pace (10 steps in 10 s); 150 s left x SAFETY 0.95 - 10 s final
        replan_after_epoch(trainer, 1, train_seconds=10.0, val_seconds=val_seconds,
                           seconds_left=150.0)
        return scheduled

    # validation at 0.01 s per image: the neck 110 s, two more epochs (10 steps + 1 s each)
    # fit in the 22.5 s left: the plan of 30 steps stands
    assert after_first_epoch(val_seconds=1.0) == []
    # at 0.001 s per image: the neck 20 s, and every remaining epoch fits
    assert after_first_epoch(val_seconds=0.1) == [40]
