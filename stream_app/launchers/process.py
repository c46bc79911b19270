"""A child process that is ready when a probe says so, and never left behind."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)


class StartupError(RuntimeError):
    """A local service did not become ready; the message says why."""


class ManagedProcess:
    """Start ``argv`` in its own process group; stop the whole group on exit.

    ``ready`` is polled until it returns True, the process dies, or
    ``timeout_s`` passes; on failure the process group is killed and
    :class:`StartupError` carries the tail of the log.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        ready: Callable[[], bool],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        timeout_s: float = 120.0,
        stop_timeout_s: float = 15.0,
    ) -> None:
        self.name, self.argv, self.ready = name, list(argv), ready
        self.log_path, self.env, self.cwd = log_path, env, cwd
        self.timeout_s, self.stop_timeout_s = timeout_s, stop_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        logf = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        log.info("starting %s (log: %s)", self.name, self.log_path)
        self.proc = subprocess.Popen(
            self.argv,
            stdout=logf,
            stderr=subprocess.STDOUT,
            env=dict(self.env or os.environ),
            cwd=self.cwd,
            start_new_session=True,
        )
        logf.close()
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                raise StartupError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}"
                )
            try:
                if self.ready():
                    log.info("%s ready (pid %d)", self.name, self.proc.pid)
                    return self
            except Exception:
                pass
            time.sleep(0.2)
        self.stop()
        raise StartupError(f"{self.name} not ready after {self.timeout_s:.0f}s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM the process group, then SIGKILL it if it lingers."""
        if self.proc is None:
            return
        for sig, wait in ((signal.SIGTERM, self.stop_timeout_s), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # reap any child left in the group
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def kill(self) -> None:
        """SIGKILL at once (tests of crash recovery)."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def __enter__(self) -> ManagedProcess:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
