"""Input checks for the public functions: clear errors instead of crashes deep in torch.

The public entry points (:func:`py4dstem_gnn.predict_pointlists`,
:func:`py4dstem_gnn.aggregate_views`, :func:`py4dstem_gnn.classify_braggvectors`)
call these functions first. Every rule is listed, with its reason, in
``docs/guarantees.md``; in short:

* a wrong **type** (not a sequence of arrays, complex / boolean / text values, a
  single ``(n, 3)`` array instead of a list of them) raises :class:`TypeError`;
* a wrong **shape** or an out-of-range **parameter** raises :class:`ValueError`
  naming the parameter and the accepted values;
* **non-finite spots** (NaN or inf in ``qx``, ``qy`` or the intensity) are dropped,
  with one logged warning per call giving their number: one bad fit of a peak
  finder must not invalidate a position or a whole scan;
* **negative intensities** (background-subtracted fits) are kept; the model
  counts them as zero intensity (it clamps at 0). One warning per call;
* **pixel units**: spots beyond :data:`MAX_Q` (1/A) cannot come from an electron
  diffraction pattern calibrated in 1/A, so they raise a :class:`ValueError` that
  names the probable cause (vectors in detector pixels; a missing or wrong Q pixel
  size calibration);
* empty pointlists, a single spot, duplicated spots and thousands of spots are
  valid input (see ``docs/guarantees.md`` for what the model does with them).
"""

from __future__ import annotations

import logging
import numbers
import os
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

__all__ = [
    "MAX_Q",
    "clean_pointlists",
    "check_q_range",
    "finite_vectors",
    "check_batch_size",
    "check_tolerance",
    "resolve_device",
    "check_device",
    "check_model",
    "check_classify_parameters",
    "check_groups",
]

logger = logging.getLogger(__name__)

#: Largest spot distance from the direct beam (1/A) accepted as calibrated input.
#: Electron diffraction patterns recorded on a detector reach a few 1/A (the
#: training patterns stop near 2 1/A); vectors in detector pixels reach tens to
#: hundreds. Anything beyond this value is refused as "probably pixel units".
MAX_Q: float = 10.0


def _pixel_units_error(q_max: float, where: str) -> ValueError:
    return ValueError(
        f"{where} holds spots at |q| = {q_max:.4g} 1/A, beyond any electron diffraction pattern "
        f"(limit {MAX_Q:g} 1/A): the vectors are probably in detector pixels, not 1/A. Calibrate "
        "the Q pixel size (1/A per pixel; in py4DSTEM calibration.set_Q_pixel_size(...) then "
        "bv.setcal()), or pass qx, qy already converted to 1/A with the origin at the direct beam. "
        "If the spots truly reach that far, raise py4dstem_gnn.validation.MAX_Q."
    )


def check_q_range(qx: np.ndarray, qy: np.ndarray, where: str = "the input") -> None:
    """Refuse spot coordinates that are too large to be in 1/A.

    Parameters
    ----------
    qx, qy : numpy.ndarray
        Finite spot coordinates (1/A, origin at the direct beam).
    where : str
        What holds the spots, for the error message.

    Raises
    ------
    ValueError
        If any spot lies farther than :data:`MAX_Q` from the origin.
    """
    qx = np.asarray(qx).reshape(-1)
    qy = np.asarray(qy).reshape(-1)
    chunk = 1 << 20  # bounded temporaries on scans with tens of millions of vectors
    for start in range(0, qx.size, chunk):
        x = qx[start : start + chunk].astype(np.float64)
        y = qy[start : start + chunk].astype(np.float64)
        r2_max = float(np.max(x * x + y * y))
        if r2_max > MAX_Q**2:
            raise _pixel_units_error(float(np.sqrt(r2_max)), where)


def _as_pointlist(item: Any, i: int) -> np.ndarray:
    """One pointlist as a float32 ``(n, 3)`` array, with type and shape errors."""
    if item is None or isinstance(item, (str, bytes, dict)):
        raise TypeError(
            f"pointlist {i} is a {type(item).__name__}; every pointlist must be an (n, 3) array of "
            "qx, qy (1/A) and intensity"
        )
    if isinstance(item, torch.Tensor):
        item = item.detach().cpu().numpy()
    try:
        arr = np.asarray(item)
    except ValueError as err:  # ragged nested lists
        raise ValueError(f"pointlist {i} is not a rectangular (n, 3) array: {err}") from None
    kind = arr.dtype.kind
    if kind in "iuf":
        pass
    elif kind == "O":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as err:
            raise TypeError(
                f"pointlist {i} holds non-numeric values ({err}); it must be an (n, 3) array of numbers"
            ) from None
    else:
        raise TypeError(
            f"pointlist {i} has dtype {arr.dtype}; it must hold real numbers (qx, qy in 1/A, intensity)"
        )
    if arr.size == 0:
        return np.zeros((0, 3), np.float32)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(
            f"pointlist {i} must have shape (n, 3) with columns qx, qy (1/A), intensity; got shape "
            f"{arr.shape}"
        )
    return np.asarray(arr, np.float32)


def clean_pointlists(pointlists: Any) -> list[np.ndarray]:
    """Check and clean the pointlists given to :func:`predict_pointlists`.

    Parameters
    ----------
    pointlists : sequence of array_like
        Each ``(n_i, 3)``: ``qx, qy`` (1/A, origin at the direct beam), intensity.
        Empty lists (``(0, 3)``, ``(0,)`` or ``[]``) are accepted.

    Returns
    -------
    list of numpy.ndarray
        Float32 ``(n_i, 3)`` arrays with the non-finite spots removed.

    Raises
    ------
    TypeError
        ``pointlists`` is not a sequence of arrays (or is a single ``(n, 3)``
        array), or a pointlist holds complex, boolean or non-numeric values.
    ValueError
        A pointlist is not of shape ``(n, 3)``, or spots lie beyond :data:`MAX_Q`
        1/A (probably pixel units).
    """
    if isinstance(pointlists, (str, bytes, dict)) or not isinstance(pointlists, Iterable):
        raise TypeError(
            f"pointlists must be a sequence of (n, 3) arrays; got {type(pointlists).__name__}"
        )
    if isinstance(pointlists, (np.ndarray, torch.Tensor)) and pointlists.ndim == 2:
        raise TypeError(
            f"pointlists is a single {tuple(pointlists.shape)} array; pass a sequence of pointlists, "
            "e.g. [pointlist] for one pattern"
        )
    out: list[np.ndarray] = []
    n_nonfinite = n_negative = 0
    patterns_nonfinite = 0
    r2_max, where_max = 0.0, -1
    for i, item in enumerate(pointlists):
        arr = _as_pointlist(item, i)
        if arr.shape[0]:
            finite = np.isfinite(arr).all(axis=1)
            if not finite.all():
                n_nonfinite += int((~finite).sum())
                patterns_nonfinite += 1
                arr = arr[finite]
            if arr.shape[0]:
                n_negative += int((arr[:, 2] < 0).sum())
                r2 = float(np.max(arr[:, 0].astype(np.float64) ** 2 + arr[:, 1].astype(np.float64) ** 2))
                if r2 > r2_max:
                    r2_max, where_max = r2, i
        out.append(arr)
    if r2_max > MAX_Q**2:
        raise _pixel_units_error(float(np.sqrt(r2_max)), f"pointlist {where_max}")
    if n_nonfinite:
        logger.warning(
            "dropped %d spot(s) with NaN or inf coordinates or intensity (in %d pointlist(s))",
            n_nonfinite,
            patterns_nonfinite,
        )
    if n_negative:
        logger.warning("%d spot(s) have a negative intensity; the model counts them as zero intensity", n_negative)
    return out


def finite_vectors(
    qx: np.ndarray, qy: np.ndarray, intensity: np.ndarray, offsets: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Keep-mask and new offsets that drop non-finite vectors from ragged scan arrays.

    Parameters
    ----------
    qx, qy, intensity : numpy.ndarray, shape (total,)
    offsets : numpy.ndarray of int64, shape (n_positions + 1,)

    Returns
    -------
    keep : numpy.ndarray of bool, shape (total,)
        True for vectors whose three values are finite.
    offsets : numpy.ndarray of int64, shape (n_positions + 1,)
        Offsets after dropping (the input offsets if nothing is dropped).
    """
    keep = np.isfinite(qx) & np.isfinite(qy) & np.isfinite(intensity)
    if keep.all():
        return keep, offsets
    pos = np.repeat(np.arange(offsets.size - 1), np.diff(offsets))
    counts = np.bincount(pos[keep], minlength=offsets.size - 1)
    new = np.zeros_like(offsets)
    np.cumsum(counts, out=new[1:])
    logger.warning(
        "dropped %d Bragg vector(s) with NaN or inf coordinates or intensity (at %d position(s))",
        int((~keep).sum()),
        int(np.unique(pos[~keep]).size),
    )
    return keep, new


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_batch_size(batch_size: Any) -> int | None:
    """``None`` or a positive integer; else :class:`TypeError` / :class:`ValueError`."""
    if batch_size is None:
        return None
    if not _is_int(batch_size):
        raise TypeError(f"batch_size must be None or a positive int; got {batch_size!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be None or >= 1; got {batch_size}")
    return int(batch_size)


def check_tolerance(direct_beam_tolerance: Any) -> float:
    """A finite, non-negative direct-beam tolerance (1/A)."""
    if not isinstance(direct_beam_tolerance, numbers.Real) or isinstance(direct_beam_tolerance, bool):
        raise TypeError(f"direct_beam_tolerance must be a number (1/A); got {direct_beam_tolerance!r}")
    tol = float(direct_beam_tolerance)
    if not np.isfinite(tol) or tol < 0:
        raise ValueError(f"direct_beam_tolerance must be finite and >= 0 (1/A); got {direct_beam_tolerance}")
    return tol


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"`` / a name / a device into a :class:`torch.device`.

    ``"auto"`` (or None) picks ``"cuda"`` when available, else ``"cpu"``; a ValueError if CUDA is
    requested but not available. (``py4dstem_gnn.predict.resolve_device`` is the same function.)
    """
    if isinstance(device, torch.device):
        dev = device
    elif device is None or str(device) == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        dev = torch.device(str(device))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} requested but CUDA is not available")
    return dev


def check_device(device: Any) -> torch.device:
    """Resolve ``device`` ("auto", a name or a torch.device) with a ValueError for bad names."""
    if device is not None and not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be 'auto', a device name such as 'cpu' or 'cuda', or a torch.device; got {device!r}")
    try:
        return resolve_device(device if device is not None else "auto")
    except RuntimeError as err:
        raise ValueError(f"unknown device {device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:<index>' ({err})") from None


def check_model(model: Any) -> None:
    """A name, a path or a loaded :class:`torch.nn.Module`; else :class:`TypeError`.

    Unknown names and missing files are reported by
    :func:`py4dstem_gnn.weights.resolve_weights` (``FileNotFoundError`` naming where
    it looked).
    """
    if not isinstance(model, (str, os.PathLike, torch.nn.Module)):
        raise TypeError(
            f"model must be a weights name (e.g. 'default'), a path to a .safetensors file or a loaded "
            f"PEAGGMoE; got {type(model).__name__}"
        )


def check_classify_parameters(
    min_spots: Any, median_filter: Any, confidence_threshold: Any
) -> None:
    """Check the post-processing parameters of :func:`classify_braggvectors`."""
    if not _is_int(min_spots):
        raise TypeError(f"min_spots must be an int >= 0; got {min_spots!r}")
    if min_spots < 0:
        raise ValueError(f"min_spots must be >= 0; got {min_spots}")
    if median_filter is not None:
        if not _is_int(median_filter):
            raise TypeError(f"median_filter must be None or an int >= 1 (window side); got {median_filter!r}")
        if median_filter < 1:
            raise ValueError(f"median_filter must be None or >= 1; got {median_filter}")
    if not isinstance(confidence_threshold, numbers.Real) or isinstance(confidence_threshold, bool):
        raise TypeError(f"confidence_threshold must be a number in [0, 1]; got {confidence_threshold!r}")
    if not (0.0 <= float(confidence_threshold) <= 1.0):  # also refuses NaN
        raise ValueError(f"confidence_threshold must be in [0, 1] (0 switches it off); got {confidence_threshold}")


def check_groups(pred: Any, groups: Any) -> np.ndarray:
    """Check the arguments of :func:`aggregate_views`; return the group keys as an array.

    Raises
    ------
    TypeError
        ``pred`` is not a :class:`~py4dstem_gnn.predict.Prediction`, or ``groups``
        is None.
    ValueError
        ``groups`` is not one key per pattern, or holds NaN keys.
    """
    # duck-typed (a Prediction has both probability arrays): validation sits below predict
    if not all(hasattr(pred, a) for a in ("crystal_system_probs", "space_group_probs", "n_spots")):
        raise TypeError(f"pred must be a Prediction (from predict_pointlists); got {type(pred).__name__}")
    if groups is None or isinstance(groups, (str, bytes)):
        raise TypeError(f"groups must be a sequence of one group key per pattern; got {groups!r}")
    keys = np.asarray(groups)
    if keys.ndim != 1 or keys.shape[0] != len(pred):
        raise ValueError(f"groups must hold one key per pattern, shape ({len(pred)},); got shape {keys.shape}")
    if keys.dtype.kind in "fc" and not np.isfinite(keys).all():
        raise ValueError("groups holds NaN or inf keys; give every pattern a finite group key")
    return keys
