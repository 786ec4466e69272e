"""Version keys: the content address of a published model repository.

A version is the compressed artifact: the key covers what shapes it (the source model's URI and
digest pin, the compression spec, the device, the sequence length and text settings the gate and
the text models use, and the compression format version). How it is served (serving template,
spec.serving.config, batch size, instances, threads) is laid over it in the Triton pod, so a
serving change rolls out without a new compression Job. An s3:// repository is the exception:
Triton reads its config.pbtxt straight from the bucket, so there the serving inputs are part of
the key too (and the Job copies the artifact of a version with the same `artifact_key`). Same input, same key, so a version that is already published is a cache hit for
both `lms compress` and the operator. The package version is left out on purpose: an operator
upgrade that keeps the format version recompresses nothing and rolls nothing out.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

from lms_operator.api.contract import FORMAT_VERSION
from lms_operator.api.spec import LargeModelService

KEY_LENGTH = 16
ARTIFACT_SERVING_FIELDS = ("device", "sequenceLength", "text")
SERVING_FIELDS = ("maxBatchSize", "dynamicBatching", "instances", "template", "config")


def _digest(inputs: dict[str, Any]) -> str:
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:KEY_LENGTH]


def artifact_inputs(lms: LargeModelService) -> dict[str, Any]:
    serving = lms.raw_spec["serving"]
    return {
        "format": FORMAT_VERSION,
        "model": lms.raw_spec["model"],
        "compression": lms.raw_spec["compression"],
        "serving": {key: serving[key] for key in ARTIFACT_SERVING_FIELDS},
        "name": lms.name,
    }


def artifact_key(lms: LargeModelService) -> str:
    """The compressed artifact alone: versions that share it differ only in how they are served."""
    return _digest(artifact_inputs(lms))


def serving_inputs(lms: LargeModelService, template_digests: Mapping[str, str]) -> dict[str, Any]:
    """What shapes the served config.pbtxt files: the templates' contents and the spec's serving fields."""
    serving = lms.raw_spec["serving"]
    return {key: serving.get(key) for key in SERVING_FIELDS} | {"threads": lms.spec.serving.threads,
                                                                "templates": dict(template_digests)}


def serving_digest(lms: LargeModelService, template_digests: Mapping[str, str]) -> str:
    return _digest(serving_inputs(lms, template_digests))


def version_key(lms: LargeModelService, template_digests: Mapping[str, str]) -> str:
    inputs = artifact_inputs(lms)
    if lms.spec.repository.uri:
        inputs["servingConfig"] = serving_inputs(lms, template_digests)
    return _digest(inputs)
