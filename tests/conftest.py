"""Shared fixtures: a small tokenizer and an untrained tiny model built from BabyAI text."""

from __future__ import annotations

import pytest
import torch

from turnrl.engine.training.warmup import random_episodes
from turnrl.envs.babyai import BabyAIEnv
from turnrl.models.chat import ChatFormat
from turnrl.models.tiny import build_tiny_model
from turnrl.models.tokenizer import train_tokenizer


@pytest.fixture(scope="session")
def babyai_corpus() -> list[str]:
    env = BabyAIEnv("GoToLocal")
    episodes = random_episodes(env, list(range(40)), 3, seed=0)
    texts = [env.system_prompt]
    for ep in episodes:
        texts.extend(ep.observations)
        texts.extend(ep.replies)
    return texts


@pytest.fixture(scope="session")
def tokenizer(babyai_corpus):
    return train_tokenizer(babyai_corpus, vocab_size=600)


@pytest.fixture(scope="session")
def chat(tokenizer) -> ChatFormat:
    return ChatFormat(tokenizer)


@pytest.fixture(scope="session")
def make_tiny_model(tokenizer):
    """A new untrained tiny model per call (``seed`` sets its weights), for fixtures of any scope."""

    def make(seed: int = 0):
        return build_tiny_model(tokenizer, "tiny", max_positions=2048, seed=seed).eval()

    return make


@pytest.fixture()
def tiny_model(make_tiny_model):
    torch.manual_seed(0)
    return make_tiny_model()
