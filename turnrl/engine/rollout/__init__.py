"""Episodes as coroutines: the episode state machine, running thousands at once, the trajectory buffer with its
staleness bound, the lock-step baseline, task sampling and turn-cap curricula."""
