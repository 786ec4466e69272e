"""Version keys: the content address of a published model repository.

The key covers everything that shapes the published files: the source model
(URI and digest pin), the compression spec, the serving fields that end up in
config.pbtxt, and the compression format version. Same input, same key, so a
version that is already published is a cache hit for both `lms compress` and
the operator. The package version is left out on purpose: an operator upgrade
that keeps the format version recompresses nothing and rolls nothing out.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

from lms_operator.api.contract import FORMAT_VERSION
from lms_operator.api.spec import LargeModelService

KEY_LENGTH = 16


def version_inputs(lms: LargeModelService) -> dict[str, Any]:
    serving = lms.raw_spec["serving"]
    return {
        "format": FORMAT_VERSION,
        "model": lms.raw_spec["model"],
        "compression": lms.raw_spec["compression"],
        "serving": {key: serving[key] for key in ("device", "maxBatchSize", "dynamicBatching", "instances",
                                                   "sequenceLength", "text")}
        | {"threads": lms.spec.serving.threads},
        "name": lms.name,
    }


def version_key(lms: LargeModelService) -> str:
    canonical = json.dumps(version_inputs(lms), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:KEY_LENGTH]
