"""Hold a thread inside one of libvmm's locks, for the tests that check who waits for it.

libvmm logs some guest errors with the lock of the device they concern held (vmm__guest_error reaches the
`vmmpy` logger from inside the access), so a log handler that blocks on that record keeps the logging thread
inside the lock for as long as the test needs."""

from __future__ import annotations

import contextlib
import logging
import threading


@contextlib.contextmanager
def a_thread_inside(pattern: str, target, *args):
    """Run target(*args) in a thread until it logs a record containing `pattern` (under the lock), and keep it
    there for the body of the with block; then let it go and join it."""
    inside, leave = threading.Event(), threading.Event()

    class Block(logging.Handler):
        def emit(self, record):
            if pattern in record.getMessage():
                inside.set()
                leave.wait(10)

    logger = logging.getLogger("vmmpy")
    handler, level = Block(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    holder = threading.Thread(target=target, args=args)
    try:
        holder.start()
        assert inside.wait(10), f"no log record {pattern!r} came"
        yield
    finally:
        leave.set()
        logger.removeHandler(handler)
        logger.setLevel(level)
        holder.join(10)
