"""``Data``: the small immutable key-value payload of work, and the input mergers.

Data holds what WorkManager's ``Data`` holds: string keys mapped to ``bool``, ``int``,
``float``, ``str``, ``bytes``, ``None`` or a list of one of those types, at most
``MAX_DATA_BYTES`` serialized. Large things (images) travel as paths, not as Data.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Union

from .errors import DataError, DataTypeError

MAX_DATA_BYTES = 10_240
"""The most a ``Data`` may take serialized, as Android's ``Data.MAX_DATA_BYTES``."""

SCALAR_TYPES = (bool, int, float, str, bytes)
DataValue = Union[bool, int, float, str, bytes, None, list]
_PICKLE_PROTOCOL = 4


def _scalar_type(value: object) -> type | None:
    """The Data type of a scalar (``bool`` is kept apart from ``int``), or None if it is none."""
    for kind in SCALAR_TYPES:
        if type(value) is kind:
            return kind
    return None


def _check_value(key: str, value: object) -> object:
    """Return the stored form of ``value`` (lists become tuples) or raise a DataTypeError."""
    if value is None or _scalar_type(value) is not None:
        return value
    if isinstance(value, (list, tuple)):
        item_types = {_scalar_type(item) for item in value if item is not None}
        if None in item_types:
            bad = next(i for i in value if i is not None and _scalar_type(i) is None)
            raise DataTypeError(
                f"Data key {key!r}: list item {bad!r} is a {type(bad).__name__}; list items must "
                "be bool, int, float, str or bytes (or None)"
            )
        if len(item_types) > 1:
            names = ", ".join(sorted(t.__name__ for t in item_types))
            raise DataTypeError(
                f"Data key {key!r}: a list must hold items of one type, this one mixes {names}; "
                "convert them to one type or use separate keys"
            )
        return tuple(value)
    raise DataTypeError(
        f"Data key {key!r}: a {type(value).__name__} cannot be stored in Data; values must be "
        "bool, int, float, str, bytes, None or a list of one of those. Pass large objects as "
        "a file path instead (e.g. save an image and pass its path)"
    )


def _typed(value: object) -> object:
    """``value`` paired with its type (items too), so equal-but-different-type values differ."""
    if isinstance(value, (list, tuple)):
        return (type(value), tuple(_typed(item) for item in value))
    return (type(value), value)


class Data(Mapping[str, Any]):
    """An immutable mapping of ``str`` keys to Data values, at most ``MAX_DATA_BYTES``.

    ``Data({"a": 1})``, ``Data(a=1)`` or ``Data.from_mapping(m)``; lists read back as lists.
    """

    __slots__ = ("_values", "_size")

    def __init__(self, values: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None,
                 /, **kwargs: Any) -> None:
        if isinstance(values, Data) and not kwargs:
            self._values, self._size = values._values, values._size
            return
        raw: dict[str, Any] = {}
        if values is not None:
            if not isinstance(values, (Mapping, list, tuple)):
                raise DataTypeError(
                    f"Data needs a mapping of str keys to values, not a {type(values).__name__}"
                )
            try:
                raw.update(values)
            except (TypeError, ValueError):
                raise DataTypeError(
                    "Data needs a mapping of str keys to values (or a list of (key, value) "
                    f"pairs), not {values!r:.80}"
                ) from None
        raw.update(kwargs)
        checked: dict[str, object] = {}
        for key, value in raw.items():
            if not isinstance(key, str):
                raise DataTypeError(
                    f"Data keys must be str, not {type(key).__name__} ({key!r}); convert the key "
                    "with str()"
                )
            checked[key] = _check_value(key, value)
        size = len(pickle.dumps(checked, protocol=_PICKLE_PROTOCOL))
        if size > MAX_DATA_BYTES:
            raise DataError(
                f"Data is {size} bytes serialized, over the limit of {MAX_DATA_BYTES} bytes; "
                "keep large values (images, arrays, long texts) in files and pass their paths"
            )
        self._values = checked
        self._size = size

    EMPTY: "Data"

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> "Data":
        return values if isinstance(values, Data) else cls(values or {})

    @classmethod
    def _from_store(cls, values: Mapping[str, Any] | None) -> "Data":
        """Data read back from the store, checked when it was written: skips the checks
        (reading a few thousand WorkInfos spent most of its time in them)."""
        if not values:
            return cls.EMPTY
        data = cls.__new__(cls)
        data._values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        data._size = None
        return data

    @property
    def size_bytes(self) -> int:
        """The serialized size in bytes, as counted against ``MAX_DATA_BYTES``."""
        if self._size is None:
            self._size = len(pickle.dumps(self._values, protocol=_PICKLE_PROTOCOL))
        return self._size

    def __getitem__(self, key: str) -> Any:
        value = self._values[key]
        return list(value) if isinstance(value, tuple) else value

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self._values else default

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def __eq__(self, other: object) -> bool:
        # Typed comparison, as Android's Data.equals: True != 1 and 1 != 1.0.
        if isinstance(other, Data):
            mine, theirs = self._values, other._values
        elif isinstance(other, Mapping):
            mine, theirs = self.to_dict(), dict(other)
        else:
            return NotImplemented
        return mine.keys() == theirs.keys() and all(
            _typed(value) == _typed(theirs[key]) for key, value in mine.items()
        )

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._values.items(), key=lambda kv: kv[0])))

    def __repr__(self) -> str:
        return f"Data({self.to_dict()!r})"

    def to_dict(self) -> dict[str, Any]:
        """A plain ``dict`` copy (lists as lists)."""
        if not self._values:  # (most inputs: once per request of an enqueue of thousands)
            return {}
        return {key: self[key] for key in self._values}

    def __reduce__(self) -> tuple:
        return (Data, (self.to_dict(),))


Data.EMPTY = Data()


class InputMerger:
    """Turns a work's own input plus its prerequisites' outputs into the input it runs with."""

    @classmethod
    def merge(cls, inputs: list[Data]) -> Data:  # pragma: no cover - interface
        raise NotImplementedError


class OverwritingInputMerger(InputMerger):
    """Later inputs overwrite earlier keys (WorkManager's default)."""

    @classmethod
    def merge(cls, inputs: list[Data]) -> Data:
        merged: dict[str, Any] = {}
        for data in inputs:
            merged.update(data.to_dict())
        return Data(merged)


class ArrayCreatingInputMerger(InputMerger):
    """Every key becomes a list: scalars are wrapped, lists concatenated.

    Values of different types under one key are an error (``bool`` and ``int`` are apart).
    """

    @classmethod
    def merge(cls, inputs: list[Data]) -> Data:
        merged: dict[str, list] = {}
        kinds: dict[str, type] = {}
        for data in inputs:
            for key in data:
                value = data[key]
                items = value if isinstance(value, list) else [value]
                for item in items:
                    if item is None:
                        continue
                    kind = _scalar_type(item)
                    seen = kinds.setdefault(key, kind)
                    if seen is not kind:
                        raise DataError(
                            f"ArrayCreatingInputMerger cannot merge key {key!r}: it holds both "
                            f"{seen.__name__} and {kind.__name__} values; give them one type"
                        )
                merged.setdefault(key, []).extend(items)
        return Data(merged)


MERGERS: dict[str, type[InputMerger]] = {
    "OverwritingInputMerger": OverwritingInputMerger,
    "ArrayCreatingInputMerger": ArrayCreatingInputMerger,
}
