"""``@record`` (records.py) keeps the dataclass semantics the project's records rely on."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from typing import Optional

import pytest

from libvirt_txmode.model import Domain, HostCapabilities, Nic, Summary
from libvirt_txmode.records import field, fields, record, replace


@record(frozen=True)
class Point:
    """A frozen record with a default and a factory."""

    x: int
    y: Optional[str] = None
    tags: tuple[str, ...] = field(default_factory=tuple)


@record()
class Box:
    items: list[int] = field(default_factory=list)
    label: str = ""


def test_construction_by_position_and_keyword_with_defaults_and_factories() -> None:
    assert Point(1) == Point(x=1, y=None, tags=())
    assert Point(1, "a", ("t",)).tags == ("t",)
    assert Box().items is not Box().items  # a fresh list each time, as default_factory
    with pytest.raises(TypeError):
        Point()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Point(1, z=2)  # type: ignore[call-arg]
    assert Point.__match_args__ == ("x", "y", "tags")  # type: ignore[attr-defined]
    assert "tags" not in Point.__dict__ and Point.y is None  # as dataclasses leave them


def test_equality_and_hashing() -> None:
    assert Point(1, "a") == Point(1, "a") and Point(1, "a") != Point(1, "b")
    assert hash(Point(1, "a")) == hash(Point(1, "a"))
    assert len({Point(1), Point(1), Point(2)}) == 2
    assert Point(1) != (1, None, ())  # another class is never equal
    assert Box() == Box() and Box.__hash__ is None  # mutable and comparable: unhashable
    assert Nic(0, 3, "network") == Nic(index=0, line=3, type="network")
    assert {Domain("vm", "f", 1): 1}[Domain("vm", "f", 1)] == 1


def test_frozen_records_refuse_assignment_as_dataclasses_do() -> None:
    point = Point(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        point.x = 2  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del point.y  # type: ignore[misc]
    box = Box()
    box.label = "changed"
    assert box.label == "changed"


def test_repr_names_class_and_fields() -> None:
    assert repr(Point(1, "a")) == "Point(x=1, y='a', tags=())"
    assert repr(Summary(files=1)) == ("Summary(files=1, domains=0, nics=0, errors=0, warnings=0)")


def test_replace_fields_and_the_dataclasses_functions() -> None:
    point = Point(1, "a")
    assert replace(point, y="b") == Point(1, "b")
    assert fields(Point) == fields(point) == ("x", "y", "tags")
    # Code outside the hook may still use dataclasses' own functions on a record.
    assert dataclasses.is_dataclass(point)
    assert [f.name for f in dataclasses.fields(Point)] == ["x", "y", "tags"]
    assert dataclasses.replace(point, x=5) == Point(5, "a")
    assert dataclasses.asdict(point) == {"x": 1, "y": "a", "tags": ()}
    host = HostCapabilities("h")
    assert dataclasses.replace(host, name="other").name == "other"


def test_copy_and_pickle() -> None:
    # parallel.py sends records between processes.
    nic = Nic(0, 3, "network", mac="52:54:00:00:00:01")
    assert pickle.loads(pickle.dumps(nic)) == nic  # noqa: S301 - our own bytes
    assert copy.deepcopy(Point(1, tags=("a",))) == Point(1, tags=("a",))


def test_a_required_field_after_a_default_is_refused() -> None:
    with pytest.raises(TypeError, match="non-default argument 'b'"):

        @record()
        class Bad:
            a: int = 0
            b: int


def test_the_generic_and_the_compiled_init_agree() -> None:
    # A class's first constructions take a generic __init__, later ones a compiled one
    # (records.py): both must bind arguments, apply defaults and refuse bad calls alike.
    @record(frozen=True)
    class Pair:
        a: int
        b: str = "b"
        c: list[int] = field(default_factory=list)

    results = []
    for _ in range(40):
        made = (Pair(1), Pair(1, "x"), Pair(a=2, c=[3]), Pair(1, b="y"))
        results.append((made, [vars(p) for p in made], [p.c is not made[0].c for p in made[1:]]))
        for bad_args, bad_kwargs in (
            ((), {}),
            ((1, "x", [], 4), {}),
            ((1,), {"a": 2}),
            ((1,), {"z": 0}),
        ):
            with pytest.raises(TypeError):
                Pair(*bad_args, **bad_kwargs)
    assert all(result == results[0] for result in results)
    assert results[0][0] == (
        Pair(1, "b", []),
        Pair(1, "x", []),
        Pair(2, "b", [3]),
        Pair(1, "y", []),
    )
