"""Unit tests of ``nbwork.data``: the Data type rules, the size limit and the input mergers."""

from __future__ import annotations

import math
import pickle

import pytest

from nbwork.data import (
    MAX_DATA_BYTES,
    ArrayCreatingInputMerger,
    Data,
    InputMerger,
    OverwritingInputMerger,
)
from nbwork.errors import DataError, DataTypeError, InvalidInputError
from tests.helpers import stable_id

# --- value types ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [True, False, 0, -7, 2**62, 1.5, -0.0, math.inf, "", "héllo", b"", b"\x00\xff", None],
    ids=stable_id,
)
def test_every_scalar_type_is_accepted_and_read_back_with_its_type(value):
    data = Data({"k": value})
    assert data["k"] == value
    assert type(data["k"]) is type(value)


@pytest.mark.parametrize(
    "items",
    [[True, False], [1, 2, 3], [1.0, 2.5], ["a", "b"], [b"a", b"b"], [], [None], [1, None, 3],
     [None, "x"]],
    ids=stable_id,
)
def test_homogeneous_lists_are_accepted_and_read_back_as_lists(items):
    data = Data({"k": items})
    assert data["k"] == items
    assert type(data["k"]) is list
    assert [type(i) for i in data["k"]] == [type(i) for i in items]


def test_a_tuple_is_stored_and_read_back_as_a_list():
    data = Data({"k": (1, 2)})
    assert data["k"] == [1, 2]
    assert type(data["k"]) is list
    assert type(data.get("k")) is list
    assert data.to_dict() == {"k": [1, 2]}


def test_bool_is_kept_apart_from_int():
    data = Data({"flag": True, "count": 1})
    assert type(data["flag"]) is bool
    assert type(data["count"]) is int


def test_equality_keeps_bool_int_and_float_apart():
    # Android's Data.equals compares Boolean, Integer and Double as different values.
    assert Data({"a": True}) != Data({"a": 1})
    assert Data({"a": 1}) != Data({"a": 1.0})
    assert Data({"a": [True]}) != Data({"a": [1]})
    assert Data({"a": True}) != {"a": 1}
    assert Data({"a": True}) == Data({"a": True})
    assert Data({"a": [1, 2]}) == Data({"a": [1, 2]})


@pytest.mark.parametrize(
    ("items", "names"),
    [([1, "a"], ("int", "str")), ([True, 1], ("bool", "int")), ([1, 2.0], ("float", "int")),
     ([b"x", "x"], ("bytes", "str"))],
    ids=stable_id,
)
def test_mixed_lists_are_rejected_naming_the_key_and_the_types(items, names):
    with pytest.raises(DataTypeError) as caught:
        Data({"mixed_key": items})
    message = str(caught.value)
    assert "'mixed_key'" in message
    assert "one type" in message
    for name in names:
        assert name in message


@pytest.mark.parametrize(
    ("value", "type_name"),
    [({"a": 1}, "dict"), ({1, 2}, "set"), (object(), "object"), (bytearray(b"x"), "bytearray"),
     (1 + 2j, "complex")],
    ids=lambda v: type(v).__name__ if not isinstance(v, str) else v,
)
def test_unsupported_values_are_rejected_naming_the_key_and_the_type(value, type_name):
    with pytest.raises(DataTypeError) as caught:
        Data({"bad_key": value})
    message = str(caught.value)
    assert "'bad_key'" in message
    assert type_name in message
    assert "file path" in message  # says what to do instead


@pytest.mark.parametrize("item", [[1], {"a": 1}, object()], ids=lambda v: type(v).__name__)
def test_list_items_that_are_not_scalars_are_rejected(item):
    with pytest.raises(DataTypeError) as caught:
        Data({"nested": [item]})
    message = str(caught.value)
    assert "'nested'" in message
    assert "list item" in message
    assert type(item).__name__ in message


def test_subclasses_of_scalar_types_are_rejected():
    class MyInt(int):
        pass

    with pytest.raises(DataTypeError, match="MyInt"):
        Data({"n": MyInt(3)})


@pytest.mark.parametrize("key", [1, 2.5, b"k", None, ("a",)], ids=stable_id)
def test_keys_must_be_str(key):
    with pytest.raises(DataTypeError) as caught:
        Data({key: 1})
    message = str(caught.value)
    assert "keys must be str" in message
    assert type(key).__name__ in message
    assert repr(key) in message


def test_data_errors_are_value_and_type_errors():
    with pytest.raises(ValueError):
        Data({"k": object()})
    with pytest.raises(TypeError):
        Data({"k": object()})
    assert issubclass(DataError, InvalidInputError)


# --- construction -----------------------------------------------------------------------


def test_constructors_agree():
    expected = {"a": 1, "b": [1, 2], "c": None}
    assert Data({"a": 1, "b": [1, 2], "c": None}).to_dict() == expected
    assert Data(a=1, b=[1, 2], c=None).to_dict() == expected
    assert Data([("a", 1), ("b", [1, 2]), ("c", None)]).to_dict() == expected
    assert Data({"a": 1}, b=[1, 2], c=None).to_dict() == expected
    assert Data.from_mapping(expected).to_dict() == expected
    assert Data.from_mapping(None) == Data() == Data.EMPTY
    assert len(Data()) == 0


def test_a_key_named_values_can_be_passed_as_a_keyword():
    assert Data(values=[1, 2]).to_dict() == {"values": [1, 2]}


def test_from_mapping_returns_the_same_data_object():
    data = Data({"a": 1})
    assert Data.from_mapping(data) is data
    copy = Data(data)
    assert copy == data and copy is not data


@pytest.mark.parametrize("values", [5, "abc", 1.5, [1, 2], object()], ids=stable_id)
def test_something_that_is_not_a_mapping_is_rejected(values):
    with pytest.raises(DataTypeError, match="Data needs a mapping of str keys"):
        Data(values)


def test_later_keyword_arguments_override_the_mapping():
    assert Data({"a": 1}, a=2)["a"] == 2


# --- size limit -------------------------------------------------------------------------


def _string_of_size(total: int) -> Data:
    """A Data with one str value sized so that it takes exactly ``total`` bytes serialized."""
    probe = Data({"k": "x" * 1000})
    overhead = probe.size_bytes - 1000
    return Data({"k": "x" * (total - overhead)})


def test_data_of_exactly_the_limit_is_accepted():
    data = _string_of_size(MAX_DATA_BYTES)
    assert data.size_bytes == MAX_DATA_BYTES == 10_240


def test_data_one_byte_over_the_limit_is_rejected_with_its_size_and_the_limit():
    at_limit = _string_of_size(MAX_DATA_BYTES)
    length = len(at_limit["k"]) + 1
    with pytest.raises(DataError) as caught:
        Data({"k": "x" * length})
    message = str(caught.value)
    assert f"{MAX_DATA_BYTES + 1} bytes" in message
    assert f"limit of {MAX_DATA_BYTES} bytes" in message
    assert "files" in message  # says what to do instead


def test_size_counts_every_key():
    # Two different strings: pickle would store one string used twice only once.
    half_x, half_y = "x" * (MAX_DATA_BYTES // 2), "y" * (MAX_DATA_BYTES // 2)
    Data({"a": half_x})
    with pytest.raises(DataError, match="over the limit"):
        Data({"a": half_x, "b": half_y})


def test_size_bytes_grows_with_content():
    assert Data().size_bytes < Data({"a": 1}).size_bytes < Data({"a": "x" * 100}).size_bytes


# --- immutability -----------------------------------------------------------------------


def test_data_cannot_be_changed():
    data = Data({"a": 1})
    with pytest.raises(TypeError):
        data["a"] = 2  # type: ignore[index]
    with pytest.raises(TypeError):
        del data["a"]  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        data.extra = 1  # type: ignore[attr-defined]
    assert not hasattr(data, "update")
    assert data == {"a": 1}


def test_changing_the_source_or_a_read_list_does_not_change_the_data():
    source = {"a": [1, 2]}
    data = Data(source)
    source["a"].append(3)
    source["b"] = 4
    read = data["a"]
    read.append(99)
    data.to_dict()["a"].append(100)
    assert data["a"] == [1, 2]
    assert "b" not in data


def test_data_is_hashable_and_equal_data_hash_equal():
    a = Data({"x": 1, "y": [1, 2]})
    b = Data({"y": [1, 2], "x": 1})
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b}) == 1


# --- mapping behaviour ------------------------------------------------------------------


def test_equality_with_dicts():
    data = Data({"a": 1, "b": [1, 2], "c": None})
    assert data == {"a": 1, "b": [1, 2], "c": None}
    assert {"a": 1, "b": [1, 2], "c": None} == data  # noqa: SIM300 - the reflected comparison
    assert data != {"a": 1, "b": [1, 2]}
    assert data != {"a": 2, "b": [1, 2], "c": None}
    assert data != {"a": 1, "b": (1, 2), "c": None}  # lists read back as lists, not tuples
    assert data != [("a", 1)]
    assert data != "a"


def test_mapping_interface():
    data = Data({"a": 1, "b": [2]})
    assert set(data) == {"a", "b"}
    assert len(data) == 2
    assert "a" in data and "z" not in data
    assert data.get("z") is None
    assert data.get("z", 5) == 5
    assert data.get("b") == [2]
    assert dict(data.items()) == {"a": 1, "b": [2]}
    with pytest.raises(KeyError):
        data["z"]


def test_repr_shows_the_values():
    assert repr(Data({"a": [1]})) == "Data({'a': [1]})"


@pytest.mark.parametrize("protocol", range(2, pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_round_trip(protocol):
    data = Data({"b": True, "i": 3, "f": 0.5, "s": "é", "y": b"\x00", "n": None,
                 "l": [1, None], "e": []})
    back = pickle.loads(pickle.dumps(data, protocol=protocol))
    assert isinstance(back, Data)
    assert back == data
    assert back.to_dict() == data.to_dict()
    assert type(back["l"]) is list
    assert type(back["b"]) is bool
    assert back.size_bytes == data.size_bytes


# --- input mergers ----------------------------------------------------------------------


def test_overwriting_merger_lets_later_inputs_win():
    merged = OverwritingInputMerger.merge([
        Data({"a": 1, "b": "own"}), Data({"b": "first", "c": [1]}), Data({"c": [2], "d": None}),
    ])
    assert merged == {"a": 1, "b": "first", "c": [2], "d": None}
    assert isinstance(merged, Data)


def test_overwriting_merger_of_nothing_is_empty():
    assert OverwritingInputMerger.merge([]) == Data()
    assert ArrayCreatingInputMerger.merge([]) == Data()


def test_overwriting_merger_may_change_the_type_of_a_key():
    assert OverwritingInputMerger.merge([Data({"a": 1}), Data({"a": "x"})]) == {"a": "x"}


def test_array_creating_merger_wraps_scalars_and_concatenates_lists():
    merged = ArrayCreatingInputMerger.merge([
        Data({"uri": "a.png", "n": [1, 2], "only": True}),
        Data({"uri": "b.png", "n": 3}),
        Data({"uri": ["c.png", "d.png"], "n": []}),
    ])
    assert merged == {"uri": ["a.png", "b.png", "c.png", "d.png"], "n": [1, 2, 3],
                      "only": [True]}
    assert all(type(merged[key]) is list for key in merged)


def test_array_creating_merger_keeps_none_items():
    merged = ArrayCreatingInputMerger.merge(
        [Data({"a": None}), Data({"a": 1}), Data({"a": [None]})])
    assert merged == {"a": [None, 1, None]}


@pytest.mark.parametrize(
    ("first", "second", "names"),
    [(1, "x", ("int", "str")), (True, 1, ("bool", "int")), (1, True, ("int", "bool")),
     ([1, 2], 2.0, ("int", "float")), ([True], [0], ("bool", "int")),
     (b"x", "x", ("bytes", "str"))],
    ids=stable_id,
)
def test_array_creating_merger_rejects_mixed_types_naming_key_and_types(first, second, names):
    with pytest.raises(DataError) as caught:
        ArrayCreatingInputMerger.merge([Data({"the_key": first}), Data({"the_key": second})])
    message = str(caught.value)
    assert "'the_key'" in message
    assert "ArrayCreatingInputMerger" in message
    for name in names:
        assert name in message


def test_array_creating_merger_can_exceed_the_size_limit():
    half_x, half_y = "x" * (MAX_DATA_BYTES // 2), "y" * (MAX_DATA_BYTES // 2)
    with pytest.raises(DataError, match="over the limit"):
        ArrayCreatingInputMerger.merge([Data({"a": half_x}), Data({"a": half_y})])


def test_mergers_are_input_mergers():
    assert issubclass(OverwritingInputMerger, InputMerger)
    assert issubclass(ArrayCreatingInputMerger, InputMerger)
