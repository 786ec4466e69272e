"""Thin inference clients over Triton's HTTP and gRPC protocols (tritonclient)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

NUMPY_TO_TRITON = {
    np.dtype(np.float32): "FP32",
    np.dtype(np.float16): "FP16",
    np.dtype(np.float64): "FP64",
    np.dtype(np.int64): "INT64",
    np.dtype(np.int32): "INT32",
    np.dtype(np.int8): "INT8",
    np.dtype(np.uint8): "UINT8",
    np.dtype(np.bool_): "BOOL",
    np.dtype(np.object_): "BYTES",  # text: bytes or str items
}


def split_endpoint(endpoint: str, protocol: str | None) -> tuple[str, str]:
    """('http'|'grpc', 'host:port') from 'host:port', 'http://host:port' or 'grpc://host:port'."""
    scheme = None
    rest = endpoint
    if "://" in endpoint:
        scheme, rest = endpoint.split("://", 1)
        scheme = {"https": "http"}.get(scheme, scheme)
    rest = rest.rstrip("/")
    chosen = protocol or scheme or "http"
    if chosen not in ("http", "grpc"):
        raise ValueError(f"ENDPOINT: unknown protocol {chosen!r} (http or grpc)")
    if scheme is not None and protocol is not None and scheme != protocol:
        raise ValueError(f"ENDPOINT says {scheme} but --protocol is {protocol}")
    if not rest or ":" not in rest:
        raise ValueError(f"ENDPOINT: expected host:port, got {endpoint!r}")
    return chosen, rest


@dataclass
class Client:
    """One connection to a Triton server; `infer` maps input names to numpy arrays."""

    protocol: str
    url: str

    def __post_init__(self) -> None:
        if self.protocol == "grpc":
            import tritonclient.grpc as module
        else:
            import tritonclient.http as module
        self._module: Any = module
        self._client: Any = module.InferenceServerClient(self.url)

    def is_ready(self, model: str) -> bool:
        """Whether the server reports `model` ready; the first call also opens the connection."""
        return bool(self._client.is_model_ready(model))

    def input_names(self, model: str) -> list[str]:
        if self.protocol == "grpc":
            meta = self._client.get_model_metadata(model, as_json=True)
        else:
            meta = self._client.get_model_metadata(model)
        return [i["name"] for i in meta.get("inputs", [])]

    def infer(self, model: str, inputs: Mapping[str, np.ndarray], outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        tensors = []
        for name, array in inputs.items():
            tensor = self._module.InferInput(name, list(array.shape), NUMPY_TO_TRITON[array.dtype])
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        requested = [self._module.InferRequestedOutput(n) for n in outputs] if outputs else None
        result = self._client.infer(model, tensors, outputs=requested)
        names = outputs or [o["name"] for o in self._output_meta(result)]
        return {name: result.as_numpy(name) for name in names}

    def _output_meta(self, result: Any) -> list[dict[str, Any]]:
        if self.protocol == "grpc":
            return [{"name": o.name} for o in result.get_response().outputs]
        return list(result.get_response().get("outputs", []))

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
