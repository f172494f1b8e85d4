"""The Huey application of the benchmarks: ``SqliteHuey`` on the file named by
``$NBWORK_BENCH_HUEY_DB``, with one no-op task.

The consumer runs it as ``python -m huey.bin.huey_consumer bench.huey_app.huey [-w 2 -k
process]`` (the ``huey_consumer`` program); the benchmark process imports it too and points
it at a database with ``use_db``.
"""

from __future__ import annotations

import os
import tempfile

from huey import SqliteHuey

DB_ENV = "NBWORK_BENCH_HUEY_DB"

# SqliteHuey creates its file when constructed: the default must not land in the checkout.
_DEFAULT_DB = os.path.join(tempfile.gettempdir(), "nbwork-bench-huey.db")
# The same SQLite lock timeout as nbwork's store (60 s): with Huey's default (5 s), on a
# loaded machine a worker's result write hit "database is locked", the result was lost, and
# a throughput round waited for it until its timeout.
LOCK_TIMEOUT = 60.0
huey = SqliteHuey("nbwork-bench", filename=os.environ.get(DB_ENV, _DEFAULT_DB),
                  timeout=LOCK_TIMEOUT)


@huey.task()
def noop(*args: object) -> int:
    """Returns 1, not None: Huey stores no result for None (``store_none=False``), and the
    benchmarks wait for results. In a pipeline the previous result comes as an argument."""
    return 1


def use_db(filename: str) -> None:
    """Point this process's Huey at another sqlite file (the consumer gets it by env)."""
    huey.storage_kwargs["filename"] = filename
    huey.storage = huey.create_storage()
