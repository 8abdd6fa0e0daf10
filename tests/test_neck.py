"""The two-path neck: its vector, the fit of its MLP half, its keys, the time budget."""

from pathlib import Path

import numpy as np
import pytest
import torch

from config import ConfigError, load_config
from tests.fixtures_demo import assert_round_trip_identical, write_demo_config
from vectorizer import train as training
from vectorizer.budget import Costs, fit_steps
from vectorizer.checkpoint import check_config_matches, load_checkpoint
from vectorizer.encoder import Encoder
from vectorizer.model import MultiTaskNet, TwoPathNeck, VectorHook
from vectorizer.neck import NeckCost, neck_cost, neck_weights, refit_neck, reset_fitted
from vectorizer.preprocess import Preprocess

NECK = {"model__embedding_dim": 8, "model__neck_hidden": 16, "training__neck_epochs": 3}


def two_path_net() -> MultiTaskNet:
    torch.manual_seed(0)
    return MultiTaskNet("resnet18", {"colour": 3, "garment": 4}, 8, "cosine",
                        Preprocess(32).mean, Preprocess(32).std, 10.0, neck_hidden=16).eval()


def neck_config(tmp_path: Path, demo_env, name: str = "neck", **overrides):
    folder = tmp_path / name
    folder.mkdir()
    config = load_config(write_demo_config(folder, **{**NECK, **overrides}))
    config.paths.images_dataframe_path = demo_env.config.paths.images_dataframe_path
    return config


def test_the_vector_is_the_linear_half_then_the_mlp_half_once_fitted():
    model = two_path_net()
    assert isinstance(model.embedding, TwoPathNeck)
    features = torch.randn(5, model.feature_dim)
    with torch.inference_mode():
        before = model.embedding(features)
    assert before.shape == (5, 16) and model.heads.layers["colour"].in_features == 16
    assert torch.all(before[:, 8:] == 0)  # until fitted, the heads read the linear half only
    linear = {k: v.clone() for k, v in model.embedding.linear.state_dict().items()}
    reset_fitted(model, seed=0)
    with torch.inference_mode():
        after = model.embedding(features)
    torch.testing.assert_close(after[:, :8], before[:, :8])
    assert after[:, 8:].abs().sum() > 0 and bool(model.embedding.mlp_fitted)
    for key, value in model.embedding.linear.state_dict().items():
        torch.testing.assert_close(value, linear[key])


def test_fitting_the_mlp_half_leaves_the_backbone_and_the_linear_half_alone(demo_env, tmp_path):
    config = neck_config(tmp_path, demo_env)
    trainer = training.Trainer(config, training.load_catalog(config).head(96), 1, False)
    kept = {name: value.clone() for name, value in trainer.model.state_dict().items()
            if name.startswith(("backbone.", "embedding.linear."))}
    heads = trainer.model.heads.layers["garment"].weight.detach().clone()
    record = refit_neck(trainer)
    state = trainer.model.state_dict()
    for name, value in kept.items():
        torch.testing.assert_close(state[name], value, msg=name)
    assert not torch.equal(trainer.model.heads.layers["garment"].weight, heads)
    assert record["epochs"] == 3 and record["seconds"] >= 0
    assert set(record["val"]) == set(trainer.classes)
    assert bool(trainer.model.embedding.mlp_fitted)


def test_a_trained_two_path_model_round_trips_and_embeds_both_halves(demo_env, tmp_path):
    config = neck_config(tmp_path, demo_env, training__epochs=1)
    meta = training.train(config, limit=96, progress=False)
    assert meta["neck"]["epochs"] == 3 and meta["neck_hidden"] == 16
    assert meta["metrics"]["val"] == meta["neck"]["val"]
    model, loaded = load_checkpoint(Path(config.paths.trained_model_path))
    assert bool(model.embedding.mlp_fitted) and len(loaded["vector_mean"]) == 16
    assert_round_trip_identical(model, loaded, tmp_path / "copy.pt", size=32)
    assert loaded["vector_scale"] == pytest.approx([0.8 ** 0.5] * 8 + [0.2 ** 0.5] * 8)
    encoder = Encoder.from_config(config)
    images = torch.randint(0, 255, (3, 3, 32, 32), dtype=torch.uint8)
    vectors = encoder.forward(images)[0]
    hook = VectorHook(model, "heads")
    with torch.inference_mode():  # the heads' input, centred, its halves weighted for search
        model(images)
        raw = (hook.vector - torch.tensor(loaded["vector_mean"])) * torch.tensor(
            loaded["vector_scale"])
    np.testing.assert_allclose(vectors, torch.nn.functional.normalize(raw, dim=1).numpy(),
                               rtol=1e-4, atol=1e-5)
    assert (abs(vectors[:, 8:]).sum(axis=1) > 0).all()  # the MLP half is in the served vector


def test_a_task_can_weigh_differently_in_the_necks_fit(demo_env, tmp_path):
    tasks = [{"column": "garment", "min_count": 5}, {"column": "colour", "min_count": 5,
                                                     "neck_weight": 2.0}]
    config = neck_config(tmp_path, demo_env, training__tasks=tasks)
    trainer = training.Trainer(config, training.load_catalog(config).head(96), 1, False)
    assert trainer.weights == [1.0, 1.0] and neck_weights(trainer) == [1.0, 2.0]
    rows = trainer.train_rows[:8]
    features = torch.randn(8, trainer.model.feature_dim)
    logits = trainer.model.heads(trainer.model.embedding(features))
    targets = trainer.targets[rows]
    plain, colour_twice = trainer.loss(logits, targets), trainer.loss(logits, targets, [1.0, 2.0])
    colour_only = trainer.loss(logits, targets, [1e-9, 1.0])
    torch.testing.assert_close(colour_twice - plain, colour_only, rtol=1e-4, atol=1e-5)


def test_the_neck_keys_come_together_and_name_themselves(tmp_path):
    cases = [({"model__neck_hidden": 16, "model__embedding_dim": 8},
              "model.neck_hidden needs training.neck_epochs"),
             ({"training__neck_epochs": 3}, "training.neck_epochs needs model.neck_hidden"),
             ({**NECK, "model__embedding_dim": 0}, "neck_hidden needs embedding_dim")]
    for number, (overrides, message) in enumerate(cases):
        folder = tmp_path / str(number)
        folder.mkdir()
        with pytest.raises(ConfigError, match=message):
            load_config(write_demo_config(folder, **overrides))


def test_a_config_whose_neck_differs_from_the_checkpoint_is_refused(demo_env, tmp_path):
    model = two_path_net()
    _, meta = load_checkpoint(demo_env.config.paths.trained_model_path)
    meta = {**meta, "embedding_dim": 8, "neck_hidden": 16, "head_scale": 10.0,
            "tasks": {"colour": ["a", "b", "c"], "garment": ["w", "x", "y", "z"]},
            "vector_mean": None}
    loaded = assert_round_trip_identical(model, meta, tmp_path / "two.pt", size=32)
    config = neck_config(tmp_path, demo_env, model__head_scale=10.0)
    config.colour.column = None
    check_config_matches(config, loaded, Path("m"))
    config.model.neck_hidden = 32
    with pytest.raises(ConfigError, match=r"model\.neck_hidden: config says 32"):
        check_config_matches(config, loaded, Path("m"))


def test_the_budget_keeps_time_for_the_neck(demo_env, tmp_path):
    costs = Costs(step=1.0, per_image=0.01)
    kept = fit_steps(1000, 10, seconds_left=100.5, costs=costs, val_images=100, mean_images=200)
    assert fit_steps(1000, 10, seconds_left=100.5, costs=costs, val_images=100,
                     mean_images=200, after=22.0) == kept - 20  # two epochs of 10 s + 1 s
    config = neck_config(tmp_path, demo_env)
    trainer = training.Trainer(config, training.load_catalog(config).head(96), 1, False)
    cost = neck_cost(trainer)  # their features, validation after, and the fit's timed epochs
    assert cost.images == len(trainer.train_rows) + len(trainer.val_rows)
    assert cost.fit_seconds > 0 and cost.seconds(per_image=0.01) > cost.images * 0.01
    plain = neck_config(tmp_path, demo_env, "plain", model__neck_hidden=0,
                        training__neck_epochs=0)
    trainer = training.Trainer(plain, training.load_catalog(plain).head(96), 1, False)
    assert neck_cost(trainer) == NeckCost() and NeckCost().seconds(per_image=0.01) == 0.0
