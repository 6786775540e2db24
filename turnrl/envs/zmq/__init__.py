"""Env transport over ZeroMQ: EnvWorker processes hosting many envs (``worker``) and the pool that starts, watches and
restarts them, handing episodes ordinary ``Env`` objects (``pool.EnvWorkerPool``, ``pool.WorkerEnv``)."""
