"""A text file in memory that counts the lines read from it: tests that a reader streams (takes
about a batch, not the whole file) and reads each line a bounded number of times."""

from __future__ import annotations

import io


class CountingText(io.StringIO):
    def __init__(self, text: str) -> None:
        super().__init__(text, newline="")
        self.lines_read = 0

    def __next__(self) -> str:
        self.lines_read += 1
        return super().__next__()

    def readline(self, size: int | None = -1, /) -> str:
        line = super().readline(size)
        self.lines_read += bool(line)
        return line
