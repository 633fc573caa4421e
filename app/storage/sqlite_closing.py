"""SQLite connections that end their transaction when they are closed, whatever is still open on them.

SQLAlchemy discards a connection whose statement a cancellation interrupted (a
client that went away mid-write) and closes it. ``sqlite3`` closes with
``sqlite3_close_v2``: while a statement is still open on a cursor (and the
interrupted one's cursor lives on in the cancellation's traceback), the
connection stays alive as a "zombie" until that cursor is collected, and with
it the transaction and its write lock: every later write waits out the busy
timeout and fails. Rolling back first releases the lock at once (SQLite lets a
rollback end a transaction with reads pending, www.sqlite.org/lang_transaction.html).
"""

from __future__ import annotations

import contextlib
import sqlite3


class RollbackOnClose(sqlite3.Connection):
    """``sqlite3.connect(..., factory=RollbackOnClose)``: ``close`` rolls back an open transaction first."""

    def close(self) -> None:
        if self.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self.rollback()
        super().close()
