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


def test_a_stage_finished_on_a_later_try_says_so(tmp_path):
    """A kill leaves no end time: the manifest counts each stage's tries, so the report can tell
    that a resumed stage's seconds time its last try only."""
    class Killed(Exception):
        pass

    def killed():
        raise Killed

    with pytest.raises(Killed):
        runner.Manifest.load(str(tmp_path)).run("round1/search", killed)
    resumed = runner.Manifest.load(str(tmp_path))
    assert resumed.started == {"round1/search": 1}
    resumed.run("round1/search", lambda: "trees")
    resumed.run("round1/extract", lambda: "records")
    again = runner.Manifest.load(str(tmp_path))
    assert again.started == {} and again.stages["round1/search"]["attempts"] == 2
    assert again.resumed("round1/") == ["search"] and "attempts" not in again.stages["round1/extract"]


def test_each_stage_records_the_machine_it_ran_on(tmp_path, monkeypatch):
    """The same config and seed train to other figures on another CPU, so a resumed run says which
    stages ran where."""
    manifest = runner.Manifest.load(str(tmp_path))
    manifest.run("round0/policy", lambda: "p")
    here = json.load(open(tmp_path / "manifest.json"))["stages"]["round0/policy"]["machine"]
    assert here == runner.machine() and "cores" in here and "jax" in here
    monkeypatch.setattr(runner, "machine", lambda: "another machine")
    resumed = runner.Manifest.load(str(tmp_path))
    resumed.run("round0/evaluate", lambda: {})
    resumed.run("round1/search", lambda: "trees")
    assert resumed.machines("round0/") == {"policy": here, "evaluate": "another machine"}
    assert resumed.machines("round1/") == {"search": "another machine"}
    del resumed.stages["round1/search"]["machine"]  # a manifest written before stages named it
    assert resumed.machines("round1/") == {}
