"""Saving, finding, verifying and loading model weights.

Weights travel as three files side by side, named after the model (``default`` is the one that
``model="default"`` loads):

* ``<name>.safetensors`` — the state dict (safetensors never executes code on load);
* ``<name>.json`` — the model card: architecture config, feature normalisation, label names,
  training data and compute, evaluation figures, licence;
* ``<name>.sha256`` — SHA-256 of the safetensors file (``sha256sum`` format).

A truncated or altered file is refused with :class:`WeightsIntegrityError`; a card whose
config does not fit the tensors is refused with a ``ValueError``; state dicts load strictly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .features import feature_names
from .labels import CRYSTAL_SYSTEMS
from .model import ModelConfig, PEAGGMoE

__all__ = [
    "WeightsIntegrityError",
    "weights_dirs",
    "available_models",
    "resolve_weights",
    "load_model",
    "save_weights",
    "model_card",
    "read_card",
    "sha256_of",
    "update_card",
]

logger = logging.getLogger(__name__)

_PACKAGE_DIR = Path(__file__).resolve().parent


class WeightsIntegrityError(ValueError):
    """A weights file does not match its recorded SHA-256 (truncated, altered or mixed up)."""


def weights_dirs() -> list[Path]:
    """Folders searched for named weights, in order.

    ``$PY4DSTEM_GNN_WEIGHTS`` (if set), the repository's ``weights/`` (source checkouts and
    editable installs) and the copy bundled inside an installed wheel.
    """
    dirs = []
    env = os.environ.get("PY4DSTEM_GNN_WEIGHTS")
    if env:
        dirs.append(Path(env))
    dirs += [_PACKAGE_DIR.parent / "weights", _PACKAGE_DIR / "_weights"]
    return dirs


def available_models() -> list[str]:
    """Names of the weights found in :func:`weights_dirs`."""
    names = set()
    for d in weights_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.safetensors"))
    return sorted(names)


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_weights(model: str | os.PathLike) -> Path:
    """Path of the safetensors file for a model name or path.

    Parameters
    ----------
    model : str or path-like
        A name (``"default"``) looked up in :func:`weights_dirs`, or a path to a
        ``.safetensors`` file (its card ``.json`` must lie beside it).

    Raises
    ------
    FileNotFoundError
        Naming every place that was searched.
    """
    p = Path(model)
    if p.suffix == ".safetensors" or p.is_file() or os.sep in str(model):
        candidates = [p if p.suffix == ".safetensors" else p.with_suffix(".safetensors")]
    else:
        candidates = [d / f"{model}.safetensors" for d in weights_dirs()]
    for c in candidates:
        if c.is_file():
            return c
    looked = "\n  ".join(str(c) for c in candidates)
    known = ", ".join(available_models()) or "none found"
    raise FileNotFoundError(
        f"no weights for model={str(model)!r}; looked for:\n  {looked}\n"
        f"available names: {known}. Pass a name, a path to a .safetensors file, or a loaded model."
    )


def read_card(weights_path: str | os.PathLike) -> dict[str, Any]:
    """Read the JSON model card that lies beside a weights file."""
    card_path = Path(weights_path).with_suffix(".json")
    if not card_path.is_file():
        raise FileNotFoundError(f"model card {card_path} is missing (it must lie beside {weights_path})")
    return json.loads(card_path.read_text())


def _verify(weights_path: Path, card: dict[str, Any]) -> None:
    expected = None
    sha_file = weights_path.with_suffix(".sha256")
    if sha_file.is_file():
        expected = sha_file.read_text().split()[0].strip().lower()
    card_sha = card.get("sha256")
    if expected and card_sha and expected != card_sha.lower():
        raise WeightsIntegrityError(f"{sha_file} and the card of {weights_path} record different checksums")
    expected = expected or card_sha
    if not expected:
        raise WeightsIntegrityError(f"no SHA-256 recorded for {weights_path} (expected {sha_file} or 'sha256' in the card)")
    actual = sha256_of(weights_path)
    if actual != expected:
        raise WeightsIntegrityError(
            f"checksum mismatch for {weights_path}: expected {expected}, file has {actual}. "
            "The file is truncated or altered: download or copy it again."
        )


def load_model(model: "str | os.PathLike | PEAGGMoE" = "default", device: str | torch.device = "cpu") -> PEAGGMoE:
    """Load a model in evaluation mode.

    Parameters
    ----------
    model : str, path-like or PEAGGMoE
        ``"default"`` (the shipped weights), another name, a path to a ``.safetensors`` file, or
        an already constructed model (returned on ``device``, in eval mode).
    device : str or torch.device
        Where to put the model.

    Returns
    -------
    PEAGGMoE
        With its card (the parsed JSON) as ``model.card``; models built in code have none.

    Raises
    ------
    FileNotFoundError
        Unknown name or missing file (the message lists where it looked).
    WeightsIntegrityError
        The file's SHA-256 differs from the recorded one.
    ValueError
        The card's config does not match the tensors.
    TypeError
        ``model`` is of an unsupported type.
    """
    if isinstance(model, PEAGGMoE):
        return model.to(device).eval()
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be a name, a path or a PEAGGMoE; got {type(model).__name__}")
    path = resolve_weights(model)
    card = read_card(path)
    _verify(path, card)
    from safetensors.torch import load_file

    try:
        config = ModelConfig.from_dict(card["config"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"the card of {path} holds no valid model config: {err}") from err
    net = PEAGGMoE(config)
    state = load_file(str(path))
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"the tensors in {path} do not match the config in its card: {err}") from err
    logger.debug("loaded %s (%s)", path, card.get("name", path.stem))
    # the card travels with the model: calibrated confidence, default threshold, conformal sets
    net.card = card
    return net.to(device).eval()


def model_card(model: PEAGGMoE, **extra: Any) -> dict[str, Any]:
    """Card of a model: its config, label names, size and any extra fields."""
    card: dict[str, Any] = {
        "architecture": "PE-AG-GMoE",
        "paper": "Nathani et al., Accelerating electron diffraction analysis using graph neural networks "
        "and attention mechanisms, npj Comput. Mater. (2026)",
        "config": model.config.to_dict(),
        "feature_normalisation": {
            "features": feature_names(model.config.feature_set),
            "mean": list(model.config.feature_mean),
            "std": list(model.config.feature_std),
        },
        "labels": {
            "crystal_system": list(CRYSTAL_SYSTEMS),
            "space_group": "International Tables number = column index + 1",
        },
        "n_parameters": model.num_parameters(),
        "licence": "GPL-3.0-or-later (code); weights trained on OQMD-derived data, CC-BY 4.0 attribution in NOTICE.md",
    }
    card.update(extra)
    return card


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; weights are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_weights(model: PEAGGMoE, directory: str | os.PathLike, name: str = "default", **card_fields: Any) -> Path:
    """Write ``<name>.safetensors``, ``<name>.json`` and ``<name>.sha256`` atomically.

    Parameters
    ----------
    model : PEAGGMoE
        The model to save.
    directory : path-like
        Target folder (created if needed).
    name : str
        Model name.
    **card_fields
        Extra card entries (training data, compute, evaluation figures...).

    Returns
    -------
    pathlib.Path
        Path of the safetensors file.
    """
    from safetensors.torch import save as st_save

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    blob = st_save(state, metadata={"format": "pt", "name": name})
    digest = hashlib.sha256(blob).hexdigest()
    path = directory / f"{name}.safetensors"
    card = model_card(model, name=name, sha256=digest, **card_fields)
    _atomic_write_bytes(path, blob)
    _atomic_write_bytes(path.with_suffix(".json"), (json.dumps(card, indent=2, sort_keys=False) + "\n").encode())
    _atomic_write_bytes(path.with_suffix(".sha256"), f"{digest}  {path.name}\n".encode())
    return path


def update_card(weights_path: str | os.PathLike, fields: dict[str, Any], remove: tuple[str, ...] = ()) -> Path:
    """Set (or remove) top-level fields of a weights' JSON card, atomically.

    Only the card changes: the safetensors file and its SHA-256 are not touched, and the card's
    ``sha256`` and ``config`` cannot be changed this way.

    Parameters
    ----------
    weights_path : path-like
        The ``.safetensors`` file (see :func:`resolve_weights`); its card lies beside it.
    fields : dict
        JSON-serialisable entries to set.
    remove : tuple of str
        Entries to delete.

    Returns
    -------
    pathlib.Path
        Path of the card.
    """
    protected = {"sha256", "config"}
    if protected & (set(fields) | set(remove)):
        raise ValueError(f"update_card cannot change {sorted(protected & (set(fields) | set(remove)))}")
    card_path = Path(weights_path).with_suffix(".json")
    card = read_card(weights_path)
    for key in remove:
        card.pop(key, None)
    card.update(fields)
    _atomic_write_bytes(card_path, (json.dumps(card, indent=2, sort_keys=False, allow_nan=False) + "\n").encode())
    return card_path
