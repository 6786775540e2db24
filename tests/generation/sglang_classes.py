"""SGLang's own request classes, for validating what ``SGLangGenerator`` sends.

``sglang`` installs on this CPU machine from its wheel without dependencies (``pip install --no-deps
sglang==0.5.23``), but ``import sglang`` pulls in CUDA-only packages. ``io_struct.py``, ``sampling_params.py``
and the few light modules they need are loaded here from the installed files themselves; every other ``sglang``
module they name is a small stub (a class for any attribute: types only used in annotations or for other
request kinds). ``validate`` then checks a body the way SGLang's HTTP server does (FastAPI/pydantic over the
request class), plus what pydantic would silently drop: every key must be a field the class defines, and the
``sampling_params`` are built as ``SamplingParams`` and verified.

Without sglang installed, ``FIELDS`` (read from the same pinned source, ``SOURCE``) is what is checked.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import sys
import types
from pathlib import Path

PINNED = "0.5.23"
FIELDS_FILE = Path(__file__).with_name("sglang_0_5_23_fields.json")

# endpoint -> request class (python/sglang/srt/entrypoints/http_server.py)
ENDPOINTS = {
    "/generate": "GenerateReqInput",
    "/abort_request": "AbortReq",
    "/pause_generation": "PauseGenerationReqInput",
    "/continue_generation": "ContinueGenerationReqInput",
    "/flush_cache": None,  # query parameters only (``timeout``); the body is ignored
    "/update_weights_from_disk": "UpdateWeightFromDiskReqInput",
    "/init_weights_update_group": "InitWeightsUpdateGroupReqInput",
    "/begin_weight_update": "BeginWeightUpdateReqInput",
    "/end_weight_update": "EndWeightUpdateReqInput",
    "/update_weights_from_distributed": "UpdateWeightsFromDistributedReqInput",
    "/release_memory_occupation": "ReleaseMemoryOccupationReqInput",
    "/resume_memory_occupation": "ResumeMemoryOccupationReqInput",
}
_REAL = {
    "sglang.srt.managers.io_struct",
    "sglang.srt.sampling.sampling_params",
    "sglang.srt.utils.weight_versions",
    "sglang.srt.utils.msgspec_utils",
    "sglang.srt.utils.field_validators",
    "sglang.srt.lora.lora_registry",
}


class _Stub(type):
    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Stub(name, (), {})

    def __call__(cls, *args, **kwargs):
        return _Stub("instance", (), {})

    def __getitem__(cls, key):
        return cls

    def __or__(cls, other):
        return cls

    def __ror__(cls, other):
        return cls

    def __get_pydantic_core_schema__(cls, source, handler):
        from pydantic_core import core_schema

        return core_schema.any_schema()


class _StubLoader(importlib.abc.Loader):
    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []

        def attribute(name):
            if name.startswith("__"):
                raise AttributeError(name)
            return _Stub(name, (), {})

        module.__getattr__ = attribute
        return module

    def exec_module(self, module):
        pass


class _Finder(importlib.abc.MetaPathFinder):
    """Serves ``sglang.*`` while io_struct loads: the real files in ``_REAL``, stubs for the rest."""

    def __init__(self, root: Path):
        self.root = root

    def find_spec(self, name, path, target=None):
        if name in _REAL:
            file = self.root / (name[len("sglang.") :].replace(".", "/") + ".py")
            return importlib.util.spec_from_file_location(name, file)
        if name == "sglang" or name.startswith("sglang."):
            return importlib.machinery.ModuleSpec(name, _StubLoader(), is_package=True)
        return None


def _installed_root() -> Path | None:
    spec = importlib.util.find_spec("sglang")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    return root if (root / "srt" / "managers" / "io_struct.py").exists() else None


def installed_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sglang")
    except PackageNotFoundError:
        return None


@contextlib.contextmanager
def sglang_classes():
    """Yield (io_struct, SamplingParams) from the installed wheel, or None when sglang is not installed; the
    modules are in ``sys.modules`` only inside the block (pydantic resolves annotations through them)."""
    root = _installed_root()
    if root is None:
        yield None
        return
    saved = {k: v for k, v in sys.modules.items() if k == "sglang" or k.startswith("sglang.")}
    finder = _Finder(root)
    sys.meta_path.insert(0, finder)
    try:
        for name in saved:
            del sys.modules[name]
        io_struct = importlib.import_module("sglang.srt.managers.io_struct")
        sampling = importlib.import_module("sglang.srt.sampling.sampling_params")
        yield types.SimpleNamespace(io_struct=io_struct, SamplingParams=sampling.SamplingParams)
    finally:
        sys.meta_path.remove(finder)
        for name in [k for k in sys.modules if k == "sglang" or k.startswith("sglang.")]:
            del sys.modules[name]
        sys.modules.update(saved)


def class_fields(classes, name: str) -> list[str]:
    import dataclasses

    import msgspec

    cls = getattr(classes.io_struct, name)
    if dataclasses.is_dataclass(cls):
        return [f.name for f in dataclasses.fields(cls)]
    return [f.name for f in msgspec.structs.fields(cls)]


def recorded_fields() -> dict:
    return json.loads(FIELDS_FILE.read_text())


def validate(classes, path: str, body: dict) -> object:
    """Raise (naming the path) unless SGLang's server would accept ``body`` at ``path`` as it is meant."""
    if path not in ENDPOINTS:
        raise AssertionError(f"{path}: not an endpoint this client is known to use")
    name = ENDPOINTS[path]
    if name is None:
        return None
    if classes is None:  # sglang not installed: the field lists read from the pinned source
        fields = recorded_fields()["classes"][name]
        unknown = sorted(set(body) - set(fields["fields"]))
        missing = sorted(set(fields["required"]) - set(body))
        if unknown or missing:
            raise AssertionError(f"{path}: fields unknown to {name}: {unknown}; required but missing: {missing}")
        if path == "/generate":
            known = recorded_fields()["classes"]["SamplingParams"]["fields"]
            unknown = sorted(set(body["sampling_params"]) - set(known))
            if unknown:
                raise AssertionError(f"{path}: sampling_params unknown to SamplingParams: {unknown}")
        return body
    import pydantic

    unknown = sorted(set(body) - set(class_fields(classes, name)))
    if unknown:
        raise AssertionError(f"{path}: fields unknown to {name} (pydantic would drop them silently): {unknown}")
    parsed = pydantic.TypeAdapter(getattr(classes.io_struct, name)).validate_python(body)
    if path == "/generate":
        parsed.normalize_batch_and_arguments()
        sampling = classes.SamplingParams(**parsed.sampling_params)  # unknown keys are a TypeError
        sampling.verify(vocab_size=1 << 20)
    return parsed
