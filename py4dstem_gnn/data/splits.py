"""Splits of the structure pool: the legacy group split and the two protocol splits.

Three evaluation protocols share one pool (``docs/design.md``):

* ``known``: every material may be trained on; test patterns are fresh orientations.
* ``unseen-material`` -- manifest column ``split_material``: a split by single material,
  seeded and stratified on crystal system (:func:`stratified_material_split`): within each
  crystal system a seeded permutation sends ``round(test_fraction * n_c)`` materials to
  ``test``, ``round(val_fraction * n_c)`` to ``val`` and the rest to ``train``.
* ``unseen-type`` -- manifest column ``split_type``: whole material groups (column ``group``:
  union-find over prototype name and (formula, space group), :func:`group_materials`) on one
  side, stratified on crystal system (:func:`stratified_group_split`).

How groups are stratified
-------------------------
A group may hold materials of several crystal systems (11 of the 7,279 groups of the
committed pool, 24 materials outside their group's majority system), so groups are not
labelled by a majority class: the assignment tracks per-class counts. Groups are visited
from the largest to the smallest (equal sizes in a seeded random order); a group with class
counts ``v`` goes to split ``s`` at random with probability proportional to
``sum_c v_c * max(r_sc, 0)``, ``r_sc`` being the room left in split ``s`` for class ``c``
(target ``fraction_s * n_c`` minus what it holds). ``test`` and ``val`` never take a group
that would push any class past its target by more than ``slack`` materials; ``train`` has no
cap. A large group, visited while the room is nearly intact, lands in ``test`` with a
probability close to the test fraction (not always in ``train``, as a deterministic
best-fit greedy would put it); the many small groups visited last fill what is left. A
random visiting order instead made large groups meet full splits more often (on the
committed pool, seeds 0-3: 38-46 % of test materials in groups of >= 20 materials against
46.5 % in the pool; largest-first: 38-52 %). A last pass (in a seeded order) moves single
groups between sides while that lowers the sum of squared differences between per-class
counts and targets, which closes the shortfalls left when the last groups of a class do not
fit (before it, up to 1.7 points in one class; after it, < 0.05 points).

The defaults are ``test_fraction = 0.20``, ``val_fraction = 0.05`` and seed 0 for both
protocol splits (:data:`PROTOCOL_TEST_FRACTION`, :data:`PROTOCOL_VAL_FRACTION`,
:data:`PROTOCOL_SEED`); the legacy column ``split`` (25 % / 5 %, unstratified,
:func:`assign_splits`) is kept because stored sets and weights refer to it.

Only ~214 space groups occur in the pool, so the splits are not stratified on the space
group; :func:`split_summary` reports the space-group coverage of each side instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..labels import CRYSTAL_SYSTEMS, N_CRYSTAL_SYSTEMS

__all__ = [
    "SPLITS",
    "PROTOCOL_SEED",
    "PROTOCOL_TEST_FRACTION",
    "PROTOCOL_VAL_FRACTION",
    "PROTOCOL_SPLIT_COLUMNS",
    "group_materials",
    "assign_splits",
    "stratified_group_split",
    "stratified_material_split",
    "add_protocol_splits",
    "split_summary",
    "split_summary_markdown",
    "EvaluationMaterials",
    "evaluation_materials",
]

logger = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test")
#: Seed of both protocol splits in the committed manifest.
PROTOCOL_SEED: int = 0
#: Share of all materials in ``test`` for ``split_type`` and ``split_material``.
PROTOCOL_TEST_FRACTION: float = 0.20
#: Share of all materials in ``val`` for ``split_type`` and ``split_material``.
PROTOCOL_VAL_FRACTION: float = 0.05
#: protocol name -> manifest column holding its split.
PROTOCOL_SPLIT_COLUMNS: dict[str, str] = {"unseen-material": "split_material", "unseen-type": "split_type"}


# ----------------------------------------------------------------------------- groups
def _union_find_groups(keys_per_item: Sequence[Sequence[object]]) -> np.ndarray:
    parent = list(range(len(keys_per_item)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_owner: dict[object, int] = {}
    for i, keys in enumerate(keys_per_item):
        for key in keys:
            j = first_owner.setdefault(key, i)
            ri, rj = find(i), find(j)
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)
    roots = np.array([find(i) for i in range(len(parent))])
    _, groups = np.unique(roots, return_inverse=True)
    return groups.astype(np.int64)


def group_materials(proto_name: Sequence[str], formula: Sequence[str], space_group: Sequence[int]) -> np.ndarray:
    """Group ids such that materials sharing a prototype or a (formula, space group) pair share a group.

    Parameters
    ----------
    proto_name, formula, space_group : sequences of equal length
        Prototype names (empty strings are ignored), reduced formulas, space groups.

    Returns
    -------
    numpy.ndarray
        (n,) int64 group ids 0..n_groups-1 (connected components of the union-find).
    """
    keys = []
    for p, f, s in zip(proto_name, formula, space_group):
        k: list[object] = [("fs", str(f), int(s))]
        if p:
            k.append(("p", str(p)))
        keys.append(k)
    return _union_find_groups(keys)


def assign_splits(
    groups: np.ndarray, test_fraction: float = 0.25, val_fraction: float = 0.05, seed: int = 0
) -> np.ndarray:
    """Legacy split (column ``split``): whole groups to ``test``, ``val`` and ``train``, unstratified.

    Groups are visited in a seeded random order; each goes to ``test`` while the test
    split holds fewer than ``test_fraction`` of all materials, then to ``val`` while it
    holds fewer than ``val_fraction``, then to ``train``.

    Returns
    -------
    numpy.ndarray
        (n,) array of split names (``<U5``).
    """
    groups = np.asarray(groups)
    n = len(groups)
    ids, sizes = np.unique(groups, return_counts=True)
    order = np.random.default_rng(seed).permutation(len(ids))
    target_test, target_val = test_fraction * n, val_fraction * n
    n_test = n_val = 0
    group_split = {}
    for gi in order:
        g, size = ids[gi], sizes[gi]
        if n_test < target_test:
            group_split[g] = "test"
            n_test += size
        elif n_val < target_val:
            group_split[g] = "val"
            n_val += size
        else:
            group_split[g] = "train"
    return np.array([group_split[g] for g in groups], dtype="<U5")


# ----------------------------------------------------------------------------- protocol splits
def _check_fractions(test_fraction: float, val_fraction: float) -> None:
    if not (0 <= test_fraction and 0 <= val_fraction and test_fraction + val_fraction < 1):
        raise ValueError("need 0 <= test_fraction, val_fraction and test_fraction + val_fraction < 1")


def stratified_group_split(
    groups: np.ndarray,
    classes: np.ndarray,
    test_fraction: float = PROTOCOL_TEST_FRACTION,
    val_fraction: float = PROTOCOL_VAL_FRACTION,
    seed: int = PROTOCOL_SEED,
    slack: int = 0,
    n_classes: int = N_CRYSTAL_SYSTEMS,
) -> np.ndarray:
    """Whole groups to ``train``/``val``/``test`` with matching class shares (see the module docstring).

    Parameters
    ----------
    groups : numpy.ndarray
        (n,) group key of each material.
    classes : numpy.ndarray
        (n,) class (crystal system 0..6) of each material.
    test_fraction, val_fraction : float
        Target shares of every class in ``test`` and ``val``.
    seed : int
        Seed of the order among equal-sized groups and of the draws.
    slack : int
        Materials by which ``test``/``val`` may exceed a class target.
    n_classes : int
        Number of classes.

    Returns
    -------
    numpy.ndarray
        (n,) split names (``<U5``); every group on one side.
    """
    _check_fractions(test_fraction, val_fraction)
    groups, classes = np.asarray(groups), np.asarray(classes, dtype=np.int64)
    if groups.shape != classes.shape:
        raise ValueError("groups and classes must have the same shape")
    _, gi = np.unique(groups, return_inverse=True)
    n_groups = int(gi.max()) + 1 if len(gi) else 0
    counts = np.zeros((n_groups, n_classes))
    np.add.at(counts, (gi, classes), 1.0)
    fractions = np.array([1.0 - test_fraction - val_fraction, val_fraction, test_fraction])
    target = fractions[:, None] * counts.sum(0)[None, :]  # (3 splits: train, val, test) x classes
    held = np.zeros_like(target)
    capped = np.array([False, True, True])
    rng = np.random.default_rng(seed)
    side = np.zeros(n_groups, dtype=np.int64)
    perm = rng.permutation(n_groups)
    for g in perm[np.argsort(-counts.sum(1)[perm], kind="stable")]:  # largest first, ties seeded
        v = counts[g]
        weight = (np.maximum(target - held, 0.0) * v).sum(1)
        fits = ~capped | np.all(held + v <= target + slack + 1e-9, axis=1)
        weight = np.where(fits, weight, 0.0)
        s = int(rng.choice(3, p=weight / weight.sum())) if weight.sum() > 0 else 0
        side[g] = s
        held[s] += v
    _rebalance(counts, side, held, target, rng)
    names = np.array(["train", "val", "test"], dtype="<U5")
    return names[side[gi]]


def _rebalance(counts: np.ndarray, side: np.ndarray, held: np.ndarray, target: np.ndarray,
               rng: np.random.Generator, passes: int = 3) -> None:
    """Move single groups between sides (in place) while that lowers sum (held - target)^2.

    Late in the random pass the groups left can be too large for the room left in ``test`` or
    ``val`` (a shortfall of up to ~1.7 points in one class was seen); a few moves of small
    groups close it.
    """
    for _ in range(passes):
        moved = 0
        for g in rng.permutation(len(side)):
            v, a = counts[g], side[g]
            if not v.any():
                continue
            leave = ((held[a] - v - target[a]) ** 2 - (held[a] - target[a]) ** 2).sum()
            join = ((held + v - target) ** 2 - (held - target) ** 2).sum(1)
            gain = leave + join
            gain[a] = 0.0
            b = int(np.argmin(gain))
            if gain[b] < -1e-9:
                held[a] -= v
                held[b] += v
                side[g] = b
                moved += 1
        if not moved:
            break


def stratified_material_split(
    classes: np.ndarray,
    test_fraction: float = PROTOCOL_TEST_FRACTION,
    val_fraction: float = PROTOCOL_VAL_FRACTION,
    seed: int = PROTOCOL_SEED,
) -> np.ndarray:
    """Single materials to ``train``/``val``/``test``, seeded, stratified on class.

    Within each class ``c`` (sorted), a permutation of its ``n_c`` materials drawn from one
    ``numpy.random.default_rng(seed)`` sends the first ``round(test_fraction * n_c)`` to
    ``test``, the next ``round(val_fraction * n_c)`` to ``val``, the rest to ``train``.

    Returns
    -------
    numpy.ndarray
        (n,) split names (``<U5``).
    """
    _check_fractions(test_fraction, val_fraction)
    classes = np.asarray(classes)
    out = np.full(len(classes), "train", dtype="<U5")
    rng = np.random.default_rng(seed)
    for c in np.unique(classes):
        members = np.flatnonzero(classes == c)
        members = members[rng.permutation(len(members))]
        n_test = int(round(test_fraction * len(members)))
        n_val = int(round(val_fraction * len(members)))
        out[members[:n_test]] = "test"
        out[members[n_test:n_test + n_val]] = "val"
    return out


def add_protocol_splits(
    manifest: Any,
    seed: int = PROTOCOL_SEED,
    test_fraction: float = PROTOCOL_TEST_FRACTION,
    val_fraction: float = PROTOCOL_VAL_FRACTION,
) -> Any:
    """The manifest with columns ``split_type`` and ``split_material`` (re)computed.

    A pure function of the columns ``group`` and ``crystal_system`` and the seed: no
    database needed. The legacy column ``split`` is left as it is.

    Parameters
    ----------
    manifest : py4dstem_gnn.data.structures.Manifest
    seed, test_fraction, val_fraction
        See :func:`stratified_group_split` and :func:`stratified_material_split`.

    Returns
    -------
    Manifest
        A new manifest (same type; columns copied, two added or replaced; attributes
        ``protocol_split_seed``, ``protocol_split_test_fraction``,
        ``protocol_split_val_fraction`` and ``protocol_split_method`` recorded).
    """
    cs = np.asarray(manifest["crystal_system"])
    columns = dict(manifest.columns)
    columns["split_type"] = stratified_group_split(manifest["group"], cs, test_fraction, val_fraction, seed)
    columns["split_material"] = stratified_material_split(cs, test_fraction, val_fraction, seed)
    attrs = dict(manifest.attrs)
    attrs.update({
        "protocol_split_seed": str(seed),
        "protocol_split_test_fraction": str(test_fraction),
        "protocol_split_val_fraction": str(val_fraction),
        "protocol_split_method": "split_type: whole groups, largest first, seeded draws proportional to the "
        "per-crystal-system room left, then single-group moves towards the targets "
        "(py4dstem_gnn.data.splits.stratified_group_split); split_material: per crystal system seeded "
        "permutation (stratified_material_split)",
    })
    return type(manifest)(columns, attrs)


# ----------------------------------------------------------------------------- summaries
def split_summary(manifest: Any, column: str, n_largest: int = 15) -> dict[str, Any]:
    """Class shares, space-group coverage and the largest groups of one split column.

    Returns
    -------
    dict
        ``n`` and ``share`` per split; ``class_share`` (split -> 7 shares),
        ``max_share_gap`` (largest |share in split - share in pool| over classes and
        splits, in percentage points); ``space_groups`` (split -> number occurring),
        ``space_groups_only_in_test`` / ``..._missing_from_train`` (counts and lists);
        ``largest_groups`` (size, crystal-system counts, commonest prototype, example
        formulas, split).
    """
    split = np.asarray(manifest[column])
    cs = np.asarray(manifest["crystal_system"])
    sg = np.asarray(manifest["space_group"])
    n = len(split)
    pool_share = np.bincount(cs, minlength=N_CRYSTAL_SYSTEMS) / max(n, 1)
    out: dict[str, Any] = {"column": column, "n": {}, "share": {}, "class_share": {}, "space_groups": {}}
    gap = 0.0
    for s in SPLITS:
        sel = split == s
        out["n"][s] = int(sel.sum())
        out["share"][s] = float(sel.mean()) if n else float("nan")
        share = np.bincount(cs[sel], minlength=N_CRYSTAL_SYSTEMS) / max(int(sel.sum()), 1)
        out["class_share"][s] = share.tolist()
        if sel.any():
            gap = max(gap, float(np.abs(share - pool_share).max()))
        out["space_groups"][s] = int(len(np.unique(sg[sel])))
    out["class_share"]["pool"] = pool_share.tolist()
    out["space_groups"]["pool"] = int(len(np.unique(sg)))
    out["max_share_gap"] = 100.0 * gap
    train_sg = set(np.unique(sg[split == "train"]).tolist())
    test_sg = set(np.unique(sg[split == "test"]).tolist())
    out["space_groups_missing_from_train"] = sorted(set(np.unique(sg).tolist()) - train_sg)
    out["space_groups_only_in_test"] = sorted(test_sg - train_sg)
    out["test_materials_in_space_groups_absent_from_train"] = int(np.isin(sg[split == "test"], list(test_sg - train_sg)).sum())
    groups = np.asarray(manifest["group"])
    ids, sizes = np.unique(groups, return_counts=True)
    largest = []
    for g in ids[np.argsort(-sizes, kind="stable")][:n_largest]:
        sel = np.flatnonzero(groups == g)
        protos, pc = np.unique(np.asarray(manifest["proto_name"])[sel], return_counts=True)
        largest.append({
            "group": int(g),
            "size": int(len(sel)),
            "crystal_systems": np.bincount(cs[sel], minlength=N_CRYSTAL_SYSTEMS).tolist(),
            "prototype": str(protos[np.argmax(pc)]),
            "examples": [str(f) for f in np.unique(np.asarray(manifest["formula"])[sel])[:4]],
            "split": str(split[sel[0]]),
        })
    out["largest_groups"] = largest
    return out


def split_summary_markdown(manifest: Any, columns: Sequence[str] = ("split_type", "split_material")) -> str:
    """Markdown tables of :func:`split_summary` for several split columns."""
    lines = []
    for col in columns:
        s = split_summary(manifest, col)
        lines += [f"### `{col}`", "",
                  "| side | materials | share | " + " | ".join(CRYSTAL_SYSTEMS) + " | space groups |",
                  "|---|---:|---:|" + "---:|" * N_CRYSTAL_SYSTEMS + "---:|"]
        for side in (*SPLITS, "pool"):
            n = len(manifest) if side == "pool" else s["n"][side]
            share = 1.0 if side == "pool" else s["share"][side]
            cls = " | ".join(f"{100 * v:.2f}" for v in s["class_share"][side])
            lines.append(f"| {side} | {n} | {100 * share:.2f} % | {cls} | {s['space_groups'][side]} |")
        lines += ["", f"Largest gap between a side's and the pool's crystal-system share: "
                  f"{s['max_share_gap']:.2f} points. Space groups of the pool absent from train: "
                  f"{len(s['space_groups_missing_from_train'])}; occurring in test but not in train: "
                  f"{len(s['space_groups_only_in_test'])} ({s['test_materials_in_space_groups_absent_from_train']} "
                  "test materials).", ""]
        if col == "split_type":
            lines += ["| group size | crystal systems | prototype | examples | side |", "|---:|---|---|---|---|"]
            for g in s["largest_groups"]:
                sys_ = ", ".join(f"{CRYSTAL_SYSTEMS[c]} {k}" for c, k in enumerate(g["crystal_systems"]) if k)
                lines.append(f"| {g['size']} | {sys_} | {g['prototype']} | {', '.join(g['examples'])} | {g['split']} |")
            lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- held-out materials
@dataclass
class EvaluationMaterials:
    """Held-out materials for the stored evaluation sets, each tagged with its protocol membership.

    Attributes
    ----------
    material : numpy.ndarray
        (m,) sorted int64 material indices.
    unseen_type : numpy.ndarray
        (m,) bool: ``split_type == "test"``.
    unseen_material : numpy.ndarray
        (m,) bool: ``split_material == "test"``.

    Every material also serves the ``known`` protocol.
    """

    material: np.ndarray
    unseen_type: np.ndarray
    unseen_material: np.ndarray

    def __len__(self) -> int:
        return len(self.material)

    def membership(self) -> dict[str, np.ndarray]:
        """protocol name -> (m,) bool."""
        return {"known": np.ones(len(self), bool), "unseen-material": self.unseen_material.copy(),
                "unseen-type": self.unseen_type.copy()}


def evaluation_materials(manifest: Any, n: int | None = None, seed: int = 0) -> EvaluationMaterials:
    """The union of ``split_type == test`` and ``split_material == test``, optionally a seeded subset.

    One stored zone-axis set and one random-orientation set over these materials serve all
    three protocols (``known`` uses every pattern; ``unseen-*`` the materials flagged).

    Parameters
    ----------
    manifest : Manifest
        With ``split_type`` and ``split_material`` (see :func:`add_protocol_splits`).
    n : int, optional
        Keep a uniformly drawn subset of ``n`` materials of the union.
    seed : int
        Seed of the subset.

    Returns
    -------
    EvaluationMaterials
    """
    for col in PROTOCOL_SPLIT_COLUMNS.values():
        if col not in manifest.columns:
            raise KeyError(f"the manifest has no column {col!r}: run add_protocol_splits first")
    t = np.asarray(manifest["split_type"]) == "test"
    m = np.asarray(manifest["split_material"]) == "test"
    mats = np.flatnonzero(t | m)
    if n is not None and n < len(mats):
        mats = np.sort(np.random.default_rng(seed).choice(mats, size=int(n), replace=False))
    return EvaluationMaterials(mats.astype(np.int64), t[mats], m[mats])
