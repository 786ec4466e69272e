"""Serving templates: each parses, the copies agree, bad fields are refused where they are, and the
merge order is template < spec.serving.config < the spec's own fields < what comes from the model."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

import pytest
from tritonclient.grpc import model_config_pb2 as pb

from lms_operator.api.spec import SpecError, parse_spec
from lms_operator.modelrepo.assemble import assemble_repository, served_configs, templates_from_json, templates_json
from lms_operator.modelrepo.config import TensorSpec, build_model_config, parse_config, render_config
from lms_operator.modelrepo.templates import PACKAGE_TEMPLATES, Template, TemplateError, load_templates, parse_template
from lms_operator.runtime.config import ConfigError, OperatorConfig
from tests.unit.conftest import load_example

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / "model-repo-templates"
CHART_COPY = ROOT / "charts" / "lms-operator" / "model-repo-templates"
INPUTS = [TensorSpec("input_ids", "TYPE_INT64", [-1]), TensorSpec("attention_mask", "TYPE_INT64", [-1])]
OUTPUTS = [TensorSpec("embedding", "TYPE_FP32", [384])]
KINDS = ["onnx-cpu", "onnx-gpu", "text-tokenizer", "text-labels", "text-ensemble"]


def _serving(**fields: Any) -> Any:
    manifest = load_example("minilm-cpu.yaml")
    manifest["spec"]["serving"].update(fields)
    return parse_spec(manifest).spec.serving


def test_one_template_per_serving_kind_and_each_parses() -> None:
    assert sorted(p.stem for p in FOLDER.glob("*.pbtxt")) == sorted(KINDS)
    for path in FOLDER.glob("*.pbtxt"):
        parse_template(path.read_text(), path.name)
    assert (FOLDER / "README.md").is_file()


@pytest.mark.parametrize("copy_", [PACKAGE_TEMPLATES, CHART_COPY], ids=["package", "chart"])
def test_the_package_and_chart_copies_are_the_folder_byte_for_byte(copy_: Path) -> None:
    names = sorted(p.name for p in FOLDER.glob("*.pbtxt"))
    assert sorted(p.name for p in copy_.glob("*.pbtxt")) == names
    for name in names:
        assert (copy_ / name).read_bytes() == (FOLDER / name).read_bytes(), f"cp {FOLDER / name} {copy_ / name}"


def test_a_misspelt_template_field_is_refused_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "onnx-cpu.pbtxt").write_text('platform: "onnxruntime_onnx"\n\ninstance_grup { kind: KIND_CPU }\n')
    with pytest.raises(TemplateError, match=r"^onnx-cpu\.pbtxt:3:1: .*instance_grup"):
        load_templates(tmp_path)
    with pytest.raises(ConfigError, match=r"--templates-dir: a serving template is not valid: onnx-cpu\.pbtxt:3:1"):
        OperatorConfig(clusterwide=True, templates_dir=tmp_path)


def test_a_templates_dir_replaces_one_template_and_adds_another(tmp_path: Path) -> None:
    (tmp_path / "onnx-cpu.pbtxt").write_text((FOLDER / "onnx-cpu.pbtxt").read_text() + "response_cache { enable: true }\n")
    (tmp_path / "openvino-cpu.pbtxt").write_text('backend: "openvino"\ninstance_group { kind: KIND_CPU }\n')
    templates = load_templates(tmp_path)
    assert templates["onnx-cpu"].config().response_cache.enable
    assert templates["openvino-cpu"].config().backend == "openvino"
    assert templates["onnx-gpu"].text == (FOLDER / "onnx-gpu.pbtxt").read_text()
    settings = OperatorConfig(clusterwide=True, templates_dir=tmp_path).build_settings()
    assert settings.templates["onnx-cpu"].config().response_cache.enable


def test_templates_travel_to_the_job_as_json_unchanged() -> None:
    templates = load_templates()
    assert templates_from_json(templates_json(templates)) == templates
    with pytest.raises(TemplateError, match="--templates-json"):
        templates_from_json('{"onnx-cpu": 3}')


HOSTILE_OVERRIDES: list[tuple[dict[str, Any], str]] = [
    ({"model_warmpu": []}, "spec.serving.config.model_warmpu: unknown field"),
    ({"response_cache": {"enable": "yes"}}, "spec.serving.config.response_cache.enable: must be a boolean"),
    ({"instance_group": [{"kind": "KIND_XPU"}]}, "spec.serving.config.instance_group[0].kind: must be one of"),
    ({"input": [{"name": "x"}]}, "spec.serving.config.input: input is set by the operator"),
    ({"name": "other"}, "spec.serving.config.name: name is set by the operator"),
    ({"platform": "tensorflow_savedmodel"}, "spec.serving.config.platform: platform is set by the operator"),
    ({"max_batch_size": 4}, "spec.serving.config.max_batch_size: max_batch_size is set by the operator"),
    ({"version_policy": {"latest": {"num_versions": 1}, "all": {}}}, "spec.serving.config: not a valid Triton ModelConfig"),
]


@pytest.mark.parametrize(("override", "message"), HOSTILE_OVERRIDES, ids=[m.split(":")[0] + str(i) for i, (_, m) in enumerate(HOSTILE_OVERRIDES)])
def test_a_bad_override_is_refused_with_its_field_path(override: dict[str, Any], message: str) -> None:
    manifest = load_example("minilm-cpu.yaml")
    manifest["spec"]["serving"]["config"] = override
    with pytest.raises(SpecError) as refused:
        parse_spec(manifest)
    assert message in str(refused.value)


def _set(path: str, value: Any) -> Callable[[pb.ModelConfig], Any]:
    def read(config: pb.ModelConfig) -> Any:
        node: Any = config
        for part in path.split("."):
            node = node[int(part)] if part.isdigit() else getattr(node, part)
        return node
    read.__name__ = path
    return read


# (case, template extra text, spec.serving fields, what to read, expected): later layers win.
MERGE_ORDER: list[tuple[str, str, dict[str, Any], Callable[[pb.ModelConfig], Any], Any]] = [
    ("template alone", "response_cache { enable: true }", {}, _set("response_cache.enable", None), True),
    ("override over template", "response_cache { enable: true }", {"config": {"response_cache": {"enable": False}}},
     _set("response_cache.enable", None), False),
    ("override replaces a repeated field", "", {"config": {"model_warmup": [{"name": "mine", "batch_size": 2}]}},
     lambda c: [w.name for w in c.model_warmup], ["mine"]),
    ("override's warm-up keeps its own inputs", "", {"config": {"model_warmup": [{"name": "w", "batch_size": 1, "inputs": {
        "input_ids": {"data_type": "TYPE_INT64", "dims": [4], "random_data": True}}}]}},
     lambda c: sorted(c.model_warmup[0].inputs), ["input_ids"]),
    ("spec's instances over the override's count", "", {"instances": 2, "config": {"instance_group": [
        {"count": 7, "kind": "KIND_CPU", "rate_limiter": {"priority": 3}}]}},
     lambda c: (c.instance_group[0].count, c.instance_group[0].rate_limiter.priority), (2, 3)),
    ("spec's threads over the template's parameter", 'parameters { key: "intra_op_thread_count" value { string_value: "9" } }',
     {"resources": {"cpu": "4", "memory": "4Gi"}}, lambda c: c.parameters["intra_op_thread_count"].string_value, "4"),
    ("spec's batching delay over the override's", "", {"config": {"dynamic_batching": {"max_queue_delay_microseconds": 9}},
                                                       "dynamicBatching": {"maxQueueDelayMicroseconds": 50}},
     _set("dynamic_batching.max_queue_delay_microseconds", None), 50),
    ("batching disabled in the spec clears the template's", "", {"dynamicBatching": {"enabled": False}},
     lambda c: c.HasField("dynamic_batching"), False),
    ("the model's inputs over the template's", 'input { name: "wrong" data_type: TYPE_FP32 dims: 1 }', {},
     lambda c: [i.name for i in c.input], ["input_ids", "attention_mask"]),
    ("the template's own parameter stays", "", {}, lambda c: c.parameters["inter_op_thread_count"].string_value, "1"),
    ("an empty override removes the template's warm-up", "", {"config": {"model_warmup": []}},
     lambda c: list(c.model_warmup), []),
    ("warm-up filled with the model's inputs", "", {"sequenceLength": 64},
     lambda c: [(n, list(i.dims), i.zero_data) for n, i in sorted(c.model_warmup[0].inputs.items())],
     [("attention_mask", [64], True), ("input_ids", [64], True)]),
]


@pytest.mark.parametrize(("case", "extra", "fields", "read", "expected"), MERGE_ORDER, ids=[m[0] for m in MERGE_ORDER])
def test_merge_order(case: str, extra: str, fields: dict[str, Any], read: Callable[[pb.ModelConfig], Any],
                     expected: Any) -> None:
    template = parse_template((FOLDER / "onnx-cpu.pbtxt").read_text() + extra + "\n", "onnx-cpu.pbtxt")
    config = parse_config(render_config(build_model_config("minilm", INPUTS, OUTPUTS, _serving(**fields), template)))
    assert read(config) == expected
    assert config.name == "minilm" and config.max_batch_size == 32


def test_a_named_template_serves_the_model() -> None:
    templates = {**load_templates(), "openvino-cpu": Template("openvino-cpu", 'backend: "openvino"\n')}
    main, *text = served_configs("minilm", "feature-extraction", INPUTS, OUTPUTS, _serving(template="openvino-cpu"),
                                 templates, text=True)
    assert main.backend == "openvino" and main.platform == ""
    assert [c.name for c in text] == ["minilm-tokenizer", "minilm-text"]


def _published(tmp_path: Path, serving: Any) -> Path:
    """A version folder as the Job publishes it: config.pbtxt per model and a version folder of files."""
    version = tmp_path / "repo" / "default" / "minilm" / "0123456789abcdef"
    for config in served_configs("minilm", "feature-extraction", INPUTS, OUTPUTS, serving, load_templates(), text=True):
        (version / config.name / "1").mkdir(parents=True)
        (version / config.name / "config.pbtxt").write_text(render_config(config))
        (version / config.name / "1" / "weights").write_text(config.name)
    return version


def test_assemble_links_the_files_and_writes_the_configs_of_now(tmp_path: Path) -> None:
    version = _published(tmp_path, _serving())
    out = tmp_path / "serving"
    manifest = load_example("minilm-cpu.yaml")
    manifest["spec"]["serving"].update(instances=3, config={"response_cache": {"enable": True}})
    lms = parse_spec(manifest)
    for _ in range(2):  # an init container that runs again starts from an empty folder
        assert assemble_repository(version, out, lms, load_templates()) == ["minilm", "minilm-tokenizer", "minilm-text"]
    main = parse_config((out / "minilm" / "config.pbtxt").read_text())
    assert main.instance_group[0].count == 3 and main.response_cache.enable
    assert [i.name for i in main.input] == ["input_ids", "attention_mask"]
    assert (out / "minilm" / "1").is_symlink() and (out / "minilm" / "1" / "weights").read_text() == "minilm"
    assert parse_config((version / "minilm" / "config.pbtxt").read_text()).instance_group[0].count == 1, "published untouched"
    assert sorted(p.name for p in out.iterdir()) == ["minilm", "minilm-text", "minilm-tokenizer"]


def test_an_unknown_template_name_fails_the_resource_as_a_spec_problem() -> None:
    from lms_operator.reconcile.run import template_checked_version
    from lms_operator.resources.settings import BuildSettings

    manifest = copy.deepcopy(load_example("minilm-cpu.yaml"))
    manifest["spec"]["serving"]["template"] = "onnx-tpu"
    with pytest.raises(SpecError, match=r"spec.serving.template: no serving template named 'onnx-tpu' \(there are: "):
        template_checked_version(parse_spec(manifest), BuildSettings())


def test_a_response_cache_in_the_model_config_turns_on_the_servers_cache() -> None:
    from lms_operator.resources.server import RESPONSE_CACHE_BYTES, triton_args
    from lms_operator.resources.settings import BuildSettings

    manifest = load_example("minilm-cpu.yaml")
    plain = triton_args(parse_spec(manifest), "k", BuildSettings())
    assert not any(a.startswith("--cache-config") for a in plain)
    manifest["spec"]["serving"]["config"] = {"response_cache": {"enable": True}}
    assert f"--cache-config=local,size={RESPONSE_CACHE_BYTES}" in triton_args(parse_spec(manifest), "k", BuildSettings())
