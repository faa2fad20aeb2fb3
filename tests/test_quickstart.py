"""sts-quickstart in a terminal: the live line redraws cleanly with rate and ETA."""

from __future__ import annotations

import os
import pty
import subprocess
from pathlib import Path

from conftest import BIN


def test_the_live_line_redraws_cleanly_with_rate_and_eta(tmp_path: Path) -> None:
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [str(BIN / "sts-quickstart"), str(tmp_path / "qs"), "--bytes-per-second", "0"],
        stdin=follower,
        stdout=follower,
        stderr=subprocess.DEVNULL,
        close_fds=True,
    )
    os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    os.close(leader)
    assert process.wait(timeout=120) == 0
    text = output.decode()
    redraws = text.split("\r\x1b[K")[1:]
    assert len(redraws) >= 2, text
    # Every redraw clears the line first, so no "\r" redraw goes without it.
    assert text.count("\r") - text.count("\r\n") == len(redraws), repr(text)
    for line in redraws:
        line = line.split("\r\n")[0]
        assert "/s | ETA" in line, line
    assert "ETA 0s" in redraws[-1]
    assert "Done in" in text
