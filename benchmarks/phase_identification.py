"""Phase identification (issue 21): match, hybrid and network per protocol x regime x input, with group intervals.

Writes

* ``reports/protocols_phase/`` — the package's one report (:func:`py4dstem_gnn.evaluation.report.evaluate`)
  with three classifiers per protocol: ``network`` (the network alone), ``match`` (the match stage alone:
  the decision with uniform network probabilities) and ``hybrid`` (the shipped pipeline), on the stored
  Bloch-wave test sets (zone axes and random orientations; clean and, when present, detected inputs);
* ``benchmarks/results/phase_identification.md`` — what the report has no column for: right material
  and right zone axis, cells from outside the pool (experimental lattice constants; DFT-like perturbed
  pool cells), the element filter, the nearest isostructural analogue on ``unseen-*``, and a bank-size
  curve. Intervals: 95 %, bootstrap over material groups (manifest ``group``; experimental structures:
  one group each).

Under ``unseen-material`` / ``unseen-type`` the bank holds no test material of that split (the split's
test materials, resp. whole test groups, are removed) and the network is the split model.

    python benchmarks/phase_identification.py                  # everything (~10 min on 2 cores)
    python benchmarks/phase_identification.py --quick          # 300 patterns per set, no bank-size curve
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
from py4dstem_gnn.decide import DecisionParams, decide, load_decision_params  # noqa: E402
from py4dstem_gnn.evaluation.bootstrap import group_bootstrap  # noqa: E402
from py4dstem_gnn.features import split_direct_beam  # noqa: E402
from py4dstem_gnn.matching import load_bank, match_patterns, resolve_bank  # noqa: E402
from py4dstem_gnn.predict import Prediction, _predict_spot_lists, resolve_device  # noqa: E402
from py4dstem_gnn.weights import load_model  # noqa: E402

logger = logging.getLogger("phase_identification")
PROTOCOL_WEIGHTS = {"known": "default", "unseen-material": "unseen_material", "unseen-type": "unseen_type"}
PROTOCOL_COLUMN = {"unseen-material": "split_material", "unseen-type": "split_type"}


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
    dev = resolve_device("cpu")
    t0 = time.perf_counter()
    cs_p, sg_p = _predict_spot_lists(spots, net, dev)
    t_net = time.perf_counter() - t0
    t0 = time.perf_counter()
    m = match_patterns(spots, bank)
    t_match = time.perf_counter() - t0
    n = len(spots)
    pcs, psg = bank.crystal_system.astype(np.int64), bank.space_group.astype(np.int64)
    need = ~(np.nan_to_num(m.score[:, 0], neginf=-1.0) >= params.skip_network_score)
    hyb = decide(m, cs_p, sg_p, params, pcs, need, psg)
    alone = decide(m, cs_p, sg_p, params, pcs, np.zeros(n, bool), psg)
    n_spots = np.fromiter((len(s) for s in spots), np.int64, n)
    out = {}
    net_pred = Prediction.from_probs(cs_p, sg_p, n_spots)
    from py4dstem_gnn.confidence.calibration import apply_model_calibration

    out["network"] = apply_model_calibration(net_pred, net)
    for name, d in (("match", alone), ("hybrid", hyb)):
        p = Prediction(d.crystal_system, d.space_group, d.confidence, d.crystal_system_probs, d.space_group_probs, n_spots)
        p.phase = d.phase
        p.meta["network_ran"] = need if name == "hybrid" else np.zeros(n, bool)
        out[name] = p
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--zone-axis", default="data/bloch_test_za.h5")
    ap.add_argument("--random", default="data/bloch_test_random.h5")
    ap.add_argument("--experimental", default="data/bloch_experimental_za.h5")
    ap.add_argument("--perturbed", default="data/bloch_perturbed_za.h5")
    ap.add_argument("--detected", nargs="*", default=None, help="detected sets (default: data/detected_*_za.h5)")
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
    lines = ["# Phase identification against known structures\n",
             f"Command: `python {' '.join(sys.argv)}`  \nBank: {bank.n_phases} phases, {len(bank)} templates. "
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
    detected = args.detected if args.detected is not None else sorted(str(p.relative_to(ROOT)) for p in (ROOT / "data").glob("detected_*_za.h5"))
    for path in detected:
        sets[f"detected {Path(path).stem.replace('detected_', '').replace('_za', '')}"] = load(path)
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
                 "isostructural analogue, and the `hybrid` CS column says what it is worth.\n")
    # ------------------------------------------------------------ cells from outside the pool
    lines.append("## Cells from outside the pool (zone axes, Bloch-wave, one pattern)\n")
    lines.append("| set | bank | n (groups) | network CS | match CS | hybrid CS | hybrid SG | best match = right material (formula + SG) | phase named | named and right |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for path, label in ((args.experimental, "experimental lattice constants"), (args.perturbed, "pool cells, DFT-like errors")):
        if not (ROOT / path).exists():
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
    if not args.quick:
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

        for sname in sets:
            if sname == "random":
                continue
            ps = PatternSet.concatenate([sets[sname], rnd]) if sname == "zone axes" else sets[sname]
            classifiers = {}
            for name in ("hybrid", "network", "match"):
                classifiers[name] = {}
                for prot in PROTOCOL_WEIGHTS:
                    parts = [per[(sname, prot)][0][name]] + ([per[("random", prot)][0][name]] if sname == "zone axes" else [])
                    classifiers[name][prot] = _concat(parts)
            patterns = {"material": ps.material, "space_group": ps.space_group, "regime": ps.regime}
            payload = evaluate(classifiers, patterns, manifest, n_boot=args.boot, detail=None, selective=True,
                               figure_dir=ROOT / args.report / sname.replace(" ", "_"))
            write_report(payload, ROOT / args.report / sname.replace(" ", "_"), f"Protocols with the match stage — {sname}")
        lines.append(f"\nThe protocol report per input (accuracy with intervals per protocol x regime, selective "
                     f"prediction, multi-view): `{args.report}/<input>/protocols.md`.\n")
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
