#!/usr/bin/env bash
# The sandbox's S3 server: versitygw (built by tools/build.sh) over a posix folder, as a host
# process with a random root key pair.
#   s3.sh up DIR [BUCKET...]  start it over DIR/s3/ (reused when already running), wait until it
#                             answers, create the buckets (default: lms), write DIR/s3.env with
#                             AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, AWS_REGION;
#                             prints the path of s3.env
#   s3.sh down DIR            stop it (the data stays until DIR is removed)
# Needs LMS_TOOLS_BIN (the folder tools/build.sh prints) or versitygw on PATH.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
. "$here/lib.sh"
python="${LMS_PYTHON:-$root/.venv/bin/python}"

cmd=${1:?usage: s3.sh up|down DIR [BUCKET...]}
dir=${2:?usage: s3.sh up|down DIR [BUCKET...]}
shift 2
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"

case "$cmd" in
  down)
    stop_bg "$dir/s3.pid"
    exit 0
    ;;
  up) ;;
  *) echo "s3.sh: unknown command $cmd" >&2; exit 2 ;;
esac

buckets=("$@")
(( ${#buckets[@]} )) || buckets=(lms)
gw="${LMS_TOOLS_BIN:+$LMS_TOOLS_BIN/}versitygw"

if ! [[ -f "$dir/s3.pid" ]] || ! kill -0 "$(cat "$dir/s3.pid")" 2>/dev/null; then
  command -v "$gw" >/dev/null || { echo "s3.sh: no versitygw binary ($gw); run tools/build.sh" >&2; exit 1; }
  port="$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  # The same keys again over existing data (its buckets belong to them); new ones the first time.
  access="$(sed -n 's/^AWS_ACCESS_KEY_ID=//p' "$dir/s3.env" 2>/dev/null || true)"
  secret="$(sed -n 's/^AWS_SECRET_ACCESS_KEY=//p' "$dir/s3.env" 2>/dev/null || true)"
  if [[ -z "$access" || -z "$secret" ]]; then
    access="lms$("$python" -c 'import secrets; print(secrets.token_hex(8))')"
    secret="$("$python" -c 'import secrets; print(secrets.token_urlsafe(30))')"
  fi
  mkdir -p "$dir/s3/data" "$dir/s3/meta"
  umask 077
  cat > "$dir/s3.env" <<ENV
AWS_ACCESS_KEY_ID=$access
AWS_SECRET_ACCESS_KEY=$secret
AWS_ENDPOINT_URL=http://127.0.0.1:$port
AWS_REGION=us-east-1
ENV
  umask 022
  # Keys through the environment, not argv (argv is visible to every local user).
  (
    export ROOT_ACCESS_KEY_ID="$access" ROOT_SECRET_ACCESS_KEY="$secret"
    start_bg s3 "$dir/s3.pid" "$dir/s3.log" \
      "$gw" --port "127.0.0.1:$port" --region us-east-1 --health /health posix --sidecar "$dir/s3/meta" "$dir/s3/data"
  )
fi

# Wait for the server, then create the buckets through the S3 API (idempotent).
LMS_S3_ENV="$dir/s3.env" "$python" - "${buckets[@]}" <<'PY'
import os, sys, time
from pathlib import Path

env = dict(line.split("=", 1) for line in Path(os.environ["LMS_S3_ENV"]).read_text().split())
import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError

cli = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_REGION"],
                   aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                   config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
deadline = time.monotonic() + 30
while True:
    try:
        cli.list_buckets()
        break
    except (EndpointConnectionError, ClientError) as exc:
        if time.monotonic() > deadline:
            sys.exit(f"s3.sh: the S3 server at {env['AWS_ENDPOINT_URL']} did not answer in 30 s: {exc}")
        time.sleep(0.2)
have = {b["Name"] for b in cli.list_buckets().get("Buckets", [])}
for bucket in sys.argv[1:]:
    if bucket not in have:
        cli.create_bucket(Bucket=bucket)
PY
echo "s3: ready at $(grep AWS_ENDPOINT_URL "$dir/s3.env" | cut -d= -f2) (buckets: ${buckets[*]})" >&2
echo "$dir/s3.env"
