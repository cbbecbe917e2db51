"""Fixtures: real `roster` processes on loopback, started by the tests.

The binary is ``$ROSTER_BIN``, else the repository's debug build
(``swift build`` or ``swift test`` makes it). Ports are chosen by the OS.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import queue
import signal
import subprocess
import threading
import time
from typing import Callable, Dict, List, Optional

import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]


def roster_binary() -> str:
    path = os.environ.get("ROSTER_BIN") or str(REPO / ".build" / "debug" / "roster")
    if not os.access(path, os.X_OK):
        pytest.fail(f"no roster binary at {path}: run `swift build` in {REPO} (or set ROSTER_BIN)")
    return path


def md5(email: str) -> bytes:
    return hashlib.md5(email.strip().lower().encode()).digest()


class RosterProcess:
    """One `roster` subcommand, its stdout read line by line in a thread."""

    def __init__(self, args: List[str], env: Optional[Dict[str, str]] = None) -> None:
        self.args = args
        environment = dict(os.environ)
        environment.update(env or {})
        self.process = subprocess.Popen([roster_binary(), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        env=environment, text=True, bufsize=1)
        self.lines: "queue.Queue[str]" = queue.Queue()
        self.output: List[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            self.lines.put(line)

    def wait_for_line(self, prefix: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"`roster {' '.join(self.args)}` printed no line starting {prefix!r}:\n{''.join(self.output)}")
            try:
                line = self.lines.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                if self.process.poll() is not None:
                    raise AssertionError(f"`roster {self.args[0]}` exited ({self.process.returncode}):\n{''.join(self.output)}")
                continue
            if line.strip().startswith(prefix):
                return line.strip()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> Optional[int]:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def eventually(what: str, check: Callable[[], bool], timeout: float = 60, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    last: Optional[BaseException] = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as error:  # noqa: BLE001 - retried until the deadline
            last = error
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}" + (f" (last error: {last})" if last else ""))


def sha256(email: str) -> bytes:
    return hashlib.sha256(email.strip().lower().encode()).digest()


def write_list(root: pathlib.Path, advertiser: str, emails: List[str], hash: Callable[[str], bytes] = md5) -> None:
    """Drops a list into the lake the way users do: written aside, then moved in."""
    folder = root / "lake" / advertiser
    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / ".members.tmp"
    temporary.write_text("".join(hash(e).hex() + "\n" for e in emails))
    temporary.rename(folder / "members.txt")


MEMBERS = [f"user{i}@example.com" for i in range(2_000)]


class DevServer:
    """`roster dev` on a temporary folder with one list, acme, live."""

    def __init__(self, root: pathlib.Path, env: Optional[Dict[str, str]] = None, token: Optional[str] = None) -> None:
        self.root = root
        write_list(root, "acme", MEMBERS)
        self.process = RosterProcess(["dev", "--data", str(root), "--match-port", "0", "--coordinator-port", "0",
                                      "--scan-interval", "0.2", "--workers", "1", "--metrics", "127.0.0.1:0",
                                      "--log-level", "error"], env)
        self.address = self.process.wait_for_line("match server:").split()[-1]
        self.coordinator = self.process.wait_for_line("coordinator:").split()[-1]
        from roster_client import Client

        with Client(self.address, token=token, timeout=2) as probe:
            eventually("acme to go live", lambda: probe.match("acme", md5(MEMBERS[0])).matched)


@pytest.fixture(scope="session")
def dev(tmp_path_factory: pytest.TempPathFactory):
    server = DevServer(tmp_path_factory.mktemp("dev"))
    yield server
    server.process.stop()


@pytest.fixture(scope="session")
def dev_with_tokens(tmp_path_factory: pytest.TempPathFactory):
    server = DevServer(tmp_path_factory.mktemp("dev-tokens"), env={"ROSTER_CLIENT_TOKENS": "c1", "ROSTER_ADMIN_TOKENS": "a1"},
                       token="c1")
    yield server
    server.process.stop()
