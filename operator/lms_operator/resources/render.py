"""Everything the operator would create for a resource, in a stable order."""
from __future__ import annotations

from typing import Any

from lms_operator.api.spec import LargeModelService
from lms_operator.api.version import version_key
from lms_operator.modelrepo.assemble import resource_templates, template_digests
from lms_operator.resources.autoscaling import build_autoscaler
from lms_operator.resources.job import build_compression_job
from lms_operator.resources.server import build_deployment, build_pdb, build_service
from lms_operator.resources.settings import BuildSettings


def serving_objects(lms: LargeModelService, key: str, settings: BuildSettings,
                    owner: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Deployment, Service, autoscaler and PDB for the given published version."""
    return [build_deployment(lms, key, settings, owner), build_service(lms, key, owner),
            build_autoscaler(lms, key, settings, owner), build_pdb(lms, key, owner)]


def desired_version(lms: LargeModelService, settings: BuildSettings) -> str:
    """The version key with the digests of the serving templates the resource uses (TemplateError: one is missing)."""
    return version_key(lms, template_digests(resource_templates(settings.templates, lms)))


def all_objects(lms: LargeModelService, settings: BuildSettings,
                owner: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    key = desired_version(lms, settings)
    return [build_compression_job(lms, key, settings, owner), *serving_objects(lms, key, settings, owner)]
