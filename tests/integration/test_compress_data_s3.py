"""Data entries from a real S3 server (versitygw): read with the source credentials, digested,
and a missing object refused with reason InvalidData."""
from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from lms_operator.api.contract import INVALID_DATA
from lms_operator.api.spec import DataEntry, DataSpec
from lms_operator.compression import data
from lms_operator.compression.errors import InputError
from lms_operator.storage import s3
from lms_harness.cluster import tools_bin
from lms_harness.s3server import start_s3, stop_s3

pytestmark = [pytest.mark.timeout(300), pytest.mark.tools]  # versitygw
BODY = "\n".join(f'{{"q": "question number {i} about the weather", "y": {i % 3}}}' for i in range(20)) + "\n"


@pytest.fixture(scope="module")
def s3_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    folder = tmp_path_factory.mktemp("s3")
    env = start_s3(folder, tools_bin(), ("data",))
    try:
        yield env
    finally:
        stop_s3(folder)


@pytest.fixture
def bucket(s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    for key, value in s3_env.items():
        monkeypatch.setenv(key, value)
    s3.put_bytes(s3.client(), "data", "sets/eval.jsonl", BODY.encode(), "application/jsonl")
    return "data"


def test_evaluation_entry_from_s3(bucket: str, tmp_path: Path) -> None:
    entry = DataEntry(f"s3://{bucket}/sets/eval.jsonl", "jsonl", "q", "y")
    text = data.text_data(DataSpec(evaluation=entry), tmp_path, eval_limit=16)
    assert text.heldout == [f"question number {i} about the weather" for i in range(16)]
    assert text.heldout_labels == [i % 3 for i in range(16)]
    assert text.info["evaluation"] == {"source": entry.uri, "sha256": hashlib.sha256(BODY.encode()).hexdigest(),
                                       "samples": 16}


@pytest.mark.parametrize(("uri", "cause"), [("s3://data/sets/missing.txt", "no such object"),
                                            ("s3://data/sets/", "names a prefix")])
def test_missing_s3_data_is_invalid_data(bucket: str, tmp_path: Path, uri: str, cause: str) -> None:
    with pytest.raises(InputError) as caught:
        data.read_samples(DataEntry(uri), "spec.compression.data.evaluation", tmp_path)
    assert "spec.compression.data.evaluation.uri: " in str(caught.value) and cause in str(caught.value)
    assert caught.value.summary.reason == INVALID_DATA
