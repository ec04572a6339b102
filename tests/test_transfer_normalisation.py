"""Transfer keeps what it claims (#27): downstream networks use the pre-training's normalisation, and a transfer that
would drop (or leave unmeasured) batch-norm running statistics is refused in one line."""

from __future__ import annotations

import pytest
import torch
from monai.bundle import ConfigParser
from monai.networks.nets import BasicUNet

from custom.networks.unet_backbone import BasicUNetBackbone
from custom.weights.transfer import WeightTransferError, load_pretrained, transfer_weights
from t3d_tools.experiments.runner import PaperTableRunner

FEATURES = (8, 8, 16, 32, 64, 8)


def _batch_norm_checkpoint(tmp_path) -> tuple[BasicUNetBackbone, str]:
    """A batch-norm encoder whose running statistics are not the initial 0 / 1 (as after pre-training)."""
    torch.manual_seed(0)
    backbone = BasicUNetBackbone(in_channels=1, out_channels=1, features=FEATURES, norm="batch")
    backbone.train()
    with torch.no_grad():
        for _ in range(3):
            backbone(torch.randn(2, 1, 32, 32, 32) * 3 + 1)
    path = str(tmp_path / "image_encoder.pt")
    torch.save({k: v for k, v in backbone.state_dict().items() if k.startswith(backbone.encoder_prefixes)}, path)
    return backbone, path


def test_batch_norm_statistics_are_never_dropped_silently(tmp_path):
    _, path = _batch_norm_checkpoint(tmp_path)
    instance_norm = BasicUNet(spatial_dims=3, in_channels=1, out_channels=2, features=FEATURES)  # MONAI's default
    with pytest.raises(WeightTransferError, match="normalisation statistics") as caught:
        transfer_weights(instance_norm, path)
    assert "\n" not in str(caught.value) and "norm='batch'" in str(caught.value)


def test_batch_norm_network_refuses_an_instance_norm_checkpoint(tmp_path):
    source = BasicUNetBackbone(in_channels=1, out_channels=1, features=FEATURES)  # instance norm
    path = str(tmp_path / "instance.pt")
    torch.save(source.state_dict(), path)
    network = BasicUNet(spatial_dims=3, in_channels=1, out_channels=2, features=FEATURES, norm="batch")
    with pytest.raises(WeightTransferError, match="batch-norm statistics") as caught:
        transfer_weights(network, path)
    assert "\n" not in str(caught.value)


def test_frozen_batch_norm_encoder_uses_the_pre_training_statistics(tmp_path):
    """Loaded running statistics equal the checkpoint's (not 0 / 1) and a train-mode step of the probe keeps them."""
    backbone, path = _batch_norm_checkpoint(tmp_path)
    network = BasicUNet(spatial_dims=3, in_channels=1, out_channels=2, features=FEATURES, norm="batch")
    load_pretrained(network, path, frozen=True, log=lambda _: None)
    stats = [k for k in backbone.state_dict() if k.startswith(backbone.encoder_prefixes) and "running_" in k]
    assert len(stats) >= 10
    assert any(not torch.allclose(backbone.state_dict()[k], torch.zeros(1)) for k in stats if "mean" in k)
    network.train()
    network(torch.randn(2, 1, 32, 32, 32)).mean().backward()
    for key in stats:
        torch.testing.assert_close(network.state_dict()[key], backbone.state_dict()[key], rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("row", ["t3d", "restoration_only", "ssl_swin", "scratch"])
def test_toy_downstream_network_has_the_pre_training_norm_and_takes_its_weights(tmp_path, row):
    """The runner's segmentation ``network_def`` carries the pre-training backbone's ``norm`` (batch in the toy), so
    an encoder exported by that pre-training transfers whole, running statistics included."""
    runner = PaperTableRunner("toy", str(tmp_path / "out"), rows=[row], bundles=["t3d_msd_lung"])
    backbone = runner.pretrain_backbone(runner.row(row))
    network_def = runner.downstream_network(runner.row(row), "t3d_msd_lung")
    assert backbone["norm"] == "batch" and network_def["norm"] == backbone["norm"]
    parser = ConfigParser({"in_channels": 1, "num_classes": 2, "network_def": network_def})
    network = parser.get_parsed_content("network_def")
    torch.manual_seed(1)
    source = BasicUNetBackbone(**{k: v for k, v in backbone.items() if k != "_target_"})
    path = str(tmp_path / "image_encoder.pt")
    torch.save(source.state_dict(), path)
    report = transfer_weights(network, path)
    assert sum(k.endswith("running_mean") for k in report.loaded) == sum(
        k.endswith("running_mean") for k in source.state_dict() if k.startswith(source.encoder_prefixes)
    )
