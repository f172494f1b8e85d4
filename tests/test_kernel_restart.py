"""Work enqueued from a real Jupyter kernel survives a restart of that kernel."""

from __future__ import annotations

import os

import psutil
import pytest

from nbwork import WorkManager, WorkState
from tests.conftest import wait_until
from tests.kernels import run

pytestmark = pytest.mark.slow

ENQUEUE = '''
import os, time
from nbwork import WorkManager, OneTimeWorkRequest, Worker, Result

GO = {go!r}

class WaitForGo(Worker):
    """Defined in the kernel's __main__: it must run after this kernel is gone."""
    def do_work(self):
        while not os.path.exists(GO):
            time.sleep(0.02)
        return Result.success({{"pid": os.getpid(), "word": "from-main"}})

def shout(word: str) -> dict:
    return {{"word": word.upper()}}

wm = WorkManager({store!r})
first = OneTimeWorkRequest(WaitForGo, tags=["kernel"])
second = OneTimeWorkRequest(shout, tags=["kernel"])
wm.begin_with(first).then(second).enqueue()
print(first.id, second.id, os.getpid())
'''

READ = '''
from nbwork import WorkManager
wm = WorkManager({store!r})
info = wm.wait({id!r}, timeout=60)
states = [i.state.value for i in wm.get_work_infos_by_tag("kernel")]
print(info.state.value, info.output_data["word"], states)
'''


def test_chain_defined_in_kernel_main_completes_after_restart(tmp_path, store_path):
    from tests.kernels import kernel

    go = tmp_path / "go"
    with kernel(str(tmp_path)) as (km, kc):
        first, second, kernel_pid = run(kc, ENQUEUE.format(go=str(go), store=store_path)).split()
        wm = WorkManager(store_path)
        wait_until(lambda: wm.get_work_info_by_id(first).state is WorkState.RUNNING,
                   what="the first work to run")
        scheduler = psutil.Process(wait_until(lambda: wm.daemon.pid, what="scheduler pid"))
        # Its own session: the kernel restart kills the kernel's process group, not this.
        assert os.getsid(scheduler.pid) != os.getsid(int(kernel_pid))

        km.restart_kernel(now=True)
        kc.wait_for_ready(timeout=60)
        assert not psutil.pid_exists(int(kernel_pid)) or psutil.Process(
            int(kernel_pid)).status() == psutil.STATUS_ZOMBIE
        assert scheduler.is_running(), "a kernel restart must not kill the scheduler"
        assert wm.get_work_info_by_id(second).state is WorkState.BLOCKED

        go.touch()
        printed = run(kc, READ.format(store=store_path, id=second))
        state, word, states = printed.strip().split(" ", 2)
    assert state == "SUCCEEDED"
    assert word == "FROM-MAIN"
    assert states == "['SUCCEEDED', 'SUCCEEDED']"
    assert wm.get_work_info_by_id(first).run_attempt_count == 1
