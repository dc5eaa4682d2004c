"""The stage manifest: finished stages are skipped on resume.
"""

import json

import pytest

from rstar_jax.evolve import runner


def test_manifest_skips_finished_stages(tmp_path):
    calls = []
    manifest = runner.Manifest.load(str(tmp_path))
    assert manifest.run("round0/a", lambda: calls.append(1) or {"x": 1}) == {"x": 1}
    again = runner.Manifest.load(str(tmp_path))
    assert again.run("round0/a", lambda: calls.append(2)) == {"x": 1}
    assert calls == [1]
    assert list(json.load(open(tmp_path / "manifest.json"))["stages"]) == ["round0/a"]
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(ValueError, match="manifest.json: not a manifest"):
        runner.Manifest.load(str(tmp_path))
