"""CI runs the README's Quickstart test command exactly: `.ci/run` and the README must not drift apart."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    ci_lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
                if line.strip() and not line.startswith(("#", "set ", "cd "))]
    readme = (ROOT / "README.md").read_text()
    quickstart = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    commands = [line.strip() for line in quickstart.splitlines() if line.startswith("    ")]
    assert len(commands) == 2, "the Quickstart has exactly two commands: run the main job, run the tests"
    assert ci_lines == [commands[1]]
    assert commands[1].endswith(".venv/bin/pytest") and "torch==2.13.0" in commands[0] + commands[1]
    assert commands[0].endswith("myllm run")
