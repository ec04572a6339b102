"""Never delete what the user had (issue #31): a user's own file in the folder a command writes to survives
``t3d_tools.packaging.download``, ``t3d_tools.serving.prepare`` and ``t3d_tools.packaging`` (pack), byte for byte.

Download and prepare refuse a non-empty bundle folder without ``--overwrite`` (nothing written), and with it move the
folder to ``.previous/`` instead of deleting it; pack moves an earlier zip of the same name with other bytes aside."""

from __future__ import annotations

import hashlib
import os
import zipfile

from conftest import folder_tree

from custom.networks.unet_backbone import CPU_TOY_NORM

USER_FILE = os.path.join("good_bundle", "models", "model_finetuned_on_my_data.pt")
USER_BYTES = b"weeks of fine-tuning"


def _zip(path, version: str = "0.1.0") -> str:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("good_bundle/configs/metadata.json", f'{{"version": "{version}"}}')
        archive.writestr("good_bundle/models/model.pt", b"new weights")
    return str(path)


def _user_file(folder) -> str:
    path = os.path.join(folder, USER_FILE)
    os.makedirs(os.path.dirname(path))
    with open(path, "wb") as f:
        f.write(USER_BYTES)
    return path


def _kept_aside(parent) -> str:
    """The one folder moved to ``<parent>/.previous/``: it holds the user's file, unchanged."""
    (aside,) = os.listdir(os.path.join(parent, ".previous"))
    with open(os.path.join(parent, ".previous", aside, "models", os.path.basename(USER_FILE)), "rb") as f:
        assert f.read() == USER_BYTES
    return os.path.join(parent, ".previous", aside)


def test_download_keeps_a_users_file(tmp_path, capsys):
    from t3d_tools.packaging.download import main as download_main

    bundles = tmp_path / "bundles"
    user = _user_file(bundles)
    good = _zip(tmp_path / "good.zip")
    args = ["--name", "good_bundle", "--url", f"file://{good}", "--bundle_dir", str(bundles), "--no_progress"]
    before = folder_tree(tmp_path)
    assert download_main(args) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert (
        last.startswith(f"error: {bundles / 'good_bundle'}: expected an absent or empty folder")
        and "--overwrite" in last
    )
    assert folder_tree(tmp_path) == before
    assert download_main(args + ["--overwrite"]) == 0
    aside = _kept_aside(bundles)
    assert f"moved the earlier {bundles / 'good_bundle'} to {aside}" in capsys.readouterr().out
    assert not os.path.exists(user) and (bundles / "good_bundle" / "models" / "model.pt").read_bytes() == b"new weights"


def test_prepare_keeps_a_users_file(tmp_path, capsys):
    from t3d_tools.serving.prepare import main as prepare_main

    app = tmp_path / "apps" / "t3d"
    (app / "model").mkdir(parents=True)
    (app / "main.py").write_text("# MONAI Label's stock app")
    _user_file(app / "model")
    good = _zip(tmp_path / "good.zip")
    before = folder_tree(tmp_path)
    assert prepare_main(["--app_dir", str(app), "--stock", "--bundle", good]) == 2
    assert capsys.readouterr().err.strip().startswith(f"error: {app / 'model' / 'good_bundle'}: expected an absent")
    assert folder_tree(tmp_path) == before
    assert prepare_main(["--app_dir", str(app), "--stock", "--bundle", good, "--overwrite"]) == 0
    aside = _kept_aside(app / "model")
    assert f"moved the earlier {app / 'model' / 'good_bundle'} to {aside}" in capsys.readouterr().out


def test_pack_keeps_a_users_file_and_an_earlier_zip(tmp_path, capsys):
    import torch
    from monai.networks.nets import BasicUNet

    from t3d_tools.packaging.pack import main as pack_main

    torch.manual_seed(0)
    network = BasicUNet(
        spatial_dims=3, in_channels=1, out_channels=14, features=(8, 16, 32, 64, 64, 8), norm=CPU_TOY_NORM
    )
    weights = tmp_path / "run" / "model.pt"
    weights.parent.mkdir()
    torch.save(network.state_dict(), weights)
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "notes.txt").write_bytes(USER_BYTES)
    args = ["t3d_btcv_seg", "--weights", str(weights), "--dist", str(dist), "--overlay", "cpu_toy.json"]
    assert pack_main(args) == 0
    (zip_name,) = [n for n in os.listdir(dist) if n.endswith(".zip")]
    first = hashlib.sha1((dist / zip_name).read_bytes()).hexdigest()
    assert pack_main(args) == 0  # the same bytes again: nothing to keep aside
    assert not (dist / ".previous").exists()
    torch.manual_seed(1)  # other weights, same version: the earlier zip is moved aside, not overwritten
    torch.save(
        BasicUNet(
            spatial_dims=3, in_channels=1, out_channels=14, features=(8, 16, 32, 64, 64, 8), norm=CPU_TOY_NORM
        ).state_dict(),
        weights,
    )
    capsys.readouterr()
    assert pack_main(args) == 0
    (aside,) = os.listdir(dist / ".previous")
    assert hashlib.sha1((dist / ".previous" / aside).read_bytes()).hexdigest() == first
    assert (
        f"moved the earlier {dist / zip_name} (other content) to {dist / '.previous' / aside}"
        in capsys.readouterr().out
    )
    assert (dist / "notes.txt").read_bytes() == USER_BYTES


def test_pack_ships_an_allow_list_only(tmp_path, capsys):
    """A ``credentials.json`` next to ``--weights dir/model.pt`` stays out of the zip (issue #31); the model files
    the configs write there (``class_names.json``) ship, and ``--include`` ships a file explicitly."""
    import torch
    from monai.networks.nets import BasicUNet

    from t3d_tools.packaging.pack import main as pack_main

    torch.manual_seed(0)
    run = tmp_path / "run"
    run.mkdir()
    network = BasicUNet(
        spatial_dims=3, in_channels=1, out_channels=14, features=(8, 16, 32, 64, 64, 8), norm=CPU_TOY_NORM
    )
    torch.save(network.state_dict(), run / "model.pt")
    (run / "credentials.json").write_text('{"token": "secret"}')
    (run / "class_names.json").write_text('["a", "b"]')
    (run / "notes_for_users.txt").write_text("read me")
    dist = tmp_path / "dist"
    args = ["t3d_btcv_seg", "--weights", str(run / "model.pt"), "--dist", str(dist), "--overlay", "cpu_toy.json"]
    assert pack_main(args) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == (
        "left out (not in the bundle format; --include FILE to ship one): "
        f"{run / 'credentials.json'}, {run / 'notes_for_users.txt'}"
    )
    (zip_path,) = dist.glob("*.zip")
    with zipfile.ZipFile(zip_path) as archive:
        names = {n.split("/", 1)[1] for n in archive.namelist()}
    assert "models/class_names.json" in names and "models/model.pt" in names
    assert not any("credentials" in n or "notes_for_users" in n for n in names)
    assert all(not n.startswith(("data/", "eval/", "runs/")) for n in names)
    assert pack_main(args + ["--include", str(run / "notes_for_users.txt")]) == 0
    with zipfile.ZipFile(zip_path) as archive:
        names = {n.split("/", 1)[1] for n in archive.namelist()}
    assert "models/notes_for_users.txt" in names and not any("credentials" in n for n in names)
