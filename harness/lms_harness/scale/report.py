"""The scale bench's report: the targets it checks, the profile summary, the JSON file."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def targets(result: dict[str, Any], rss_max: float) -> dict[str, bool]:
    """The operator's scale targets, each true or false (a missing figure is false)."""
    def at_most(value: Any, limit: float) -> bool:
        return bool(value is not None and value <= limit)

    return {"all_ready_s<=120": at_most(result["all_ready_s"], 120),
            "apply_to_deployment_p99_s<=2": at_most(result["apply_to_deployment_p99_s"], 2),
            "operator_peak_rss_mib<=512": bool(rss_max and rss_max <= 512),
            "restart_recheck_s<=60": at_most(result["restart_recheck_s"], 60),
            "restart_changes==0": result["restart_changes"] == 0,
            "paced apply_to_deployment_p99_s<=2": at_most((result.get("paced") or {}).get("apply_to_deployment_p99_s"), 2)}


def machine() -> str:
    gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30)
    return f"{os.cpu_count()} cores, {gib} GiB, no GPU"


def profile_top(path: Path, n: int) -> list[str]:
    """The n functions with the most own time, one line each."""
    import io
    import pstats

    buf = io.StringIO()
    pstats.Stats(str(path), stream=buf).sort_stats("tottime").print_stats(n)
    return [line.strip() for line in buf.getvalue().splitlines() if line.strip()][-n:]


def write_result(out: Path, result: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(out)
