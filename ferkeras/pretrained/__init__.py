"""Models shipped inside the package: `ferkeras predict` needs no download and no `--model`.

Each sub-folder is an export folder (`model.onnx` + `metadata.json`, see
`ferkeras.deploy.inference`) with its `MODEL_CARD.md`. `ferkeras ship EXPORT_DIR` (the
`ferkeras.commands.ship_model` command) quantizes an export to int8 and installs it here,
with `SHA256SUMS` (the SHA-256 of model.onnx and metadata.json, `sha256sum -c` format) that
`verify_hashes` checks.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib

SHIPPED_NAME = "ferplus8"
SHIPPED_DIR = pathlib.Path(__file__).resolve().parent / SHIPPED_NAME
MODEL_ENV = "FERKERAS_MODEL"
HASH_FILE = "SHA256SUMS"
HASHED_FILES = ("model.onnx", "metadata.json")


def shipped_model() -> pathlib.Path | None:
    """The shipped model's folder, or None when this install has none (a source tree before
    `ferkeras ship` has run)."""
    if (SHIPPED_DIR / "model.onnx").is_file() and (SHIPPED_DIR / "metadata.json").is_file():
        return SHIPPED_DIR
    return None


def default_model(model: str | os.PathLike | None = None) -> tuple[pathlib.Path | None, str]:
    """(folder, where it came from) of the model to use: `model` if given, else
    $FERKERAS_MODEL, else the shipped model; (None, reason) when there is none."""
    if model:
        return pathlib.Path(model), "--model"
    env = os.environ.get(MODEL_ENV)
    if env:
        return pathlib.Path(env), f"${MODEL_ENV}"
    shipped = shipped_model()
    if shipped is not None:
        return shipped, "shipped"
    return None, (f"no model: this ferkeras has no shipped model in {SHIPPED_DIR}; pass "
                  f"--model EXPORT_DIR (or set ${MODEL_ENV}); `make export` writes one from "
                  "your own training run")


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_hashes(folder: str | os.PathLike) -> dict[str, str]:
    """Write `folder/SHA256SUMS` for model.onnx and metadata.json; return {name: sha256}."""
    folder = pathlib.Path(folder)
    hashes = {name: sha256_file(folder / name) for name in HASHED_FILES}
    text = "".join(f"{digest}  {name}\n" for name, digest in hashes.items())
    tmp = folder / f".{HASH_FILE}.tmp"
    tmp.write_text(text)
    os.replace(tmp, folder / HASH_FILE)
    return hashes


def verify_hashes(folder: str | os.PathLike = SHIPPED_DIR) -> list[str]:
    """Problems with a shipped folder's files against its SHA256SUMS (and metadata.json's
    `files.onnx_sha256`); an empty list when every file matches."""
    folder = pathlib.Path(folder)
    listing = folder / HASH_FILE
    if not listing.is_file():
        return [f"{listing}: missing"]
    problems, listed = [], {}
    for line in listing.read_text().splitlines():
        digest, _, name = line.partition("  ")
        listed[name.strip()] = digest.strip()
    for name in HASHED_FILES:
        if name not in listed:
            problems.append(f"{name}: not listed in {HASH_FILE}")
        elif not (folder / name).is_file():
            problems.append(f"{name}: missing")
        elif sha256_file(folder / name) != listed[name]:
            problems.append(f"{name}: SHA-256 differs from {HASH_FILE}")
    meta_path = folder / "metadata.json"
    if meta_path.is_file() and (folder / "model.onnx").is_file():
        recorded = json.loads(meta_path.read_text()).get("files", {}).get("onnx_sha256")
        if recorded != sha256_file(folder / "model.onnx"):
            problems.append("model.onnx: SHA-256 differs from metadata.json files.onnx_sha256")
    return problems


def portable_path(path: str | os.PathLike, *, base: str | os.PathLike | None = None) -> str:
    """`path` relative to `base` (default: the working directory) when it lies beneath it,
    else its last component: metadata written for others records no machine paths."""
    path = pathlib.Path(path)
    if not path.is_absolute():
        return path.as_posix()
    base = pathlib.Path(base or os.getcwd()).resolve()
    resolved = path.resolve()
    if resolved.is_relative_to(base):
        return resolved.relative_to(base).as_posix()
    return path.name


def finalize_shipped(folder: str | os.PathLike, *, base=None) -> dict[str, str]:
    """Make a model folder ready to ship: its metadata's `run_dir` portable
    (`portable_path`), then SHA256SUMS written. Returns the hashes."""
    folder = pathlib.Path(folder)
    meta_path = folder / "metadata.json"
    meta = json.loads(meta_path.read_text())
    if meta.get("run_dir"):
        portable = portable_path(meta["run_dir"], base=base)
        if portable != meta["run_dir"]:
            meta["run_dir"] = portable
            tmp = folder / ".metadata.json.tmp"
            tmp.write_text(json.dumps(meta, indent=2) + "\n")
            os.replace(tmp, meta_path)
    return write_hashes(folder)
