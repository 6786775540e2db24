"""New weights for every SGLang server: from a directory (disk) or broadcast by the learner (NCCL), all or none.

Invariants:
- an update succeeds only when every server reports success; a server that reports ``Weights were updated, but
  the cache was not flushed`` (a cache flush refused while requests run) holds the new weights and counts as
  updated, its flush left pending (``flush_pending``);
- a disk update that fails on some servers is rolled back on the others to the previous directory when there is
  one; otherwise, or when the rollback fails too, ``SGLangError`` says which server holds which version and
  ``inconsistent`` is set until an update succeeds everywhere: never silent;
- the NCCL path: the learner joins the group once (every server's ranks after it), then per update
  ``/begin_weight_update`` on every server, one ``/update_weights_from_distributed`` per bucket on every server
  while the learner broadcasts that bucket (``flattened_bucket``; the version and the cache flush ride on the last
  bucket), then ``/end_weight_update`` on every server that began, also after a failure; a failure mid-way leaves
  the servers' weights partly updated: it raises and marks them ``inconsistent``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from turnrl.config.generation import SGLangOptions
from turnrl.engine.generation import weight_broadcast as wb
from turnrl.engine.generation.sglang_http import Reply, SGLangHTTP
from turnrl.errors import SGLangError

FLUSH_REFUSED = "Weights were updated, but the cache was not flushed"


class SGLangWeights:
    def __init__(self, http: SGLangHTTP, servers: list[str], options: SGLangOptions):
        self.http, self.servers, self.options = http, servers, options
        self.inconsistent: str | None = None
        self.flush_pending: set[str] = set()
        self.previous: tuple[str, int] | None = None  # (directory, version) every server holds
        self._group = None
        self.released = False

    # ---- shared ------------------------------------------------------------------------------------------------
    async def _everywhere(self, path: str, bodies: dict[str, dict] | dict) -> list[Reply]:
        per = bodies if all(u in bodies for u in self.servers) else dict.fromkeys(self.servers, bodies)
        return list(await asyncio.gather(*(self.http.call(u, path, per[u]) for u in self.servers)))

    def _sort(self, replies: list[Reply]) -> tuple[list[Reply], list[Reply]]:
        updated, failed = [], []
        for reply in replies:
            if reply.ok:
                updated.append(reply)
            elif reply.status == 400 and reply.message.startswith(FLUSH_REFUSED):
                self.flush_pending.add(reply.url)
                updated.append(reply)
            else:
                failed.append(reply)
        return updated, failed

    async def flush_pending_caches(self) -> None:
        """Flush the caches a refused flush left (refused again while requests still run: kept pending)."""
        for url in list(self.flush_pending):
            reply = await self.http.call(url, "/flush_cache", {})
            if reply.status == 200:
                self.flush_pending.discard(url)

    # ---- disk --------------------------------------------------------------------------------------------------
    async def from_disk(self, path: str, version: int, flush_cache: bool) -> None:
        body = {"model_path": path, "weight_version": str(version), "flush_cache": flush_cache}
        updated, failed = self._sort(await self._everywhere("/update_weights_from_disk", body))
        if not failed:
            self.previous, self.inconsistent = (path, version), None
            return
        errors = "; ".join(r.describe() for r in failed)
        if not updated:
            raise SGLangError(f"weight update to version {version} failed on every server: {errors}")
        if self.previous is None or self.previous[0] == path:
            self.inconsistent = f"version {version} on {[r.url for r in updated]}, older weights elsewhere"
            raise SGLangError(
                f"weight update to version {version} failed on {len(failed)} of {len(self.servers)} servers "
                f"({errors}); no earlier directory to roll back to: the servers now hold different weights"
            )
        old_path, old_version = self.previous
        back = {"model_path": old_path, "weight_version": str(old_version), "flush_cache": flush_cache}
        undone = await asyncio.gather(*(self.http.call(r.url, "/update_weights_from_disk", back) for r in updated))
        _, still = self._sort(list(undone))
        if still:
            self.inconsistent = f"rollback to version {old_version} failed on {[r.url for r in still]}"
            raise SGLangError(
                f"weight update to version {version} failed ({errors}) and the rollback to version {old_version} "
                f"failed too ({'; '.join(r.describe() for r in still)}): the servers hold different weights"
            )
        raise SGLangError(
            f"weight update to version {version} failed on {len(failed)} of {len(self.servers)} servers ({errors}); "
            f"rolled back to version {old_version} everywhere"
        )

    # ---- NCCL broadcast ----------------------------------------------------------------------------------------
    async def _join(self) -> None:
        if self._group is not None:
            return
        o = self.options
        port = o.nccl_master_port or wb.free_port(o.nccl_master_address)
        world = 1 + o.server_ranks * len(self.servers)
        bodies = {
            url: {
                "master_address": o.nccl_master_address,
                "master_port": port,
                "rank_offset": 1 + i * o.server_ranks,
                "world_size": world,
                "group_name": wb.GROUP_NAME,
                "backend": o.nccl_backend,
            }
            for i, url in enumerate(self.servers)
        }
        joining = asyncio.create_task(
            asyncio.to_thread(wb.join_weight_group, o.nccl_master_address, port, 0, world, backend=o.nccl_backend)
        )
        replies = await self._everywhere("/init_weights_update_group", bodies)
        failed = [r for r in replies if not r.ok]
        if failed:
            joining.add_done_callback(lambda t: t.exception())  # it times out without the servers: reap it
            raise SGLangError(f"init_weights_update_group failed: {'; '.join(r.describe() for r in failed)}")
        self._group = await joining

    async def broadcast(self, tensors, version: int, flush_cache: bool, device) -> None:
        """Send ``tensors`` (name, tensor pairs, the server's parameter names) to every server as ``version``."""
        if not tensors:
            raise ValueError("no tensors to send")
        await self._join()
        began = [r for r in await self._everywhere("/begin_weight_update", {}) if r.ok]
        try:
            if len(began) != len(self.servers):
                raise SGLangError(f"begin_weight_update failed on {sorted(set(self.servers) - {r.url for r in began})}")
            parts = wb.buckets(list(tensors), self.options.bucket_mb * 2**20)
            for index, bucket in enumerate(parts):
                last = index == len(parts) - 1
                body = {
                    **wb.metadata(bucket),
                    "group_name": wb.GROUP_NAME,
                    "load_format": "flattened_bucket",
                    "flush_cache": flush_cache and last,
                    "weight_version": str(version) if last else None,
                }
                flat = wb.flatten(bucket, device)
                path = "/update_weights_from_distributed"
                calls = asyncio.gather(*(self.http.call(u, path, body) for u in self.servers))
                await asyncio.to_thread(wb.broadcast, self._group, flat)
                _, failed = self._sort(list(await calls))
                if failed:
                    raise SGLangError(
                        f"update_weights_from_distributed (bucket {index + 1} of {len(parts)}) failed: "
                        f"{'; '.join(r.describe() for r in failed)}"
                    )
        except BaseException as exc:
            self.inconsistent = f"a broadcast of version {version} failed midway: {exc}"
            raise
        finally:
            ended = await asyncio.gather(*(self.http.call(r.url, "/end_weight_update", {}) for r in began))
            bad = [r for r in ended if not r.ok]
        if bad:
            self.inconsistent = f"end_weight_update failed on {[r.url for r in bad]}"
            raise SGLangError(f"end_weight_update failed: {'; '.join(r.describe() for r in bad)}")
        self.inconsistent = None

    # ---- colocated memory --------------------------------------------------------------------------------------
    async def release_memory(self, tags: list[str] | None = None) -> None:
        failed = [r for r in await self._everywhere("/release_memory_occupation", {"tags": tags}) if not r.ok]
        if failed:
            raise SGLangError(f"release_memory_occupation failed: {'; '.join(r.describe() for r in failed)}")
        self.released = True

    async def resume_memory(self, tags: list[str] | None = None) -> None:
        failed = [r for r in await self._everywhere("/resume_memory_occupation", {"tags": tags}) if not r.ok]
        if failed:
            raise SGLangError(f"resume_memory_occupation failed: {'; '.join(r.describe() for r in failed)}")
        if tags is None or "kv_cache" in tags:
            self.released = False

    async def close(self) -> None:
        if self._group is not None:
            group, self._group = self._group, None
            await asyncio.to_thread(wb.leave_weight_group, group)


def slot_dir(staging: Path, version: int) -> Path:
    """Two directories used in turn, so that the previous version stays on disk for a rollback."""
    return Path(staging) / f"slot-{version % 2}"
