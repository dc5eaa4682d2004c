"""metrics.jsonl across kills: a line torn mid-write never stops the stage that resumes it."""

import json

from rstar_jax.training.metrics import MetricsWriter


def _steps(path):
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


def test_a_torn_last_line_is_dropped_when_a_stage_appends_again(tmp_path):
    writer = MetricsWriter.appending(str(tmp_path))
    writer.append({"loss": 1.0})
    writer.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 2, "lo')  # killed mid-write
    writer = MetricsWriter.appending(str(tmp_path))
    writer.append({"loss": 0.5})
    writer.close()
    assert _steps(tmp_path / "metrics.jsonl") == [1, 2]


def test_a_torn_last_line_is_dropped_when_training_resumes(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (1, 2, 3))
                                            + '{"step": 4, "loss"')
    writer = MetricsWriter(str(tmp_path), resume_step=2)
    writer.write(3, {"loss": 0.25})
    writer.close()
    assert _steps(tmp_path / "metrics.jsonl") == [1, 2, 3]
    assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])["loss"] == 0.25
