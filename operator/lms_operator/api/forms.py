"""The allowed forms of the API's string fields: each as a regular expression and in words.

A user who gets a form wrong reads the words with an example, never the expression, in
`lms validate` and from the API server alike. URI fields carry their form and their safety
checks as CEL rules with messages (the API server reports a `pattern` as its raw expression);
the other fields keep a `pattern` and `lms validate` says it in words (PATTERN_WORDS).

URI safety, the same for every URI field: no control characters, no `..` segment and no
empty segment. Percent-encoded forms count too (`%2e%2e`, `%2f..`, `%0a`): the Job decodes
s3:// keys and file: paths, so an encoded `..` would climb out just the same.
"""
from __future__ import annotations

from typing import Any

# Source and repository URIs (storage/uri.py parses the same shapes). An S3 bucket follows S3's
# naming rules; repository path segments hold only what Triton's s3:// form can address.
S3_BUCKET = r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"
S3_URI_PATTERN = rf"^s3://{S3_BUCKET}(/\S*)?$"
S3_REPOSITORY_PATTERN = rf"^s3://{S3_BUCKET}(/[0-9A-Za-z._-]+)*/?$"
HF_URI_PATTERN = r"^hf://[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*(@[A-Za-z0-9][A-Za-z0-9._/-]*)?$"
PVC_URI_PATTERN = r"^pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(/\S*)?$"
FILE_URI_PATTERN = r"^file:\S+$"
MODEL_URI_PATTERN = "|".join(f"({p})" for p in (FILE_URI_PATTERN, HF_URI_PATTERN, PVC_URI_PATTERN, S3_URI_PATTERN))
DATA_URI_PATTERN = r"^(file:\S+|(s3|pvc)://\S+|sklearn:digits|[^:\s][^:]*)$"
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$"
DNS1123_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS1123_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SHA256_PATTERN = r"^[a-f0-9]{64}$"
# A Prometheus duration (PromQL range), e.g. 30s, 1m, 1m30s.
PROMETHEUS_DURATION_PATTERN = r"^([0-9]+(ms|s|m|h|d|w|y))+$"

MODEL_URI_WORDS = ("must be one of hf://org/name[@revision], s3://bucket/key, pvc://claim/path, file:///path "
                   "(for example hf://sentence-transformers/all-MiniLM-L6-v2)")
DATA_URI_WORDS = ("must be one of s3://bucket/key, file:///path, a path relative to the spec's folder, or "
                  "sklearn:digits (for example s3://my-bucket/data/eval.txt or data/train.txt)")
REPOSITORY_URI_WORDS = ("must be s3://bucket[/prefix]: a bucket of 3-63 characters (a-z, 0-9, '.', '-') and "
                        "path segments of letters, digits, '.', '_' and '-' (for example s3://my-bucket/lms/models)")

PATTERN_WORDS: dict[str, str] = {
    MODEL_URI_PATTERN: MODEL_URI_WORDS,
    DATA_URI_PATTERN: DATA_URI_WORDS,
    S3_REPOSITORY_PATTERN: REPOSITORY_URI_WORDS,
    QUANTITY_PATTERN: "must be a Kubernetes quantity: a number with an optional suffix m, k, Ki, M, Mi, G, Gi, T "
                      "or Ti (for example 500m, 2 or 4Gi)",
    DNS1123_PATTERN: "must be a DNS-1123 label: lowercase letters, digits and '-', starting and ending with a "
                     "letter or digit (for example lms-models)",
    DNS1123_SUBDOMAIN_PATTERN: "must be a DNS-1123 subdomain: DNS-1123 labels (lowercase letters, digits and '-') "
                               "joined by '.' (for example hf-token)",
    SHA256_PATTERN: "must be a sha256 digest of 64 lowercase hexadecimal digits, as `lms digest` prints it "
                    "(for example e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855)",
    PROMETHEUS_DURATION_PATTERN: "must be a Prometheus duration: numbers with units ms, s, m, h, d, w or y "
                                 "(for example 30s, 1m or 1m30s)",
}
"""Every `pattern` in the schema, in words (tests/unit/test_forms.py holds the schema to it)."""

CONTROL_CHARACTER = r"[\x00-\x1f\x7f-\x9f]|%[01][0-9A-Fa-f]|%7[Ff]"
DOT_DOT_SEGMENT = r"(^|[/:]|%2[Ff])(\.|%2[Ee]){2}(/|%2[Ff]|$)"
NON_EMPTY_SEGMENTS = r"^([a-z][a-z0-9+.-]*:(//)?)?/?([^/]+/)*[^/]*$"
"""An optional scheme (`s3:`, `file://`), then segments of at least one character; one trailing
slash names a folder, and `file:///path`'s empty host is the scheme's, not a segment."""


def cel_string(text: str) -> str:
    """`text` as a CEL string literal (a regular expression keeps its backslashes)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def uri_rules(form: str, words: str) -> list[dict[str, Any]]:
    """CEL rules of one URI field: its form in words, then the safety checks, each with its message."""
    return [
        {"rule": f"self.matches({cel_string(form)})", "message": words},
        {"rule": f"!self.matches({cel_string(CONTROL_CHARACTER)})",
         "message": "must not contain control characters (NUL, tab, newline, DEL and the like), raw or "
                    "percent-encoded"},
        {"rule": f"!self.matches({cel_string(DOT_DOT_SEGMENT)})",
         "message": "must not contain a '..' path segment (nor an encoded one such as %2e%2e): a path stays "
                    "inside its bucket, claim or folder"},
        {"rule": f"self.matches({cel_string(NON_EMPTY_SEGMENTS)})",
         "message": "must not contain an empty path segment ('//' after the scheme, as in pvc://claim//path)"},
    ]
