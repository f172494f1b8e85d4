"""Reading work back: by id, tag, unique name and state, WorkQuery combinations, observe()
and flow()."""

from __future__ import annotations

import asyncio
import threading

import pytest

from nbwork import (
    ExistingWorkPolicy,
    InvalidInputError,
    OneTimeWorkRequest,
    WorkQuery,
    WorkState,
)
from tests import helpers
from tests.conftest import wait_until

QUEUED = 3600  # an initial delay that keeps work ENQUEUED for the whole test


@pytest.fixture
def population(wm):
    """Queued, blocked and finished work with tags and unique names; returns name -> id."""
    a = OneTimeWorkRequest(helpers.echo, tags=["red", "big"], initial_delay=QUEUED)
    b = OneTimeWorkRequest(helpers.echo, tags=["red"], initial_delay=QUEUED)
    c = OneTimeWorkRequest(helpers.echo, tags=["blue"])
    d = OneTimeWorkRequest(helpers.add, input_data={"a": 1, "b": 1}, tags=["blue", "big"])
    e = OneTimeWorkRequest(helpers.boom, tags=["green"])
    f = OneTimeWorkRequest(helpers.echo, initial_delay=QUEUED)
    wm.enqueue_unique_work("first", ExistingWorkPolicy.REPLACE, [a])
    wm.enqueue_unique_work("second", ExistingWorkPolicy.REPLACE, [b])
    wm.begin_with(f).then(c).enqueue()                                 # c: blocked behind f
    wm.enqueue_unique_work("second", ExistingWorkPolicy.APPEND, [d])   # d: blocked behind b
    wm.enqueue(e)
    wm.wait(e, timeout=30)
    return {name: r.id for name, r in zip("abcdef", (a, b, c, d, e, f), strict=True)}


def _ids(infos) -> set[str]:
    return {i.id for i in infos}


@pytest.mark.slow
def test_population_is_what_the_queries_expect(wm, population):
    p = population
    states = {name: wm.get_work_info_by_id(wid).state for name, wid in p.items()}
    assert states == {"a": WorkState.ENQUEUED, "b": WorkState.ENQUEUED,
                      "c": WorkState.BLOCKED, "d": WorkState.BLOCKED, "e": WorkState.FAILED,
                      "f": WorkState.ENQUEUED}


@pytest.mark.slow
def test_query_by_id_tag_unique_name_and_state(wm, population):
    p = population
    assert wm.get_work_info_by_id(p["a"]).id == p["a"]
    assert wm.get_work_info_by_id("00000000-0000-0000-0000-000000000000") is None
    assert _ids(wm.get_work_infos_by_tag("red")) == {p["a"], p["b"]}
    assert _ids(wm.get_work_infos_by_tag("big")) == {p["a"], p["d"]}
    assert wm.get_work_infos_by_tag("nope") == []
    assert _ids(wm.get_work_infos_for_unique_work("first")) == {p["a"]}
    assert _ids(wm.get_work_infos_for_unique_work("second")) == {p["b"], p["d"]}
    assert _ids(wm.get_work_infos(WorkQuery(states=[WorkState.BLOCKED]))) == {p["c"], p["d"]}
    assert _ids(wm.get_work_infos(WorkQuery.from_states(WorkState.FAILED))) == {p["e"]}
    assert _ids(wm.get_work_infos()) == set(p.values())
    assert _ids(wm.get_work_infos(WorkQuery())) == set(p.values())


@pytest.mark.slow
def test_work_query_is_and_across_fields_and_or_within_a_field(wm, population):
    p = population

    def query(**fields):
        return _ids(wm.get_work_infos(WorkQuery(**fields)))

    # OR within one field
    assert query(tags=["red", "green"]) == {p["a"], p["b"], p["e"]}
    assert query(states=["ENQUEUED", "FAILED"]) == {p["a"], p["b"], p["e"], p["f"]}
    assert query(unique_work_names=["first", "second"]) == {p["a"], p["b"], p["d"]}
    assert query(ids=[p["a"], p["c"]]) == {p["a"], p["c"]}
    # AND across fields
    assert query(tags=["big"], states=[WorkState.BLOCKED]) == {p["d"]}
    assert query(tags=["red"], unique_work_names=["second"]) == {p["b"]}
    assert query(ids=[p["a"], p["b"], p["c"]], tags=["red"], states=["ENQUEUED"],
                 unique_work_names=["first"]) == {p["a"]}
    assert query(ids=[p["c"]], tags=["red"]) == set()
    assert query(unique_work_names=["first"], states=[WorkState.FAILED]) == set()
    assert query(tags=["blue", "big"], states=["BLOCKED", "ENQUEUED"],
                 unique_work_names=["second"]) == {p["d"]}


@pytest.mark.slow
def test_results_are_sorted_oldest_first_without_duplicates(wm, population):
    infos = wm.get_work_infos(WorkQuery(tags=["red", "big"]))
    assert len(infos) == len(_ids(infos)) == 3
    times = [i.enqueue_time for i in infos]
    assert times == sorted(times)


@pytest.mark.slow
def test_the_works_of_one_enqueue_come_back_in_the_order_they_were_enqueued(wm):
    """A chain reads first step to last, and parallel requests in the order given, not in
    the (random) order of their ids."""
    steps = [[OneTimeWorkRequest(helpers.echo, initial_delay=QUEUED)]] + [
        [OneTimeWorkRequest(helpers.echo) for _ in range(3)] for _ in range(3)]
    chain = wm.begin_with(steps[0])
    for step in steps[1:]:
        chain = chain.then(step)
    chain.enqueue()
    expected = [r.id for step in steps for r in step]
    assert [i.id for i in wm.get_work_infos()] == expected
    assert [i.id for i in wm.get_work_infos(WorkQuery(ids=expected[::-1]))] == expected
    assert [i.id for i in chain.get_work_infos()] == expected


def test_wait_on_an_unknown_id_says_so(wm):
    with pytest.raises(InvalidInputError, match="no work with id"):
        wm.wait("00000000-0000-0000-0000-000000000000", timeout=1)


class Recorder:
    """An observer callback that keeps what it was given."""

    def __init__(self) -> None:
        self.calls: list[list] = []
        self.lock = threading.Lock()

    def __call__(self, infos) -> None:
        with self.lock:
            self.calls.append(infos)

    def states(self) -> list[dict]:
        with self.lock:
            return [{i.id: i.state for i in infos} for infos in self.calls]


def _sentinel_sees(wm, request) -> None:
    """Wait until a fresh observer, added now, is *called by the watcher thread* with
    ``request`` finished. The watcher calls its listeners in order in each round, so any
    observer registered before this one would have been called in that round too."""
    sentinel = Recorder()
    handle = wm.observe(WorkQuery(tags=["watched"]), sentinel)
    wm.enqueue(request)
    wait_until(lambda: any(s.get(request.id, WorkState.ENQUEUED).is_finished
                           for s in sentinel.states()), what="the sentinel observer")
    handle.cancel()


@pytest.mark.slow
def test_observe_delivers_the_current_infos_then_each_change_until_cancelled(wm):
    queued = OneTimeWorkRequest(helpers.echo, tags=["watched"], initial_delay=QUEUED)
    wm.enqueue(queued)
    recorder = Recorder()
    handle = wm.observe(WorkQuery(tags=["watched"]), recorder)
    assert recorder.states() == [{queued.id: WorkState.ENQUEUED}]   # at once, in this call
    wm.cancel_work_by_id(queued.id)
    wait_until(lambda: recorder.states()[-1] == {queued.id: WorkState.CANCELLED},
               what="the observer to see the cancel")
    handle.cancel()
    count = len(recorder.states())
    _sentinel_sees(wm, OneTimeWorkRequest(helpers.echo, tags=["watched"]))
    assert len(recorder.states()) == count                         # nothing after cancel()
    assert recorder.states() == [{queued.id: WorkState.ENQUEUED},
                                 {queued.id: WorkState.CANCELLED}]


@pytest.mark.slow
def test_observe_follows_a_running_chain_to_the_end(wm, tmp_path):
    gate = tmp_path / "gate"
    first = OneTimeWorkRequest(helpers.wait_for_gate, input_data={"gate": str(gate)})
    second = OneTimeWorkRequest(helpers.echo)
    chain = wm.begin_with(first).then(second)
    chain.enqueue()
    seen = []
    done = threading.Event()

    def callback(infos):
        seen.append({i.id: i.state for i in infos})
        if all(i.state is WorkState.SUCCEEDED for i in infos):
            done.set()

    handle = wm.observe(chain, callback)
    wait_until(lambda: seen and seen[-1][first.id] is WorkState.RUNNING, what="RUNNING")
    assert seen[-1][second.id] is WorkState.BLOCKED
    helpers.touch(gate)
    assert done.wait(30)
    handle.cancel()
    # Every delivered snapshot differs from the one before it.
    assert all(x != y for x, y in zip(seen, seen[1:], strict=False))


@pytest.mark.slow
def test_no_callback_starts_after_cancel_returns_even_mid_round(wm):
    """The watcher calls listeners one after another: cancelling the second while the
    first is being called must keep the second from being called in that same round."""
    in_first = threading.Event()
    release = threading.Event()

    def first(infos):
        if infos:
            in_first.set()
            release.wait(30)

    second = Recorder()
    first_handle = wm.observe(WorkQuery(tags=["watched"]), first)
    second_handle = wm.observe(WorkQuery(tags=["watched"]), second)
    assert second.states() == [{}]
    wm.enqueue(OneTimeWorkRequest(helpers.echo, tags=["watched"], initial_delay=QUEUED))
    assert in_first.wait(30)               # the watcher is inside the first callback
    second_handle.cancel()
    release.set()
    first_handle.cancel()
    _sentinel_sees(wm, OneTimeWorkRequest(helpers.echo, tags=["watched"]))
    assert second.states() == [{}]


@pytest.mark.slow
def test_an_observer_can_cancel_itself_from_its_callback(wm):
    request = OneTimeWorkRequest(helpers.add, input_data={"a": 1, "b": 2}, tags=["watched"])
    calls = []
    handles = []

    def callback(infos):
        calls.append(infos)
        if infos and infos[0].state is WorkState.SUCCEEDED:
            handles[0].cancel()          # on the watcher thread, inside a delivery

    handles.append(wm.observe(WorkQuery(tags=["watched"]), callback))
    assert calls == [[]]                 # delivered at once: nothing is tagged yet
    wm.enqueue(request)
    wait_until(lambda: calls[-1] and calls[-1][0].state is WorkState.SUCCEEDED,
               what="SUCCEEDED")
    count = len(calls)
    _sentinel_sees(wm, OneTimeWorkRequest(helpers.echo, tags=["watched"]))
    assert len(calls) == count


@pytest.mark.slow
def test_flow_yields_infos_until_the_work_succeeded(wm):
    request = OneTimeWorkRequest(helpers.add, input_data={"a": 20, "b": 22})

    async def follow():
        states = []
        wm.enqueue(request)
        async for infos in wm.flow(request.id):
            states.append(infos[0].state)
            if infos[0].state.is_finished:
                return states, infos[0]
        raise AssertionError("the flow ended by itself")

    states, info = asyncio.run(asyncio.wait_for(follow(), 30))
    assert states[-1] is WorkState.SUCCEEDED
    assert info.output_data == {"sum": 42}
    assert len(states) == len(set(states))          # each state reported once at most
