"""Phase identification (issue 21): match, hybrid and network per protocol x regime x input, with group intervals.

Writes

* ``reports/protocols_phase/`` — the package's one report (:func:`py4dstem_gnn.evaluation.report.evaluate`)
  with three classifiers per protocol: ``network`` (the network alone), ``match`` (the match stage alone:
  the decision with uniform network probabilities) and ``hybrid`` (the shipped pipeline), on the stored
  Bloch-wave test sets, zone axes and random orientations: ``zone_axes/`` the clean inputs, and one folder
  ``detected_<preset>/`` per detector preset with the clean and the detected rows side by side and the
  paired cost of detection;
* ``benchmarks/results/phase_identification.md`` — what the report has no column for: right material
  and right zone axis, cells from outside the pool (experimental lattice constants; DFT-like perturbed
  pool cells), the element filter, the nearest isostructural analogue on ``unseen-*``, and a bank-size
  curve. Intervals: 95 %, bootstrap over material groups (manifest ``group``; experimental structures:
  one group each);
* the section "Detected spots" (issue 22): per input (clean, ``detected:<preset>``) x regime x protocol,
  network / match / hybrid crystal system from one pattern and from all views of a material
  (``aggregate_views``), multi-view minus single pattern (paired), the most over-predicted crystal system's
  predicted / true share, and the hybrid's multi-view by aggregation rule (product, mean, vote).

Under ``unseen-material`` / ``unseen-type`` the bank holds no test material of that split (the split's
test materials, resp. whole test groups, are removed) and the network is the split model.

    python benchmarks/phase_identification.py                  # everything (~10 min on 2 cores)
    python benchmarks/phase_identification.py --quick          # 300 patterns per set, no bank-size curve
    python benchmarks/phase_identification.py --only detected  # pool cells (clean + detected), the detected
                                                               # section and reports; other sections kept
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from py4dstem_gnn.data.dataset import PatternSet  # noqa: E402
from py4dstem_gnn.data.structures import load_manifest  # noqa: E402
from py4dstem_gnn.decide import DecisionParams, load_decision_params  # noqa: E402
from py4dstem_gnn.evaluation.bootstrap import group_bootstrap  # noqa: E402
from py4dstem_gnn.features import split_direct_beam  # noqa: E402
from py4dstem_gnn.labels import CRYSTAL_SYSTEMS  # noqa: E402
from py4dstem_gnn.matching import load_bank, match_patterns, resolve_bank  # noqa: E402
from py4dstem_gnn.network_stage import network_and_decide, network_probabilities  # noqa: E402
from py4dstem_gnn.predict import Prediction, aggregate_views, resolve_device  # noqa: E402
from py4dstem_gnn.weights import load_model  # noqa: E402

logger = logging.getLogger("phase_identification")
PROTOCOL_WEIGHTS = {"known": "default", "unseen-material": "unseen_material", "unseen-type": "unseen_type"}
PROTOCOL_COLUMN = {"unseen-material": "split_material", "unseen-type": "split_type"}
RULES = ("product", "mean", "vote")
CLASSIFIERS = ("network", "match", "hybrid")
#: Sections that ``--only detected`` keeps from the previous output file.
KEPT_SECTIONS = ("## Cells from outside the pool", "## Bank size")


def spots_of(ps: PatternSet) -> list[np.ndarray]:
    return [np.asarray(split_direct_beam(p)[0], np.float32).reshape(-1, 3) for p in ps.pointlists]


def pool_ids(bank) -> np.ndarray:
    return np.array([int(s.split(":")[1]) if s.startswith("pool:") else -1 for s in bank.source])


def bank_for(protocol: str, bank, manifest):
    if protocol == "known":
        return bank
    held = np.asarray(manifest[PROTOCOL_COLUMN[protocol]]) == "test"
    ids = pool_ids(bank)
    keep = ~((ids >= 0) & held[np.clip(ids, 0, None)])
    return bank.subset(np.flatnonzero(keep))


def predictions(spots, bank, net, params: DecisionParams):
    """network, match and hybrid predictions (network run on every pattern, for the comparison)."""
    from py4dstem_gnn.confidence.calibration import apply_model_calibration

    dev = resolve_device("cpu")
    t0 = time.perf_counter()
    probs = network_probabilities(spots, net, dev)
    t_net = time.perf_counter() - t0
    t0 = time.perf_counter()
    m = match_patterns(spots, bank)
    t_match = time.perf_counter() - t0
    n = len(spots)
    n_spots = np.fromiter((len(s) for s in spots), np.int64, n)
    out = {"network": apply_model_calibration(Prediction.from_probs(*probs, n_spots), net)}
    stages = {"match": network_and_decide(spots, m, bank, params, None, None, network="never"),
              "hybrid": network_and_decide(spots, m, bank, params, net, dev, probabilities=probs)}
    for name, stage in stages.items():
        d = stage.decision
        p = Prediction(d.crystal_system, d.space_group, d.confidence, d.crystal_system_probs, d.space_group_probs, n_spots)
        p.phase = d.phase  # the bank's phase index (right_material reads the bank's tables with it)
        p.meta["network_ran"] = stage.network_ran
        out[name] = p
    need = stages["hybrid"].network_ran
    return out, m, {"network_s": t_net, "match_s": t_match, "n": n, "network_share": float(need.mean())}


def interval(values, groups, boot):
    iv = group_bootstrap(np.asarray(values, float), np.asarray(groups), n_boot=boot, seed=0)
    return f"{100 * iv.mean:.1f} [{100 * iv.low:.1f}, {100 * iv.high:.1f}]"


def right_material(pred, m, bank, material, manifest, formula=None, sg=None, named_only=False):
    """The match's best phase (or, with ``named_only``, the phase the decision names) is the pattern's
    material (same reduced formula and space group)."""
    ph = np.where(pred.phase >= 0, pred.phase, -1) if named_only else m.phase[:, 0]
    has = ph >= 0
    f_true = np.asarray(manifest["formula"])[np.clip(material, 0, None)] if formula is None else np.asarray(formula)
    s_true = np.asarray(manifest["space_group"])[np.clip(material, 0, None)] if sg is None else np.asarray(sg)
    f_pred = np.where(has, bank.formula[np.maximum(ph, 0)], "")
    s_pred = np.where(has, bank.space_group[np.maximum(ph, 0)], -1)
    return has & (f_pred == f_true) & (s_pred == s_true)


def over_prediction(pred_cs: np.ndarray, true_cs: np.ndarray) -> tuple[float, int]:
    """The largest predicted share / true share over the crystal systems present, and that system."""
    p = np.bincount(pred_cs, minlength=7) / max(len(pred_cs), 1)
    t = np.bincount(true_cs, minlength=7) / max(len(true_cs), 1)
    ratio = np.where(t > 0, p / np.maximum(t, 1e-12), 0.0)
    c = int(np.argmax(ratio))
    return float(ratio[c]), c


def per_material(pred: Prediction, material: np.ndarray, cs_true: np.ndarray, rule: str):
    """Material-level arrays: mean single-pattern correctness, multi-view correctness (``aggregate_views``
    with ``rule`` over all the material's views), multi-view label, true CS, material id."""
    agg = aggregate_views(pred, material, rule=rule)
    mats = agg.meta["groups"]
    inv = np.searchsorted(mats, material)
    single = np.bincount(inv, weights=pred.crystal_system == cs_true, minlength=len(mats)) / np.bincount(inv, minlength=len(mats))
    m_cs = np.zeros(len(mats), np.int64)
    m_cs[inv] = cs_true
    return single, agg.crystal_system == m_cs, agg.crystal_system, m_cs, mats


def _ratio(r: tuple[float, int]) -> str:
    return f"{r[0]:.2f} ({CRYSTAL_SYSTEMS[r[1]]})"


def detected_section(per, sets, source, manifest, groups, boot: int) -> list[str]:
    """Issue 22: clean vs each detector preset, per regime x protocol, single pattern and multi-view."""
    out = ["## Detected spots: clean vs each detector preset (issue 22)\n",
           "Crystal-system accuracy (%) per input x regime x protocol. `1` = one pattern (intervals over material "
           "groups); `multi` = all views of a material (6 zone axes; 2 random orientations) combined with "
           "`aggregate_views(rule=\"product\")` (the package default), scored per material, intervals over groups; "
           "`multi − 1` = that minus each material's share of right single patterns (paired per material, intervals "
           "over groups). `max pred/true` = the crystal system predicted most above its true share: predicted share / "
           "true share (target of issue 22: at most 1.5), for the hybrid on patterns (1) and on materials (multi), "
           "and for the network on patterns.\n",
           "| input | regime | protocol | patterns (groups) | network 1 | network multi | match 1 | match multi | "
           "hybrid 1 | hybrid multi | hybrid multi − 1 | max pred/true hybrid 1 | hybrid multi | network 1 |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    rules = ["\n### Hybrid multi-view by aggregation rule\n",
             "Material-level CS accuracy (%) of the hybrid with each rule of `aggregate_views`; in brackets the paired "
             "difference from the same materials' single-pattern accuracy (points, mean over materials); "
             "`max pred/true` of the aggregated labels. A negative difference whose interval excludes 0 is marked **below**.\n",
             "| input | regime | protocol | materials | single (per material) | product | mean | vote | "
             "max pred/true product / mean / vote |", "|---|---|---|---|---|---|---|---|---|"]
    verdict = {}
    for sname, ps in sets.items():
        inp, regime = source[sname]
        for prot in PROTOCOL_WEIGHTS:
            if (sname, prot) not in per:
                continue
            preds = per[(sname, prot)][0]
            col = PROTOCOL_COLUMN.get(prot)
            sel = np.ones(len(ps), bool) if col is None else (np.asarray(manifest[col])[ps.material] == "test")
            if not sel.any():
                continue
            idx = np.flatnonzero(sel)
            mat, g = ps.material[idx], groups[ps.material[idx]]
            cs = ps.crystal_system.astype(np.int64)[idx]
            row = [inp, regime, prot, f"{len(idx)} ({len(np.unique(g))})"]
            mat_rows = {}
            for name in CLASSIFIERS:
                p = _subset(preds[name], idx)
                single, multi, m_lab, m_cs, mats = per_material(p, mat, cs, "product")
                mat_rows[name] = (single, multi, m_lab, m_cs, mats, p)
                row += [interval(p.crystal_system == cs, g, boot), interval(multi, groups[mats], boot)]
            single, multi, m_lab, m_cs, mats, p = mat_rows["hybrid"]
            gain = group_bootstrap(multi.astype(float) - single, groups[mats], n_boot=boot, seed=0)
            verdict[(inp, regime, prot)] = (float(np.mean(p.crystal_system == cs)), float(multi.mean()), gain,
                                            over_prediction(p.crystal_system, cs)[0])
            row.append(_signed(multi.astype(float) - single, groups[mats], boot))
            row += [_ratio(over_prediction(p.crystal_system, cs)), _ratio(over_prediction(m_lab, m_cs)),
                    _ratio(over_prediction(mat_rows["network"][5].crystal_system, cs))]
            out.append("| " + " | ".join(row) + " |")
            r2 = [inp, regime, prot, str(len(mats)), interval(single, groups[mats], boot)]
            ratios = []
            for rule in RULES:
                s1, mv, lab, mcs, _ = per_material(p, mat, cs, rule)
                r2.append(f"{interval(mv, groups[mats], boot)} ({_signed(mv.astype(float) - s1, groups[mats], boot, mark=True)})")
                ratios.append(f"{over_prediction(lab, mcs)[0]:.2f}")
            r2.append(" / ".join(ratios))
            rules.append("| " + " | ".join(r2) + " |")
    return out + targets(verdict) + rules + [""]


def targets(verdict: dict) -> list[str]:
    """Issue 22's targets for the hybrid (point estimates; product rule), per detector preset."""
    out = ["\nTargets of issue 22 for the hybrid (point estimates of the table above; multi-view = product rule):\n"]
    for inp in dict.fromkeys(k[0] for k in verdict):
        if inp == "clean" or ("clean", "zone axes", "known") not in verdict or (inp, "zone axes", "known") not in verdict:
            continue
        c1, cm = verdict[("clean", "zone axes", "known")][:2]
        d1, dm = verdict[(inp, "zone axes", "known")][:2]
        cells = {k[1:]: v for k, v in verdict.items() if k[0] == inp}
        below = [f"{r}/{p} {100 * v[2].mean:+.1f}" + (" (interval below 0)" if v[2].high < 0 else "")
                 for (r, p), v in cells.items() if v[2].mean < 0]
        share = max(v[3] for v in cells.values())
        za_share = max(v[3] for (r, _), v in cells.items() if r == "zone axes")
        out.append(f"- `{inp}`: zone axes, `known`, within 3 points of clean: single {100 * (c1 - d1):+.1f} points "
                   f"({'met' if c1 - d1 <= 0.03 else 'missed'}), multi-view {100 * (cm - dm):+.1f} "
                   f"({'met' if cm - dm <= 0.03 else 'missed'}); multi-view never below single: "
                   f"{'met' if not below else 'missed in ' + ', '.join(below)}; most over-predicted system at most 1.5x "
                   f"its true share: zone axes {za_share:.2f} ({'met' if za_share <= 1.5 else 'missed'}), all cells "
                   f"{share:.2f} ({'met' if share <= 1.5 else 'missed'}).")
    return out + [""]


def validation_rules(val_sets: dict, bank, net, params, groups, boot: int) -> list[str]:
    """The hybrid's multi-view by rule on the validation zone axes (clean and detected): where a default is chosen."""
    if not val_sets:
        return []
    out = ["\n### Hybrid multi-view by rule on the validation zone axes (where the default is chosen)\n",
           "Same columns as above; `known` (bank of the whole pool, default weights), validation materials "
           "(`data/bloch_val_za.h5` and its detected copies `data/cache/detected_<preset>_val_za.h5`).\n",
           "| input | materials | single (per material) | product | mean | vote | max pred/true product / mean / vote |",
           "|---|---|---|---|---|---|---|"]
    for inp, ps in val_sets.items():
        cs = ps.crystal_system.astype(np.int64)
        p = predictions(spots_of(ps), bank, net, params)[0]["hybrid"]
        row, ratios = [inp], []
        for rule in RULES:
            s1, mv, lab, mcs, mats = per_material(p, ps.material, cs, rule)
            if len(row) == 1:
                row += [str(len(mats)), interval(s1, groups[mats], boot)]
            row.append(f"{interval(mv, groups[mats], boot)} ({_signed(mv.astype(float) - s1, groups[mats], boot, mark=True)})")
            ratios.append(f"{over_prediction(lab, mcs)[0]:.2f}")
        out.append("| " + " | ".join(row + [" / ".join(ratios)]) + " |")
    return out + [""]


def _signed(values: np.ndarray, groups: np.ndarray, boot: int, mark: bool = False) -> str:
    iv = group_bootstrap(np.asarray(values, float), np.asarray(groups), n_boot=boot, seed=0)
    txt = f"{100 * iv.mean:+.1f} [{100 * iv.low:+.1f}, {100 * iv.high:+.1f}]"
    return f"**below** {txt}" if mark and iv.high < 0 else txt


def _subset(pred: Prediction, idx: np.ndarray) -> Prediction:
    return Prediction(*(getattr(pred, k)[idx] for k in ("crystal_system", "space_group", "confidence",
                                                         "crystal_system_probs", "space_group_probs", "n_spots")))


def kept_sections(path: Path, command: str) -> list[str]:
    """The sections of the previous output file that ``--only detected`` does not recompute."""
    if not path.exists():
        return []
    text = path.read_text()
    old = next((ln.split("`")[1] for ln in text.splitlines() if ln.startswith("Command:")), "unknown")
    parts = ["## " + p for p in text.split("\n## ")[1:]]
    kept = [p.split("\nThe protocol report per input")[0].rstrip() for p in parts if p.startswith(KEPT_SECTIONS)]
    if not kept:
        return []
    return [f"The next sections are kept from the previous run (`{old}`); `{command}` did not recompute them.\n",
            "\n\n".join(kept), ""]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--zone-axis", default="data/bloch_test_za.h5")
    ap.add_argument("--random", default="data/bloch_test_random.h5")
    ap.add_argument("--experimental", default="data/bloch_experimental_za.h5")
    ap.add_argument("--perturbed", default="data/bloch_perturbed_za.h5")
    ap.add_argument("--detected", nargs="*", default=None,
                    help="detected sets (default: data/detected_*_za.h5 and data/detected_*_random.h5)")
    ap.add_argument("--only", choices=("all", "detected"), default="all",
                    help="detected: the pool cells (clean + detected), the detected section and the detected reports; "
                    "the other sections are kept from --out")
    ap.add_argument("--val-za", default="data/bloch_val_za.h5",
                    help="validation zone axes (with data/cache/detected_<preset>_val_za.h5) for the aggregation-rule table")
    ap.add_argument("--report", default="reports/protocols_phase")
    ap.add_argument("--out", default="benchmarks/results/phase_identification.md")
    ap.add_argument("--boot", type=int, default=300)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-report", action="store_true", help="skip the protocol report (the markdown only)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    import torch

    torch.set_num_threads(1)
    manifest = load_manifest()
    groups = np.asarray(manifest["group"])
    bank = load_bank("pool")
    params = load_decision_params()
    nets = {p: load_model(w, device="cpu").eval() for p, w in PROTOCOL_WEIGHTS.items()}
    command = f"python {' '.join([Path(sys.argv[0]).as_posix()] + sys.argv[1:])}"
    lines = ["# Phase identification against known structures\n",
             f"Command: `{command}`  \nBank: {bank.n_phases} phases, {len(bank)} templates. "
             f"Decision: `weights/decision.json` (fitted on validation sets only). Intervals: 95 %, {args.boot} "
             "bootstrap replicates over material groups. CS = crystal system, SG = space group.\n"]
    timing = {}

    def load(path):
        ps = PatternSet.from_hdf5(ROOT / path)
        if args.quick and len(ps) > 300:
            ps = ps.subset(np.sort(np.random.default_rng(0).choice(len(ps), 300, replace=False)))
        return ps

    # ------------------------------------------------------------ pool cells: protocol report + extra rates
    za, rnd = load(args.zone_axis), load(args.random)
    sets = {"zone axes": za, "random": rnd}
    source = {"zone axes": ("clean", "zone axes"), "random": ("clean", "random")}  # set -> (input, regime)
    paths = {"zone axes": args.zone_axis, "random": args.random}
    detected = args.detected if args.detected is not None else sorted(
        str(p.relative_to(ROOT)) for which in ("za", "random") for p in (ROOT / "data").glob(f"detected_*_{which}.h5"))
    for path in sorted(detected, key=lambda q: (Path(q).stem.rsplit("_", 1)[0], Path(q).stem.endswith("_random"))):
        preset, _, which = Path(path).stem.replace("detected_", "", 1).rpartition("_")
        regime = "zone axes" if which == "za" else "random"
        sname = f"detected:{preset} {regime}"
        sets[sname] = load(path)
        source[sname] = (f"detected:{preset}", regime)
        paths[sname] = path
    per = {}  # (set, protocol) -> (preds, match, bank)
    for sname, ps in sets.items():
        spots = spots_of(ps)
        for prot in PROTOCOL_WEIGHTS:
            b = bank_for(prot, bank, manifest)
            preds, m, t = predictions(spots, b, nets[prot], params)
            per[(sname, prot)] = (preds, m, b)
            timing[(sname, prot)] = t
            logger.info("%s / %s: %s", sname, prot, t)
    lines.append("## Pool cells (stored Bloch-wave test sets), one pattern\n")
    lines.append("Crystal system / space group / right material (same formula and space group) / right zone axis "
                 "family (right material and the matched template's axis is symmetry-equivalent to the true one: same "
                 "net and intensities), by protocol. `match` = the match stage alone, `hybrid` = the shipped decision; "
                 "the network column is the network alone (split models under `unseen-*`).\n")
    lines.append("| set | protocol | n (groups) | network CS | match CS | hybrid CS | hybrid SG | best match = right material | "
                 "phase named (share) | named and right | network share run |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for (sname, prot), (preds, m, b) in per.items():
        ps = sets[sname]
        col = PROTOCOL_COLUMN.get(prot)
        sel = np.ones(len(ps), bool) if col is None else (np.asarray(manifest[col])[ps.material] == "test")
        if not sel.any():
            continue
        g = groups[ps.material][sel]
        cs = ps.crystal_system.astype(np.int64)[sel]
        sg = ps.space_group.astype(np.int64)[sel]
        rm = right_material(preds["hybrid"], m, b, ps.material, manifest)[sel]
        rn = right_material(preds["hybrid"], m, b, ps.material, manifest, named_only=True)[sel]
        row = [sname, prot, f"{int(sel.sum())} ({len(np.unique(g))})"]
        for name in ("network", "match", "hybrid"):
            row.append(interval(preds[name].crystal_system[sel] == cs, g, args.boot))
        row.append(interval(preds["hybrid"].space_group[sel] == sg, g, args.boot))
        row.append(interval(rm, g, args.boot) if prot == "known" else "—")
        row.append(f"{100 * np.mean(preds['hybrid'].phase[sel] >= 0):.1f}")
        named = preds["hybrid"].phase[sel] >= 0
        row.append(f"{100 * rn[named].mean():.1f} of {int(named.sum())}" if prot == "known" and named.any() else "—")
        row.append(f"{100 * timing[(sname, prot)]['network_share']:.1f}")
        lines.append("| " + " | ".join(row) + " |")
    lines.append("\nUnder `unseen-*` no bank phase is the right material; a named phase there is the nearest "
                 "isostructural analogue, and the `hybrid` CS column says what it is worth. `detected:<preset>` = the "
                 "same patterns rendered on that detector preset and found by py4DSTEM's `find_Bragg_disks` "
                 "(`benchmarks/detection.py build`).\n")
    lines += detected_section(per, sets, source, manifest, groups, args.boot)
    val_sets = {}
    if args.val_za and (ROOT / args.val_za).exists():
        val_sets["clean"] = load(args.val_za)
        for inp in dict.fromkeys(src for src, _ in source.values()):
            path = ROOT / "data" / "cache" / f"{inp.replace(':', '_')}_val_za.h5"
            if inp != "clean" and path.exists():
                val_sets[inp] = load(path.relative_to(ROOT))
    lines += validation_rules(val_sets, bank, nets["known"], params, groups, args.boot)
    if args.only == "detected":
        lines += kept_sections(ROOT / args.out, command)
    # ------------------------------------------------------------ cells from outside the pool
    if args.only == "all":
        lines.append("## Cells from outside the pool (zone axes, Bloch-wave, one pattern)\n")
        lines.append("| set | bank | n (groups) | network CS | match CS | hybrid CS | hybrid SG | best match = right material (formula + SG) | phase named | named and right |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for path, label in ((args.experimental, "experimental lattice constants"), (args.perturbed, "pool cells, DFT-like errors")):
        if args.only == "detected" or not (ROOT / path).exists():
            continue
        ps = PatternSet.from_hdf5(ROOT / path)
        spots = spots_of(ps)
        cs, sg = ps.crystal_system.astype(np.int64), ps.space_group.astype(np.int64)
        if "experimental" in path:
            info = json.loads(ps.attrs["structures"])
            sidx = np.asarray(json.loads(ps.attrs["structure_index"])) if isinstance(ps.attrs["structure_index"], str) else np.asarray(ps.attrs["structure_index"])
            g = sidx
            formula = np.array([info[i]["formula"] for i in sidx])
            elements = [info[i]["formula"] for i in sidx]
        else:
            g = groups[ps.material]
            formula = np.asarray(manifest["formula"])[ps.material]
            elements = list(formula)
        preds, m, _ = predictions(spots, bank, nets["known"], params)
        rm = right_material(preds["hybrid"], m, bank, ps.material, manifest, formula, sg)
        rn = right_material(preds["hybrid"], m, bank, ps.material, manifest, formula, sg, named_only=True)
        nm = preds["hybrid"].phase >= 0
        lines.append(f"| {label} | whole pool | {len(ps)} ({len(np.unique(g))}) | "
                     f"{interval(preds['network'].crystal_system == cs, g, args.boot)} | "
                     f"{interval(preds['match'].crystal_system == cs, g, args.boot)} | "
                     f"{interval(preds['hybrid'].crystal_system == cs, g, args.boot)} | "
                     f"{interval(preds['hybrid'].space_group == sg, g, args.boot)} | {interval(rm, g, args.boot)} | "
                     f"{100 * np.mean(preds['hybrid'].phase >= 0):.1f} | "
                     f"{(f'{100 * rn[nm].mean():.1f} of {int(nm.sum())}') if nm.any() else '—'} |")
        # element filter: each structure's own elements (what EDS tells)
        from py4dstem_gnn.matching.bank import formula_elements

        hyb_cs = np.zeros(len(ps), bool)
        hyb_sg = np.zeros(len(ps), bool)
        rmat = np.zeros(len(ps), bool)
        rnamed = np.zeros(len(ps), bool)
        named = np.zeros(len(ps), bool)
        keys = [tuple(sorted(formula_elements(e))) for e in elements]
        for key in sorted(set(keys)):
            rows = np.flatnonzero([k == key for k in keys])
            try:
                b = resolve_bank(bank, elements=list(key))
            except ValueError:
                b = None
            if b is None:
                continue
            p2, m2, _ = predictions([spots[i] for i in rows], b, nets["known"], params)
            hyb_cs[rows] = p2["hybrid"].crystal_system == cs[rows]
            hyb_sg[rows] = p2["hybrid"].space_group == sg[rows]
            rmat[rows] = right_material(p2["hybrid"], m2, b, ps.material[rows], manifest, formula[rows], sg[rows])
            rnamed[rows] = right_material(p2["hybrid"], m2, b, ps.material[rows], manifest, formula[rows], sg[rows], True)
            named[rows] = p2["hybrid"].phase >= 0
        lines.append(f"| {label} | element filter | {len(ps)} ({len(np.unique(g))}) | — | — | "
                     f"{interval(hyb_cs, g, args.boot)} | {interval(hyb_sg, g, args.boot)} | {interval(rmat, g, args.boot)} | "
                     f"{100 * named.mean():.1f} | {(f'{100 * rnamed[named].mean():.1f} of {int(named.sum())}') if named.any() else '—'} |")
    # ------------------------------------------------------------ bank-size curve
    if not args.quick and args.only == "all":
        lines.append("\n## Bank size (known zone axes, pool cells, one pattern)\n")
        lines.append("The bank holds the test materials plus N other pool materials drawn at random.\n")
        lines.append("| phases in bank | match CS | hybrid CS | right material |")
        lines.append("|---|---|---|---|")
        spots = spots_of(za)
        ids = pool_ids(bank)
        test_m = np.unique(za.material)
        rng = np.random.default_rng(0)
        others = rng.permutation(np.setdiff1d(np.arange(bank.n_phases), np.flatnonzero(np.isin(ids, test_m))))
        g = groups[za.material]
        for n_other in (0, 1000, 4000, 16000, len(others)):
            keep = np.concatenate([np.flatnonzero(np.isin(ids, test_m)), others[:n_other]])
            b = bank.subset(np.sort(keep))
            preds, m, _ = predictions(spots, b, nets["known"], params)
            rm = right_material(preds["hybrid"], m, b, za.material, manifest)
            lines.append(f"| {b.n_phases} | {interval(preds['match'].crystal_system == za.crystal_system, g, args.boot)} | "
                         f"{interval(preds['hybrid'].crystal_system == za.crystal_system, g, args.boot)} | {interval(rm, g, args.boot)} |")
    # ------------------------------------------------------------ the protocol report
    if not args.no_report:
        from py4dstem_gnn.evaluation.report import evaluate, write_report

        for inp in dict.fromkeys(src for src, _ in source.values()):
            if inp == "clean" and args.only == "detected":
                continue
            names = [s for s in sets if source[s][0] in ("clean", inp)]  # detected reports hold the clean rows too
            ps = PatternSet.concatenate([sets[s] for s in names])
            classifiers = {name: {prot: _concat([per[(s, prot)][0][name] for s in names]) for prot in PROTOCOL_WEIGHTS}
                           for name in ("hybrid", "network", "match")}
            patterns = {"material": ps.material, "space_group": ps.space_group, "regime": ps.regime,
                        "input": np.concatenate([np.full(len(sets[s]), source[s][0], dtype=object) for s in names])}
            folder = ROOT / args.report / ("zone_axes" if inp == "clean" else inp.replace(":", "_"))
            payload = evaluate(classifiers, patterns, manifest, n_boot=args.boot, detail=None, selective=True,
                               figure_dir=folder)
            inputs = "clean" if inp == "clean" else f"clean and {inp} (the same patterns; paired cost of detection)"
            info = {"command": command, "inputs": inputs, "regimes": "zone_axis and random",
                    "sets": ", ".join(f"`{paths[s]}`" for s in names) + (" (300 patterns each, --quick)" if args.quick else ""),
                    "bank": f"{bank.n_phases} phases (pool); `unseen-*`: the split's test materials removed",
                    "decision": "`weights/decision.json`"}
            write_report(payload, folder, f"Protocols with the match stage — input: {inputs.split(' (')[0]}", info=info)
        lines.append(f"\nThe protocol report per input (accuracy with intervals per protocol x regime x input, selective "
                     f"prediction, multi-view): `{args.report}/zone_axes/protocols.md` (clean), "
                     f"`{args.report}/detected_<preset>/protocols.md` (clean and detected rows, paired).\n")
    Path(ROOT / args.out).write_text("\n".join(lines) + "\n")
    logger.info("wrote %s", args.out)
    return 0


def _concat(preds):
    if len(preds) == 1:
        return preds[0]
    out = Prediction(*(np.concatenate([getattr(p, k) for p in preds]) for k in
                       ("crystal_system", "space_group", "confidence", "crystal_system_probs", "space_group_probs", "n_spots")))
    out.meta.update({k: v for k, v in preds[0].meta.items() if k in ("confidence_calibration", "conformal", "confidence_calibrated")})
    return out


if __name__ == "__main__":
    raise SystemExit(main())
