"""One version story: pyproject's version is the newest CHANGELOG.md release, that release's table gives every
bundle's ``metadata.json`` version (with a changelog entry for it), and every bundle declares the MONAI and PyTorch
versions the project installs (``pyproject.toml``'s MONAI pin, ``scripts/setup.sh``'s torch pin)."""

from __future__ import annotations

import json
import os
import re

from conftest import BUNDLES

REPO = os.path.dirname(BUNDLES)


def _newest_release() -> tuple[str, dict[str, str]]:
    with open(os.path.join(REPO, "CHANGELOG.md"), encoding="utf-8") as f:
        text = f.read()
    releases = re.split(r"^## ", text, flags=re.M)[1:]
    assert releases, "CHANGELOG.md: expected '## <version> (<date>)' sections"
    newest = releases[0]
    version = newest.split()[0]
    table = dict(re.findall(r"^\| (t3d_\w+) \| ([\w.\-]+) \|$", newest, flags=re.M))
    return version, table


def _pyproject() -> str:
    with open(os.path.join(REPO, "pyproject.toml"), encoding="utf-8") as f:
        return f.read()  # read as text: tomllib needs Python 3.11, the project supports 3.10


def test_pyproject_version_is_the_newest_release_and_lists_every_bundle():
    version, table = _newest_release()
    assert re.search(r'^version = "([^"]+)"$', _pyproject(), flags=re.M).group(1) == version
    assert sorted(table) == sorted(os.listdir(BUNDLES))


def test_every_bundle_carries_its_release_version_and_the_project_pins():
    _, table = _newest_release()
    monai_pin = re.search(r'"monai\[[^\]]*\]==([\w.]+)"', _pyproject()).group(1)
    with open(os.path.join(REPO, "scripts", "setup.sh"), encoding="utf-8") as f:
        torch_pin = re.search(r"torch==([\w.]+)", f.read()).group(1)
    for bundle, version in table.items():
        with open(os.path.join(BUNDLES, bundle, "configs", "metadata.json"), encoding="utf-8") as f:
            metadata = json.load(f)
        assert metadata["version"] == version, bundle
        assert next(iter(metadata["changelog"])) == version, f"{bundle}: newest changelog entry"
        assert (metadata["monai_version"], metadata["pytorch_version"]) == (monai_pin, torch_pin), bundle
