"""A plain PyTorch training loop that takes its batches from turnrl's rollout engine.

Only ``RolloutEngine`` comes from turnrl; the model, the loss and the optimizer are this file's own.

    python examples/embed_training_loop.py --model runs/<run>/base_model --steps 20

``--model`` is any local Hugging Face causal-LM directory with a chat template (for example a run's
``base_model``). Prints one line per step.
"""

from __future__ import annotations

import argparse
import asyncio

import torch
from transformers import AutoModelForCausalLM

from turnrl import RolloutEngine
from turnrl.config.episode import EpisodeConfig
from turnrl.models.loading import load_tokenizer


def token_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """log p(token t | tokens < t) at every position t >= 1 (position 0 gets 0)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()
    picked = torch.log_softmax(logits, dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    return torch.nn.functional.pad(picked, (1, 0))


async def train(model_dir: str, steps: int, lr: float, constrained: bool) -> list[float]:
    from pathlib import Path

    tokenizer = load_tokenizer(Path(model_dir))
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True).eval()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    episode = EpisodeConfig(turn_cap=4, max_new_tokens=16, constrain_to_valid_actions=constrained)
    rewards = []
    async with RolloutEngine(
        model=model,
        tokenizer=tokenizer,
        env="babyai",
        episode=episode,
        prompts_per_step=4,
        group_size=4,
        advantage="grpo",
    ) as engine:
        async for batch in engine.batches(steps):
            model.train()
            logp = token_logprobs(model, batch.input_ids, batch.attention_mask)
            mask = batch.loss_mask.float()
            loss = -(batch.advantages * logp * mask).sum() / mask.sum().clamp(min=1)  # policy gradient
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            model.eval()
            await engine.weights_updated()  # the engine generates with this same model object
            rewards.append(float(batch.rewards.mean()))
            print(
                f"step {batch.step}: {len(batch.trajectories)} episodes, mean reward {rewards[-1]:.3f}, "
                f"loss {float(loss):.4f}",
                flush=True,
            )
    return rewards


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--free-text", action="store_true", help="do not constrain decoding to the valid actions")
    args = parser.parse_args()
    asyncio.run(train(args.model, args.steps, args.lr, constrained=not args.free_text))


if __name__ == "__main__":
    main()
