"""The env contract, written once and run over every registered family (``env_names()``).

Each rule below is one the code promises (``envs/base.py``, ``envs/registry.py``, ``envs/README.md``, the
HTTP server's error mapping):

- registry: the spec's family names the env the factory builds; a non-empty system prompt; a turn cap >= 1;
  ``category(item)`` a non-empty name, a pure function of the id.
- splits: fixed train/test ids, both non-empty, disjoint, non-negative ints; every boundary id is playable;
  an unknown split name is a ``ValueError``.
- determinism: the same item id gives the same first observation on the same env after other episodes, on a
  fresh env, and in another process (other ``PYTHONHASHSEED``, resets in another order, its own local site).
- steps: ``step`` answers an ``EnvResult`` whose ``info`` carries ``success`` (bool), ``score`` (number) and
  ``valid`` (bool); an accepted reply has ``valid = True``.
- bad replies: never raise; ``valid = False``, no reward, not done, an observation saying what was wrong; they
  change nothing (the next accepted reply answers exactly as without them, the listed actions stay the same).
- valid actions: ``valid_actions()`` is None (and ``valid_actions_sync`` raises ``NotImplementedError``) or
  a list of non-empty strings, the same when asked twice, whose first and last are accepted.
- ``BlockingEnv``: the async methods answer exactly as the sync ones.
- a negative item id is a ``ValueError`` (the HTTP server's 400); ``close`` is safe twice, before or after
  an episode.

Every check is run against a toy env broken in the one way that check is about, and must fail there; the
same toy unbroken passes all of them.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from turnrl.envs import env_names, get_env_spec
from turnrl.envs.base import BlockingEnv, Env, parse_action
from turnrl.envs.registry import EnvSpec, TaskSplits
from turnrl.protocol import EnvResult

ROOT = Path(__file__).resolve().parents[2]
FAMILIES = env_names()

# replies no family accepts: empty, no marker or tag, an unknown command, an overlong unknown command
INVALID_REPLIES = ("", "I am not sure what to do.", "Action: fly to the moon", "Action: " + "jump " * 300)
# a reply each family that cannot list its actions accepts after any reset
PROBE_REPLIES = {"search": "<search>capital city</search>"}
LOOPBACK_URL = re.compile(r"https?://(?:127\.0\.0\.1|localhost):\d+")


# ---- subjects: how each family is built cheaply --------------------------------------------------------
_WEB_POOL: list = []


def web_pool():
    """One small browser pool for this module's web envs (in this process)."""
    if not _WEB_POOL:
        from turnrl.envs.web.browser import BrowserPool

        _WEB_POOL.append(BrowserPool(max_contexts=6))
    return _WEB_POOL[0]


FAMILY_OPTIONS: dict[str, Callable[[], dict]] = {
    "sciworld": lambda: {"heap_mb": 256},  # one small JVM per env, started at its first reset
    "web": lambda: {"pool": web_pool()},
}


@dataclass
class Subject:
    """One env family under test: its spec and how to build its envs."""

    name: str
    spec: EnvSpec
    options: Callable[[], dict] = dict
    made: list[Env] = field(default_factory=list)
    _shared: Env | None = None

    def make(self) -> Env:
        env = self.spec.factory(**self.options())
        self.made.append(env)
        return env

    def shared(self) -> Env:
        """An env reused by the checks that do not need a fresh one (SciWorld's JVM takes seconds to start)."""
        if self._shared is None:
            self._shared = self.make()
        return self._shared

    def items(self) -> list[int]:
        """The first test and train ids: the items most checks play."""
        splits = self.spec.splits
        return list(dict.fromkeys([splits.test[0], splits.train[0]]))

    def boundary_items(self) -> list[int]:
        """The first and last id of each split."""
        splits = self.spec.splits
        return list(dict.fromkeys([splits.test[0], splits.train[0], splits.test[-1], splits.train[-1]]))

    async def close_all(self) -> None:
        for env in self.made:
            await env.close()


def build_subject(name: str) -> Subject:
    if name in TOYS:
        return Subject(name, TOYS[name])
    return Subject(name, get_env_spec(name), FAMILY_OPTIONS.get(name, dict))


# ---- helpers -------------------------------------------------------------------------------------------
async def raises(exception: type[BaseException], awaitable) -> bool:
    try:
        await awaitable
    except exception:
        return True
    return False


def check_result_shape(result, what: str) -> None:
    assert isinstance(result, EnvResult), f"{what}: step returned {type(result).__name__}, not EnvResult"
    assert isinstance(result.observation, str), what
    assert isinstance(result.reward, (int, float)) and not isinstance(result.reward, bool), what
    assert isinstance(result.done, bool), what
    for key, kind in (("success", bool), ("score", (int, float)), ("valid", bool)):
        assert key in result.info, f"{what}: info lacks {key!r} ({sorted(result.info)})"
        assert isinstance(result.info[key], kind), f"{what}: info[{key!r}] = {result.info[key]!r}"


async def valid_reply(subject: Subject, env: Env) -> str:
    """A reply ``env`` accepts now: its first listed action, or the family's probe reply."""
    listed = await env.valid_actions()
    if listed:
        return env.format_reply(listed[0])
    assert subject.name in PROBE_REPLIES, f"{subject.name} lists no actions: add a reply it accepts to PROBE_REPLIES"
    return PROBE_REPLIES[subject.name]


def normalise(text: str) -> str:
    """The first observation up to the address of a site served on loopback (each process serves its own)."""
    return LOOPBACK_URL.sub("http://SITE", text)


def split_fingerprint(ids) -> list[int]:
    return [len(ids), min(ids), max(ids), sum(ids)]


async def describe(names: list[str]) -> dict:
    """What another process must agree on: first observations (reset in reverse order) and the splits."""
    out = {}
    for name in names:
        subject = build_subject(name)
        env = subject.make()
        try:
            firsts = {item: normalise(await env.reset(item)) for item in reversed(subject.boundary_items())}
        finally:
            await subject.close_all()
        splits = subject.spec.splits
        out[name] = {
            "first": [firsts[item] for item in subject.boundary_items()],
            "splits": [split_fingerprint(splits.train), split_fingerprint(splits.test)],
        }
    return out


def describe_main(names: list[str]) -> None:
    """Entry point of the other process."""
    print(json.dumps(asyncio.run(describe(names))))
    for pool in _WEB_POOL:
        pool.close()


_OTHER: dict[tuple[str, ...], subprocess.Popen | dict] = {}


def start_other_process(names: tuple[str, ...]) -> None:
    """Start computing ``describe(names)`` in a fresh interpreter with another hash seed (in the background)."""
    if names not in _OTHER:
        seed = "124" if os.environ.get("PYTHONHASHSEED") == "123" else "123"
        code = f"from tests.envs.test_env_contract import describe_main; describe_main({list(names)!r})"
        _OTHER[names] = subprocess.Popen(
            [sys.executable, "-c", code],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )


def other_process(names: tuple[str, ...]) -> dict:
    start_other_process(names)
    process = _OTHER[names]
    if isinstance(process, subprocess.Popen):
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, f"the other process failed:\n{err[-3000:]}"
        _OTHER[names] = json.loads(out.strip().splitlines()[-1])
    return _OTHER[names]


# ---- the checks ----------------------------------------------------------------------------------------
async def check_registry_entry(subject: Subject) -> None:
    spec = subject.spec
    assert spec.family == subject.name
    env = subject.make()
    assert isinstance(env, Env)
    assert env.family == spec.family, f"the factory of {spec.family!r} builds an env of family {env.family!r}"
    assert isinstance(env.system_prompt, str) and env.system_prompt.strip(), "empty system prompt"
    assert isinstance(spec.default_turn_cap, int) and spec.default_turn_cap >= 1
    for item in subject.boundary_items():
        category = spec.category(item)
        assert isinstance(category, str) and category, (item, category)
        assert spec.category(item) == category
    await env.close()


async def check_splits(subject: Subject) -> None:
    splits = subject.spec.splits
    for split in ("train", "test"):
        ids = splits.get(split)
        assert ids is getattr(splits, split)
        assert len(ids) > 0, f"empty {split} split"
        assert all(isinstance(i, int) and i >= 0 for i in ids), f"{split} ids must be non-negative ints"
    small, big = sorted((splits.train, splits.test), key=len)
    shared = set(small).intersection(big)
    assert not shared, f"{len(shared)} ids are in both splits, e.g. {min(shared)}"
    try:
        splits.get("validation")
    except ValueError:
        pass
    else:
        raise AssertionError("an unknown split name must raise ValueError")
    env = subject.shared()
    for item in subject.boundary_items():
        first = await env.reset(item)
        assert isinstance(first, str) and first, item


async def check_reset_is_deterministic(subject: Subject) -> None:
    env, fresh = subject.shared(), subject.make()
    try:
        items = subject.items()
        firsts = {}
        for item in items:
            firsts[item] = await env.reset(item)
            await env.step(await valid_reply(subject, env))  # the world moves on
        for item in reversed(items):
            assert await env.reset(item) == firsts[item], f"item {item}: another first observation on reset"
            assert await fresh.reset(item) == firsts[item], f"item {item}: another first observation on a new env"
    finally:
        await fresh.close()


async def check_same_in_another_process(subject: Subject) -> None:
    names = tuple(FAMILIES) if subject.name in FAMILIES else (subject.name,)
    theirs = other_process(names)[subject.name]
    env = subject.shared()
    ours = [normalise(await env.reset(item)) for item in subject.boundary_items()]
    for item, mine, other in zip(subject.boundary_items(), ours, theirs["first"], strict=True):
        assert mine == other, f"item {item}: another first observation in another process"
    splits = subject.spec.splits
    assert theirs["splits"] == [split_fingerprint(splits.train), split_fingerprint(splits.test)]


async def check_step_answers_env_results(subject: Subject) -> None:
    env = subject.shared()
    for item in subject.items():
        await env.reset(item)
        reply = await valid_reply(subject, env)
        result = await env.step(reply)
        check_result_shape(result, f"item {item}, reply {reply!r}")
        assert result.info["valid"] is True, f"item {item}: an accepted reply {reply!r} has valid = False"


async def check_invalid_replies_are_answered(subject: Subject) -> None:
    env = subject.shared()
    await env.reset(subject.items()[0])
    for reply in INVALID_REPLIES:
        try:
            result = await env.step(reply)
        except Exception as exc:
            raise AssertionError(f"step raised {exc!r} on the invalid reply {reply[:40]!r}") from exc
        check_result_shape(result, f"reply {reply[:40]!r}")
        assert result.info["valid"] is False and result.info["success"] is False, reply[:40]
        assert result.reward == 0.0 and not result.done, reply[:40]
        assert result.observation.strip(), f"no observation says what was wrong with {reply[:40]!r}"


async def check_invalid_replies_change_nothing(subject: Subject) -> None:
    env = subject.shared()
    item = subject.items()[0]
    await env.reset(item)
    listed, reply = await env.valid_actions(), await valid_reply(subject, env)
    want = await env.step(reply)
    await env.reset(item)
    for bad in INVALID_REPLIES:
        await env.step(bad)
    assert await env.valid_actions() == listed, "the invalid replies changed the listed actions"
    got = await env.step(reply)
    assert got == want, f"after the invalid replies {reply!r} answered {got} instead of {want}"


async def check_valid_actions(subject: Subject) -> None:
    env = subject.shared()
    for item in subject.items():
        await env.reset(item)
        listed = await env.valid_actions()
        if listed is None:
            if isinstance(env, BlockingEnv):
                try:
                    env.valid_actions_sync()
                except NotImplementedError:
                    continue
                raise AssertionError("valid_actions() is None but valid_actions_sync() lists actions")
            continue
        assert isinstance(listed, list) and listed, f"item {item}: valid_actions() returned {listed!r}"
        assert all(isinstance(a, str) and a.strip() for a in listed), listed
        assert await env.valid_actions() == listed, f"item {item}: asked again, valid_actions() lists others"
        for action in dict.fromkeys([listed[0], listed[-1]]):
            await env.reset(item)
            result = await env.step(env.format_reply(action))
            assert result.info.get("valid") is True, f"the listed action {action!r} was refused: {result.observation}"


async def check_blocking_env_sync_matches_async(subject: Subject) -> None:
    env = subject.shared()
    if not isinstance(env, BlockingEnv):
        pytest.skip(f"{subject.name} is not a BlockingEnv")
    for item in subject.items():
        assert await env.reset(item) == env.reset_sync(item), f"item {item}: reset() and reset_sync() differ"
        reply = await valid_reply(subject, env)
        env.reset_sync(item)
        from_sync = env.step_sync(reply)
        await env.reset(item)
        assert await env.step(reply) == from_sync, f"item {item}: step() and step_sync() differ"
        env.reset_sync(item)
        try:
            listed = env.valid_actions_sync()
        except NotImplementedError:
            listed = None
        assert await env.valid_actions() == listed


async def check_negative_item_id_is_a_value_error(subject: Subject) -> None:
    assert await raises(ValueError, subject.shared().reset(-1)), "reset(-1) did not raise ValueError"


async def check_close_is_safe_twice(subject: Subject) -> None:
    never_started, env = subject.make(), subject.make()
    await env.reset(subject.items()[0])
    await env.step(INVALID_REPLIES[1])
    for which, made in (("an env never reset", never_started), ("an env after a step", env)):
        for time in ("first", "second"):
            try:
                await made.close()
            except Exception as exc:
                raise AssertionError(f"close raised {exc!r} the {time} time on {which}") from exc


CHECKS = (
    check_registry_entry,
    check_splits,
    check_reset_is_deterministic,
    check_step_answers_env_results,
    check_invalid_replies_are_answered,
    check_invalid_replies_change_nothing,
    check_valid_actions,
    check_blocking_env_sync_matches_async,
    check_negative_item_id_is_a_value_error,
    check_close_is_safe_twice,
    check_same_in_another_process,
)  # last: the other process runs meanwhile


# ---- every family keeps the contract ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def subjects():
    start_other_process(tuple(FAMILIES))  # runs while the other checks do
    built: dict[str, Subject] = {}
    yield lambda name: built.setdefault(name, build_subject(name))
    for subject in built.values():
        asyncio.run(subject.close_all())
    for names, process in list(_OTHER.items()):  # started but never read: its check was not selected
        if isinstance(process, subprocess.Popen):
            process.kill()
            process.communicate()
            del _OTHER[names]
    while _WEB_POOL:
        _WEB_POOL.pop().close()


def test_every_family_is_registered_under_its_name():
    assert sorted(set(FAMILIES)) == FAMILIES and len(FAMILIES) >= 5
    for name in FAMILIES:
        assert get_env_spec(name).family == name
    with pytest.raises(ValueError, match="unknown env"):
        get_env_spec("no-such-family")


def check_id(check) -> str:
    return check.__name__.removeprefix("check_")


KNOWN_BREAKS: dict[tuple[str, str], str] = {}  # (family, check): why the family breaks that rule today


def family_check(family: str, check):
    why = KNOWN_BREAKS.get((family, check_id(check)))
    marks = [pytest.mark.xfail(strict=True, raises=AssertionError, reason=why)] if why else []
    return pytest.param(family, check, id=f"{family}-{check_id(check)}", marks=marks)


FAMILY_CHECKS = [family_check(family, check) for check in CHECKS for family in FAMILIES]


@pytest.mark.parametrize(("family", "check"), FAMILY_CHECKS)
async def test_family_keeps_the_contract(family, check, subjects):
    await check(subjects(family))


# ---- every check can fail: a toy env, correct and broken ---------------------------------------------------
class ToyEnv(BlockingEnv):
    """A counter: item i starts it at i % 7; "up"/"down" move it; reaching 10 wins."""

    family = "toy"
    system_prompt = "Move the counter to 10. Reply with Action: up or Action: down."

    def __init__(self) -> None:
        self.item, self.count, self.done = -1, 0, True

    def start(self, item_id: int) -> int:
        return item_id % 7

    def reset_sync(self, item_id: int) -> str:
        if item_id < 0:
            raise ValueError(f"item_id must be >= 0, got {item_id}")
        self.item, self.count, self.done = item_id, self.start(item_id), False
        return self.observe()

    def observe(self) -> str:
        return f"Item {self.item}: the counter reads {self.count}."

    def step_sync(self, action_text: str) -> EnvResult:
        if self.done:
            raise RuntimeError("step() after the episode ended; call reset() first")
        action = parse_action(action_text)
        if action not in ("up", "down"):
            return self.invalid(action)
        self.count += 1 if action == "up" else -1
        self.done = self.count >= 10
        return self.result(self.observe(), float(self.done), True)

    def invalid(self, action: str | None) -> EnvResult:
        return self.result(f"Unknown action {action!r}. {self.observe()}", 0.0, False)

    def result(self, text: str, reward: float, valid: bool) -> EnvResult:
        return EnvResult(
            observation=text,
            reward=reward,
            done=self.done,
            info={"success": reward > 0, "score": reward, "valid": valid},
        )

    def valid_actions_sync(self) -> list[str]:
        return ["up", "down"]


class WrongFamily(ToyEnv):
    family = "another"


class RandomStart(ToyEnv):
    def start(self, item_id: int) -> int:
        return random.randrange(1_000_000)


class PerProcessStart(ToyEnv):
    def start(self, item_id: int) -> int:
        return (item_id + os.getpid()) % 1_000_003


class NoValidInInfo(ToyEnv):
    def result(self, text: str, reward: float, valid: bool) -> EnvResult:
        return EnvResult(observation=text, reward=reward, done=self.done, info={"success": False, "score": reward})


class RaisesOnInvalid(ToyEnv):
    def invalid(self, action: str | None) -> EnvResult:
        raise ValueError(f"unknown action {action!r}")


class InvalidMovesTheCounter(ToyEnv):
    def invalid(self, action: str | None) -> EnvResult:
        self.count += 1
        return super().invalid(action)


class ListsAnUnplayableAction(ToyEnv):
    def valid_actions_sync(self) -> list[str]:
        return ["up", "down", "jump"]


class AsyncResetDiffers(ToyEnv):
    async def reset(self, item_id: int) -> str:
        return self.reset_sync(item_id) + " (async)"


class AcceptsNegativeIds(ToyEnv):
    def reset_sync(self, item_id: int) -> str:
        return super().reset_sync(abs(item_id))


class CloseTwiceFails(ToyEnv):
    closed = False

    def close_sync(self) -> None:
        if self.closed:
            raise RuntimeError("already closed")
        self.closed = True


def toy_spec(name: str, factory, splits: TaskSplits | None = None) -> EnvSpec:
    return EnvSpec(
        family=name,
        factory=factory,
        splits=splits or TaskSplits(train=range(10, 50), test=range(0, 10)),
        default_turn_cap=4,
    )


TOYS = {"toy": toy_spec("toy", ToyEnv), "toy-per-process": toy_spec("toy-per-process", PerProcessStart)}
BROKEN = {  # each check: a toy that breaks the rule it checks, and what the check says
    check_registry_entry: (toy_spec("toy", WrongFamily), "builds an env of family"),
    check_splits: (toy_spec("toy", ToyEnv, TaskSplits(train=range(5, 50), test=range(0, 10))), "in both splits"),
    check_reset_is_deterministic: (toy_spec("toy", RandomStart), "another first observation on"),
    check_same_in_another_process: (TOYS["toy-per-process"], "another first observation in another process"),
    check_step_answers_env_results: (toy_spec("toy", NoValidInInfo), "info lacks 'valid'"),
    check_invalid_replies_are_answered: (toy_spec("toy", RaisesOnInvalid), "step raised ValueError"),
    check_invalid_replies_change_nothing: (toy_spec("toy", InvalidMovesTheCounter), "after the invalid replies"),
    check_valid_actions: (toy_spec("toy", ListsAnUnplayableAction), "'jump' was refused"),
    check_blocking_env_sync_matches_async: (toy_spec("toy", AsyncResetDiffers), r"reset\(\) and reset_sync\(\)"),
    check_negative_item_id_is_a_value_error: (toy_spec("toy", AcceptsNegativeIds), "did not raise ValueError"),
    check_close_is_safe_twice: (toy_spec("toy", CloseTwiceFails), "close raised .* the second time"),
}


def test_every_check_has_a_broken_toy():
    assert set(BROKEN) == set(CHECKS)


@pytest.mark.parametrize("check", CHECKS, ids=check_id)
async def test_the_correct_toy_keeps_the_contract(check):
    await check(build_subject("toy"))


@pytest.mark.parametrize("check", CHECKS, ids=check_id)
async def test_each_check_catches_its_broken_toy(check):
    spec, message = BROKEN[check]
    with pytest.raises(AssertionError, match=message):
        await check(Subject(spec.family, spec))
