"""Progress display for the CLI: a redrawn bar on a terminal, plain lines otherwise.

Why not tqdm (installed with huggingface_hub): off a terminal it writes its
bar as ``\r``-separated redraws (or, with ``disable=None``, nothing at all),
while CI logs and ``journalctl`` need a plan line, a plain status line every
few seconds and a summary, which is what ``DownloadProgress`` prints (the CLI
tests check it: no ``\r`` off a terminal). Two renderers of ~60 lines each
cover what the commands need, and a library import never pays for them.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

_REDRAW = 0.1  # at most 10 redraws a second
_PLAIN_EVERY = 5.0  # seconds between plain progress lines


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def _eta(seconds: float) -> str:
    if seconds != seconds or seconds < 0 or seconds > 99 * 3600:  # NaN, negative, absurd
        return "--:--"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class DownloadProgress:
    """Callable with byte deltas (the manager's ``progress``), plus the optional
    ``plan``/``file_progress`` hooks for per-file lines."""

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.total = 0
        self.done = 0
        self.files: dict[str, tuple[int, int]] = {}  # path -> (done, size)
        self.start = time.monotonic()
        self._last_draw = 0.0
        self._last_plain = self.start

    def plan(self, files: list[tuple[str, int]]) -> None:
        self.files = {path: (0, size) for path, size in files}
        self.total = sum(size for _, size in files)
        self._line(f"{self.label}: {len(files)} file(s), {human_bytes(self.total)} to fetch")

    def file_progress(self, path: str, n: int) -> None:
        done, size = self.files.get(path, (0, 0))
        done += n
        self.files[path] = (done, size)
        if size and done >= size and not self.tty:
            self._line(f"  {path}: {human_bytes(size)} done")

    def __call__(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.tty and now - self._last_draw >= _REDRAW:
            self._last_draw = now
            self._draw(now)
        elif not self.tty and now - self._last_plain >= _PLAIN_EVERY:
            self._last_plain = now
            self._line(self._status(now))

    def _status(self, now: float) -> str:
        elapsed = max(now - self.start, 1e-6)
        speed = self.done / elapsed
        eta = (self.total - self.done) / speed if speed > 0 and self.total else float("nan")
        pct = f"{100 * self.done / self.total:5.1f}%" if self.total else "     "
        return (
            f"{self.label}: {pct} {human_bytes(self.done)}/{human_bytes(self.total)} "
            f"{human_bytes(speed)}/s ETA {_eta(eta)}"
        )

    def _draw(self, now: float) -> None:
        width = 24
        frac = min(self.done / self.total, 1.0) if self.total else 0.0
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        active = [p for p, (d, s) in self.files.items() if 0 < d < s]
        current = f" [{active[0]}]" if active else ""
        self.stream.write(f"\r\x1b[K[{bar}] {self._status(now)}{current}")
        self.stream.flush()

    def close(self) -> None:
        now = time.monotonic()
        if self.tty:
            self._draw(now)
            self.stream.write("\n")
        if self.total or self.done:
            elapsed = max(now - self.start, 1e-6)
            self._line(
                f"{self.label}: {human_bytes(self.done)} in {elapsed:.1f} s "
                f"({human_bytes(self.done / elapsed)}/s)"
            )

    def _line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()


class RateProgress:
    """Texts per second for long embedding runs."""

    def __init__(self, total: int, stream: TextIO | None = None, unit: str = "texts") -> None:
        self.total = total
        self.unit = unit
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.done = 0
        self.start = time.monotonic()
        self._last = self.start

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        every = _REDRAW if self.tty else _PLAIN_EVERY
        if now - self._last >= every:
            self._last = now
            self._emit(now, final=False)

    def _emit(self, now: float, *, final: bool) -> None:
        rate = self.done / max(now - self.start, 1e-6)
        text = f"embedded {self.done}/{self.total} {self.unit} ({rate:.0f} {self.unit}/s)"
        if self.tty and not final:
            self.stream.write(f"\r\x1b[K{text}")
        else:
            self.stream.write(("\r\x1b[K" if self.tty else "") + text + "\n")
        self.stream.flush()

    def close(self) -> None:
        self._emit(time.monotonic(), final=True)
