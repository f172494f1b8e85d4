"""Imported by the local executor's forkserver (a preload module): makes the forkserver a
child subreaper, so that processes orphaned by a worker process that died become its
children, where the executor finds and kills them (see ``process_groups.kill_orphans_of``).

It acts only in the process the executor named (``NBWORK_REAPER_PARENT``, set only while
the executor starts a worker process, is the executor's pid, and the forkserver is its
child): importing it anywhere else does nothing.
"""

from __future__ import annotations

import os
import warnings

from .process_groups import become_subreaper

REAPER_PARENT = "NBWORK_REAPER_PARENT"

if os.environ.get(REAPER_PARENT) == str(os.getppid()):
    del os.environ[REAPER_PARENT]  # not for the worker processes forked from here
    become_subreaper()
    # The forkserver reaps the orphans it adopts, and warns of each as an unexpected pid.
    warnings.filterwarnings("ignore", message="forkserver: waitpid returned unexpected pid")
