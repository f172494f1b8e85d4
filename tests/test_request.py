"""Unit tests of ``nbwork.request``: building and validating work requests."""

from __future__ import annotations

import math
import uuid
from datetime import timedelta

import pytest

from nbwork.data import ArrayCreatingInputMerger, Data, InputMerger, OverwritingInputMerger
from nbwork.errors import DataError, InvalidInputError, InvalidRequestError
from nbwork.request import (
    DEFAULT_BACKOFF_DELAY,
    MAX_BACKOFF_DELAY,
    BackoffPolicy,
    Constraints,
    ExistingPeriodicWorkPolicy,
    ExistingWorkPolicy,
    NetworkType,
    OneTimeWorkRequest,
    PeriodicWorkRequest,
    RunAfter,
)
from nbwork.worker import CoroutineWorker, Result, Worker, WorkerParameters
from tests.helpers import stable_id


class EchoWorker(Worker):
    def do_work(self) -> Result:
        return Result.success(self.input_data)


class AsyncWorker(CoroutineWorker):
    async def do_work(self) -> Result:
        return Result.success()


def add(a: int, b: int) -> dict:
    return {"sum": a + b}


async def async_add(a: int, b: int) -> dict:
    return {"sum": a + b}


# --- the worker -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "worker", [EchoWorker, AsyncWorker, add, async_add, lambda: None, print],
    ids=["Worker", "CoroutineWorker", "function", "async", "lambda", "builtin"],
)
def test_worker_classes_and_functions_are_accepted(worker):
    request = OneTimeWorkRequest(worker)
    assert request.worker is worker
    assert request.worker_name.endswith(getattr(worker, "__qualname__", ""))


def test_worker_name_is_module_and_qualified_name():
    assert OneTimeWorkRequest(EchoWorker).worker_name == f"{__name__}.EchoWorker"
    assert OneTimeWorkRequest(add).worker_name == f"{__name__}.add"


def test_a_worker_instance_is_rejected_with_a_hint_to_pass_the_class():
    instance = EchoWorker(WorkerParameters("x"))
    with pytest.raises(InvalidRequestError) as caught:
        OneTimeWorkRequest(instance)  # type: ignore[arg-type]
    message = str(caught.value)
    assert "instance of EchoWorker" in message
    assert "pass the Worker class itself" in message
    assert "OneTimeWorkRequest(EchoWorker)" in message


@pytest.mark.parametrize("worker", [42, "EchoWorker", None, [add]], ids=stable_id)
def test_a_non_callable_worker_is_rejected(worker):
    with pytest.raises(InvalidRequestError) as caught:
        OneTimeWorkRequest(worker)  # type: ignore[arg-type]
    message = str(caught.value)
    assert repr(worker) in message
    assert "neither a Worker subclass nor a function" in message


@pytest.mark.parametrize("worker", [int, dict, type("NotAWorker", (), {})], ids=stable_id)
def test_a_class_that_is_not_a_worker_is_rejected(worker):
    with pytest.raises(InvalidRequestError, match="neither a Worker subclass nor a function"):
        OneTimeWorkRequest(worker)


def test_builder_validates_the_worker_at_once():
    with pytest.raises(InvalidRequestError, match="pass the Worker class itself"):
        OneTimeWorkRequest.Builder(EchoWorker(WorkerParameters("x")))  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="neither"):
        OneTimeWorkRequest.Builder(3)  # type: ignore[arg-type]


# --- defaults, ids ----------------------------------------------------------------------


def test_defaults_match_workmanager():
    request = OneTimeWorkRequest(add)
    assert request.input_data == Data()
    assert request.tags == frozenset()
    assert request.constraints == Constraints()
    assert request.constraints.is_empty
    assert request.initial_delay == 0.0
    assert request.backoff_policy is BackoffPolicy.EXPONENTIAL
    assert request.backoff_delay == DEFAULT_BACKOFF_DELAY == 30.0
    assert request.keep_results_for is None
    assert request.input_merger is OverwritingInputMerger
    assert request.run_after is RunAfter.ALL_SUCCEEDED   # WorkManager's only rule
    assert request.is_periodic is False


def test_from_worker_is_a_default_request():
    request = OneTimeWorkRequest.from_worker(EchoWorker)
    assert request.worker is EchoWorker
    assert request.input_data == Data()


def test_ids_are_uuids_and_unique():
    ids = [OneTimeWorkRequest(add).id for _ in range(200)]
    assert len(set(ids)) == len(ids)
    for value in ids:
        assert isinstance(value, str)
        assert str(uuid.UUID(value)) == value


def test_an_explicit_id_is_normalised():
    value = uuid.uuid4()
    request = OneTimeWorkRequest(add, id=str(value).upper())
    assert request.id == str(value)
    assert OneTimeWorkRequest(add, id=value).id == str(value)  # type: ignore[arg-type]


def test_an_id_that_is_not_a_uuid_is_rejected():
    with pytest.raises(InvalidRequestError, match="id must be a UUID string, not 'job-1'"):
        OneTimeWorkRequest(add, id="job-1")


def test_repr_names_the_worker_and_the_short_id():
    request = OneTimeWorkRequest(add)
    assert repr(request) == f"OneTimeWorkRequest({__name__}.add, id={request.id[:8]})"


# --- input data and tags ----------------------------------------------------------------


def test_input_data_becomes_data():
    request = OneTimeWorkRequest(add, input_data={"a": 1, "b": 2})
    assert isinstance(request.input_data, Data)
    assert request.input_data == {"a": 1, "b": 2}


def test_invalid_input_data_is_rejected_when_the_request_is_built():
    with pytest.raises(DataError, match="'image'"):
        OneTimeWorkRequest(add, input_data={"image": object()})


@pytest.mark.parametrize(
    ("tags", "expected"),
    [(None, set()), ("blur", {"blur"}), (["a", "b"], {"a", "b"}), (("a", "a"), {"a"}),
     ({"x"}, {"x"}), (frozenset({"y"}), {"y"})],
    ids=stable_id,
)
def test_tags(tags, expected):
    request = OneTimeWorkRequest(add, tags=tags)
    assert request.tags == frozenset(expected)
    assert isinstance(request.tags, frozenset)


@pytest.mark.parametrize("bad", [[""], ["ok", 3], [None]], ids=stable_id)
def test_tags_must_be_non_empty_strings(bad):
    with pytest.raises(InvalidRequestError) as caught:
        OneTimeWorkRequest(add, tags=bad)
    assert "tags must be non-empty strings" in str(caught.value)
    assert repr(bad[-1]) in str(caught.value)


# --- delays -----------------------------------------------------------------------------


@pytest.mark.parametrize("argument", ["initial_delay", "backoff_delay", "keep_results_for"])
@pytest.mark.parametrize("value", [-1, -0.001, math.nan, math.inf, timedelta(seconds=-1)],
                         ids=stable_id)
def test_negative_nan_and_infinite_durations_are_rejected(argument, value):
    with pytest.raises(InvalidInputError) as caught:
        OneTimeWorkRequest(add, **{argument: value})
    assert argument in str(caught.value)


@pytest.mark.parametrize("argument", ["initial_delay", "backoff_delay", "keep_results_for"])
@pytest.mark.parametrize("value", ["5", True, [1]], ids=stable_id)
def test_durations_that_are_not_numbers_are_rejected(argument, value):
    with pytest.raises(InvalidInputError) as caught:
        OneTimeWorkRequest(add, **{argument: value})
    message = str(caught.value)
    assert argument in message
    assert "number of seconds or a datetime.timedelta" in message


def test_negative_delay_message_says_what_is_allowed():
    with pytest.raises(InvalidInputError) as caught:
        OneTimeWorkRequest(add, initial_delay=-5)
    assert "initial_delay must be zero or more seconds, not -5" in str(caught.value)
    with pytest.raises(InvalidInputError, match=r"backoff_delay must be a finite number"):
        OneTimeWorkRequest(add, backoff_delay=math.nan)


def test_timedeltas_and_numbers_are_seconds():
    request = OneTimeWorkRequest(add, initial_delay=timedelta(minutes=2), backoff_delay=1,
                                 keep_results_for=timedelta(milliseconds=1500))
    assert request.initial_delay == 120.0
    assert request.backoff_delay == 1.0
    assert request.keep_results_for == 1.5
    assert isinstance(request.backoff_delay, float)


def test_zero_delays_are_allowed():
    request = OneTimeWorkRequest(add, initial_delay=0, backoff_delay=0, keep_results_for=0)
    assert (request.initial_delay, request.backoff_delay, request.keep_results_for) == (0, 0, 0)


def test_backoff_delay_is_capped_at_five_hours():
    assert MAX_BACKOFF_DELAY == 5 * 3600
    assert OneTimeWorkRequest(add, backoff_delay=timedelta(days=1)).backoff_delay == 5 * 3600


# --- policies ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", [BackoffPolicy.LINEAR, "LINEAR", "linear"], ids=stable_id)
def test_backoff_policy_accepts_the_enum_and_its_name(value):
    assert OneTimeWorkRequest(add, backoff_policy=value).backoff_policy is BackoffPolicy.LINEAR


@pytest.mark.parametrize(
    ("parse", "what", "members"),
    [
        (BackoffPolicy.parse, "backoff_policy", ["LINEAR", "EXPONENTIAL"]),
        (ExistingWorkPolicy.parse, "ExistingWorkPolicy",
         ["REPLACE", "KEEP", "APPEND", "APPEND_OR_REPLACE"]),
        (ExistingPeriodicWorkPolicy.parse, "ExistingPeriodicWorkPolicy",
         ["KEEP", "UPDATE", "CANCEL_AND_REENQUEUE"]),
        (NetworkType.parse, "network_type",
         ["NOT_REQUIRED", "CONNECTED", "UNMETERED", "NOT_ROAMING", "METERED",
          "TEMPORARILY_UNMETERED"]),
    ],
    ids=["BackoffPolicy", "ExistingWorkPolicy", "ExistingPeriodicWorkPolicy", "NetworkType"],
)
@pytest.mark.parametrize("bad", ["BOGUS", 3, None, ""], ids=stable_id)
def test_unknown_policy_values_are_rejected_listing_the_valid_ones(parse, what, members, bad):
    with pytest.raises(InvalidInputError) as caught:
        parse(bad)
    message = str(caught.value)
    assert f"{what} {bad!r} is unknown" in message
    enum_name = parse.__self__.__name__
    for member in members:
        assert f"{enum_name}.{member}" in message


def test_unknown_backoff_policy_is_rejected_by_the_request():
    with pytest.raises(InvalidInputError, match="BackoffPolicy.LINEAR, BackoffPolicy.EXPONENTIAL"):
        OneTimeWorkRequest(add, backoff_policy="QUADRATIC")


@pytest.mark.parametrize("policy", list(ExistingWorkPolicy))
def test_existing_work_policy_parses_each_name(policy):
    assert ExistingWorkPolicy.parse(policy.value) is policy
    assert ExistingWorkPolicy.parse(policy.value.lower()) is policy
    assert ExistingWorkPolicy.parse(policy) is policy


@pytest.mark.parametrize("policy", list(ExistingPeriodicWorkPolicy))
def test_existing_periodic_work_policy_parses_each_name(policy):
    assert ExistingPeriodicWorkPolicy.parse(policy.value.lower()) is policy


# --- input merger -----------------------------------------------------------------------


@pytest.mark.parametrize("merger", [OverwritingInputMerger, ArrayCreatingInputMerger])
def test_input_merger_classes_are_accepted(merger):
    assert OneTimeWorkRequest(add, input_merger=merger).input_merger is merger


def test_a_custom_input_merger_subclass_is_accepted():
    class FirstWins(InputMerger):
        @classmethod
        def merge(cls, inputs):
            return inputs[0]

    assert OneTimeWorkRequest(add, input_merger=FirstWins).input_merger is FirstWins


@pytest.mark.parametrize(
    "merger",
    [ArrayCreatingInputMerger(), "ArrayCreatingInputMerger", InputMerger, dict, None],
    ids=stable_id,
)
def test_invalid_input_mergers_are_rejected(merger):
    with pytest.raises(InvalidRequestError) as caught:
        OneTimeWorkRequest(add, input_merger=merger)
    message = str(caught.value)
    assert "input_merger must be OverwritingInputMerger or ArrayCreatingInputMerger" in message
    assert repr(merger) in message


# --- constraints ------------------------------------------------------------------------


def test_constraints_defaults_and_fields():
    none = Constraints()
    assert none.network_type is NetworkType.NOT_REQUIRED
    assert not (none.requires_battery_not_low or none.requires_charging
                or none.requires_device_idle or none.requires_storage_not_low)
    assert none.is_empty
    assert not Constraints(requires_charging=True).is_empty
    assert not Constraints(network_type=NetworkType.CONNECTED).is_empty


def test_constraints_parse_network_type_names():
    assert Constraints(network_type="unmetered").network_type is NetworkType.UNMETERED


def test_unknown_network_type_is_rejected_listing_the_valid_ones():
    with pytest.raises(InvalidInputError) as caught:
        Constraints(network_type="WIFI")  # type: ignore[arg-type]
    message = str(caught.value)
    assert "network_type 'WIFI' is unknown" in message
    assert "NetworkType.UNMETERED" in message and "NetworkType.CONNECTED" in message


@pytest.mark.parametrize(
    "name",
    ["requires_battery_not_low", "requires_charging", "requires_device_idle",
     "requires_storage_not_low"],
)
@pytest.mark.parametrize("value", [1, "yes", None], ids=stable_id)
def test_constraint_flags_must_be_bools(name, value):
    with pytest.raises(InvalidInputError) as caught:
        Constraints(**{name: value})
    assert f"Constraints.{name} must be True or False, not {value!r}" in str(caught.value)


def test_constraints_round_trip_through_a_dict():
    constraints = Constraints(network_type=NetworkType.METERED, requires_charging=True,
                              requires_storage_not_low=True)
    as_dict = constraints.to_dict()
    assert as_dict["network_type"] == "METERED"
    assert Constraints.from_dict(as_dict) == constraints
    assert Constraints.from_dict(None) == Constraints()


def test_constraints_are_frozen():
    with pytest.raises(AttributeError):
        Constraints().requires_charging = True  # type: ignore[misc]


@pytest.mark.parametrize("bad", [{"requires_charging": True}, "charging", 1], ids=stable_id)
def test_request_constraints_must_be_constraints(bad):
    with pytest.raises(InvalidRequestError, match="constraints must be a nbwork.Constraints"):
        OneTimeWorkRequest(add, constraints=bad)


# --- builder ----------------------------------------------------------------------------


def _fields(request: OneTimeWorkRequest) -> dict:
    return {
        name: getattr(request, name)
        for name in ("worker", "worker_name", "input_data", "tags", "constraints",
                     "initial_delay", "backoff_policy", "backoff_delay", "keep_results_for",
                     "input_merger", "run_after", "id", "is_periodic")
    }


def test_builder_makes_the_same_request_as_keyword_arguments():
    id = str(uuid.uuid4())
    constraints = Constraints(requires_charging=True, network_type="CONNECTED")
    built = (
        OneTimeWorkRequest.Builder(EchoWorker)
        .set_input_data({"image_uri": "a.png"})
        .add_tag("blur")
        .add_tag("OUTPUT")
        .set_constraints(constraints)
        .set_initial_delay(timedelta(seconds=5))
        .set_backoff_criteria("linear", 2)
        .set_input_merger(ArrayCreatingInputMerger)
        .keep_results_for(60)
        .set_run_after("all_finished")
        .set_id(id)
        .build()
    )
    direct = OneTimeWorkRequest(
        EchoWorker, input_data={"image_uri": "a.png"}, tags=["blur", "OUTPUT"],
        constraints=constraints, initial_delay=5, backoff_policy=BackoffPolicy.LINEAR,
        backoff_delay=2, input_merger=ArrayCreatingInputMerger, keep_results_for=60, id=id,
        run_after=RunAfter.ALL_FINISHED,
    )
    assert isinstance(built, OneTimeWorkRequest)
    assert _fields(built) == _fields(direct)


def test_builder_defaults_equal_keyword_defaults():
    built = OneTimeWorkRequest.Builder(add).build()
    direct = OneTimeWorkRequest(add)
    expected = _fields(direct)
    actual = _fields(built)
    assert actual.pop("id") != expected.pop("id")  # each request gets its own id
    assert actual == expected


def test_each_build_is_a_new_request_with_a_new_id():
    builder = OneTimeWorkRequest.Builder(add).add_tag("t")
    first, second = builder.build(), builder.build()
    assert first.id != second.id
    assert first.tags == second.tags == frozenset({"t"})


def test_builder_setters_validate_at_once():
    builder = OneTimeWorkRequest.Builder(add)
    with pytest.raises(InvalidInputError, match="initial_delay"):
        builder.set_initial_delay(-1)
    with pytest.raises(InvalidInputError, match="backoff_delay"):
        builder.set_backoff_criteria(BackoffPolicy.LINEAR, -1)
    with pytest.raises(InvalidInputError, match="backoff_policy 'SOMETIMES' is unknown"):
        builder.set_backoff_criteria("SOMETIMES", 1)
    with pytest.raises(InvalidRequestError, match="tags must be non-empty"):
        builder.add_tag("")
    with pytest.raises(InvalidRequestError, match="input_merger"):
        builder.set_input_merger(OverwritingInputMerger())  # type: ignore[arg-type]
    with pytest.raises(DataError):
        builder.set_input_data({"x": object()})
    with pytest.raises(InvalidInputError, match="keep_results_for"):
        builder.keep_results_for(math.nan)
    with pytest.raises(InvalidInputError, match="run_after 'any' is unknown"):
        builder.set_run_after("any")


# --- run_after (nbwork's extension) ------------------------------------------------------


@pytest.mark.parametrize("value", [RunAfter.ALL_FINISHED, "ALL_FINISHED", "all_finished"])
def test_run_after_accepts_the_enum_and_its_name(value):
    assert OneTimeWorkRequest(add, run_after=value).run_after is RunAfter.ALL_FINISHED


@pytest.mark.parametrize("bad", ["all_done", "", None, 1, True])
def test_an_unknown_run_after_is_rejected_listing_the_valid_ones(bad):
    with pytest.raises(InvalidInputError, match="RunAfter.ALL_SUCCEEDED, RunAfter.ALL_FINISHED"):
        OneTimeWorkRequest(add, run_after=bad)


def test_periodic_work_has_no_prerequisites_so_no_run_after():
    with pytest.raises(InvalidRequestError, match="no run_after"):
        PeriodicWorkRequest(add, 60, run_after=RunAfter.ALL_FINISHED)
    assert PeriodicWorkRequest(add, 60).run_after is RunAfter.ALL_SUCCEEDED


class Fails(Worker):
    def do_work(self) -> Result:
        return Result.failure()


def test_the_rule_is_stored_and_shown_and_an_update_cannot_change_it(client):
    """Through the client: the join is stored with its rule (BLOCKED, not doomed, after its
    prerequisite); ``update_work`` that would change the rule is refused, writing nothing."""
    from nbwork import UpdateResult, WorkState
    from nbwork.explain import why_waiting

    first = OneTimeWorkRequest(Fails)
    join = OneTimeWorkRequest(add, run_after="all_finished", input_data={"a": 1, "b": 2})
    client.begin_with(first).then(join).enqueue()
    info = client.get_work_info_by_id(join.id)
    assert (info.state, info.run_after) == (WorkState.BLOCKED, RunAfter.ALL_FINISHED)
    assert why_waiting(info, client.get_work_info_by_id) == (
        f"waits for prerequisite Fails {first.id[:8]} (ENQUEUED) (it runs whatever they end as)")
    with pytest.raises(InvalidRequestError, match="cannot change that"):
        client.update_work(OneTimeWorkRequest(add, id=join.id, input_data={"a": 5, "b": 5}))
    assert client.get_work_info_by_id(join.id).input_data == {"a": 1, "b": 2}
    assert client.update_work(OneTimeWorkRequest(
        add, id=join.id, run_after="all_finished", input_data={"a": 5, "b": 5})) is \
        UpdateResult.APPLIED_IMMEDIATELY


# --- periodic ---------------------------------------------------------------------------


def test_periodic_request_fields():
    request = PeriodicWorkRequest(add, 60, 10, input_data={"a": 1, "b": 2}, tags="sync")
    assert request.repeat_interval == 60.0
    assert request.flex_interval == 10.0
    assert request.is_periodic is True
    assert request.tags == frozenset({"sync"})
    assert request.input_merger is OverwritingInputMerger


def test_periodic_flex_defaults_to_the_interval():
    request = PeriodicWorkRequest(add, repeat_interval=timedelta(minutes=15))
    assert request.repeat_interval == request.flex_interval == 900.0


def test_periodic_flex_may_equal_the_interval_and_the_interval_may_be_one_second():
    request = PeriodicWorkRequest(add, repeat_interval=1, flex_interval=timedelta(seconds=1))
    assert request.repeat_interval == request.flex_interval == 1.0


def test_periodic_flex_longer_than_the_interval_is_rejected():
    with pytest.raises(InvalidRequestError) as caught:
        PeriodicWorkRequest(add, repeat_interval=10, flex_interval=11)
    message = str(caught.value)
    assert "flex_interval must be more than 0 and at most repeat_interval (10 s)" in message
    assert "not 11 s" in message


def test_periodic_zero_flex_is_rejected():
    with pytest.raises(InvalidRequestError, match="flex_interval must be more than 0"):
        PeriodicWorkRequest(add, repeat_interval=10, flex_interval=0)


@pytest.mark.parametrize("interval", [0, 0.5, 0.999], ids=stable_id)
def test_periodic_interval_under_one_second_is_rejected(interval):
    with pytest.raises(InvalidRequestError) as caught:
        PeriodicWorkRequest(add, repeat_interval=interval)
    assert "repeat_interval must be at least 1 s" in str(caught.value)
    assert f"not {interval:g}" in str(caught.value)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [({"repeat_interval": -60}, "repeat_interval"),
     ({"repeat_interval": math.nan}, "repeat_interval"),
     ({"repeat_interval": "60"}, "repeat_interval"),
     ({"repeat_interval": 60, "flex_interval": -1}, "flex_interval"),
     ({"repeat_interval": 60, "flex_interval": math.nan}, "flex_interval")],
    ids=stable_id,
)
def test_periodic_negative_or_invalid_intervals_are_rejected_naming_them(kwargs, argument):
    with pytest.raises(InvalidInputError) as caught:
        PeriodicWorkRequest(add, **kwargs)
    assert argument in str(caught.value)


def test_periodic_request_validates_the_common_arguments_too():
    with pytest.raises(InvalidRequestError, match="pass the Worker class itself"):
        PeriodicWorkRequest(EchoWorker(WorkerParameters("x")), 60)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="initial_delay"):
        PeriodicWorkRequest(add, 60, initial_delay=-1)


@pytest.mark.parametrize("base", ["Worker", "CoroutineWorker"])
def test_the_base_worker_classes_themselves_are_rejected(base):
    import nbwork

    with pytest.raises(InvalidRequestError, match="subclass it and override do_work"):
        OneTimeWorkRequest(getattr(nbwork, base))


def test_periodic_backoff_longer_than_the_interval_is_refused_with_the_fix():
    from nbwork import PeriodicWorkRequest

    with pytest.raises(InvalidRequestError, match="at most 5 s"):
        PeriodicWorkRequest(lambda: None, repeat_interval=5, backoff_delay=60)
    # The default backoff (30 s) shrinks to fit a short period instead of failing.
    assert PeriodicWorkRequest(lambda: None, repeat_interval=5).backoff_delay == 5
    assert PeriodicWorkRequest(lambda: None, repeat_interval=3600).backoff_delay == 30


def test_periodic_work_takes_no_input_merger():
    from nbwork import ArrayCreatingInputMerger, PeriodicWorkRequest

    with pytest.raises(InvalidRequestError, match="no input_merger"):
        PeriodicWorkRequest(lambda: None, repeat_interval=5,
                            input_merger=ArrayCreatingInputMerger)
