"""Bad override values and nested-key typos are refused in one line naming the key (issue #31): ``--max_epochs one``
(a TypeError deep in ignite before), ``--roi_size [32,32]`` for a 3D network, ``--train#trainer#epoch_lenght 2``
(silently ignored before)."""

from __future__ import annotations

import os

import pytest
from conftest import BUNDLES

from custom.runtime.overrides import UnknownOverrideError, check_overrides

BASE = ["monai.bundle", "run", "--config_file", "['configs/train.json','configs/cpu_toy.json']"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--max_epochs", "one"], "--max_epochs one: expected a number (the configured 20), found 'one'"),
        (["--max_epochs=2.5"], "--max_epochs 2.5: expected a whole number (the configured 20), found 2.5"),
        (
            ["--roi_size", "[32,32]"],
            "--roi_size [32,32]: expected a list of 3 numbers (the configured [32, 32, 32]), not 2, found [32, 32]",
        ),
        (["--resume", "yes"], "--resume yes: expected true or false (the configured True), found 'yes'"),
        (
            ["--train#trainer#epoch_lenght", "2"],
            "--train#trainer#epoch_lenght: expected a parameter of SupervisedTrainer (at train#trainer), found "
            "'epoch_lenght'; did you mean 'train#trainer#epoch_length'?",
        ),
    ],
)
def test_bad_values_and_nested_typos_are_refused(monkeypatch, extra, message):
    monkeypatch.chdir(os.path.join(BUNDLES, "t3d_btcv_seg"))
    with pytest.raises(UnknownOverrideError) as caught:
        check_overrides(BASE + extra)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    "extra",
    [
        ["--max_epochs", "3"],
        ["--roi_size", "[48,48,32]"],
        ["--train#trainer#epoch_length", "2"],
        ["--resume", "force"],
        ["--resume", "False"],
        ["--amp", "true"],  # an expression in the config: not judged
        ["--pretrained_weights", "/weights/model.pt"],
        ["--max_epochs", "$10 * 2"],
        ["--prepare_data#miniature#num_cases", "3"],
    ],
)
def test_good_values_pass(monkeypatch, extra):
    monkeypatch.chdir(os.path.join(BUNDLES, "t3d_btcv_seg"))
    assert check_overrides(BASE + extra)
