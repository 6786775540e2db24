"""SciWorld as a turnrl env: ScienceWorld tasks (AgentGym's list) in a heap-bounded JVM.

Invariant: item id -> (task, variation) is a pure function (``tasks.sciworld_task``)
and the simulator is deterministic per variation whatever the JVM loaded before
(``jvm.DETERMINISTIC_HASHES``; its random generator is reseeded from the item
and the move count before every step and listing), so the same id gives the same first observation,
listed actions and gold path in any process and in any load order: the task description, a line break, then what
"look around" shows (AgentGym's first observation). ``info["score"]`` is the raw
ScienceWorld score (0..100, negative when the task is failed); the reward is that
score normalised to [0, 1] (the current score, not its change, as AgentGym-RL
reads the last step's reward). Done when the task is completed or failed, or
after ``step_limit`` simulator moves. The valid-action listing costs ~50-130 ms,
so it is built only when asked (``valid_actions_sync``), never inside ``step``.
The JVM starts at the first reset (about 1.2 s) and is stopped by ``close``.
"""

from __future__ import annotations

from turnrl.envs.base import BlockingEnv, parse_action
from turnrl.envs.sciworld.jvm import DEFAULT_HEAP_MB, SimulatorProcess
from turnrl.envs.sciworld.tasks import sciworld_task
from turnrl.protocol import EnvResult

SYSTEM_PROMPT = (
    "You are an agent in ScienceWorld, a text world of rooms, objects and devices. Each turn you read the "
    "observation and reply with one command as: Action: <command>. Commands: look around, look at OBJ, "
    "look in OBJ, go to LOC, open/close OBJ, pick up OBJ, put down OBJ, move OBJ to OBJ, pour OBJ into OBJ, "
    "dunk OBJ into OBJ, mix OBJ, activate/deactivate OBJ, connect OBJ to OBJ, disconnect OBJ, use OBJ [on OBJ], "
    "read OBJ, eat OBJ, flush OBJ, focus on OBJ, wait, wait1, task, inventory."
)
UNKNOWN_ACTION = "No known action matches that input."
DEFAULT_STEP_LIMIT = 100


class SciWorldEnv(BlockingEnv):
    family = "sciworld"
    system_prompt = SYSTEM_PROMPT

    def __init__(
        self, heap_mb: int = DEFAULT_HEAP_MB, step_limit: int = DEFAULT_STEP_LIMIT, gold_path: bool = False
    ) -> None:
        if heap_mb < 128:
            raise ValueError(f"heap_mb must be >= 128, got {heap_mb}")
        if step_limit < 1:
            raise ValueError(f"step_limit must be >= 1, got {step_limit}")
        self.heap_mb = heap_mb
        self.step_limit = step_limit
        self.gold_path = gold_path
        self._sim: SimulatorProcess | None = None
        self._done = True
        self._score = 0
        self._item = -1
        self.task_name = ""
        self.variation = -1
        self.task_description = ""

    @property
    def simulator(self) -> SimulatorProcess:
        if self._sim is None or not self._sim.alive:
            self._sim = SimulatorProcess(self.heap_mb)
        return self._sim

    def reset_sync(self, item_id: int) -> str:
        self.task_name, self.variation = sciworld_task(int(item_id))
        api = self.simulator.api
        api.load(self.task_name, self.variation, "", self.gold_path)
        self._item, self._score, self._done = int(item_id), 0, False
        self.task_description = str(api.getTaskDescription())
        look = str(api.step("look around"))
        return f"{self.task_description}\n{look}"

    def step_sync(self, action_text: str) -> EnvResult:
        if self._done:
            raise RuntimeError("step() after the episode ended; call reset() first")
        action = parse_action(action_text)
        if action is None:
            return self._result('Reply with "Action: <command>".', False)
        api = self.simulator.api
        self._reseed()
        observation = str(api.step(action))
        self._score = round(100 * float(api.getScore()))
        completed = bool(api.getCompleted())
        self._done = completed or self._score < 0 or int(api.getNumMoves()) > self.step_limit
        return self._result(observation, observation != UNKNOWN_ACTION)

    def valid_actions_sync(self) -> list[str]:
        """The simulator's valid action-object combinations now (costly: ~50-130 ms)."""
        self._reseed()
        return sorted(str(a) for a in self.simulator.api.getValidActionObjectCombinations())

    def gold_actions(self) -> list[str]:
        """The simulator's gold action sequence of the current item (needs ``gold_path=True``)."""
        if not self.gold_path:
            raise ValueError("gold_actions() needs SciWorldEnv(gold_path=True)")
        return [str(a) for a in self.simulator.api.getGoldActionSequence()]

    def _reseed(self) -> None:
        """The simulator's random draws as a function of (item, moves), whatever was called before."""
        self.simulator.reseed(self._item * 1_000_003 + int(self.simulator.api.getNumMoves()))

    def _result(self, text: str, valid: bool) -> EnvResult:
        info = {
            "success": self._score >= 100,
            "score": self._score,
            "valid": valid,
            "task": self.task_name,
            "variation": self.variation,
            "item": self._item,
        }
        return EnvResult(observation=text, reward=max(self._score, 0) / 100, done=self._done, info=info)

    def close_sync(self) -> None:
        if self._sim is not None:
            self._sim.close()
            self._sim = None
        self._done = True
