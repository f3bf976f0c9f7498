"""CI runs exactly the README's test command, and that command installs what it needs."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command() -> None:
    readme = (REPO / "README.md").read_text().splitlines()
    test_cmds = [line.split("#")[0].strip() for line in readme
                 if line.startswith("    ") and "make test" in line]
    assert test_cmds, "README gives no test command"
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.lstrip().startswith(("#", "set ", "cd "))]
    assert ci == [test_cmds[0]]
    assert test_cmds[0].startswith("sh scripts/setup.sh && ")  # make itself is installed


def test_setup_installs_make_and_leaves_the_stamp_make_checks() -> None:
    setup = (REPO / "scripts" / "setup.sh").read_text()
    assert "build-essential" in setup  # brings make on a fresh Debian/Ubuntu
    assert "touch .venv/.stamp" in setup
    assert "$(VENV)/.stamp:" in (REPO / "Makefile").read_text()
