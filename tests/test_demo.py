"""The main job: `caffe2torch demo` runs end to end with no file from outside."""

import pytest
from click.testing import CliRunner

from caffe2torch.cli import main


@pytest.mark.slow
def test_demo_builds_converts_runs_and_exports() -> None:
    result = CliRunner().invoke(main, ["demo", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "309 layers, equal to SE-ResNeXt-50.prototxt" in result.output
    assert "27,559,896 parameters" in result.output
    assert "identical bits" in result.output
