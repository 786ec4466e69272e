"""`lms serve`: compress (or reuse) a spec's version, serve it on a local Triton until stopped."""
from __future__ import annotations

import json
import shlex
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from lms_operator.modelrepo.layout import MODEL_VERSION, TOKENIZER_DIR, version_dir

SAMPLE_TEXT = "A fast, small model on Kubernetes."
SERVED_DIR = ".served"
"""ROOT/.served/<namespace>/<name>: the repository `lms serve` starts Triton on."""


class Stopped(Exception):
    """SIGINT or SIGTERM arrived."""


def _raise_stopped(signum: int, frame: FrameType | None) -> None:
    raise Stopped(signal.Signals(signum).name)


def has_nvidia_gpu() -> bool:
    """An NVIDIA device node is present (what Triton's KIND_GPU instances need)."""
    return any(Path("/dev").glob("nvidia[0-9]*"))


def sample_inputs(version: Path, model: str) -> list[dict[str, Any]]:
    """A ready-to-send KServe v2 `inputs` list for the model (tokenised sample text, or a zero vector)."""
    from lms_operator.modelrepo.config import parse_config

    config = parse_config((version / model / "config.pbtxt").read_text())
    names = [i.name for i in config.input]
    if "input_ids" in names:
        from lms_operator.serving.tokenize import encode, load_tokenizer

        tokenizer_path = version / model / MODEL_VERSION / TOKENIZER_DIR
        if (tokenizer_path / "tokenizer.json").is_file():
            ids, mask = encode(load_tokenizer(tokenizer_path, 128), [SAMPLE_TEXT])
            ids_list, mask_list = ids[:, : int(mask.sum())].tolist(), mask[:, : int(mask.sum())].tolist()
        else:
            ids_list, mask_list = [[101, 102]], [[1, 1]]
        return [{"name": "input_ids", "shape": [1, len(ids_list[0])], "datatype": "INT64", "data": ids_list},
                {"name": "attention_mask", "shape": [1, len(mask_list[0])], "datatype": "INT64", "data": mask_list}]
    inputs = []
    for tensor in config.input:
        dims = [max(1, int(d)) for d in tensor.dims]
        count = 1
        for d in dims:
            count *= d
        inputs.append({"name": tensor.name, "shape": [1, *dims], "datatype": "FP32", "data": [0.0] * count})
    return inputs


def banner(model: str, version: Path, root: Path, http_port: int, grpc_port: int, metrics_port: int) -> str:
    """What to tell the user once the model is ready: endpoints and requests to paste (text, where served)."""
    from lms_operator.modelrepo.text import TEXT_INPUT, text_model_name

    text = text_model_name(model)
    served_text = (version / text / "config.pbtxt").is_file()
    inputs = ([{"name": TEXT_INPUT, "shape": [1, 1], "datatype": "BYTES", "data": [SAMPLE_TEXT]}] if served_text
              else sample_inputs(version, model))
    body = json.dumps({"inputs": inputs}, separators=(",", ":"))
    url = f"http://127.0.0.1:{http_port}/v2/models/{text if served_text else model}/infer"
    lines = [
        f"model {model} ready (version {version.name})",
        f"  HTTP     http://127.0.0.1:{http_port}",
        f"  gRPC     127.0.0.1:{grpc_port}",
        f"  metrics  http://127.0.0.1:{metrics_port}/metrics",
        "",
        "request with curl:",
        f"  curl -s {url} -H 'Content-Type: application/json' -d {shlex.quote(body)}",
    ]
    has_text = any(i["name"] == "input_ids" for i in sample_inputs(version, model))
    if served_text:
        lines += ["request with lms:", f"  lms infer 127.0.0.1:{http_port} --model {model} --text {shlex.quote(SAMPLE_TEXT)}",
                  f"token-level model: {model} (input_ids, attention_mask)"]
    elif has_text:
        lines += ["request with lms:", f"  lms infer 127.0.0.1:{http_port} --model {model} --text {shlex.quote(SAMPLE_TEXT)} --repository {shlex.quote(str(root))}"]
    else:
        lines += ["request with lms:", f"  lms infer 127.0.0.1:{http_port} --model {model} --vector 0,0,...   (one value per feature)"]
    lines += ["load test:", f"  lms bench 127.0.0.1:{grpc_port} --model {model}" + (" [--text]" if served_text else ""), "",
              "Ctrl-C stops the server."]
    return "\n".join(lines)


def serve(spec: str, root: Path, http_port: int, grpc_port: int, metrics_port: int, model_dir: Path | None = None,
          ready_timeout: float = 180.0, log_path: Path | None = None) -> int:
    from lms_operator.api.spec import SpecError, load_spec_file
    from lms_operator.serving.triton import ServerError, TritonProcess, check_ports_free, server_args

    path = Path(spec)
    if not path.is_file():
        print(f"lms serve: {spec}: no such file", file=sys.stderr)
        return 2
    try:
        lms = load_spec_file(path)
    except SpecError as exc:
        for problem in exc.problems:
            print(f"lms serve: {spec}: {problem}", file=sys.stderr)
        return 2
    if lms.spec.serving.device == "gpu" and not has_nvidia_gpu():
        print(f"lms serve: {spec}: spec.serving.device: gpu needs an NVIDIA GPU on this machine (none found); "
              "use device: cpu to serve locally", file=sys.stderr)
        return 2
    args = server_args(root, http_port, grpc_port, metrics_port)
    try:
        check_ports_free(args)
    except ServerError as exc:
        print(f"lms serve: {exc}", file=sys.stderr)
        return 1
    summary = _compress(lms, root, path.resolve().parent, model_dir)
    if isinstance(summary, int):
        return summary
    version = version_dir(root, lms.namespace, lms.name, str(summary["version"]))
    state = "cache hit" if summary.get("cache_hit") else "published"
    print(f"lms serve: version {summary['version']} {state} ({summary.get('variant')}, "
          f"quality {summary.get('quality', {}).get('score')}) at {version}", file=sys.stderr)
    served = assemble(lms, version, root)
    server = TritonProcess(server_args(served, http_port, grpc_port, metrics_port), log_path=log_path)
    previous = {sig: signal.signal(sig, _raise_stopped) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.start()
        print(f"lms serve: starting Triton (log {server.log_path})", file=sys.stderr)
        server.wait_ready(lms.name, timeout=ready_timeout)
        print(banner(lms.name, version, root, http_port, grpc_port, metrics_port), flush=True)
        while server.process is not None and server.process.poll() is None:
            time.sleep(0.5)
        code = server.process.returncode if server.process is not None else None
        print(f"lms serve: tritonserver exited unexpectedly (code {code}):\n{server.log_tail()}", file=sys.stderr)
        return 1
    except Stopped as stop:
        print(f"lms serve: {stop}: stopping Triton", file=sys.stderr)
        return 0
    except ServerError as exc:
        print(f"lms serve: {exc}", file=sys.stderr)
        return 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def assemble(lms: Any, version: Path, root: Path) -> Path:
    """The repository Triton serves, as the operator's Triton pods get it: the version's files linked,
    each config.pbtxt built from the package's templates and the spec of now (so a serving change
    is served without recompressing, also on a cache hit)."""
    from lms_operator.modelrepo.assemble import assemble_repository, job_templates

    served = root / SERVED_DIR / lms.namespace / lms.name
    assemble_repository(version, served, lms, job_templates(lms, None))
    return served


def _compress(lms: Any, root: Path, spec_dir: Path, model_dir: Path | None) -> dict[str, Any] | int:
    """The compression pipeline's summary, or the exit code after printing why it failed."""
    from lms_operator.compression.errors import CompressionError
    from lms_operator.compression.pipeline import compress

    try:
        return compress(lms, root, spec_dir, model_dir).to_dict()
    except CompressionError as exc:
        print(f"lms serve: {exc}", file=sys.stderr)
        if exc.summary.to_dict():
            print(exc.summary.to_message(), file=sys.stderr)
        return int(exc.exit_code)
