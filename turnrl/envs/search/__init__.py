"""Deep Search family: answer 1-4 hop questions about a seeded fictional world by searching its corpus.

Item ids ``[0, 20000)``: ``make_question(world, i)`` over the default world (seed 0,
~34k documents: people, organisations, cities, countries and gathering distractors).
Splits: test ``[0, 1000)``, train ``[1000, 20000)`` (same world, different questions).
Option ``hops=1`` (2-4 likewise) asks bridge questions of that many hops only, same ids and splits;
single-hop item ``i`` is the ``i``-th fact of a shuffled list, so train and test questions are disjoint.
Retrievers: ``bm25`` (default, in-process) or ``http`` (``retriever_options={"url": ...}``,
Search-R1's ``/retrieve`` shape); ``serve_retriever`` serves any retriever in that shape.
"""

from turnrl.envs.registry import EnvSpec, TaskSplits, register_env
from turnrl.envs.search.env import NUM_ITEMS, SearchEnv

# named split ``agentgym``: the first 100 test questions (the paper's Deep Search sets are Wikipedia QA
# benchmarks, not in this project; these are questions about the generated world)
SPLITS = TaskSplits(train=range(1000, NUM_ITEMS), test=range(0, 1000), named={"agentgym": range(0, 100)})

register_env(
    EnvSpec(
        family="search",
        factory=SearchEnv,
        splits=SPLITS,
        default_turn_cap=10,
        description="Deep Search: multi-hop questions over a fictional corpus with <search>/<answer> tags",
    )
)

__all__ = ["NUM_ITEMS", "SPLITS", "SearchEnv"]
