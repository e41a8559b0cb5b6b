"""The README/preset tests' commands run in forks of a warm interpreter (forkserver.py): a forked
command must say and exit exactly what the installed console script in a new process does."""

from __future__ import annotations

import forkserver
import readme_harness


def test_a_forked_command_exits_and_prints_as_the_console_script(tmp_path, monkeypatch):
    argv = ["visbricks", "eval", "no-such-run"]
    forked = readme_harness.run(argv, tmp_path, overrides="", expect_rc=2)
    assert forkserver._SERVER is not None, "the fork server refused: every command pays ~3.5 s"
    monkeypatch.setenv("VISBRICKS_TESTS_SPAWN", "1")
    assert forkserver.server("unused", {}) is None
    spawned = readme_harness.run(argv, tmp_path, overrides="", expect_rc=2)
    assert forked.stderr == spawned.stderr and forked.stdout == spawned.stdout
    assert forked.stderr.startswith("error: ") and "no-such-run" in forked.stderr
    assert "Traceback" not in forked.stderr
