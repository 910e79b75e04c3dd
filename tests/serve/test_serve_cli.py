"""``rnnkit serve``: bad RUN paths are one sentence and exit status 2; 127.0.0.1 unless
--host says otherwise, and then a warning; a port in use is one sentence too."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("uvicorn", reason="rnnkit serve needs the serve extra")

from helpers import assert_one_sentence, run_main


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """uvicorn.run replaced: what it was given."""
    import uvicorn

    seen: dict[str, Any] = {}

    def fake_run(app: Any, **kw: Any) -> None:
        seen.update(app=app, **kw)

    monkeypatch.setattr(uvicorn, "run", fake_run)
    return seen


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_bad_run_paths_are_one_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], runs: dict[str, Path], started: dict
) -> None:
    port = str(free_port())
    missing = tmp_path / "no-such-run"
    code, _, err = run_main(["serve", runs["words"], missing, "--port", port], capsys)
    assert code == 2
    assert_one_sentence(err, str(missing), "does not exist")
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_main(["serve", empty, "--port", port], capsys)
    assert code == 2
    assert_one_sentence(err, str(empty), "not an rnnkit run directory")
    junk = tmp_path / "junk.arpa"
    junk.write_text("this is not an ARPA file\n", encoding="utf-8")
    code, _, err = run_main(["serve", junk, "--port", port], capsys)
    assert code == 2
    assert_one_sentence(err, str(junk), "ARPA")
    other = tmp_path / "parser"  # a task the page does not show (every task now is shown)
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"task": "parse", "model": {}}))
    code, _, err = run_main(["serve", other, "--port", port], capsys)
    assert code == 2
    assert_one_sentence(err, str(other), "parse run")
    assert not started  # nothing was served


def test_serves_loopback_by_default_and_warns_for_another_host(
    capsys: pytest.CaptureFixture[str], runs: dict[str, Path], started: dict
) -> None:
    port = free_port()
    code, _, err = run_main(["serve", runs["words"], runs["arpa"], "--port", str(port)], capsys)
    assert code == 0, err
    assert started["host"] == "127.0.0.1" and started["port"] == port
    assert "warning" not in err and f"http://127.0.0.1:{port}/" in err
    assert "words, kn3.arpa" in err
    code, _, err = run_main(["serve", runs["words"], "--host", "0.0.0.0", "--port", str(port)],
                            capsys)  # fmt: skip
    assert code == 0 and started["host"] == "0.0.0.0"
    assert "rnnkit: warning: --host 0.0.0.0" in err and "no login" in err


def test_a_port_in_use_is_one_sentence(
    capsys: pytest.CaptureFixture[str], runs: dict[str, Path], started: dict
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        code, _, err = run_main(["serve", runs["words"], "--port", str(port)], capsys)
    assert code == 2
    assert_one_sentence(err, f"port {port}", "--port")
    code, _, err = run_main(["serve", runs["words"], "--port", "70000"], capsys)
    assert code == 2
    assert_one_sentence(err, "--port")
