"""turnrl: multi-turn reinforcement learning for LLM agents."""

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "RolloutEngine":  # imported on first use: `import turnrl` stays light
        from turnrl.rollout_engine import RolloutEngine

        return RolloutEngine
    raise AttributeError(f"module 'turnrl' has no attribute {name!r}")


__all__ = ["RolloutEngine", "__version__"]
