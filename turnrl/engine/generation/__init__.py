"""Every way to generate behind one ``Generator`` interface: the continuous-batching engine (in process or behind
ZeroMQ as the service) and SGLang servers; weight sync, versions, sampling RNG, statistics."""
