"""How the project's records are made: ``dataclasses``, with ``slots=True`` where Python has it.

``SLOTS`` is the one place that knows the version (3.10 added the option; the package supports
3.9): ``@dataclass(frozen=True, **SLOTS)``. ``record``, ``fields`` and ``replace`` are the names
the engine's modules import until they use dataclasses directly.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import field, replace
from typing import TYPE_CHECKING, Any, Callable, TypeVar

if TYPE_CHECKING:
    from typing import ClassVar

    from typing_extensions import dataclass_transform  # typing's own from 3.11 on

    class DataclassLike:
        """For mypy, a base that says dataclasses.fields/replace accept the record: mypy gives a
        ``dataclass_transform`` class no ``__dataclass_fields__`` of its own."""

        __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

else:
    DataclassLike = object

    def dataclass_transform(**_options: object) -> object:
        return lambda function: function


__all__ = ["SLOTS", "DataclassLike", "field", "fields", "record", "replace"]

SLOTS: dict[str, bool] = {"slots": True} if sys.version_info >= (3, 10) else {}
T = TypeVar("T")


@dataclass_transform(field_specifiers=(field,))
def record(*, frozen: bool = False) -> Callable[[type[T]], type[T]]:
    """``dataclasses.dataclass(frozen=frozen)`` with ``SLOTS``."""

    def make(cls: type[T]) -> type[T]:
        return dataclasses.dataclass(frozen=frozen, **SLOTS)(cls)

    return make


def fields(cls_or_record: Any) -> tuple[str, ...]:
    """The field names, in order."""
    return tuple(f.name for f in dataclasses.fields(cls_or_record))
