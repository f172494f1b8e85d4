"""The store: the only code that touches diskcache and SQLite.

Layout of the database (``db/`` in the store directory, see ``_layout`` for the rest of
it; keys are strings so SQLite indexes them natively):

    meta              {"schema": 3, "created": ...} (an older schema is upgraded when
                      the store is opened: see ``migration``)
    w:<id>            the WorkSpec record of a work (a tuple: see ``_spec.RECORD_LAYOUT``;
                      a dict in stores written before schema 3)
    code:<sha256>     the serialized worker (cloudpickle), shared by every work that runs it
    i:s:<STATE>:<h>   {id: sort key} of the works in an unfinished state (ENQUEUED: next
                      run time) whose id starts with hex digit <h>: 16 shards, so a
                      transaction rewrites only the shards of the works it touches
    i:f:<STATE>:<t>:<id>  a finished work (SUCCEEDED, FAILED, CANCELLED), one row each, its
                      value its sort key (enqueue time), <t> that time as fixed-width text:
                      finishing a work writes one small row however many finished works
                      there are, and a state is listed by one range query (see ``rows``)
    i:x:<t>:<id>      a finished work whose retention ends at <t>: the expired-work prune
                      reads only the rows up to now
    i:t:<tag>         {id: enqueue time} of the works with a tag
    i:u:<name>        [id, ...] of the works under a unique name, in enqueue order
    i:c:<sha256>      how many works use a code blob (it is deleted at zero)
    counter           bumped by every committed transaction: readers notice changes cheaply
    counter:s         bumped by every transaction that moves a work between state indexes
                      (not by progress reports): readers of the state indexes re-read them
                      only when it moves
    lease             the running scheduler: pid, token, heartbeat (for status; the lock
                      file is what makes it exclusive)
    device            the simulated device state of the TestDriver, when set
    config            settings kept with the store: {"executor": "local" | "dask://HOST:PORT",
                      "durability": "process" | "power"}; the durability is also written
                      to diskcache's own Settings table (sqlite_synchronous), which every
                      new connection of every process applies
    journal, j:<id>   when ``journal`` is set (``Store.enable_journal``, for fault-injection
                      tests and debugging), every state change of a work is appended to
                      ``j:<id>`` as [from, to, run_attempt_count] in the same transaction

The parts, bottom up: ``faults`` (the one translation of low-level errors into
``StoreError``), ``codec`` (keys; decoding records, indexes and values), ``rows`` (the
rows of finished works and the expiry index), ``migration`` (upgrading an older store
when it is opened), ``transaction``
(one atomic read-modify-write), ``reads`` (many records in one statement; blobs in
pieces), ``opening`` (creating, opening and refusing a database) and ``store`` (``Store``,
whose every public method is guarded by ``faults``).
"""

from .codec import SHARDS, Unreadable
from .opening import STORE_SCHEMA
from .store import DEFAULT_DURABILITY, DURABILITY_LEVELS, Store, check_durability
from .transaction import CODE_CHUNK, Transaction

__all__ = ["CODE_CHUNK", "DEFAULT_DURABILITY", "DURABILITY_LEVELS", "SHARDS", "STORE_SCHEMA",
           "Store", "Transaction", "Unreadable", "check_durability"]
