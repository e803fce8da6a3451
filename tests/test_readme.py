"""The README's Python example runs as written."""

from __future__ import annotations

import re

from tests.conftest import REPO, real_weights


def test_readme_opens_with_the_two_setup_commands():
    text = (REPO / "README.md").read_text()
    first_block = re.match(r"```bash\n(.*?)```", text, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]


def test_readme_python_example_runs(capsys):
    real_weights()
    text = (REPO / "README.md").read_text()
    block = re.search(r"<!-- example.*?```python\n(.*?)```", text, re.S).group(1)
    exec(compile(block, "README.md", "exec"), {})
    assert "of the MACs" in capsys.readouterr().out
