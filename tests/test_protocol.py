"""The wire protocol: every message type survives encode -> strict decode unchanged, and bad frames are refused.

Values are generated from the field types themselves (read with ``typing``, not through msgspec), so a new
field or a new message type is covered without touching this file; a message type defined in
``turnrl.protocol`` but missing from ``MESSAGES`` fails ``test_every_message_type_is_covered``.
"""

from __future__ import annotations

import inspect
import types
import typing

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from turnrl import protocol
from turnrl.protocol import (
    MAX_FRAME_BYTES,
    EnvCall,
    EnvReply,
    EnvResult,
    GenerateRequest,
    GenerateResult,
    SamplingParams,
    ServiceCall,
    ServiceCallKind,
    ServiceReply,
    ServiceReplyKind,
    Task,
    TensorData,
    Trajectory,
    Turn,
    WorkerHeartbeat,
    WorkerMessage,
    decode,
    encode,
)

CALLS = sorted(ServiceCall.__subclasses__(), key=lambda cls: cls.__name__)
REPLIES = sorted(ServiceReply.__subclasses__(), key=lambda cls: cls.__name__)
MESSAGES = [
    Task,
    SamplingParams,
    GenerateRequest,
    GenerateResult,
    EnvResult,
    Turn,
    Trajectory,
    *CALLS,
    *REPLIES,
    TensorData,
    EnvCall,
    EnvReply,
    WorkerHeartbeat,
]
UNIONS = {
    **dict.fromkeys(CALLS, ServiceCallKind),
    **dict.fromkeys(REPLIES, ServiceReplyKind),
    EnvReply: WorkerMessage,
    WorkerHeartbeat: WorkerMessage,
}
SETTINGS = settings(max_examples=50, deadline=None, database=None)
OMIT = object()


# ---- values from types ---------------------------------------------------------------------------------
def strategy_for(tp) -> st.SearchStrategy:
    """Any value of the annotated type ``tp`` that msgpack can carry (ints in int64/uint64, no NaN)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is None or tp is type(None):
        return st.none()
    if tp is bool:
        return st.booleans()
    if tp is int:
        return st.integers(-(2**63), 2**64 - 1)
    if tp is float:
        return st.floats(allow_nan=False)
    if tp is str:
        return st.text(max_size=12)
    if tp is bytes:
        return st.binary(max_size=24)
    if origin is typing.Literal:
        return st.sampled_from(args)
    if origin in (typing.Union, types.UnionType):
        return st.one_of([strategy_for(arg) for arg in args])
    if origin is list:
        return st.lists(strategy_for(args[0]), max_size=3)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return st.lists(strategy_for(args[0]), max_size=3).map(tuple)
    if origin is dict:
        return st.dictionaries(strategy_for(args[0]), strategy_for(args[1]), max_size=3)
    if inspect.isclass(tp) and issubclass(tp, msgspec.Struct):
        return struct_strategy(tp)
    raise TypeError(f"no strategy for {tp!r}: teach strategy_for this type")


def struct_strategy(cls) -> st.SearchStrategy:
    """Instances of ``cls``: every required field drawn, every defaulted field drawn or left to its default."""
    hints = typing.get_type_hints(cls)
    fields = {}
    for field in msgspec.structs.fields(cls):
        drawn = strategy_for(hints[field.name])
        has_default = field.default is not msgspec.NODEFAULT or field.default_factory is not msgspec.NODEFAULT
        fields[field.name] = st.one_of(st.just(OMIT), drawn) if has_default else drawn
    return st.fixed_dictionaries(fields).map(lambda kw: cls(**{k: v for k, v in kw.items() if v is not OMIT}))


def admitted_kinds(tp) -> set[type]:
    """The Python types of the msgpack values a field of type ``tp`` may hold."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is None or tp is type(None):
        return {type(None)}
    if origin is typing.Literal:
        return {type(arg) for arg in args}
    if origin in (typing.Union, types.UnionType):
        return set().union(*(admitted_kinds(arg) for arg in args))
    if tp is float:
        return {float, int}
    if tp is bytes:
        return {bytes, str}
    if origin in (list, tuple):
        return {list}
    if origin is dict or (inspect.isclass(tp) and issubclass(tp, msgspec.Struct)):
        return {dict}
    return {tp}


def wrong_value(tp):
    """A msgpack value no member of ``tp`` takes."""
    return next(v for v in ("a string", [1, 2], {"k": 1}, 3) if type(v) not in admitted_kinds(tp))


# ---- coverage ------------------------------------------------------------------------------------------
def test_every_message_type_is_covered():
    defined = {
        cls
        for _, cls in inspect.getmembers(protocol, inspect.isclass)
        if issubclass(cls, msgspec.Struct) and cls.__module__ == protocol.__name__
    }
    assert defined - {ServiceCall, ServiceReply} == set(MESSAGES)
    assert len(CALLS) >= 7 and len(REPLIES) >= 4


def test_tagged_unions_name_every_subclass():
    assert set(typing.get_args(ServiceCallKind)) == set(CALLS)
    assert set(typing.get_args(ServiceReplyKind)) == set(REPLIES)
    assert set(typing.get_args(WorkerMessage)) == {EnvReply, WorkerHeartbeat}


# ---- round trips ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", MESSAGES, ids=lambda kind: kind.__name__)
@SETTINGS
@given(data=st.data())
def test_round_trip_is_exact(kind, data):
    value = data.draw(struct_strategy(kind))
    frame = encode(value)
    back = decode(frame, kind)
    assert type(back) is kind and back == value
    assert encode(back) == frame  # == cannot tell True from 1 or 1.0; the bytes can
    if kind in UNIONS:
        through_union = decode(frame, UNIONS[kind])
        assert type(through_union) is kind and through_union == value


# ---- bad frames ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", MESSAGES, ids=lambda kind: kind.__name__)
@SETTINGS
@given(data=st.data())
def test_a_wrong_type_in_a_field_is_refused(kind, data):
    value = data.draw(struct_strategy(kind))
    name = data.draw(st.sampled_from([f.name for f in msgspec.structs.fields(kind)]))
    raw = msgspec.msgpack.decode(encode(value))  # plain maps and lists
    raw[name] = wrong_value(typing.get_type_hints(kind)[name])
    with pytest.raises(msgspec.ValidationError, match=f"`\\$.{name}`"):
        decode(msgspec.msgpack.encode(raw), kind)


@pytest.mark.parametrize("kind", MESSAGES, ids=lambda kind: kind.__name__)
def test_a_missing_required_field_is_refused(kind):
    required = [f for f in msgspec.structs.fields(kind) if f.required]
    if not required:
        assert decode(msgspec.msgpack.encode(_tag_of(kind)), kind) == kind()  # everything has a default
        return
    value = msgspec.msgpack.decode(encode(smallest(kind)))
    del value[required[0].name]
    with pytest.raises(msgspec.ValidationError, match="missing required field"):
        decode(msgspec.msgpack.encode(value), kind)


def smallest(tp):
    """The simplest value of type ``tp``: zeros, empty containers, required struct fields only."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return args[0]
    if origin in (typing.Union, types.UnionType):
        return smallest(args[0])
    if inspect.isclass(tp) and issubclass(tp, msgspec.Struct):
        hints = typing.get_type_hints(tp)
        return tp(**{f.name: smallest(hints[f.name]) for f in msgspec.structs.fields(tp) if f.required})
    scalars = {None: None, type(None): None, bool: False, int: 0, float: 0.0, str: "", bytes: b""}
    return scalars[tp] if tp in scalars else (origin or tp)()


def _tag_of(kind) -> dict:
    info = msgspec.inspect.type_info(kind)
    return {info.tag_field: info.tag} if info.tag_field else {}


def test_tags_pick_the_type_and_unknown_tags_are_refused():
    pause = encode(protocol.PauseCall(request_id="r", mode="abort"))
    assert decode(pause, ServiceCallKind) == protocol.PauseCall(request_id="r", mode="abort")
    with pytest.raises(msgspec.ValidationError):
        decode(pause, protocol.ResumeCall)  # the tag names another type
    frame = msgspec.msgpack.encode({"op": "explode", "request_id": "r"})
    with pytest.raises(msgspec.ValidationError, match="Invalid value 'explode'"):
        decode(frame, ServiceCallKind)
    with pytest.raises(msgspec.ValidationError):
        decode(encode(protocol.ErrorReply(request_id=None, code="internal", message="m")), ServiceCallKind)


def test_not_msgpack_and_oversize_frames_are_refused():
    with pytest.raises(msgspec.DecodeError):
        decode(b"\xc1 not msgpack", Task)
    with pytest.raises(msgspec.DecodeError):
        decode(encode(Task(env="e", item_id=1))[:-1], Task)  # truncated
    with pytest.raises(msgspec.ValidationError, match="exceeds"):
        decode(b"\x00" * (MAX_FRAME_BYTES + 1), Task)
    with pytest.raises(msgspec.ValidationError):
        decode(msgspec.msgpack.encode({"env": "e", "item_id": 1.0}), Task)  # strict: no float for an int


def test_unknown_fields_are_refused():
    accepted = []
    for kind in MESSAGES:
        raw = msgspec.msgpack.decode(encode(smallest(kind)))
        raw["not_a_field"] = 1
        try:
            decode(msgspec.msgpack.encode(raw), kind)
        except msgspec.ValidationError:
            continue
        accepted.append(kind.__name__)
    assert not accepted, f"frames with an unknown field were accepted for {accepted}"
