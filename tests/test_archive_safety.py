"""Archives are checked whole before anything is written: ``t3d_tools.serving.prepare`` (MONAI Label app folders)
and ``t3d_tools.packaging.download`` refuse path escapes, links and duplicate members in one line and leave the disk
as it was."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile

import pytest
from bundle_toys import toy_name, toy_pack
from conftest import folder_tree

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL_CT = os.path.join(REPO, "tests", "data", "real_ct", "example_ct_sm.nii.gz")
BUNDLE = "t3d_btcv_seg"


@pytest.mark.parametrize("member", ["evil/../../escaped.txt", "/tmp/escaped_abs.txt"])
def test_download_refuses_path_escape_entries(tmp_path, member):
    from monai.bundle import download

    zip_path = tmp_path / "evil.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        archive.writestr("evil/configs/metadata.json", "{}")
        archive.writestr(member, "outside")
    target = tmp_path / "a" / "b"
    target.mkdir(parents=True)
    with pytest.raises(ValueError, match="Unsafe path"):
        download(name="evil", url=f"file://{zip_path}", bundle_dir=str(target))
    assert not (tmp_path / "a" / "escaped.txt").exists()
    assert not os.path.exists("/tmp/escaped_abs.txt")


def test_prepare_monailabel_app_unpacks_bundles_into_its_model_folder(tmp_path, tmp_path_factory):
    from t3d_tools.serving.prepare import main as prepare_main

    zip_path = toy_pack(BUNDLE, tmp_path_factory)
    app_dir = tmp_path / "apps" / "t3d"
    assert prepare_main(["--app_dir", str(app_dir), "--bundle", zip_path]) == 0
    assert (app_dir / "main.py").is_file()
    assert (app_dir / "model" / toy_name(BUNDLE) / "models" / "model.pt").is_file()
    assert (app_dir / "model" / toy_name(BUNDLE) / "configs" / "inference.json").is_file()
    assert prepare_main(["--app_dir", str(tmp_path / "nothing"), "--bundle", zip_path, "--stock"]) == 2


# ---- archive validation shared by serving.prepare and packaging.download (t3d_tools.packaging.archive) ----


def _zip(path, members) -> str:
    """A zip with ``members``: (name, data) pairs; data ``None`` makes a symbolic-link entry pointing at /etc/passwd."""
    import stat

    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members:
            if data is None:
                info = zipfile.ZipInfo(name)
                info.create_system = 3
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                archive.writestr(info, "/etc/passwd")
            else:
                archive.writestr(name, data)
    return str(path)


_BUNDLE_FILES = [("good_bundle/configs/metadata.json", '{"version": "0.1.0"}'), ("good_bundle/models/model.pt", b"w")]
_UNSAFE = {  # case -> (members, offending member, what is wrong with it)
    "dotdot": (
        [("../configs/metadata.json", "{}"), ("../models/model.pt", "w")],
        "../configs/metadata.json",
        "a '..' component",
    ),
    "dot": (
        [("./configs/metadata.json", "{}"), ("./good_bundle/models/model.pt", "w")],
        "./configs/metadata.json",
        "a '.' component",
    ),
    "absolute": (
        [("/configs/metadata.json", "{}"), ("/models/model.pt", "w")],
        "/configs/metadata.json",
        "an absolute path",
    ),
    "symlink": (
        [("evil/configs/metadata.json", "{}"), ("evil/models/model.pt", None)],
        "evil/models/model.pt",
        "a symbolic link",
    ),
    "inner_dotdot": (
        [("evil/configs/metadata.json", "{}"), ("evil/../../escaped.txt", "outside")],
        "evil/../../escaped.txt",
        "a '..' component",
    ),
}


def _prepared_app(tmp_path) -> tuple:
    """An app folder holding one unpacked bundle, with sibling files next to the app and next to the bundle."""
    from t3d_tools.serving.prepare import main as prepare_main

    app = tmp_path / "apps" / "t3d"
    assert prepare_main(["--app_dir", str(app), "--bundle", _zip(tmp_path / "good.zip", _BUNDLE_FILES)]) == 0
    (tmp_path / "apps" / "other_app").mkdir()
    (tmp_path / "apps" / "other_app" / "main.py").write_text("# another app")
    (tmp_path / "apps" / "notes.txt").write_text("next to the app")
    (app / "model" / "readme.txt").write_text("next to the bundles")
    return prepare_main, app


@pytest.mark.parametrize("case", sorted(_UNSAFE))
def test_prepare_refuses_unsafe_archives_before_touching_the_disk(tmp_path, capsys, case):
    prepare_main, app = _prepared_app(tmp_path)
    members, member, problem = _UNSAFE[case]
    evil = _zip(tmp_path / f"{case}.zip", members)
    capsys.readouterr()
    before = folder_tree(tmp_path)
    assert prepare_main(["--app_dir", str(app), "--bundle", evil]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {evil}: expected relative paths of plain files and folders inside one bundle folder, found member "
        f"{member!r} with {problem}"
    ]
    assert folder_tree(tmp_path) == before  # the app, its bundles and every sibling byte for byte; nothing new either
    assert not os.path.exists(tmp_path / "escaped.txt") and not os.path.exists(tmp_path / "apps" / "escaped.txt")
    # the same zips through the library call: the project's error type (a DataError, so a ValueError)
    from custom.errors import DataError
    from t3d_tools.packaging.archive import ArchiveError
    from t3d_tools.serving.prepare import prepare_app

    with pytest.raises(ArchiveError, match="found member") as caught:
        prepare_app(str(app), [evil])
    assert isinstance(caught.value, DataError) and evil in str(caught.value) and repr(member) in str(caught.value)
    assert folder_tree(tmp_path) == before


def test_prepare_validates_every_zip_first_and_replaces_only_its_own_bundle(tmp_path, capsys):
    prepare_main, app = _prepared_app(tmp_path)
    other = _zip(tmp_path / "other.zip", [("other_bundle/configs/metadata.json", "{}")])
    evil = _zip(tmp_path / "two_tops.zip", [("a/configs/metadata.json", "{}"), ("b/configs/metadata.json", "{}")])
    fresh = tmp_path / "apps" / "fresh"
    assert prepare_main(["--app_dir", str(fresh), "--bundle", other, "--bundle", evil]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {evil}: expected one top-level bundle folder, found 2: ['a', 'b']"
    )
    assert not fresh.exists()  # the valid first zip was not unpacked either: all are checked before any write

    # a damaged member (CRC mismatch) is found before anything is written, too
    damaged = tmp_path / "damaged.zip"
    with zipfile.ZipFile(damaged, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("good_bundle/models/model.pt", b"weights" * 100)
    data = bytearray(damaged.read_bytes())
    data[data.index(b"weights") + 3] ^= 0xFF
    damaged.write_bytes(bytes(data))
    before = folder_tree(tmp_path)
    assert prepare_main(["--app_dir", str(app), "--bundle", str(damaged)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {damaged}: expected intact member data, found a CRC mismatch in member 'good_bundle/models/model.pt'"
    )
    assert folder_tree(tmp_path) == before

    # a new version is refused onto the existing <model>/good_bundle; with --overwrite it replaces it, the earlier
    # folder moved (never deleted) to <model>/.previous/ and named; siblings stay
    updated = _zip(tmp_path / "good_v2.zip", [("good_bundle/configs/metadata.json", '{"version": "0.2.0"}')])
    earlier = {k: v for k, v in folder_tree(tmp_path / "apps").items() if k.startswith("t3d/model/good_bundle/")}
    siblings = {k: v for k, v in folder_tree(tmp_path / "apps").items() if not k.startswith("t3d/model/good_bundle")}
    before = folder_tree(tmp_path)
    assert prepare_main(["--app_dir", str(app), "--bundle", updated]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {app / 'model' / 'good_bundle'}: expected an absent or empty folder to unpack {updated} into, found 2 "
        f"file(s) (configs/metadata.json, models/model.pt); pass --overwrite to move it aside to "
        f"{app / 'model' / '.previous'}/"
    )
    assert folder_tree(tmp_path) == before
    assert prepare_main(["--app_dir", str(app), "--bundle", updated, "--overwrite"]) == 0
    (aside,) = os.listdir(app / "model" / ".previous")
    assert capsys.readouterr().out.splitlines()[0] == (
        f"moved the earlier {app / 'model' / 'good_bundle'} to {app / 'model' / '.previous' / aside}"
    )
    after = folder_tree(tmp_path / "apps")
    moved = f"t3d/model/.previous/{aside}/"
    assert {k.replace(moved, "t3d/model/good_bundle/"): v for k, v in after.items() if k.startswith(moved)} == earlier
    assert {
        k: v for k, v in after.items() if not k.startswith(("t3d/model/good_bundle", "t3d/model/.previous"))
    } == siblings
    assert sorted(k for k in after if k.startswith("t3d/model/good_bundle")) == [
        "t3d/model/good_bundle",
        "t3d/model/good_bundle/configs",
        "t3d/model/good_bundle/configs/metadata.json",
    ]
    assert json.loads((app / "model" / "good_bundle" / "configs" / "metadata.json").read_text())["version"] == "0.2.0"


def test_download_wrapper_validates_first_leaves_nothing_and_a_retry_is_refused_again(tmp_path, capsys):
    from monai.bundle import download

    from t3d_tools.packaging.download import main as download_main

    members, member, problem = _UNSAFE["inner_dotdot"]
    evil = _zip(tmp_path / "evil.zip", members)
    bundles = tmp_path / "a" / "bundles"
    (bundles / "other_bundle").mkdir(parents=True)
    (bundles / "other_bundle" / "model.pt").write_bytes(b"weights")
    before = folder_tree(tmp_path / "a")
    for _ in range(2):  # the retry is refused the same way: nothing partial was left to be taken for a finished copy
        assert (
            download_main(["--name", "evil", "--url", f"file://{evil}", "--bundle_dir", str(bundles), "--no_progress"])
            == 2
        )
        assert capsys.readouterr().err.strip().splitlines()[-1] == (
            f"error: file://{evil}: expected relative paths of plain files and folders inside one bundle folder, "
            f"found member {member!r} with {problem}"
        )
        assert folder_tree(tmp_path / "a") == before
    assert not (tmp_path / "a" / "escaped.txt").exists()

    # for contrast, MONAI's own download (what the wrapper replaces in the docs): refuses mid-extraction, leaves the
    # partial folder and the zip, and the re-run then "succeeds" without the bundle
    monai_dir = tmp_path / "monai_bundles"
    monai_dir.mkdir()
    with pytest.raises(ValueError, match="Unsafe path"):
        download(name="evil", url=f"file://{evil}", bundle_dir=str(monai_dir), progress=False)
    assert (monai_dir / "evil" / "configs" / "metadata.json").is_file()
    download(name="evil", url=f"file://{evil}", bundle_dir=str(monai_dir), progress=False)  # no error

    # a wrong top folder, a missing file: one line each, nothing left
    good = _zip(tmp_path / "good.zip", _BUNDLE_FILES)
    assert (
        download_main(
            ["--name", "third_bundle", "--url", f"file://{good}", "--bundle_dir", str(bundles), "--no_progress"]
        )
        == 2
    )
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: file://{good}: expected the bundle folder 'third_bundle', found 'good_bundle' "
        "(member 'good_bundle/configs/metadata.json')"
    )
    missing = tmp_path / "nowhere.zip"
    assert (
        download_main(
            ["--name", "good_bundle", "--url", f"file://{missing}", "--bundle_dir", str(bundles), "--no_progress"]
        )
        == 2
    )
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert (
        line.startswith(f"error: file://{missing}: expected a downloadable bundle zip, found ") and str(missing) in line
    )
    assert folder_tree(tmp_path / "a") == before

    # a good zip: unpacked to <bundle_dir>/<name>, no temporary folder or zip left; again with --overwrite: the
    # earlier copy is moved to .previous/ (and removed here only to compare the rest)
    for again in (False, True):
        assert (
            download_main(
                ["--name", "good_bundle", "--url", f"file://{good}", "--bundle_dir", str(bundles), "--no_progress"]
                + ["--overwrite"] * again
            )
            == 0
        )
        if again:
            (aside,) = os.listdir(bundles / ".previous")
            assert f"moved the earlier {bundles / 'good_bundle'} to {bundles / '.previous' / aside}\n" in (
                capsys.readouterr().out
            )
            assert folder_tree(bundles / ".previous" / aside) == folder_tree(bundles / "good_bundle")
            import shutil

            shutil.rmtree(bundles / ".previous")
        assert folder_tree(tmp_path / "a") == {
            **before,
            "bundles/good_bundle": "<dir>",
            "bundles/good_bundle/configs": "<dir>",
            "bundles/good_bundle/models": "<dir>",
            "bundles/good_bundle/configs/metadata.json": hashlib.sha1(b'{"version": "0.1.0"}').hexdigest(),
            "bundles/good_bundle/models/model.pt": hashlib.sha1(b"w").hexdigest(),
        }
