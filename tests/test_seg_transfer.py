"""Weight transfer into downstream networks: every checkpoint form the bundles accept, and the loud failures."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import BasicUNet, SwinUNETR

from custom.errors import WeightTransferError
from custom.networks.swin_backbone import SwinUNETRBackbone
from custom.networks.unet_backbone import BasicUNetBackbone
from custom.weights.transfer import load_pretrained, transfer_weights

SWIN_KWARGS = {"feature_size": 12}
UNET_FEATURES = (8, 8, 16, 32, 64, 8)


def _pretrained_swin(in_channels: int = 1) -> SwinUNETRBackbone:
    torch.manual_seed(1)
    return SwinUNETRBackbone(in_channels=in_channels, out_channels=1, **SWIN_KWARGS)


def _t3d_model_state(backbone: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What the pre-training bundle saves as models/model.pt: the whole T3D model, backbone under image_backbone."""
    state = {f"image_backbone.{k}": v for k, v in backbone.state_dict().items()}
    state["text_encoder.embeddings.word_embeddings.weight"] = torch.randn(30, 8)
    state["interactor.blocks.0.attn.in_proj_weight"] = torch.randn(24, 8)
    state["image_projection.weight"] = torch.randn(16, 192)
    return state


def _encoder_state(backbone: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What the pre-training bundle saves as models/image_encoder.pt: encoder keys only, plain naming."""
    return {k: v for k, v in backbone.state_dict().items() if k.startswith(type(backbone).encoder_prefixes)}


def _ssl_state(backbone: SwinUNETRBackbone) -> dict:
    """The public SwinUNETR SSL checkpoint naming: {"state_dict": {"module.<swinViT key with mlp.fc1/fc2>": ...}}."""
    state = {}
    for key, value in backbone.swinViT.state_dict().items():
        key = key.replace(".mlp.linear1.", ".mlp.fc1.").replace(".mlp.linear2.", ".mlp.fc2.")
        state[f"module.{key}"] = value
    state["module.norm.weight"] = torch.ones(16 * SWIN_KWARGS["feature_size"])  # SSL-only tensors: reported, not loaded
    state["module.rotation_head.weight"] = torch.randn(4, 192)
    return {"state_dict": state}


def _assert_encoder_equal(network: torch.nn.Module, source: torch.nn.Module, prefixes: tuple[str, ...]) -> int:
    target = network.state_dict()
    compared = 0
    for key, value in source.state_dict().items():
        if key.startswith(prefixes):
            torch.testing.assert_close(target[key], value, rtol=0, atol=0, msg=key)
            compared += 1
    return compared


@pytest.mark.parametrize("form", ["t3d_model", "image_encoder", "ddp_t3d_model", "ddp_image_encoder"])
def test_swin_encoder_equals_checkpoint_for_our_forms(tmp_path, form):
    backbone = _pretrained_swin()
    state = _t3d_model_state(backbone) if "t3d_model" in form else _encoder_state(backbone)
    if form.startswith("ddp"):
        state = {f"module.{k}": v for k, v in state.items()}
    path = str(tmp_path / "ckpt.pt")
    torch.save(state, path)

    torch.manual_seed(2)
    network = SwinUNETR(in_channels=1, out_channels=14, **SWIN_KWARGS)
    decoder_before = network.out.conv.conv.weight.clone()
    report = transfer_weights(network, path)

    compared = _assert_encoder_equal(network, backbone, SwinUNETRBackbone.encoder_prefixes)
    assert compared == len(report.loaded) > 100
    assert report.missing == [] and report.shape_mismatched == []
    torch.testing.assert_close(network.out.conv.conv.weight, decoder_before)  # decoder left fresh
    if "t3d_model" in form:
        assert report.ignored_non_image == 3
        assert any(k.startswith("out.") for k in report.outside_encoder)


def test_swin_ssl_checkpoint_naming_loads_swinvit(tmp_path):
    backbone = _pretrained_swin()
    path = str(tmp_path / "model_swinvit.pt")
    torch.save(_ssl_state(backbone), path)
    network = SwinUNETR(in_channels=1, out_channels=14, **SWIN_KWARGS)

    report = transfer_weights(network, path)

    assert _assert_encoder_equal(network, backbone, ("swinViT.",)) == len(report.loaded)
    assert any(".mlp.linear1." in k for k in report.loaded)  # fc1/fc2 renamed
    # SSL weights cover the Swin-ViT only: the CNN encoder blocks stay at their initialisation, and are reported
    cnn_encoder = ("encoder1.", "encoder2.", "encoder3.", "encoder4.", "encoder10.")
    assert report.missing and all(k.startswith(cnn_encoder) for k in report.missing)
    assert set(report.unexpected) == {"module.norm.weight", "module.rotation_head.weight"}


def test_swin_ssl_variants_swinvit_and_module_swinvit(tmp_path):
    backbone = _pretrained_swin()
    for prefix in ("swinViT.", "module.swinViT."):
        path = str(tmp_path / "variant.pt")
        torch.save({"state_dict": {prefix + k: v for k, v in backbone.swinViT.state_dict().items()}}, path)
        network = SwinUNETR(in_channels=1, out_channels=2, **SWIN_KWARGS)
        report = transfer_weights(network, path)
        assert _assert_encoder_equal(network, backbone, ("swinViT.",)) == len(report.loaded) > 50


def test_one_to_four_channel_adaptation_preserves_response(tmp_path):
    backbone = _pretrained_swin(in_channels=1)
    path = str(tmp_path / "image_encoder.pt")
    torch.save(_encoder_state(backbone), path)
    network = SwinUNETR(in_channels=4, out_channels=3, **SWIN_KWARGS)

    report = transfer_weights(network, path)

    assert sorted(report.adapted) == [
        "encoder1.layer.conv1.conv.weight",
        "encoder1.layer.conv3.conv.weight",
        "swinViT.patch_embed.proj.weight",
    ]
    source = backbone.swinViT.patch_embed.proj.weight
    adapted = network.swinViT.patch_embed.proj.weight
    assert adapted.shape == (source.shape[0], 4, *source.shape[2:])
    torch.testing.assert_close(adapted[:, 2:3], source / 4)
    # the documented rule: the same image in all 4 channels gives the pre-trained first-layer response
    x = torch.rand(1, 1, 64, 64, 64)
    with torch.no_grad():
        same_in_all_channels = x.repeat(1, 4, 1, 1, 1)
        torch.testing.assert_close(network.swinViT.patch_embed(same_in_all_channels), backbone.swinViT.patch_embed(x))
    # all other encoder tensors are copied as they are
    qkv = network.swinViT.layers2[0].blocks[0].attn.qkv.weight
    torch.testing.assert_close(qkv, backbone.swinViT.layers2[0].blocks[0].attn.qkv.weight)


def test_basicunet_model_pt_and_channel_adaptation(tmp_path):
    torch.manual_seed(3)
    backbone = BasicUNetBackbone(in_channels=1, out_channels=1, features=UNET_FEATURES)
    path = str(tmp_path / "model.pt")
    torch.save(_t3d_model_state(backbone), path)
    for in_channels in (1, 4):
        network = BasicUNet(spatial_dims=3, in_channels=in_channels, out_channels=3, features=UNET_FEATURES)
        report = transfer_weights(network, path)
        adapted = {"conv_0.conv_0.conv.weight"} if in_channels == 4 else set()
        assert set(report.adapted) == adapted
        for key, value in backbone.state_dict().items():
            if key.startswith(BasicUNetBackbone.encoder_prefixes) and key not in adapted:
                torch.testing.assert_close(network.state_dict()[key], value, rtol=0, atol=0)


def test_load_pretrained_prints_report_and_null_means_scratch(tmp_path, capsys):
    backbone = _pretrained_swin()
    path = str(tmp_path / "image_encoder.pt")
    torch.save(_encoder_state(backbone), path)
    network = SwinUNETR(in_channels=1, out_channels=2, **SWIN_KWARGS)
    assert load_pretrained(network, path) is network
    printed = capsys.readouterr().out
    for section in ("loaded into encoder: ", "missing", "unexpected", "shape-mismatched"):
        assert section in printed
    before = {k: v.clone() for k, v in network.state_dict().items()}
    load_pretrained(network, None)
    assert "scratch" in capsys.readouterr().out
    assert all(torch.equal(before[k], v) for k, v in network.state_dict().items())


def test_untrained_encoder_is_an_error_not_a_warning(tmp_path):
    unrelated = str(tmp_path / "unrelated.pt")
    torch.save({"classifier.weight": torch.randn(2, 3), "text_encoder.x": torch.randn(3)}, unrelated)
    with pytest.raises(WeightTransferError, match="no encoder tensor matched"):
        transfer_weights(SwinUNETR(in_channels=1, out_channels=2, **SWIN_KWARGS), unrelated)

    # a feature_size 24 checkpoint into a feature_size 12 network: shapes differ beyond channel adaptation
    wider = str(tmp_path / "wider.pt")
    torch.save(SwinUNETRBackbone(in_channels=1, out_channels=1, feature_size=24).state_dict(), wider)
    with pytest.raises(WeightTransferError, match="do not fit the network") as caught:
        transfer_weights(SwinUNETR(in_channels=1, out_channels=2, **SWIN_KWARGS), wider)
    assert "\n" not in str(caught.value)

    with pytest.raises(WeightTransferError, match="not found"):
        transfer_weights(SwinUNETR(in_channels=1, out_channels=2, **SWIN_KWARGS), str(tmp_path / "missing.pt"))


def test_checkpoint_needing_pickle_is_refused(tmp_path):
    path = str(tmp_path / "pickled.pt")
    torch.save({"state_dict": {"swinViT.patch_embed.proj.weight": torch.zeros(1)}, "config": object()}, path)
    with pytest.raises(WeightTransferError, match="weights-only"):
        transfer_weights(SwinUNETR(in_channels=1, out_channels=2, **SWIN_KWARGS), path)


@pytest.mark.parametrize("network_kind", ["basicunet", "swinunetr"])
def test_frozen_encoder_probe_trains_the_decoder_only(tmp_path, capsys, network_kind):
    """``frozen=True``: after AdamW steps with weight decay, every transferred encoder tensor (and the encoder's
    normalisation, kept in inference mode) equals the checkpoint; the decoder moved."""
    torch.manual_seed(5)
    if network_kind == "basicunet":
        source = BasicUNetBackbone(in_channels=1, out_channels=1, features=UNET_FEATURES, norm="batch")
        network = BasicUNet(spatial_dims=3, in_channels=1, out_channels=3, features=UNET_FEATURES, norm="batch")
        prefixes, shape = BasicUNetBackbone.encoder_prefixes, (2, 1, 32, 32, 32)
    else:
        source = _pretrained_swin()
        network = SwinUNETR(in_channels=1, out_channels=3, **SWIN_KWARGS)
        prefixes, shape = SwinUNETRBackbone.encoder_prefixes, (1, 1, 64, 64, 64)
    path = str(tmp_path / "model.pt")
    torch.save(_t3d_model_state(source), path)
    load_pretrained(network, path, frozen=True)
    assert "parameters locked" in capsys.readouterr().out
    loaded = {k: v.clone() for k, v in network.state_dict().items()}
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-2, weight_decay=0.1)
    network.train()
    for _ in range(2):
        optimizer.zero_grad()
        network(torch.randn(shape)).square().mean().backward()
        optimizer.step()
    encoder = [k for k in loaded if k.startswith(prefixes)]
    decoder = [k for k in loaded if not k.startswith(prefixes) and loaded[k].is_floating_point()]
    assert encoder and decoder
    for key in encoder:  # weights, and batch-norm running statistics (BasicUNet here uses batch norm)
        torch.testing.assert_close(network.state_dict()[key], loaded[key], rtol=0, atol=0, msg=key)
    assert any(not torch.equal(network.state_dict()[k], loaded[k]) for k in decoder)
    assert all(not p.requires_grad for n, p in network.named_parameters() if n.startswith(prefixes))


def test_a_locked_encoder_can_let_its_batch_norm_statistics_follow_the_new_data(capsys):
    """``keep_norm_statistics=False``: the encoder's weights stay locked, its batch-norm running statistics move."""
    from custom.networks.encoder_lock import lock_encoder

    torch.manual_seed(6)
    network = BasicUNet(spatial_dims=3, in_channels=1, out_channels=2, features=UNET_FEATURES, norm="batch")
    lock_encoder(network, keep_norm_statistics=False)
    assert "normalisation statistics updated on the new data" in capsys.readouterr().out
    before = {k: v.clone() for k, v in network.state_dict().items()}
    network.train()
    network(torch.randn(2, 1, 32, 32, 32) * 3 + 1)
    encoder = [k for k in before if k.startswith(BasicUNetBackbone.encoder_prefixes)]
    statistics = [k for k in encoder if k.endswith(("running_mean", "running_var"))]
    weights = [k for k in encoder if k.endswith(("weight", "bias"))]
    assert statistics and weights
    assert all(not torch.equal(network.state_dict()[k], before[k]) for k in statistics)
    assert all(torch.equal(network.state_dict()[k], before[k]) for k in weights)
    locked = [p for n, p in network.named_parameters() if n.startswith(BasicUNetBackbone.encoder_prefixes)]
    assert locked and not any(p.requires_grad for p in locked)
