"""Progress lines for long loops."""

import time


class Progress:
    """Prints `rows=... rows_per_s=...` every few seconds while a long loop runs."""

    def __init__(self, what: str, log, every_s: float = 5.0):
        self.what, self.log, self.every_s = what, log, every_s
        self.start = self.last = time.time()
        self.count = 0

    def tick(self) -> None:
        self.count += 1
        if self.count % 1024 == 0 and time.time() - self.last >= self.every_s:
            self.last = time.time()
            rate = self.count / (self.last - self.start)
            self.log(f"progress={self.what} rows={self.count} rows_per_s={rate:.0f}")
