"""Beyond one process: the learner sharded with FSDP2 under torchrun, its checkpoints written with
torch.distributed.checkpoint (DCP), and trajectories shared between ranks as msgpack bytes.

Invariant: the room only wraps what the training room already computes (the same losses, the same
normalisation over the global batch); every rank holds the whole batch and runs its share of it.
"""
