"""A stage's output streams live: every byte to the terminal as it comes, whole lines to the log,
progress-bar redraws thinned to one per interval."""
import logging
import os
import sys
import time

import pytest

from flows.stream import LineThrottle, run_streaming


def throttled(chunks: list[tuple[float, str]], interval: float = 10.0, end: float = 100.0) -> list[str]:
    out: list[str] = []
    lines = LineThrottle(out.append, interval)
    for now, text in chunks:
        lines.feed(text, now)
    lines.close(end)
    return out


def test_lines_always_redraws_at_most_one_per_interval_and_the_final_state():
    out = throttled([
        (0.0, "Running stage 'train':\n> python -m stages.train\n"),
        (0.5, "\repoch 1  10%"), (1.0, "\repoch 1  20%"),   # "10%" completes here: the first redraw, logged
        (2.0, "\repoch 1  30%"), (9.0, "\repoch 1  40%"),   # 20% and 30% complete within 10 s: dropped
        (11.0, "\repoch 1  50%"),                           # 40% completes 10 s after 10%: logged
        (12.0, "\repoch 1 100%\n"),                         # the bar's last state ends with "\n": a line
        (13.0, "[train] epoch 1 acc 0.81\n"),
        (21.0, "\repoch 2  10%"), (22.0, "\repoch 2  20%"), (23.0, "\repoch 2  30%"),
    ])
    assert out == ["Running stage 'train':", "> python -m stages.train", "epoch 1  10%", "epoch 1  40%",
                   "epoch 1 100%", "[train] epoch 1 acc 0.81", "epoch 2  10%",
                   "epoch 2  30%"]  # the unterminated final state comes out at close; 20% was dropped


def test_a_line_overwrites_the_pending_redraw_and_close_logs_the_last_redraw():
    out = throttled([(0.0, "\ra\rb\rc"), (1.0, "\rd\r"), (2.0, "done\n"), (3.0, "\re\rf\r")], end=4.0)
    # a logged; b, c, d dropped (d overwritten by "done"); e throttled; f is the final state
    assert out == ["a", "done", "f"]


def test_chunks_split_anywhere_give_the_same_lines():
    text = "one\r\ntwo\n\rbar 1\rbar 2\r   \rthree\r\nfour"
    whole = throttled([(0.0, text)], interval=0.0)
    by_char = throttled([(0.0, ch) for ch in text], interval=0.0)
    assert whole == by_char == ["one", "two", "bar 1", "bar 2", "three", "four"]  # "\r\n" is a newline


CHILD = r"""
import sys, time
print("first line")  # no flush: block-buffered into a pipe unless PYTHONUNBUFFERED is set
for i in range(3):
    time.sleep(0.15)
    sys.stderr.write(f"\rstep {i}")
    sys.stderr.flush()
time.sleep(0.15)
print("\nlast line", flush=True)
sys.exit(int(sys.argv[1]))
"""
CHILD_OUTPUT = b"first line\n\rstep 0\rstep 1\rstep 2\nlast line\n"


class Terminal:
    """A byte sink that records when each chunk came."""

    def __init__(self):
        self.chunks: list[tuple[float, bytes]] = []

    def write(self, chunk: bytes) -> None:
        self.chunks.append((time.monotonic(), chunk))

    def flush(self) -> None:
        pass

    def arrived(self, prefix: bytes) -> float:
        """When the bytes received so far first started with `prefix`."""
        received = b""
        for at, chunk in self.chunks:
            received += chunk
            if received.startswith(prefix):
                return at
        raise AssertionError(f"{prefix!r} never arrived; got {received!r}")


class Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(record.getMessage())


@pytest.fixture
def logger():
    log = logging.getLogger("test_stream")
    log.setLevel(logging.INFO)
    handler = Records()
    log.addHandler(handler)
    yield log, handler.lines
    log.removeHandler(handler)


def test_a_real_child_streams_live_to_the_terminal_and_throttled_to_the_log(logger):
    log, lines = logger
    terminal = Terminal()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # run_streaming sets it
    tail = run_streaming([sys.executable, "-c", CHILD, "0"], log, env=env, terminal=terminal, interval=60.0)
    finished = time.monotonic()
    assert b"".join(chunk for _, chunk in terminal.chunks) == CHILD_OUTPUT  # every byte, in order
    # the first line and the first "\r" redraw (no newline after it) came while the child still ran
    assert finished - terminal.arrived(b"first line\n") > 0.4
    assert finished - terminal.arrived(b"first line\n\rstep 0") > 0.25
    assert lines == ["first line", "step 0", "step 2", "last line"]  # step 1: within the 60 s interval
    assert tail == "first line\nstep 0\nstep 2\nlast line"


def test_a_failing_child_raises_with_the_tail_of_its_output(logger):
    log, lines = logger
    with pytest.raises(RuntimeError, match=r"failed with exit code 3:\n(.|\n)*step 0(.|\n)*last line$"):
        run_streaming([sys.executable, "-c", CHILD, "3"], log, terminal=Terminal(), interval=60.0)
    assert lines[-1] == "last line"


def test_stage_lines_go_to_the_run_logs_without_a_console_echo():
    """The terminal shows the stage's output already: its log lines must not be printed again."""
    from prefect.settings import PREFECT_LOGGING_TO_API_ENABLED, temporary_settings

    from flows.pipeline import api_only

    stage_output = Records()
    run_logger = logging.LoggerAdapter(logging.getLogger("prefect.task_runs"), {"task_run_id": "run-1"})
    logging.getLogger().addHandler(root := Records())  # where Prefect's console handler sits
    output = api_only(run_logger)
    output.logger.addHandler(stage_output)
    try:
        with temporary_settings({PREFECT_LOGGING_TO_API_ENABLED: False}):  # no server here
            output.info("%s", "epoch 1  40%")
    finally:
        output.logger.removeHandler(stage_output)
        logging.getLogger().removeHandler(root)
    assert stage_output.lines == ["epoch 1  40%"] and root.lines == []
    assert stage_output.records[0].task_run_id == "run-1"  # filed under the stage's task run
