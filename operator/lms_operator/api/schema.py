"""The LargeModelService OpenAPI schema: the single source of the API's shape.

The CRD in crds/ is generated from these dicts, and the Python spec parser
validates and defaults against the very same dicts (CEL rules included), so the
API server and `lms render` cannot disagree about what a valid resource is.
"""
from __future__ import annotations

import copy
from typing import Any

from lms_operator.api.contract import PHASES
from lms_operator.api.model_config import override_schema
from lms_operator.api.forms import (DATA_URI_PATTERN, DATA_URI_WORDS, DNS1123_PATTERN, DNS1123_SUBDOMAIN_PATTERN,
                                    MODEL_URI_PATTERN, MODEL_URI_WORDS, PROMETHEUS_DURATION_PATTERN, QUANTITY_PATTERN,
                                    REPOSITORY_URI_WORDS, S3_REPOSITORY_PATTERN, SHA256_PATTERN, uri_rules)

Schema = dict[str, Any]

GROUP = "serving.lms.dev"
VERSION = "v1alpha1"
KIND = "LargeModelService"
PLURAL = "largemodelservices"
SINGULAR = "largemodelservice"
SHORT_NAMES = ["lms"]
API_VERSION = f"{GROUP}/{VERSION}"

DEFAULT_TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"


def _with(schema: Schema, description: str | None, default: Any) -> Schema:
    if description:
        schema["description"] = description
    if default is not None:
        schema["default"] = default
    return schema


def string(description: str | None = None, *, enum: list[str] | None = None, max_length: int = 256,
           pattern: str | None = None, default: str | None = None, min_length: int | None = None) -> Schema:
    schema: Schema = {"type": "string", "maxLength": max_length}
    if enum:
        schema["enum"] = enum
    if pattern:
        schema["pattern"] = pattern
    if min_length is not None:
        schema["minLength"] = min_length
    return _with(schema, description, default)


def uri(description: str, *, form: str, words: str, max_length: int = 2048) -> Schema:
    """A URI field: its form and safety checks are CEL rules, so the API server words its refusals too."""
    schema = string(description, max_length=max_length)
    schema["x-kubernetes-validations"] = uri_rules(form, words)
    return schema


def integer(description: str | None = None, *, minimum: int | None = None, maximum: int | None = None,
            default: int | None = None) -> Schema:
    schema: Schema = {"type": "integer", "format": "int64"}
    if minimum is not None:
        schema["minimum"] = minimum
    if maximum is not None:
        schema["maximum"] = maximum
    return _with(schema, description, default)


def number(description: str | None = None, *, minimum: float | None = None, maximum: float | None = None,
           exclusive_minimum: bool = False, exclusive_maximum: bool = False, default: float | None = None) -> Schema:
    schema: Schema = {"type": "number"}
    if minimum is not None:
        schema["minimum"] = minimum
        if exclusive_minimum:
            schema["exclusiveMinimum"] = True
    if maximum is not None:
        schema["maximum"] = maximum
        if exclusive_maximum:
            schema["exclusiveMaximum"] = True
    return _with(schema, description, default)


def boolean(description: str | None = None, *, default: bool | None = None) -> Schema:
    return _with({"type": "boolean"}, description, default)


def array(items: Schema, description: str | None = None, *, max_items: int = 16) -> Schema:
    return _with({"type": "array", "items": items, "maxItems": max_items}, description, None)


def string_map(description: str | None = None, *, max_properties: int = 32) -> Schema:
    return _with({"type": "object", "additionalProperties": string(max_length=253),
                  "maxProperties": max_properties}, description, None)


def obj(properties: dict[str, Schema], description: str | None = None, *, required: list[str] | None = None,
        rules: list[dict[str, str]] | None = None, default: dict[str, Any] | None = None) -> Schema:
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    if rules:
        schema["x-kubernetes-validations"] = rules
    return _with(schema, description, None if default is None else _completed(properties, default))


def _completed(properties: dict[str, Schema], default: dict[str, Any]) -> dict[str, Any]:
    """An object default with its fields' defaults filled in.

    The API server checks a default against the object's CEL rules as written,
    so `default: {}` would fail rules that read defaulted fields.
    """
    filled = dict(default)
    for key, sub in properties.items():
        if key not in filled and "default" in sub:
            filled[key] = copy.deepcopy(sub["default"])
    return filled


def rule(expression: str, message: str, field_path: str | None = None) -> dict[str, str]:
    entry = {"rule": expression, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


def secret_ref(description: str) -> Schema:
    """A Secret in the resource's namespace, handed to pods by reference (the operator never reads it)."""
    return obj({"name": string("Secret name.", max_length=253, pattern=DNS1123_SUBDOMAIN_PATTERN)},
               description, required=["name"])


MODEL = obj({
    "uri": uri("Where the source model lives: s3://bucket/prefix (a Hugging Face folder, or one .onnx, .pt or "
               ".safetensors object), hf://org/name[@revision], pvc://claim/path, or file: (local CLI only).",
               form=MODEL_URI_PATTERN, words=MODEL_URI_WORDS),
    "secretRef": secret_ref("Credentials for the source: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and optionally "
                            "AWS_ENDPOINT_URL, AWS_REGION, AWS_SESSION_TOKEN) for s3://, HF_TOKEN (and optionally "
                            "HF_ENDPOINT) for hf://."),
    "format": string("Source format.", enum=["huggingface", "torchscript", "onnx"], default="huggingface"),
    "task": string("What the model does; decides its inputs, outputs and quality metric.",
                   enum=["feature-extraction", "text-classification", "image-classification",
                         "tabular-classification"], default="feature-extraction"),
    "sha256": string("Digest pin of the model file (or of a folder's manifest); a mismatch fails the resource.",
                     max_length=64, pattern=SHA256_PATTERN),
}, "The model to compress and serve.", required=["uri"])

PRUNING = obj({
    "method": string("magnitude: global L1 pruning to a sparsity; threshold: weights below it become 0.",
                     enum=["magnitude", "threshold"], default="magnitude"),
    "sparsity": number("Fraction of weights removed (magnitude).", minimum=0.0, maximum=0.95,
                       exclusive_maximum=True, default=0.3),
    "threshold": number("Absolute weight threshold (threshold method).", minimum=0.0, maximum=1.0,
                        exclusive_minimum=True),
    "structured": boolean("Remove whole attention heads and FFN rows, so matrices shrink and inference is faster. "
                          "Unstructured pruning only zeroes weights: the file compresses better, latency does not "
                          "change (the report and status say so).", default=False),
    "recoverySteps": integer("Distillation steps from the teacher after structured pruning of an embedding "
                             "model (0: none).", minimum=0, maximum=1_000_000, default=300),
}, "Weight pruning.", rules=[
    rule("self.method != 'threshold' || has(self.threshold)", "threshold is required when method is threshold",
         ".threshold"),
])

QUANTIZATION = obj({
    "mode": string("dynamic/static int8 for CPU pools, fp16 for GPU pools.",
                   enum=["dynamic", "static", "fp16", "none"], default="dynamic"),
    "perChannel": boolean("Per-channel int8 weights (better accuracy).", default=True),
    "calibrationSamples": integer("Samples for static calibration.", minimum=1, maximum=4096, default=64),
}, "Quantization.", default={})

DISTILLATION = obj({
    "studentLayers": integer("Transformer layers kept in the student.", minimum=1, maximum=48),
    "temperature": number("Softmax temperature T.", minimum=0.0, maximum=20.0, exclusive_minimum=True, default=2.0),
    "alpha": number("Weight of the task loss; 1 - alpha weighs the teacher term.", minimum=0.0, maximum=1.0,
                    default=0.5),
    "epochs": integer("Passes over the training text.", minimum=1, maximum=100, default=1),
    "dataset": uri("Alias of compression.data.distillation.uri (plain text); set one of the two.",
                   form=DATA_URI_PATTERN, words=DATA_URI_WORDS),
    "steps": integer("Training steps (batches of 32) for embedding students; default: epochs over the text, "
                     "at most 2000 steps.", minimum=1, maximum=1_000_000),
    "studentUri": uri("A given student model instead of a layer-dropped teacher.", form=MODEL_URI_PATTERN,
                      words=MODEL_URI_WORDS),
    "seed": integer("Random seed; the same seed gives the same student.", minimum=0, maximum=2**31 - 1, default=0),
}, "Knowledge distillation into a smaller student.", required=["studentLayers"])

QUALITY_GATE = obj({
    "metric": string("cosine (mean cosine to the teacher's embeddings) or similarity (Spearman correlation of the "
                     "student's and the teacher's pairwise similarities) for embeddings; accuracy (labels) or "
                     "agreement (with the teacher's labels) for classifiers.",
                     enum=["cosine", "similarity", "accuracy", "agreement"], default="cosine"),
    "min": number("Lowest acceptable score.", minimum=0.0, maximum=1.0, default=0.99),
    "samples": integer("Held-out samples scored.", minimum=8, maximum=10000, default=256),
}, "Nothing is published below this score.", default={})


def data_entry(role: str) -> Schema:
    return obj({
        "uri": uri("s3://bucket/key (read with spec.model.secretRef's keys, else the default Secret's), "
                   "file:///path or a path relative to the spec's folder (local CLI); pvc:// is refused so far.",
                   form=DATA_URI_PATTERN, words=DATA_URI_WORDS),
        "format": string("text: one sample per line; jsonl: one JSON object per line.", enum=["text", "jsonl"],
                         default="text"),
        "field": string("The text field of a jsonl record.", max_length=128, default="text"),
        "labelField": string("The label field of a jsonl record (optional).", max_length=128),
    }, role, required=["uri"], rules=[
        rule("self.format == 'jsonl' || !has(self.labelField)", "labelField needs format jsonl", ".labelField"),
    ])


DATA = obj({
    "evaluation": data_entry("What the quality gate scores; never trained on. Default: the held-out part of the "
                             "distillation text or of the built-in corpus."),
    "calibration": data_entry("Static int8 calibration text. Default: the training text."),
    "distillation": data_entry("Training text for distillation and pruning recovery. Default: the built-in "
                               "corpus (WordNet 3.0 glosses and examples)."),
}, "The user's data; an entry left out falls back to the built-in corpus.")

COMPRESSION = obj({
    "pruning": PRUNING,
    "quantization": QUANTIZATION,
    "distillation": DISTILLATION,
    "qualityGate": QUALITY_GATE,
    "variantSearch": obj({
        "enabled": boolean("Try every allowed variant (each base with each quantization), not only the one the "
                           "spec names.", default=True),
        "objective": string("Among the variants that pass the gate: the fastest (latency) or the smallest (size).",
                            enum=["latency", "size"], default="latency"),
    }, "Which variants are built and which one is published.", default={}),
    "data": DATA,
    "resources": obj({
        "gpu": integer("nvidia.com/gpu for the compression Job (placed on serving.nodePool like serving); "
                       "training runs on CUDA when present.", minimum=0, maximum=8, default=0),
    }, "The compression Job's accelerators.", default={}),
}, "How the model is made smaller and faster.", default={}, rules=[
    rule("!has(self.distillation) || !has(self.distillation.dataset) || !has(self.data) || "
         "!has(self.data.distillation)",
         "distillation.dataset is an alias of data.distillation: set only one", ".distillation.dataset"),
])

TOLERATION = obj({
    "key": string(max_length=253),
    "operator": string(enum=["Exists", "Equal"], default="Equal"),
    "value": string(max_length=253),
    "effect": string(enum=["NoSchedule", "PreferNoSchedule", "NoExecute"]),
    "tolerationSeconds": integer(minimum=0),
})

SERVING = obj({
    "device": string("Node pool class.", enum=["cpu", "gpu"], default="cpu"),
    "image": string("Triton Inference Server image.", max_length=512, default=DEFAULT_TRITON_IMAGE),
    "nodePool": obj({
        "nodeSelector": string_map("Labels of the pool's nodes."),
        "tolerations": array(TOLERATION, "Tolerations for the pool's taints."),
    }, "Where Triton pods run.", default={}),
    "resources": obj({
        "cpu": string("CPU request and limit; also Triton's intra-op threads.", max_length=32,
                      pattern=QUANTITY_PATTERN, default="2"),
        "memory": string("Memory request and limit.", max_length=32, pattern=QUANTITY_PATTERN, default="4Gi"),
        "gpu": integer("nvidia.com/gpu per pod.", minimum=0, maximum=8, default=0),
    }, "Per-pod resources.", default={}),
    "maxBatchSize": integer("Largest batch Triton forms.", minimum=1, maximum=1024, default=32),
    "dynamicBatching": obj({
        "enabled": boolean(default=True),
        "maxQueueDelayMicroseconds": integer(minimum=0, maximum=1_000_000, default=2000),
        "preferredBatchSizes": array(integer(minimum=1, maximum=1024), max_items=8),
    }, "Triton's dynamic batcher.", default={}),
    "instances": integer("Model instances per pod.", minimum=1, maximum=16, default=1),
    "drainSeconds": integer("A stopping Triton pod first sleeps this long (preStop), so that Services drop it "
                            "before Triton stops taking requests; 0: no pause.", minimum=0, maximum=300, default=10),
    "progressDeadlineSeconds": integer("A rollout that makes no progress for this long is ProgressDeadlineExceeded: "
                                       "Degraded while an earlier version serves, else Failed.",
                                       minimum=10, maximum=86400, default=600),
    "sequenceLength": integer("Tokens per request the gate, benchmark and clients use; also the server-side "
                              "tokenizer's limit for text requests.", minimum=8, maximum=8192, default=128),
    "template": string("Serving template the model's config.pbtxt starts from (model-repo-templates/ and the chart's "
                       "modelRepoTemplates); default onnx-cpu or onnx-gpu by device.", max_length=63,
                       pattern=DNS1123_PATTERN),
    "config": override_schema("Fields of Triton's ModelConfig (config.pbtxt as YAML, .proto field names) laid over "
                              "the template, e.g. model_warmup, response_cache, optimization, instance_group's "
                              "rate_limiter; each field given replaces the template's."),
    "text": obj({
        "truncation": boolean("Texts longer than sequenceLength tokens are truncated (the response's `truncated` "
                              "output says so); false refuses them with an error.", default=True),
    }, "The text-in model served next to the token-level model for text tasks.", default={}),
}, "How the compressed model is served.", default={}, rules=[
    rule("self.device != 'gpu' || self.resources.gpu >= 1", "device gpu needs resources.gpu >= 1", ".resources.gpu"),
    rule("self.device != 'cpu' || self.resources.gpu == 0", "device cpu must not request GPUs", ".resources.gpu"),
])

AUTOSCALING = obj({
    "minReplicas": integer("Fewest replicas; 0 (scale to zero) needs a Triton metric and KEDA (without KEDA the "
                           "operator keeps 1).", minimum=0, maximum=1000, default=1),
    "maxReplicas": integer(minimum=1, maximum=1000, default=1),
    "metric": string("cpu (HPA), queueLatency (Triton queue time per request, µs) or inferenceRate (inferences/s "
                     "per pod); the Triton metrics need KEDA, without it the operator scales on CPU.",
                     enum=["cpu", "queueLatency", "inferenceRate"], default="cpu"),
    "target": integer("Target value: percent for cpu, microseconds or inferences/s otherwise.", minimum=1,
                      maximum=10_000_000, default=70),
    "window": string("PromQL rate window the Triton metrics are averaged over (a Prometheus duration, e.g. 30s, "
                     "1m); at least two scrape intervals.", max_length=16, pattern=PROMETHEUS_DURATION_PATTERN,
                     default="1m"),
    "scaleDownStabilizationSeconds": integer("Scale-down waits until the metric has asked for fewer replicas for "
                                             "this long (HPA behavior).", minimum=0, maximum=3600, default=300),
    "cooldownSeconds": integer("KEDA: seconds without activity before scaling to zero (cooldownPeriod).",
                               minimum=0, maximum=86400, default=300),
    "pollingSeconds": integer("KEDA: how often Prometheus is queried (pollingInterval).", minimum=1, maximum=3600,
                              default=15),
}, "Replica bounds and the metric that scales between them.", default={}, rules=[
    rule("self.minReplicas <= self.maxReplicas", "minReplicas must be <= maxReplicas", ".minReplicas"),
    rule("self.metric != 'cpu' || self.target <= 100", "a cpu target is a percentage (1-100)", ".target"),
    rule("self.metric != 'cpu' || self.minReplicas >= 1",
         "minReplicas 0 (scale to zero) needs metric queueLatency or inferenceRate, not cpu", ".minReplicas"),
])

REPOSITORY = obj({
    "pvc": string("PersistentVolumeClaim holding the Triton model repository.", max_length=253,
                  pattern=DNS1123_PATTERN),
    "uri": uri("Object store prefix (s3://bucket/prefix) holding the repository; Triton reads it directly.",
               form=S3_REPOSITORY_PATTERN, words=REPOSITORY_URI_WORDS, max_length=1024),
    "secretRef": secret_ref("Credentials for repository.uri, given to the Job and to Triton by reference: "
                            "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION and AWS_ENDPOINT_URL "
                            "(with a port, e.g. https://s3.eu-west-1.amazonaws.com:443: Triton needs it)."),
    "keepVersions": integer("Published versions kept per resource; older ones are deleted after a publish, "
                            "never the one serving or rolling out.", minimum=1, maximum=100, default=3),
}, "Where compressed versions are published.", default={"pvc": "lms-models"}, rules=[
    rule("has(self.pvc) != has(self.uri)", "exactly one of pvc or uri must be set"),
    rule("!has(self.secretRef) || has(self.uri)", "secretRef applies to repository.uri only", ".secretRef"),
])

SPEC = obj({
    "model": MODEL,
    "compression": COMPRESSION,
    "serving": SERVING,
    "autoscaling": AUTOSCALING,
    "repository": REPOSITORY,
}, "Desired state of a LargeModelService.", required=["model"], rules=[
    rule("self.compression.quantization.mode != 'fp16' || self.serving.device == 'gpu'",
         "fp16 quantization is only for device gpu", ".compression.quantization.mode"),
    rule("(self.model.task == 'feature-extraction') == (self.compression.qualityGate.metric in ['cosine', 'similarity'])",
         "qualityGate.metric must be cosine or similarity for feature-extraction and accuracy or agreement for "
         "classifiers", ".compression.qualityGate.metric"),
    rule("!has(self.compression.distillation) || self.model.format != 'onnx'",
         "distillation needs a trainable source (huggingface or torchscript)", ".compression.distillation"),
    rule("!has(self.compression.pruning) || self.model.format != 'onnx'",
         "pruning needs a trainable source (huggingface or torchscript)", ".compression.pruning"),
])

CONDITION = obj({
    "type": string(max_length=64),
    "status": string(enum=["True", "False", "Unknown"]),
    "reason": string(max_length=128),
    "message": string(max_length=4096),
    "lastTransitionTime": string(max_length=64),
    "observedGeneration": integer(minimum=0),
}, required=["type", "status"])

STATUS = obj({
    "phase": string(enum=list(PHASES)),
    "message": string(max_length=4096),
    "observedGeneration": integer(minimum=0),
    "modelVersion": string("Version key of the published repository being served.", max_length=64),
    "desiredVersion": string("Version key the current spec asks for.", max_length=64),
    "conditions": array(CONDITION, max_items=16),
    "compression": obj({
        "version": string("Version key these numbers belong to.", max_length=64),
        "originalBytes": integer(minimum=0),
        "compressedBytes": integer(minimum=0),
        "ratio": number(),
        "latencyMs": number(),
        "baselineLatencyMs": number(),
        "speedup": number(),
        "speedupMedian": number("Speed-up over the median of the timing rounds (speedup is the best round's)."),
        "metric": string(max_length=32),
        "score": number(),
        "threshold": number(),
        "passed": boolean(),
        "variant": string(max_length=128),
        "sha256": string(max_length=64),
        "sourceRevision": string("The source's resolved revision (a Hugging Face commit).", max_length=128),
        "samples": integer("Evaluation samples the gate scored.", minimum=0),
        "dataSha256": string("sha256 of the evaluation data file (or of the built-in corpus).", max_length=64),
        "note": string("What the variant does and does not gain (e.g. unstructured pruning: smaller file, "
                       "same latency).", max_length=1024),
        "objective": string("What the variant search optimised: latency or size.", max_length=16),
        "variants": string("Every candidate the search built: size, speed, score; the published one starred.",
                           max_length=4096),
        "threads": integer("Threads the variant search timed the candidates with.", minimum=0),
    }),
    "endpoint": obj({"http": string(max_length=512), "grpc": string(max_length=512)}),
    "servingConfig": obj({
        "template": string("Serving template the model's config.pbtxt starts from.", max_length=63),
        "templateDigest": string("sha256 of that template's text.", max_length=64),
        "digest": string("Digest of everything the served configs are built from (templates, spec.serving.config, "
                         "batch size, instances, threads); also on the Triton pods.", max_length=64),
    }, "How the current spec serves the model; a change rolls the Triton pods, not the version."),
    "replicas": integer(minimum=0),
    "readyReplicas": integer(minimum=0),
})

PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Device", "type": "string", "jsonPath": ".spec.serving.device"},
    {"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas"},
    {"name": "Ratio", "type": "number", "jsonPath": ".status.compression.ratio"},
    {"name": "Score", "type": "number", "jsonPath": ".status.compression.score"},
    {"name": "Version", "type": "string", "jsonPath": ".status.modelVersion", "priority": 1},
    # Why Ready is what it is (e.g. ScaledToZero: Ready with 0 replicas), in `kubectl get lms -o wide`.
    {"name": "Reason", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].reason', "priority": 1},
    {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint.http"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]

NAME_MAX_LENGTH = 45
ROOT_RULES = [
    rule(f"self.metadata.name.size() <= {NAME_MAX_LENGTH}",
         f"metadata.name must be at most {NAME_MAX_LENGTH} characters (child names add suffixes)"),
]
