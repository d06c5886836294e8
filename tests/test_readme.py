"""The Python example in README.md runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "README.md has no python example"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    events = namespace["events"]
    assert len(events) > 0
    assert events.step.max() < 500
    assert (tmp_path / "run.safetensors").is_file()
    assert (tmp_path / "run.safetensors.json").is_file()
