"""Run a command and let the user watch it: its output goes to the terminal byte for byte as it
arrives (progress bars keep redrawing in place) and to a logger as whole lines, with progress-bar
redraws thinned out.

    tail = run_streaming(["dvc", "repro", "train"], logger)   # RuntimeError with the tail on failure
"""
from __future__ import annotations

import codecs
import logging
import os
import re
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import BinaryIO

# A progress bar redraws once a second or faster (tqdm's mininterval is 1 s in skillpack.train.engine):
# a log record per redraw would bury a stage's real lines and fill Prefect's log store with
# hundreds of bar states per stage. One redraw every 10 s still shows the bar moving.
PROGRESS_LOG_INTERVAL_S = 10.0
TAIL_CHARS = 4000  # of the logged lines, in the error of a failed command
READ_CHUNK = 65536

_BREAK = re.compile(r"\r\n|\r|\n")  # "\r\n" ends a line; a lone "\r" ends a redraw


class LineThrottle:
    """Turns output text, fed in chunks as it comes, into log lines.

    A line ended by "\\n" is always emitted. A segment ended by a lone "\\r" is a redraw (a progress
    bar about to overwrite itself): at most one every `interval` seconds is emitted; the others are
    dropped, except the last one, which `close` emits if nothing came after it. A line after a
    redraw overwrites it on a terminal, so it drops the pending redraw here too. Blank lines and
    blank redraws (a bar clearing itself) are skipped.
    """

    def __init__(self, emit: Callable[[str], None], interval: float = PROGRESS_LOG_INTERVAL_S):
        self.emit, self.interval = emit, interval
        self._buffer = ""  # text after the last line break seen
        self._pending: str | None = None  # the last redraw dropped by the throttle
        self._last_redraw_at = float("-inf")

    def feed(self, text: str, now: float) -> None:
        self._buffer += text
        start = 0
        for brk in _BREAK.finditer(self._buffer):
            if brk.group() == "\r" and brk.end() == len(self._buffer):
                break  # maybe the first half of a "\r\n": decide when more text comes
            self._segment(self._buffer[start:brk.start()], redraw=brk.group() == "\r", now=now)
            start = brk.end()
        self._buffer = self._buffer[start:]

    def close(self, now: float) -> None:
        """The output ended: emit its final state (an unterminated last line or the last redraw)."""
        rest, self._buffer = self._buffer, ""
        if rest.endswith("\r"):
            self._segment(rest[:-1], redraw=True, now=now)
        elif rest.strip():
            self._segment(rest, redraw=False, now=now)
        if self._pending is not None:
            self.emit(self._pending)
            self._pending = None

    def _segment(self, text: str, redraw: bool, now: float) -> None:
        if not text.strip():
            return
        if not redraw:
            self._pending = None
            self.emit(text)
        elif now - self._last_redraw_at >= self.interval:
            self._pending, self._last_redraw_at = None, now
            self.emit(text)
        else:
            self._pending = text


def run_streaming(cmd: list[str], logger: logging.Logger | logging.LoggerAdapter, *, cwd: str | None = None,
                  env: dict | None = None, terminal: BinaryIO | None = None,
                  interval: float = PROGRESS_LOG_INTERVAL_S) -> str:
    """Run `cmd` with its stdout and stderr merged; copy every byte to `terminal` (default: this
    process's stdout) the moment it comes, and the lines to `logger` through a `LineThrottle`.
    Returns the tail of the logged lines; raises RuntimeError with that tail when `cmd` fails."""
    # A pipe makes a Python child block-buffer its print()s: they would come in 8 KiB bursts.
    env = dict(os.environ if env is None else env)
    env.setdefault("PYTHONUNBUFFERED", "1")
    write = _terminal_writer(terminal)
    tail: deque[str] = deque(maxlen=400)

    def emit(line: str) -> None:
        tail.append(line)
        logger.info("%s", line)

    lines = LineThrottle(emit, interval)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    with subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
        while chunk := os.read(proc.stdout.fileno(), READ_CHUNK):  # returns as soon as any bytes came
            write(chunk)
            lines.feed(decoder.decode(chunk), time.monotonic())
        lines.feed(decoder.decode(b"", final=True), time.monotonic())
        lines.close(time.monotonic())
    text = "\n".join(tail)[-TAIL_CHARS:]
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed with exit code {proc.returncode}:\n{text}")
    return text


def _terminal_writer(terminal: BinaryIO | None) -> Callable[[bytes], None]:
    """Write-and-flush to `terminal`, or to sys.stdout's bytes (its text when it has none, as in a notebook)."""
    if terminal is None:
        sys.stdout.flush()  # text printed before the command comes first
        terminal = getattr(sys.stdout, "buffer", None)
    if terminal is None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

        def write(chunk: bytes) -> None:
            sys.stdout.write(decoder.decode(chunk))
            sys.stdout.flush()
        return write

    def write(chunk: bytes) -> None:
        terminal.write(chunk)
        terminal.flush()
    return write
