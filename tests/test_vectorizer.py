"""The multitask model, its hook, labels, checkpoints, training determinism and the encoder."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from config import ConfigError
from config.schema import TaskConfig, TrainingConfig
from tests.fixtures_demo import assert_round_trip_identical
from vectorizer import device
from vectorizer.checkpoint import (
    CheckpointError,
    check_config_matches,
    load_checkpoint,
)
from vectorizer.encoder import Encoder
from vectorizer.labels import OTHER, class_lists, encode_labels, split_ids
from vectorizer.model import ModelError, MultiTaskNet, VectorHook, build_backbone
from vectorizer.preprocess import Preprocess


def tiny_net(backbone: str = "resnet18") -> MultiTaskNet:
    torch.manual_seed(0)
    return MultiTaskNet(backbone, {"colour": 3, "garment": 4}, 0, "cosine",
                        Preprocess(32).mean, Preprocess(32).std).eval()


def test_hook_captures_the_input_of_the_named_layer():
    model = tiny_net()
    heads_hook, pooled_hook = VectorHook(model, "heads"), VectorHook(model, "backbone.fc")
    with torch.inference_mode():
        model(torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8))
    assert heads_hook.vector.shape == (2, 512)
    assert torch.equal(heads_hook.vector, pooled_hook.vector)


def test_unknown_layer_lists_valid_names():
    message = str(pytest.raises(ModelError, VectorHook, tiny_net(), "classifier").value)
    assert "model.layer_to_get_input: no module named 'classifier'" in message
    assert "heads" in message and "backbone.layer4" in message


def test_other_architectures_and_unknown_backbone():
    model = tiny_net("mobilenet_v3_small")
    hook = VectorHook(model, "heads")
    with torch.inference_mode():
        logits = model(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    assert logits["colour"].shape == (2, 3) and hook.vector.shape == (2, 1024)
    assert "model.backbone: unknown backbone 'resnet5'" in str(
        pytest.raises(ModelError, build_backbone, "resnet5").value)


def test_rare_classes_are_merged_or_dropped_and_counted():
    items = pd.DataFrame({"colour": ["Red"] * 5 + ["Blue"] * 5 + ["Teal", None]})
    merged, report = class_lists(items, [TaskConfig(column="colour", min_count=3)])
    assert merged["colour"] == ["Blue", "Red", OTHER]
    assert report["colour"]["rare_items"] == 1 and report["colour"]["missing_labels"] == 1
    dropped, _ = class_lists(items, [TaskConfig(column="colour", min_count=3, rare="drop")])
    targets = encode_labels(items, dropped)
    assert targets[:, 0].tolist() == [1] * 5 + [0] * 5 + [-1, -1]
    assert encode_labels(items, merged)[10:, 0].tolist() == [2, -1]


def test_missing_labels_are_ignored_by_that_task_only(demo_env):
    from vectorizer.train import Trainer

    trainer = Trainer(demo_env.fresh_config(), _demo_items(demo_env).head(64), 1, progress=False)
    targets = trainer.targets[:8].clone()
    targets[:, 0] = -1
    logits = trainer.model(trainer.images[:8])
    loss = trainer.loss(logits, targets)
    assert torch.isfinite(loss)
    only_others = sum(torch.nn.functional.cross_entropy(
        logits[task].float(), targets[:, i], label_smoothing=0.1) * w
        for i, (task, w) in enumerate(zip(trainer.classes, trainer.weights, strict=True)) if i)
    assert torch.allclose(loss, only_others)


def _demo_items(demo_env):
    from ingest.catalog import load_catalog

    return load_catalog(demo_env.fresh_config())


def test_split_keeps_variants_together_and_is_seeded():
    items = pd.DataFrame({"id": [str(i) for i in range(200)],
                          "name": [f"{c} shirt {i // 2}" for i, c in
                                   zip(range(200), ["red", "blue"] * 100, strict=True)],
                          "colour": ["Red", "Blue"] * 100})
    training = TrainingConfig(tasks=[TaskConfig(column="colour")],
                              variant_strip_columns=["colour"])
    split = split_ids(items, training)
    assert split == split_ids(items, training)
    part_of = {i: part for part, ids in split.items() for i in ids}
    assert all(part_of[str(2 * n)] == part_of[str(2 * n + 1)] for n in range(100))
    assert 5 <= len(split["test"]) <= 40


def test_checkpoint_round_trip_gives_identical_vectors(demo_env, tmp_path):
    model, meta = load_checkpoint(demo_env.config.paths.trained_model_path)
    assert_round_trip_identical(model, meta, tmp_path / "copy.pt", size=32)


def test_bad_checkpoints_are_clear_errors(tmp_path):
    assert "no checkpoint at" in str(
        pytest.raises(CheckpointError, load_checkpoint, tmp_path / "none.pt").value)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert "not a readable checkpoint" in str(
        pytest.raises(CheckpointError, load_checkpoint, tmp_path / "junk.pt").value)


def test_config_conflicting_with_checkpoint_names_the_key(demo_env):
    config = demo_env.fresh_config()
    _, meta = load_checkpoint(config.paths.trained_model_path)
    config.model.backbone = "resnet50"
    message = str(pytest.raises(ConfigError, check_config_matches, config, meta, Path("m")).value)
    assert "model.backbone: config says 'resnet50'" in message and "'resnet18'" in message


def test_heads_that_queries_read_must_be_in_the_checkpoint(demo_env):
    """A config whose tasks gained a column the loaded model was not trained with."""
    config = demo_env.fresh_config()
    _, meta = load_checkpoint(config.paths.trained_model_path)
    check_config_matches(config, meta, Path("m"))
    older = {**meta, "tasks": {k: v for k, v in meta["tasks"].items() if k != "pattern"}}
    config.label_match.weights = {"garment": 0.2, "pattern": 0.1}
    message = str(pytest.raises(ConfigError, check_config_matches, config, older, Path("m")).value)
    assert "label_match.weights.pattern: the checkpoint m has no 'pattern' head" in message
    colourless = {**meta, "tasks": {k: v for k, v in meta["tasks"].items() if k != "colour"}}
    config.label_match.weights = {}
    message = str(pytest.raises(ConfigError, check_config_matches, config, colourless,
                                Path("m")).value)
    assert "colour.column: the checkpoint m has no 'colour' head" in message
    config.colour.source = "histogram"  # reads no head
    check_config_matches(config, colourless, Path("m"))


def test_the_head_scale_travels_in_the_checkpoint_and_is_checked(demo_env, tmp_path):
    import torch

    model, meta = load_checkpoint(demo_env.config.paths.trained_model_path)
    assert meta.get("head_scale", 16.0) == 16.0 and model.heads.scale == 16.0  # the default
    older = {key: value for key, value in meta.items() if key != "head_scale"}
    model.heads.scale = 10.0  # a model trained with head_scale: 10
    loaded_meta = assert_round_trip_identical(model, {**older, "head_scale": 10.0},
                                              tmp_path / "scale10.pt", size=32)
    copy, _ = load_checkpoint(tmp_path / "scale10.pt")
    assert copy.heads.scale == 10.0 and loaded_meta["head_scale"] == 10.0
    images = torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.inference_mode():  # the scale is a softmax temperature: logits follow it
        torch.testing.assert_close(copy(images)["colour"] * 1.6, load_checkpoint(
            demo_env.config.paths.trained_model_path)[0](images)["colour"])
    config = demo_env.fresh_config()
    message = str(pytest.raises(ConfigError, check_config_matches, config, loaded_meta,
                                Path("m")).value)
    assert "model.head_scale: config says 16.0" in message and "10.0" in message
    config.model.head_scale = 10.0
    check_config_matches(config, loaded_meta, Path("m"))


def test_encoder_vectors_are_unit_length_with_predictions(demo_env):
    from PIL import Image

    encoder = Encoder.from_config(demo_env.fresh_config())
    images = [Image.new("RGB", (60, 80), colour) for colour in ("red", "blue", "white")]
    embedded = encoder.embed_images(images)
    assert embedded.vectors.shape == (3, 512) and embedded.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embedded.vectors, axis=1), 1.0, atol=1e-5)
    top = embedded.predictions[0]["colour"]
    assert len(top) == 3 and sum(p for _, p in top) <= 1.0 + 1e-6
    assert set(embedded.predictions[0]) == {"garment", "colour", "pattern"}


def test_the_served_encoder_folds_batchnorm_and_embeds_as_the_checkpoint_does(demo_env):
    config = demo_env.fresh_config()
    served = Encoder.from_config(config)  # what the app and build_index.py use
    model, meta = load_checkpoint(Path(config.paths.trained_model_path))
    plain = Encoder(model, meta, "", "fp32")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in served.model.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.model.modules())
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    folded_vectors, folded_scores = served.forward(images)
    vectors, scores = plain.forward(images)
    np.testing.assert_allclose(folded_vectors, vectors, atol=1e-4)
    for task, probabilities in scores.items():
        np.testing.assert_allclose(folded_scores[task], probabilities, atol=1e-4)
    reloaded, _ = load_checkpoint(Path(config.paths.trained_model_path))  # the file is untouched
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in reloaded.modules())


def test_corrupt_images_are_skipped_without_shifting_rows(demo_env, tmp_path):
    encoder = Encoder.from_config(demo_env.fresh_config())
    good = sorted((demo_env.folder / "images").glob("*.jpg"))[:3]
    (tmp_path / "broken.jpg").write_bytes(good[0].read_bytes()[:200])
    (tmp_path / "empty.jpg").write_bytes(b"")
    paths = [str(good[0]), str(tmp_path / "broken.jpg"), str(good[1]),
             str(tmp_path / "missing.jpg"), str(tmp_path / "empty.jpg"), str(good[2])]
    vectors, reasons, colours = encoder.embed_paths(paths, batch_size=4, workers=0,
                                                    max_pixels=10**7, task="colour")
    assert [bool(r) for r in reasons] == [False, True, False, True, True, False]
    assert np.isnan(vectors[[1, 3, 4]]).all() and np.isnan(colours[[1, 3, 4]]).all()
    alone = encoder.embed_paths([str(good[1])], batch_size=1, workers=0, max_pixels=10**7,
                                task="colour")
    np.testing.assert_allclose(vectors[2], alone.vectors[0], atol=1e-5)
    np.testing.assert_allclose(colours[2], alone.task_probabilities[0], atol=1e-5)
    assert encoder.embed_paths(paths[:1], batch_size=1, workers=0,
                               max_pixels=10**7).task_probabilities is None


def test_decoding_in_turns_hands_out_the_same_batches_in_order(demo_env, tmp_path):
    """Chunks decoded before the model runs (a CPU) give the same images, rows and reasons as
    workers decoding ahead (a GPU), across chunk and batch boundaries and with bad files."""
    from vectorizer.dataset import iterate_batches

    encoder = Encoder.from_config(demo_env.fresh_config())
    good = sorted((demo_env.folder / "images").glob("*.jpg"))[:9]
    (tmp_path / "broken.jpg").write_bytes(good[0].read_bytes()[:200])
    paths = [str(p) for p in good[:4]] + [str(tmp_path / "broken.jpg")] + [
        str(p) for p in good[4:]] + [str(tmp_path / "missing.jpg")]

    def batches(**mode):
        return list(iterate_batches(paths, encoder.preprocess, batch_size=4, workers=2,
                                    max_pixels=10**7, **mode))

    streamed, in_turns = batches(), batches(take_turns=True, chunk=5)
    assert [len(indices) for _, indices, _ in in_turns] == [4, 1, 4, 1, 1]  # chunks 5, 5, 1
    for name, found in (("streamed", streamed), ("in turns", in_turns)):
        images = torch.cat([batch for batch, _, _ in found])
        rows = [row for _, indices, _ in found for row in indices]
        reasons = [reason for _, _, part in found for reason in part]
        assert rows == list(range(len(paths))), name
        assert [bool(r) for r in reasons] == [i in (4, 10) for i in range(len(paths))], name
        assert torch.equal(images, torch.cat([b for b, _, _ in streamed])), name
    vectors = encoder.embed_paths(paths, batch_size=4, workers=2, max_pixels=10**7).vectors
    assert np.isnan(vectors[[4, 10]]).all() and not np.isnan(np.delete(vectors, [4, 10], 0)).any()


def test_bf16_vectors_stay_faithful(demo_env):
    model, meta = load_checkpoint(demo_env.config.paths.trained_model_path)
    images = torch.stack([torch.randint(0, 255, (3, 32, 32), dtype=torch.uint8)
                          for _ in range(16)])
    fp32 = Encoder(model, meta, "x", "fp32").forward(images)[0]
    bf16 = Encoder(model, meta, "x", "bf16").forward(images)[0]
    assert (np.sum(fp32 * bf16, axis=1) >= 0.999).all()


def test_precision_falls_back_to_fp32_without_bf16(monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(device, "bf16_supported", lambda _: False)
    assert device.resolve_precision("auto", cpu) == "fp32"
    assert device.resolve_precision("auto", gpu) == "fp32"
    monkeypatch.setattr(device, "bf16_supported", lambda _: True)
    assert device.resolve_precision("auto", gpu) == "bf16"
    assert device.resolve_precision("auto", cpu) == "fp32"  # measured: slower and less faithful
    assert device.resolve_precision("bf16", cpu) == "bf16"
    assert device.resolve_precision("fp32", cpu) == "fp32"


def test_training_is_deterministic_with_a_seed(demo_env, tmp_path):
    from tests.fixtures_demo import write_demo_config
    from vectorizer.train import train

    states = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        config_path = write_demo_config(folder, training__epochs=1)
        config = __import__("config").load_config(config_path)
        config.paths.images_dataframe_path = demo_env.config.paths.images_dataframe_path
        train(config, limit=96, progress=False)
        states.append(torch.load(config.paths.trained_model_path, weights_only=True))
    for key, value in states[0]["state_dict"].items():
        assert torch.equal(value, states[1]["state_dict"][key]), key
    assert states[0]["meta"]["split"] == states[1]["meta"]["split"]


def test_interrupted_training_resumes_to_the_same_model(demo_env, tmp_path, monkeypatch):
    import time

    from tests.fixtures_demo import write_demo_config
    from vectorizer import train as training

    original = training.Trainer.train_epoch

    def run(name: str, interrupt_at: int | None = None) -> tuple[dict, list[int]]:
        folder = tmp_path / name
        folder.mkdir()
        config_path = write_demo_config(folder, training__epochs=3,  # a backbone with dropout
                                        model__backbone="mobilenet_v3_small")
        config = __import__("config").load_config(config_path)
        config.paths.images_dataframe_path = demo_env.config.paths.images_dataframe_path
        epochs_run: list[int] = []

        def recorded(self, epoch):
            epochs_run.append(epoch)
            if len(epochs_run) == interrupt_at:
                raise KeyboardInterrupt
            return original(self, epoch)

        monkeypatch.setattr(training.Trainer, "train_epoch", recorded)
        # every epoch counts as the best, so the checkpoint holds the last epoch's weights
        monkeypatch.setattr(training, "mean_accuracy", lambda scores: time.monotonic())
        if interrupt_at is not None:
            with pytest.raises(KeyboardInterrupt):
                training.train(config, limit=96, progress=False)
            assert training.resume_path(Path(config.paths.trained_model_path)).is_file()
            torch.manual_seed(12345)  # whatever ran in between moved the global RNG on
            epochs_run.clear()
        training.train(config, limit=96, progress=False)
        assert not training.resume_path(Path(config.paths.trained_model_path)).exists()
        return torch.load(config.paths.trained_model_path, weights_only=True), epochs_run

    (straight, straight_epochs), (resumed, resumed_epochs) = run("a"), run("b", interrupt_at=3)
    assert straight_epochs == [0, 1, 2] and resumed_epochs == [2]   # only the lost epoch reran
    for key, value in straight["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
    assert straight["meta"]["best"]["epoch"] == resumed["meta"]["best"]["epoch"] == 3
    assert straight["meta"]["best"]["val"] == resumed["meta"]["best"]["val"]


FREE_AND_REFAULT = """
import resource, sys
from vectorizer.device import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
block = bytearray(64 << 20); del block  # the heap grows once
before = faults()
for _ in range(5):
    block = bytearray(64 << 20); del block  # zero-filled: every page is touched
print(faults() - before)
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="glibc/Linux only")
def test_freed_buffers_are_reused_without_page_faults():
    """After keep_freed_memory, a freed 64 MB buffer is served again from memory already
    mapped; by default (or with a trim threshold that was truncated to 0) every round faults
    its 16,384 pages in again."""
    import subprocess
    import sys

    def refaults(mode: str) -> int:
        done = subprocess.run([sys.executable, "-c", FREE_AND_REFAULT, mode], check=True,
                              capture_output=True, text=True, cwd=Path(__file__).parent.parent)
        return int(done.stdout.strip())

    pages = (64 << 20) // 4096
    assert refaults("default") > 4 * pages  # the behaviour being fixed is real here
    assert refaults("keep") < pages // 4


def test_one_thread_restores_the_thread_count_even_after_an_error():
    before = torch.get_num_threads()
    with device.one_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), device.one_thread():
        raise RuntimeError("a decoding worker died")
    assert torch.get_num_threads() == before


def test_ctrl_c_stops_a_vectorizing_run_with_one_message(demo_env):
    """Ctrl-C in a terminal reaches every process of the run: the main process stops with
    KeyboardInterrupt and the decoding workers leave quietly, with no traceback of their own."""
    import os
    import signal
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    script = f"""
import signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
sys.path.insert(0, {str(root)!r})
from pathlib import Path
from config import load_config
from vectorizer.encoder import Encoder
encoder = Encoder.from_config(load_config({str(demo_env.config_path)!r}))
paths = sorted(str(p) for p in Path({str(demo_env.folder)!r}).glob("images/*.jpg")) * 100
forward = encoder.forward
def announce(images):
    print("embedding", flush=True)
    encoder.forward = forward
    return forward(images)
encoder.forward = announce
encoder.embed_paths(paths, batch_size=32, workers=2, max_pixels=10**7)
print("finished", flush=True)
"""
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert process.stdout.readline().strip() == "embedding"
        os.killpg(process.pid, signal.SIGINT)  # what the terminal sends to the whole group
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode != 0 and "finished" not in out
    assert err.rstrip().endswith("KeyboardInterrupt"), err
    assert err.count("Traceback") == 1 and "Process" not in err, err
