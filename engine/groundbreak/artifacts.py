"""Runtime artifacts inside a model package: OpenVINO IR files, their hashes and validation records.

A package may carry, next to its weights, the same network as OpenVINO IR (``openvino.xml`` +
``openvino.bin``, fp32) and a validated int8 IR (``openvino-int8.xml`` + ``.bin``): graph and weights
only, never code. They sit at the package's top level, beside the weights, so tools that copy a
package by its assets (``groundbreak model publish``) carry them. ``model.json`` lists them under
``groundbreak:artifacts`` (file names, sha256 of each file, the weights they were made from, the
calibration data and what each runtime scored with them) and as STAC assets with the ``mlm:model``
role; ``groundbreak:runtime_validation`` holds the records refusals and ``auto`` act on.
``groundbreak.model`` reads and validates both; this module writes them. It never imports torch
(only ``openvino``, to save IR).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from groundbreak.errors import ModelError, OutputError
from groundbreak.model import (
    CARD_FILE,
    MODEL_JSON,
    ModelArtifact,
    ModelPackage,
    RuntimeValidation,
    load_model_package,
)
from groundbreak.openvino_runtime import BIN, XML, file_sha256, import_openvino, library_version

log = logging.getLogger(__name__)

CARD_SECTION = "Runtimes"


def write_ir(package: ModelPackage, name: str, model: Any, *, precision: str,
             calibration: Optional[Mapping[str, Any]] = None) -> ModelArtifact:
    """Save ``model`` (an ``openvino.Model``) as the package's ``name`` artifact: ``<name>.xml``/``.bin``.

    Written beside and renamed into place (weights first, graph last). ``model.json`` is not changed
    here, so until ``record`` lists the new hashes a reader that finds new files under old hashes
    refuses them rather than running a mixture.
    """
    ov = import_openvino()
    xml, bin_ = package.root / f"{name}.xml", package.root / f"{name}.bin"
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=package.root))
    try:
        ov.save_model(model, str(tmp / XML), compress_to_fp16=False)
        for path in (tmp / XML, tmp / BIN):
            readable(path)
        os.replace(tmp / BIN, bin_)
        os.replace(tmp / XML, xml)
    except OSError as exc:
        raise OutputError(f"cannot write the {name} IR into {package.root}: {exc}",
                          hint="check the folder's permissions and free space") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ModelArtifact(
        name=name, xml=xml.name, bin=bin_.name, xml_sha256=file_sha256(xml), bin_sha256=file_sha256(bin_),
        weights_sha256=package.sha256, precision=precision, openvino_version=library_version("openvino"),
        calibration=dict(calibration or {}),
    )


def record(package: ModelPackage, *, artifacts: Iterable[ModelArtifact] = (),
           validation: Iterable[RuntimeValidation] = (), forget: Iterable[str] = (),
           card_text: str = "") -> ModelPackage:
    """List ``artifacts`` and ``validation`` records in the package's ``model.json`` (replacing earlier
    ones of the same names; ``forget`` drops the records of those runtimes first), put ``card_text``
    in the card's "Runtimes" section; returns the package reloaded."""
    meta = package.root / MODEL_JSON
    doc = json.loads(meta.read_text(encoding="utf-8"))
    props = doc["properties"] if doc.get("type") == "Feature" else doc
    listed = dict(props.get("groundbreak:artifacts") or {})
    assets = doc.setdefault("assets", {}) if doc.get("type") == "Feature" else None
    for art in artifacts:
        listed[art.name] = _artifact_json(art)
        if assets is not None:
            assets.update(_assets(art))
    if listed:
        props["groundbreak:artifacts"] = listed
    records = {k: v for k, v in (props.get("groundbreak:runtime_validation") or {}).items() if k not in set(forget)}
    for rec in validation:
        records[rec.runtime] = validation_json(rec)
    props["groundbreak:runtime_validation"] = records
    if not records:
        del props["groundbreak:runtime_validation"]
    _atomic_text(meta, json.dumps(doc, indent=2) + "\n")
    if card_text:
        card = package.card_path
        text = card.read_text(encoding="utf-8") if card.is_file() else f"# {package.model_id}\n"
        _atomic_text(card, replace_section(text, CARD_SECTION, card_text))
    return load_model_package(package.root)


def copy_artifacts(src: ModelPackage, dst: "str | Path") -> ModelPackage:
    """Carry ``src``'s artifacts and validation records over to package ``dst`` (same weights only).

    For re-publishing a package (new card, new metrics, the same weights): the IR and what it
    scored stay valid only while the weights are the same, so other weights are refused.
    """
    out = load_model_package(dst)
    if out.sha256 != src.sha256:
        raise ModelError(
            f"cannot carry runtime artifacts from {src.root} to {out.root}: the weights differ",
            hint="re-create the artifacts for the new weights with `groundbreak model quantize`",
        )
    if src.root.resolve() == out.root.resolve():
        return out
    for art in src.artifacts.values():
        for name in (art.bin, art.xml):
            tmp = out.root / f".{Path(name).name}.partial"
            shutil.copyfile(src.root / name, tmp)
            readable(tmp)
            os.replace(tmp, out.root / name)
    section = card_section(src.card_path.read_text(encoding="utf-8"), CARD_SECTION) if src.card_path.is_file() else ""
    return record(out, artifacts=src.artifacts.values(), validation=src.runtime_validation.values(),
                  card_text=section)


def replace_section(card: str, title: str, body: str) -> str:
    """``card`` with its ``## title`` section's body set to ``body`` (appended when absent)."""
    lines = card.rstrip("\n").split("\n")
    head = f"## {title}"
    try:
        start = lines.index(head)
    except ValueError:
        return "\n".join(lines) + f"\n\n{head}\n{body.strip()}\n"
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    tail = lines[end:]
    return "\n".join(lines[:start] + [head, body.strip(), ""] + tail).rstrip("\n") + "\n"


def card_section(card: str, title: str) -> str:
    """The body of ``## title`` in ``card`` ("" when absent)."""
    lines = card.split("\n")
    head = f"## {title}"
    if head not in lines:
        return ""
    start = lines.index(head) + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
    return "\n".join(lines[start:end]).strip()


def _artifact_json(art: ModelArtifact) -> dict:
    doc: dict = {"format": "openvino-ir", "precision": art.precision, "xml": art.xml, "bin": art.bin,
                 "xml_sha256": art.xml_sha256, "bin_sha256": art.bin_sha256, "weights_sha256": art.weights_sha256,
                 "openvino_version": art.openvino_version}
    if art.calibration:
        doc["calibration"] = dict(art.calibration)
    if art.validation:
        doc["validation"] = {runtime: validation_json(rec) for runtime, rec in art.validation.items()}
    return doc


def validation_json(rec: RuntimeValidation) -> dict:
    """A record as ``model.json`` stores it (without its runtime, which is the key; no empty fields)."""
    return {k: v for k, v in asdict(rec).items() if k != "runtime" and v not in (None, "")}


def _assets(art: ModelArtifact) -> dict:
    what = "int8 (validated, see groundbreak:runtime_validation)" if art.precision == "int8" else "fp32"
    return {
        f"{art.name}-xml": {
            "href": f"./{art.xml}", "title": f"OpenVINO IR graph, {what}", "type": "application/xml",
            "roles": ["mlm:model"], "mlm:artifact_type": "openvino-ir", "file:checksum": "1220" + art.xml_sha256,
        },
        f"{art.name}-bin": {
            "href": f"./{art.bin}", "title": f"OpenVINO IR weights, {what}", "type": "application/octet-stream",
            "roles": ["mlm:weights"], "mlm:artifact_type": "openvino-ir", "file:checksum": "1220" + art.bin_sha256,
        },
    }


def _atomic_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        readable(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def readable(path: Path) -> None:
    """The permissions a plain file (or folder) gets here: temporary files are private (0600)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


__all__ = ["CARD_FILE", "CARD_SECTION", "card_section", "copy_artifacts", "readable", "record", "replace_section",
           "validation_json", "write_ir"]
