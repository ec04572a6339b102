"""Weights are checked like data (issue #31): a checkpoint holding NaN/inf is refused in one line naming the file and
the first bad tensor, wherever it is loaded (inference's CheckpointLoader, a pre-trained encoder, pack, resume)."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import BasicUNet

from custom.weights.checkpoint import NonFiniteWeightsError, load_weights_only


def _network() -> BasicUNet:
    torch.manual_seed(0)
    return BasicUNet(spatial_dims=3, in_channels=1, out_channels=14, features=(8, 16, 32, 64, 64, 8))


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
    from custom.weights.transfer import WeightTransferError, transfer_weights

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
