"""Deep Search restricted by hops: single-hop items against the world's facts, split disjointness, determinism
across processes, bad options; the listed valid actions (spans of the seen text only), the listing written into the
observations (``show_actions``) and the format warm-up on them; the search recipe and its ``--level``."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest

from turnrl.engine.records.trajectory_log import step_file
from turnrl.engine.training.warmup import random_episodes
from turnrl.envs import get_env_spec
from turnrl.envs.search import NUM_ITEMS, SearchEnv
from turnrl.envs.search.env import TAG, spans
from turnrl.envs.search.questions import follow, make_question, single_hop_facts
from turnrl.envs.search.world import RELATIONS, WorldSize
from turnrl.recipes import demo_config


@pytest.fixture(scope="module")
def env():
    return SearchEnv(hops=1)


def _tag(action: str) -> tuple[str, str]:
    tags = TAG.findall(action)
    assert len(tags) == 1 and TAG.fullmatch(action), action
    return tags[0][0], tags[0][1]


# ---- single-hop questions ------------------------------------------------------------------------
def test_single_hop_items_are_the_worlds_facts(env):
    world = env.world
    kinds = {"person", "organisation", "city"}
    reference = {(s, r) for (s, r) in world.facts if world.kind_of[s] in kinds}
    facts = single_hop_facts(world)
    assert len(facts) == len(reference) >= NUM_ITEMS and set(facts) == reference
    for item in random.Random(2).sample(range(NUM_ITEMS), 300):
        question = make_question(world, item, hops=1)
        (chain,) = question.chains
        assert question.hops == 1 and question.kind == "bridge" and len(chain.relations) == 1
        assert question.answers == (world.facts[chain.start, chain.relations[0]],) == (follow(world, chain),)
        assert question.text == RELATIONS[chain.relations[0]].question.format(x=chain.start)
        assert question == make_question(world, item, hops=1)  # the same question on every call


def test_train_and_test_hold_disjoint_single_hop_questions(env):
    splits = get_env_spec("search").splits
    test = {make_question(env.world, i, hops=1).text for i in splits.test}
    train = {make_question(env.world, i, hops=1).text for i in splits.train}
    assert len(test) == len(splits.test) and len(train) == len(splits.train)
    assert not test & train
    kinds = {env.world.kind_of[make_question(env.world, i, hops=1).chains[0].start] for i in splits.test}
    assert kinds == {"person", "organisation", "city"}


def test_other_hop_counts_are_bridges_of_that_length(env):
    for hops in (2, 3, 4):
        for item in random.Random(hops).sample(range(NUM_ITEMS), 30):
            question = make_question(env.world, item, hops=hops)
            assert question.kind == "bridge" and question.hops == hops == len(question.chains[0].relations)
            assert question.answers == (follow(env.world, question.chains[0]),)
            assert question == make_question(env.world, item, hops=hops)


def test_single_hop_first_observations_in_another_process(env):
    items = [0, 17, 999, 1000, NUM_ITEMS - 1]
    code = (
        "import json; from turnrl.envs import make_env; e = make_env('search', hops=1); "
        f"print(json.dumps([e.reset_sync(i) for i in {items}]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "321"},
        timeout=120,
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [env.reset_sync(i) for i in items]


@pytest.mark.parametrize("hops", [0, 5, -1, True, "1", 1.0, [1]])
def test_bad_hops_raise(hops):
    with pytest.raises(ValueError, match="hops must be"):
        SearchEnv(hops=hops)


def test_hops_with_a_questions_file_and_items_past_the_facts_raise(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"question": "q?", "golden_answers": ["a"]}) + "\n")
    with pytest.raises(ValueError, match="questions_path"):
        SearchEnv(hops=1, questions_path=str(path))
    small = SearchEnv(hops=1, world_size=WorldSize(countries=4, cities=5, organisations=6, people=10, gatherings=3))
    count = len(single_hop_facts(small.world))
    assert count == 10 * 4 + 6 * 3 + 5 * 2
    assert small.reset_sync(count - 1).startswith("Question: ")
    with pytest.raises(ValueError, match=rf"\[0, {count}\)"):
        small.reset_sync(count)
    with pytest.raises(ValueError, match="item_id"):
        SearchEnv(hops=1).reset_sync(NUM_ITEMS)


# ---- valid actions ---------------------------------------------------------------------------------
def test_spans_on_hand_written_text():
    assert spans("In what year was Brak Tel born?") == ["Brak Tel"]
    assert spans("Whose teacher was born earlier, Ab Cd's or Ef Gh's?") == ["Ab Cd", "Ef Gh"]
    assert spans("Zo Press. Zo Press was founded in 1911. As a child Zo loved chess, 3.5 km.") == [
        "Zo Press",
        "1911",
        "Zo",
        "3.5",
    ]
    assert spans("How many of A, Bo Ka and Lu were born in Vagos? The end.") == ["Bo Ka", "Lu", "Vagos"]
    assert spans("nothing here") == []


def test_valid_actions_are_spans_of_the_seen_text_and_all_valid(env):
    gold_listed = 0
    items = random.Random(4).sample(get_env_spec("search").splits.test, 40)
    for item in items:
        question = env.reset_sync(item)
        first = env.valid_actions_sync()
        assert first == [f"<search>{env.question.text}</search>"] and question == f"Question: {env.question.text}"
        env.step_sync(first[0])
        seen = " ".join(f"{p.title}. {p.text}" for p in env.passages)
        actions = env.valid_actions_sync()
        assert len(actions) == len(set(actions))
        answers = [content for name, content in map(_tag, actions) if name == "answer"]
        searches = [content for name, content in map(_tag, actions) if name == "search"]
        assert answers == spans(seen) and searches == [env.question.text, *answers]
        gold_listed += env.question.answers[0] in answers
        for action in random.Random(item).sample(actions, 3):  # each listed action is one the env accepts
            env.reset_sync(item)
            env.step_sync(first[0])
            assert env.step_sync(env.format_reply(action)).info["valid"]
    assert gold_listed >= 0.9 * len(items)  # copying a listed span can answer nearly every item
    env.reset_sync(items[0])
    env.step_sync(env.valid_actions_sync()[0])
    while not env.step_sync(f"<answer>{env.question.answers[0]}</answer>").done:
        pass
    assert env.valid_actions_sync() == []  # nothing is valid once the episode is over


def test_show_actions_ends_each_running_observation_with_the_listing(env):
    shown = SearchEnv(hops=1, show_actions=True)
    for item in random.Random(6).sample(get_env_spec("search").splits.test, 8):
        turns = [(shown.reset_sync(item), env.reset_sync(item), env.valid_actions_sync())]
        replies = [env.valid_actions_sync()[0], "no tag", "<answer>surely wrong</answer>"]
        for reply in [*replies, f"<answer>{env.question.answers[0]}</answer>"]:
            a, b = shown.step_sync(reply), env.step_sync(reply)
            assert (a.reward, a.done, a.info) == (b.reward, b.done, b.info)
            turns.append((a.observation, b.observation, env.valid_actions_sync()))
        assert a.done and a.info["success"]
        *running, (last_shown, last_plain, _) = turns
        assert last_shown == last_plain  # the episode is over: nothing listed
        for with_listing, without, listed in running:
            head, listing = with_listing.split("\nAvailable actions:\n")
            assert head == without and listing.split("\n") == listed and len(listed) >= 1
    with pytest.raises(ValueError, match="show_actions"):
        SearchEnv(show_actions="yes")


def test_answer_candidates_ignore_the_gold(env):
    """Two questions about one subject (different golds) get the same answer candidates from the same search."""
    by_subject: dict[str, list[int]] = {}
    for item in range(3000):
        by_subject.setdefault(make_question(env.world, item, hops=1).chains[0].start, []).append(item)
    pairs = [items[:2] for items in by_subject.values() if len(items) >= 2][:10]
    assert len(pairs) == 10
    for a, b in pairs:
        lists = []
        for item in (a, b):
            env.reset_sync(item)
            env.step_sync(f"<search>{env.question.chains[0].start}</search>")  # the same search for both
            listed = env.valid_actions_sync()
            assert listed[0] == f"<search>{env.question.text}</search>"
            lists.append(listed[1:])
        assert env.question.answers != make_question(env.world, a, hops=1).answers
        assert lists[0] == lists[1] and any(action.startswith("<answer>") for action in lists[0])


def test_format_warmup_runs_on_search(env):
    episodes = random_episodes(env, list(range(19_990, 20_000)), turn_cap=3, seed=0)
    assert len(episodes) == 10
    for episode in episodes:
        assert episode.replies[0].startswith("<search>") and episode.observations[1].startswith("<information>")
        for reply, observation in zip(episode.replies, episode.observations[1:], strict=True):
            name, _ = _tag(reply)
            assert observation.startswith("<information>" if name == "search" else "Your answer is")
    assert random_episodes(env, [19_990, 19_991], 3, 0)[1].replies == episodes[1].replies


# ---- the recipe --------------------------------------------------------------------------------------
def test_search_recipe_and_level():
    config = demo_config("search")
    assert config.env.options == {"hops": 1, "show_actions": True}
    assert not config.rollout.episode.constrain_to_valid_actions and config.rollout.episode.learn_from_listed_actions
    assert config.eval.turn_cap == config.rollout.episode.turn_cap
    assert demo_config("search", level="2").env.options == {"hops": 2, "show_actions": True}
    assert "hops" not in demo_config("search", level="mix").env.options
    assert demo_config("babyai", level="GoTo").env.options["level"] == "GoTo"
    with pytest.raises(ValueError, match="number of hops"):
        demo_config("search", level="deep")


def test_train_search_end_to_end(tmp_path):
    """``turnrl train --env search`` on the recipe, shrunk: the base model writes tags the env answers."""
    out = tmp_path / "run"
    shrink = {
        "model.default.warmup.episodes": 192,  # at 64 the base's replies were byte noise with no tag in them
        "model.default.warmup.batch_episodes": 4,
        "model.default.vocab_size": 512,
        "rollout.prompts_per_step": 2,
        "rollout.group_size": 2,
        "eval.tasks": 2,
    }
    sets = [arg for key, value in shrink.items() for arg in ("--set", f"{key}={value}")]
    result = subprocess.run(
        [sys.executable, "-m", "turnrl.cli", "train", "--env", "search", "--steps", "2", "--out", str(out), *sets],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["heldout_tasks"] == 2 and summary["eval_turn_cap"] == 4
    assert 0 <= summary["initial_success"] <= 1 and 0 <= summary["final_success"] <= 1
    config = json.loads((out / "config.json").read_text())
    assert config["env"]["options"] == {"hops": 1, "show_actions": True}
    assert not config["rollout"]["episode"]["constrain_to_valid_actions"]
    env = SearchEnv(**config["env"]["options"])  # the run's own env: its observations list the actions
    logged = [step_file(out, step) for step in (1, 2)]
    episodes = [json.loads(line) for path in logged for line in path.read_text().splitlines()]
    assert len(episodes) == 8
    tags = 0
    for episode in episodes:  # replaying the logged replies in a fresh env gives the logged answers
        assert episode["split"] == "train" and episode["turns"]
        assert env.reset_sync(episode["item_id"]) in episode["prompt"]
        for turn in episode["turns"]:
            answer = env.step_sync(turn["action"])
            assert (answer.observation, answer.info["valid"]) == (turn["observation"], turn["valid"])
            tags += bool(TAG.search(turn["action"]))
            if answer.done:
                break
    assert tags > 0


def test_cli_rejects_a_bad_search_level():
    result = subprocess.run(
        [sys.executable, "-m", "turnrl.cli", "train", "--env", "search", "--level", "deep", "--steps", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "number of hops (1-4) or 'mix', got 'deep'" in result.stderr
    assert "Traceback" not in result.stderr
