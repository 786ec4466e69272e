"""YAML files of several documents, read as `kubectl apply -f` reads them.

A GitOps repository keeps a LargeModelService beside its ConfigMaps and Secrets in one file;
`lms validate` and `lms render` check each LargeModelService in it and skip the other kinds
with a note. A problem in a file of several documents names the document (1 is the first)
and its name, so the user knows which one to fix.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lms_operator.api import schema as s
from lms_operator.api.spec import LargeModelService, SpecError, parse_spec
from lms_operator.api.validate import Problem


@dataclass(frozen=True)
class Document:
    """One document of a file: its place in the stream (1 is the first) and its content."""

    path: str
    index: int
    count: int
    manifest: Any

    @property
    def kind(self) -> str | None:
        kind = self.manifest.get("kind") if isinstance(self.manifest, dict) else None
        return kind if isinstance(kind, str) else None

    @property
    def name(self) -> str | None:
        metadata = self.manifest.get("metadata") if isinstance(self.manifest, dict) else None
        name = metadata.get("name") if isinstance(metadata, dict) else None
        return name if isinstance(name, str) else None

    @property
    def source(self) -> str:
        """Where a problem is: the file, and the document when the file holds several."""
        if self.count == 1:
            return self.path
        return f"{self.path}: document {self.index} ({self.name or 'no name'})"

    @property
    def is_service(self) -> bool:
        """A LargeModelService, or meant as one: its kind, our API group, or no kind to tell."""
        if not isinstance(self.manifest, dict) or self.kind in (None, s.KIND):
            return True
        api_version = self.manifest.get("apiVersion")
        return isinstance(api_version, str) and api_version.startswith(f"{s.GROUP}/")

    @property
    def skip_note(self) -> str:
        return f"{self.source}: skipped: a {self.kind}, not a {s.KIND}"


def read_documents(path: str | Path) -> list[Document]:
    """Every non-empty document of a YAML file; unreadable files and bad YAML raise SpecError."""
    where = str(path)
    try:
        manifests = list(yaml.safe_load_all(Path(path).read_text()))
    except OSError as exc:
        raise SpecError([Problem(where, f"cannot read: {exc.strerror}")], where) from exc
    except UnicodeDecodeError as exc:
        raise SpecError([Problem(where, f"is not UTF-8 text: {exc.reason}")], where) from exc
    except yaml.YAMLError as exc:
        raise SpecError([Problem(where, f"is not valid YAML: {exc}".splitlines()[0])], where) from exc
    count = len(manifests)
    return [Document(where, index, count, manifest)
            for index, manifest in enumerate(manifests, start=1) if manifest is not None]


@dataclass(frozen=True)
class FileVerdict:
    """What a file holds: the valid services, the problems of the others, the documents skipped."""

    services: list[tuple[Document, LargeModelService]]
    errors: list[SpecError]
    skipped: list[Document]

    @property
    def ok(self) -> bool:
        return not self.errors


def check_file(path: str | Path) -> FileVerdict:
    """Parse each LargeModelService of a file; a file without one is a problem too."""
    try:
        documents = read_documents(path)
    except SpecError as error:
        return FileVerdict([], [error], [])
    services: list[tuple[Document, LargeModelService]] = []
    errors: list[SpecError] = []
    for document in (d for d in documents if d.is_service):
        try:
            services.append((document, parse_spec(document.manifest, document.source)))
        except SpecError as error:
            errors.append(error)
    skipped = [d for d in documents if not d.is_service]
    if not services and not errors:
        kinds = f" (only {', '.join(sorted({d.kind or '?' for d in skipped}))})" if skipped else ""
        errors.append(SpecError([Problem("(file)", f"holds no {s.KIND}{kinds}")], str(path)))
    return FileVerdict(services, errors, skipped)
