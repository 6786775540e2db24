"""Deep Search: scoring on hand-computed cases, the world and its questions, BM25 against a reference, the env's
turn rules, the oracle and a random player, the HTTP retriever against a real local server, determinism."""

from __future__ import annotations

import json
import math
import os
import random
import re
import subprocess
import sys
from collections import Counter

import httpx
import numpy as np
import pytest

from turnrl.envs import get_env_spec, make_env
from turnrl.envs.search import NUM_ITEMS, SearchEnv
from turnrl.envs.search.oracle import SearchOracle, play_random
from turnrl.envs.search.questions import follow, make_question
from turnrl.envs.search.retrievers import BM25Retriever, HTTPRetriever, Passage, make_retriever
from turnrl.envs.search.scoring import exact_match, f1_score, normalize_answer
from turnrl.envs.search.server import serve_retriever
from turnrl.envs.search.world import RELATIONS, Document, WorldSize, build_world


@pytest.fixture(scope="module")
def env():
    return SearchEnv()


SMALL = WorldSize(countries=5, cities=20, organisations=30, people=120, gatherings=50)


# ---- scoring -----------------------------------------------------------------------
def test_normalisation_and_exact_match():
    assert normalize_answer("  The  Kakix-Institute, of Vagos! ") == "kakixinstitute of vagos"
    assert normalize_answer("An apple a day") == "apple day"
    assert exact_match("the Kakix Institute.", ["Kakix Institute"]) == 1.0
    assert exact_match("Kakix", ["Kakix Institute"]) == 0.0
    assert exact_match("two", ["2", "two"]) == 1.0
    assert exact_match("", ["x"]) == 0.0


def test_f1_on_hand_computed_cases():
    assert f1_score("red big cat", ["big cat"]) == pytest.approx(0.8)  # P 2/3, R 1
    assert f1_score("x y y", ["y y z"]) == pytest.approx(2 / 3)  # 2 common tokens, P = R = 2/3
    assert f1_score("x y y", ["y z z"]) == pytest.approx(1 / 3)  # 1 common, P = R = 1/3
    assert f1_score("q", ["a b", "q r"]) == pytest.approx(2 / 3)  # best gold: P 1, R 1/2
    assert f1_score("nothing shared", ["other words"]) == 0.0
    assert f1_score("", ["word"]) == 0.0
    assert f1_score("The Cat", ["cat"]) == 1.0


# ---- world and questions --------------------------------------------------------------
def test_every_fact_is_stated_once_in_its_subjects_documents():
    world = build_world(3, SMALL)
    assert len({name for names in world.entities.values() for name in names}) == sum(
        len(names) for names in world.entities.values()
    )
    for (subject, relation), value in world.facts.items():
        sentence = RELATIONS[relation].sentence.format(s=subject, v=value)
        holders = [
            d for d in world.documents if sentence in d.text and re.search(r"(?<!\w)" + re.escape(sentence), d.text)
        ]
        assert len(holders) == 1 and holders[0].title == subject, sentence
    with pytest.raises(ValueError, match=r"size\.people"):
        build_world(0, WorldSize(people=2))


def test_questions_have_generator_answers(env):
    world = env.world
    kinds, hops = Counter(), Counter()
    for item in random.Random(5).sample(range(NUM_ITEMS), 300):
        question = make_question(world, item)
        kinds[question.kind] += 1
        hops[question.hops] += 1
        assert question.hops == sum(len(c.relations) for c in question.chains)
        finals = [follow(world, c) for c in question.chains]
        if question.combine == "value":
            assert question.answers == (finals[0],)
        elif question.combine == "earliest":
            assert finals[0] != finals[1]
            assert question.answers[0] == question.chains[finals.index(min(finals, key=int))].start
        else:
            assert question.answers[0] == str(finals.count(question.target))
        for chain in question.chains:
            assert chain.start in question.text
    assert set(kinds) == {"bridge", "comparison", "aggregation"}
    assert set(hops) == {1, 2, 3, 4}


def test_same_world_in_another_process(env):
    """First observations are the contract's (test_env_contract.py); the corpus behind the searches is this."""
    code = (
        "import json; from turnrl.envs import make_env; e = make_env('search'); "
        "print(json.dumps([len(e.world.documents), e.world.documents[-1].text, e.world.documents[7].text]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "123"},
    )
    theirs = json.loads(out.stdout.strip().splitlines()[-1])
    assert theirs == [len(env.world.documents), env.world.documents[-1].text, env.world.documents[7].text]


def test_splits_cover_the_items():
    splits = get_env_spec("search").splits
    assert sorted([*splits.train, *splits.test]) == list(range(NUM_ITEMS))


# ---- BM25 against a reference ----------------------------------------------------------
def _reference_bm25(docs: list[list[str]], query: list[str], k1: float = 1.5, b: float = 0.75) -> list[float]:
    """Lucene's BM25 (bm25s's default): idf = ln(1 + (N - df + 0.5) / (df + 0.5))."""
    n, avg = len(docs), sum(map(len, docs)) / len(docs)
    df = Counter(w for d in docs for w in set(d))
    scores = []
    for doc in docs:
        tf = Counter(doc)
        score = 0.0
        for word in set(query):
            if tf[word]:
                idf = math.log(1 + (n - df[word] + 0.5) / (df[word] + 0.5))
                score += idf * tf[word] / (tf[word] + k1 * (1 - b + b * len(doc) / avg))
        scores.append(score)
    return scores


def test_bm25_ranks_as_the_reference_on_random_corpora():
    rng = random.Random(11)
    vocabulary = [f"w{i}x" for i in range(40)]
    for _ in range(5):
        docs = [[rng.choice(vocabulary) for _ in range(rng.randint(3, 15))] for _ in range(60)]
        retriever = BM25Retriever([Document(title=f"t{i}", text=" ".join(d)) for i, d in enumerate(docs)])
        for _ in range(10):
            query = rng.sample(vocabulary, rng.randint(1, 3))
            reference = _reference_bm25([[f"t{i}", *d] for i, d in enumerate(docs)], query)
            hits = retriever.search([" ".join(query)], 5)[0]
            got = [reference[int(p.title[1:])] for p in hits]
            best = sorted((s for s in reference if s > 0), reverse=True)[:5]
            assert got == pytest.approx(best, rel=1e-4)


def test_retriever_bad_input(env):
    retriever = env.retriever
    with pytest.raises(ValueError, match="queries"):
        retriever.search("one string", 3)
    with pytest.raises(ValueError, match="topk"):
        retriever.search(["q"], 0)
    with pytest.raises(ValueError, match="unknown retriever"):
        make_retriever("dense", [])
    with pytest.raises(ValueError, match="url"):
        HTTPRetriever("localhost:8000")
    with pytest.raises(ValueError, match="documents"):
        BM25Retriever([])
    assert retriever.search(["zzzz qqqq", "the of and"], 3) == [[], []]
    assert retriever.search([], 3) == []


# ---- env turns ------------------------------------------------------------------------
def test_search_returns_formatted_passages(env):
    env.reset_sync(3)
    start = env.question.chains[0].start
    result = env.step_sync(f"I will look it up. <search>{start}</search>")
    assert result.info["valid"] and result.info["action"] == "search" and not result.done
    docs = re.findall(r"Doc (\d+)\(Title: ([^)]*)\) ", result.observation)
    assert result.observation.startswith("<information>") and result.observation.endswith("</information>")
    assert [int(i) for i, _ in docs] == [1, 2, 3] and docs[0][1] == start


@pytest.mark.parametrize(
    "reply, message",
    [
        ("just text", "No action found"),
        ("<search>a</search><answer>b</answer>", "Found 2 tags"),
        ("<search>a</search> <search>b</search>", "Found 2 tags"),
        ("<search>   </search>", "empty"),
        ("<answer></answer>", "empty"),
        ("<search>" + "x " * 400 + "</search>", "longer than"),
        ("<search>unclosed", "No action found"),
    ],
)
def test_malformed_turns_cost_the_turn_and_change_nothing(env, reply, message):
    first = env.reset_sync(42)
    result = env.step_sync(reply)
    assert message in result.observation
    assert not result.info["valid"] and result.info["action"] == "invalid"
    assert result.reward == 0.0 and not result.done and not result.info["success"]
    assert env.reset_sync(42) == first
    ok, reward, _ = SearchOracle(env).play(42)
    assert ok and reward == 1.0


def test_answers_scoring_and_end_on_answer(env):
    env.reset_sync(5)
    gold = env.question.answers[0]
    wrong = env.step_sync("<answer>certainly not this</answer>")
    assert wrong.info["valid"] and not wrong.done and wrong.reward == 0.0 and "Try again" in wrong.observation
    partial = env.step_sync(f"<answer>{gold} extra words</answer>")
    expected = f1_score(f"{gold} extra words", [gold])
    assert 0 < expected < 1 and partial.info["f1"] == pytest.approx(expected) and partial.info["score"] == 0.0
    right = env.step_sync(f"<ANSWER> the {gold.upper()} </ANSWER>")
    assert right.done and right.reward == 1.0 and right.info["success"] and right.info["f1"] == 1.0
    with pytest.raises(RuntimeError, match="reset"):
        env.step_sync("<answer>x</answer>")

    ending = SearchEnv(end_on_answer=True)
    ending.reset_sync(5)
    result = ending.step_sync("<answer>certainly not this</answer>")
    assert result.done and result.reward == 0.0 and not result.info["success"]


def test_env_bad_construction_and_items(env):
    with pytest.raises(ValueError, match="item_id"):
        env.reset_sync(NUM_ITEMS)
    with pytest.raises(ValueError, match="item_id"):
        env.reset_sync("3")
    assert env.reset_sync(np.int64(3)) == env.reset_sync(3)
    with pytest.raises(ValueError, match="topk"):
        SearchEnv(topk=0)
    with pytest.raises(ValueError, match="unknown retriever"):
        SearchEnv(retriever="nope")
    assert make_env("search").format_reply("<search>q</search>") == "<search>q</search>"


# ---- oracle and random player --------------------------------------------------------------
def test_oracle_solves_test_items(env):
    oracle = SearchOracle(env)
    test = get_env_spec("search").splits.test
    results = [oracle.play(item) for item in random.Random(0).sample(test, 50)]
    solved = [ok and reward == 1.0 for ok, reward, _ in results]
    assert sum(solved) >= 48, sum(solved)
    assert max(turns for _, _, turns in results) <= get_env_spec("search").default_turn_cap


def test_random_player_stays_low(env):
    test = get_env_spec("search").splits.test
    rng = random.Random(1)
    wins = [play_random(env, item, rng)[0] for item in rng.sample(test, 50)]
    assert sum(wins) <= 5


# ---- HTTP retriever against a real local server -------------------------------------------------------
def test_http_retriever_matches_bm25_over_a_real_server(env):
    rng = random.Random(3)
    names = rng.sample(env.world.entities["person"], 10) + rng.sample(env.world.entities["organisation"], 5)
    queries = [f"{n} {rng.choice(list(RELATIONS.values())).query}" for n in names] + ["zzzz qqqq"]
    with serve_retriever(env.retriever) as url:
        remote = HTTPRetriever(url)
        try:
            assert remote.search(queries, 3) == env.retriever.search(queries, 3)
            configured = make_env("search", retriever="http", retriever_options={"url": url})
            assert configured.retriever is not env.retriever
            assert configured.retriever.search(queries, 2) == env.retriever.search(queries, 2)
            remote_env = SearchEnv(retriever=remote)
            for item in (1, 2, 3):
                ok, reward, _ = SearchOracle(remote_env).play(item)
                assert ok and reward == 1.0
            scored = httpx.post(url, json={"queries": queries[:1], "topk": 2, "return_scores": True}).json()
            assert [
                Passage.from_contents(h["document"]["contents"]) for h in scored["result"][0]
            ] == env.retriever.search(queries[:1], 2)[0]
            for body, needle in [
                ([1, 2], "Expected `object`"),
                ({"topk": 3}, "missing required field `queries`"),
                ({"queries": ["q"], "topk": 3, "top_k": 2}, "unknown field `top_k`"),
                ({"queries": "one", "topk": 3}, "Expected `array`"),
                ({"queries": ["q"], "topk": -1}, "topk"),
            ]:
                bad = httpx.post(url, json=body)
                assert bad.status_code == 422 and needle in bad.json()["error"], (body, bad.json())
            assert httpx.post(url, content=b"{not json").status_code == 422
            assert httpx.post(url.replace("/retrieve", "/other"), json={}).status_code == 404
            assert remote.search(queries[:2], 1) == env.retriever.search(queries[:2], 1)  # still serving
        finally:
            remote.close()
    with pytest.raises(httpx.TransportError):
        HTTPRetriever(url).search(["q"], 1)  # server gone: a clear transport error, not a wrong answer


def test_questions_from_a_file(tmp_path, env):
    path = tmp_path / "qa.jsonl"
    rows = [
        {"question": "Who founded Kakix Institute?", "golden_answers": ["Ada Lo", "A. Lo"]},
        {"question": "In what year?", "answer": "1901"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    from_file = SearchEnv(retriever=env.retriever, questions_path=str(path))
    assert from_file.reset_sync(0) == "Question: Who founded Kakix Institute?"
    assert from_file.step_sync("<answer>a. lo</answer>").reward == 1.0
    from_file.reset_sync(1)
    assert from_file.step_sync("<answer>1901</answer>").info["success"]
    with pytest.raises(ValueError, match="item_id"):
        from_file.reset_sync(2)
    for bad in ('{"question": "q"}', '{"golden_answers": ["a"]}', "not json", '{"question": 3, "answer": "a"}', ""):
        path.write_text(bad + "\n")
        with pytest.raises(ValueError, match="questions_path"):
            SearchEnv(retriever=env.retriever, questions_path=str(path))
