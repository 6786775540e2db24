"""Env transport over HTTP in AgentGym's protocol: the server (``server``), its table of live envs (``env_table``),
a client env (``client.HttpEnv``) and a launcher for a local server (``launch``)."""
