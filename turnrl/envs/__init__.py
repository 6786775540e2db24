"""Environments behind one small interface (see ``base.Env``) and a registry."""

from turnrl.envs.base import BlockingEnv, Env, parse_action
from turnrl.envs.registry import EnvSpec, TaskSplits, env_names, get_env_spec, make_env, register_env

__all__ = [
    "BlockingEnv",
    "Env",
    "EnvSpec",
    "TaskSplits",
    "env_names",
    "get_env_spec",
    "make_env",
    "parse_action",
    "register_env",
]
