"""Weights are checked like data (issue #31): a checkpoint holding NaN/inf is refused in one line naming the file and
the first bad tensor, wherever it is loaded (inference's CheckpointLoader, a pre-trained encoder, pack, resume)."""

from __future__ import annotations

import os

import pytest
import torch
from monai.networks.nets import BasicUNet

from custom.networks.unet_backbone import CPU_TOY_NORM
from custom.weights.checkpoint import NonFiniteWeightsError, load_weights_only


def _network() -> BasicUNet:
    torch.manual_seed(0)
    return BasicUNet(spatial_dims=3, in_channels=1, out_channels=14, features=(8, 16, 32, 64, 64, 8), norm=CPU_TOY_NORM)


def _poisoned(tmp_path, value=float("nan"), wrap=None) -> tuple[str, str]:
    state = _network().state_dict()
    keys = [k for k, v in state.items() if v.is_floating_point()]
    state[keys[3]][0] = value
    state[keys[-1]].fill_(value)
    path = str(tmp_path / "model.pt")
    torch.save(state if wrap is None else {wrap: state}, path)
    return path, keys[3] if wrap is None else f"{wrap}.{keys[3]}"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_load_weights_only_refuses_non_finite_tensors(tmp_path, value):
    path, first = _poisoned(tmp_path, value)
    with pytest.raises(NonFiniteWeightsError) as caught:
        load_weights_only(path)
    assert str(caught.value) == (
        f"{path}: expected finite weights, found 1 NaN/inf of {_network().state_dict()[first].numel()} values in "
        f"tensor '{first}' (and 1 more tensor(s))"
    )
    torch.save(_network().state_dict(), path)
    assert set(load_weights_only(path)) == set(_network().state_dict())  # finite weights load as before


def test_nested_checkpoints_name_the_nested_tensor(tmp_path):
    path, first = _poisoned(tmp_path, wrap="network")
    with pytest.raises(NonFiniteWeightsError, match=f"in tensor '{first}'"):
        load_weights_only(path)


def test_inference_checkpoint_loader_refuses_a_model_of_nans(tmp_path):
    from ignite.engine import Engine

    from custom.weights.checkpoint_loader import CheckpointLoader

    path, first = _poisoned(tmp_path)
    loader = CheckpointLoader(load_path=path, load_dict={"model": _network()}, map_location="cpu")
    with pytest.raises(NonFiniteWeightsError, match=f"^{path}: expected finite weights, .* in tensor '{first}'"):
        loader(Engine(lambda e, b: None))


def test_pretrained_encoder_with_nans_is_blamed_on_the_weights(tmp_path):
    from custom.errors import WeightTransferError
    from custom.weights.transfer import transfer_weights

    path, first = _poisoned(tmp_path)
    with pytest.raises(WeightTransferError) as caught:
        transfer_weights(_network(), path)
    assert str(caught.value).startswith(f"{path}: expected finite weights") and first in str(caught.value)
    assert "\n" not in str(caught.value)


def test_pack_refuses_nan_weights(tmp_path, capsys):
    from t3d_tools.packaging.pack import main as pack_main

    path, first = _poisoned(tmp_path)
    dist = tmp_path / "dist"
    argv = ["t3d_btcv_seg", "--weights", path, "--dist", str(dist), "--overlay", "cpu_toy.json"]
    assert pack_main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: t3d_btcv_seg: {path}: expected finite weights, found 1 NaN/inf of "
        f"{_network().state_dict()[first].numel()} values in tensor '{first}' (and 1 more tensor(s))"
    )
    assert not dist.exists() or not any(p.suffix == ".zip" for p in dist.iterdir())


def test_a_failed_save_keeps_the_earlier_checkpoint_and_names_the_file(tmp_path, monkeypatch):
    """Disk full mid-save: torch says ``basic_ios::clear``; the one-line error names the file, the earlier
    ``model.pt`` is still whole and no temporary file is left."""
    from custom.weights import checkpoint
    from custom.weights.checkpoint import CheckpointSaveError, atomic_save

    path = tmp_path / "model.pt"
    atomic_save({"w": torch.ones(3)}, str(path))
    before = path.read_bytes()

    def full_disk(obj, target):
        with open(target, "wb") as f:
            f.write(b"PK\x03\x04 half")
        raise RuntimeError("basic_ios::clear: iostream error")

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    with pytest.raises(CheckpointSaveError) as caught:
        atomic_save({"w": torch.zeros(3)}, str(path))
    message = str(caught.value)
    assert message.startswith(f"{path}: expected to save the checkpoint, found RuntimeError: basic_ios::clear")
    assert message.endswith("bytes free on its disk; the earlier file is kept)") and "\n" not in message
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["model.pt"]


def test_the_error_hook_ends_a_read_only_folder_in_one_line(capsys):
    from custom.runtime.errors import one_line_message

    try:
        try:
            raise PermissionError(13, "Permission denied", "/data/out/models")
        except PermissionError as inner:
            raise RuntimeError("Failed to evaluate ConfigExpression ...") from inner
    except RuntimeError as outer:
        assert (
            one_line_message(outer) == "/data/out/models: expected a writable file or folder, found Permission denied"
        )
    assert one_line_message(FileNotFoundError(2, "No such file", "/x")) is None  # not this rule's


def test_a_damaged_text_encoder_is_one_line(tmp_path, offline_text_encoder):
    import shutil

    from custom.errors import OneLineError
    from custom.networks.text_encoder import HFTextEncoder, TextEncoderLoadError

    damaged = tmp_path / "encoder"
    shutil.copytree(offline_text_encoder, damaged)
    (weights,) = [p for p in damaged.iterdir() if p.suffix in (".safetensors", ".bin")]
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(TextEncoderLoadError) as caught:
        HFTextEncoder(str(damaged))
    assert str(caught.value).startswith(
        f"text_encoder_name '{damaged}': expected a loadable tokenizer and model, found"
    )
    assert "\n" not in str(caught.value) and isinstance(caught.value, OneLineError)
    with pytest.raises(TextEncoderLoadError, match="hub id already in the local Hugging Face cache"):
        HFTextEncoder("no-such-org/no-such-model-31")
