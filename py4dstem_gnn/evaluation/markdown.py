"""Markdown of the evaluation report (:func:`py4dstem_gnn.evaluation.report.evaluate` output).

Accuracies in %, with percentile intervals over resampled material groups; one section per part
of the report: accuracy per protocol x regime x input x classifier, selective prediction and
conformal sets per classifier, and the per-classifier detail (paper layout).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from ..labels import CRYSTAL_SYSTEMS
from .protocols import CLEAN, condition_name

__all__ = ["render_report", "render_protocols_markdown", "render_selective_markdown", "render_detail_markdown"]


def _pct(iv: Mapping[str, Any] | None, scale: float = 100.0, digits: int = 1, signed: bool = False) -> str:
    """``mean [low, high]`` of an interval dict, scaled (percent by default); ``–`` when missing."""
    if not iv or iv.get("mean") is None:
        return "–"
    f = f"{'+' if signed else ''}.{digits}f"
    m = f"{scale * iv['mean']:{f}}"
    if iv.get("low") is None:
        return m
    return f"{m} [{scale * iv['low']:{f}}, {scale * iv['high']:{f}}]"


def _fmt(iv: Mapping[str, Any] | None, signed: bool = False) -> str:
    return _pct(iv, signed=signed)


def _input(row: Mapping[str, Any]) -> str:
    """The input column of a cell: ``clean``, ``detected:<preset>``, ``...+corrupted`` (older payloads: clean)."""
    return condition_name(row.get("input", CLEAN), row.get("corruption", "clean"))


#: What the input column means (printed under every accuracy table).
INPUTS_NOTE = ("Input: `clean` = the simulator's spot lists; `detected:<preset>` = the same patterns rendered on that "
               "detector preset (`py4dstem_gnn.data.detector`) and found by py4DSTEM's `find_Bragg_disks`; "
               "`+corrupted` = the seeded experiment-like corruption (`AugmentConfig`) of that input. Regime: "
               "`zone_axis` = low-index zone axes, `random` = orientations uniform over SO(3).")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right_from: int = 1) -> list[str]:
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---" if i < right_from else "---:" for i in range(len(header))) + "|"]
    return out + ["| " + " | ".join(r) + " |" for r in rows] + [""]


def render_report(payload: Mapping[str, Any], title: str | None = None, info: Mapping[str, Any] | None = None) -> str:
    """The whole report: accuracy tables, then selective prediction per classifier, then the detail."""
    md = render_protocols_markdown(payload, title=title, info=info)
    selective = payload.get("selective") or {}
    for name, protos in (selective.get("classifiers") or {}).items():
        md = md.rstrip() + "\n\n" + render_selective_markdown({"settings": selective["settings"], "protocols": protos},
                                                               name)
    if payload.get("detail"):
        md = md.rstrip() + "\n\n" + render_detail_markdown(payload["detail"])
    return md


def render_protocols_markdown(results: Mapping[str, Any], title: str | None = None,
                              info: Mapping[str, Any] | None = None) -> str:
    """Markdown tables of :func:`evaluate_protocols` output (accuracies in %, 95 % group-bootstrap intervals).

    Parameters
    ----------
    results : mapping
        Output of :func:`evaluate_protocols`.
    title : str, optional
        First heading.
    info : mapping, optional
        Lines ``key: value`` printed under the title (command, weights per protocol, sets ...).

    Returns
    -------
    str
    """
    st = results["settings"]
    ks = st["k_views"]
    pct = int(round(100 * st["ci"]))
    lines = [f"# {title or 'Accuracy by evaluation protocol'}", ""]
    for k, v in (info or {}).items():
        lines.append(f"- **{k}**: {v}")
    lines += [
        "" if info else "",
        f"Accuracies in %, with {pct} % percentile intervals from {st['n_boot']} bootstrap resamples of whole "
        "material groups (materials sharing a prototype or a formula and space group). "
        f"'k views': {st['views']} ({st['n_draws']} draws). `known` scores "
        f"{'every pattern' if st['known'] == 'all' else 'the split_material test materials'}; "
        "`unseen-material` and `unseen-type` the test materials of `split_material` / `split_type`. "
        + INPUTS_NOTE, "",
        "## Accuracy", "",
    ]
    stat_cols = ["cs_1", "sg_1"] + [f"{w}_k{k}" for k in ks for w in ("cs", "sg")]
    head = ["protocol", "regime", "input", "classifier", "patterns", "materials", "groups", "views/material",
            "CS 1", "SG 1"] + [f"{w} {k} views" for k in ks for w in ("CS", "SG")]
    rows = []
    for c in results["cells"]:
        vpm = c["views_per_material"]
        for name, r in c["classifiers"].items():
            rows.append([c["protocol"], c["regime"], _input(c), name, str(c["n_patterns"]), str(c["n_materials"]),
                         str(c["n_groups"]), f"{vpm['median']:g} ({vpm['min']}–{vpm['max']})"]
                        + [_fmt(r.get(s)) for s in stat_cols])
    lines += _table(head, rows, right_from=4)
    if results["differences"]:
        lines += ["## Differences between classifiers (paired, same patterns and resamples)", ""]
        rows = [[d["protocol"], d["regime"], _input(d), f"{d['a']} − {d['b']}"]
                + [_fmt(d.get(s), signed=True) for s in stat_cols] for d in results["differences"]]
        lines += _table(["protocol", "regime", "input", "difference (points)"] + head[8:], rows, right_from=4)
    if results["corruption_cost"]:
        lines += ["## Cost of corruption: input minus its corrupted copy (paired, points)", ""]
        rows = [[d["protocol"], d["regime"], d.get("input", CLEAN), d["classifier"]]
                + [_fmt(d.get(s), signed=True) for s in stat_cols] for d in results["corruption_cost"]]
        lines += _table(["protocol", "regime", "input", "classifier"] + head[8:], rows, right_from=4)
    if results.get("input_cost"):
        lines += ["## Cost of the input: clean minus each other input (paired, same material groups resampled, points)",
                  "", "The same patterns on both inputs (the detected sets keep the clean sets' rows); multi-view draws "
                  "are seeded alike, so both inputs combine the same views.", ""]
        rows = [[d["protocol"], d["regime"], f"clean − {d['input']}", d["classifier"]]
                + [_fmt(d.get(s), signed=True) for s in stat_cols] for d in results["input_cost"]]
        lines += _table(["protocol", "regime", "inputs", "classifier"] + head[8:], rows, right_from=4)
    k_max = f"k{ks[-1]}" if ks else None
    shown = ["cs_1", "sg_1"] + ([f"cs_{k_max}"] if k_max else [])
    shown_names = ["CS 1", "SG 1"] + ([f"CS {ks[-1]} views"] if k_max else [])
    for key, label, heading in (("by_crystal_system", "crystal_system", "By crystal system"),
                                ("by_group_size", "group_size", "By group size (materials of the group in the pool)")):
        lines += [f"## {heading}", ""]
        for c in results["cells"]:
            names = list(c["classifiers"])
            if not names:
                continue
            lines += [f"### {c['protocol']}, {c['regime']}, {_input(c)}", ""]
            head = [label.replace("_", " "), "patterns", "groups"] + [f"{n}: {s}" for n in names for s in shown_names]
            rows = []
            ref = c["classifiers"][names[0]][key]
            for i, row in enumerate(ref):
                n_pat = row["cs_1"]["n"]
                if not n_pat:
                    continue
                cells = [row[label], str(n_pat), str(row["cs_1"]["n_groups"])]
                for n in names:
                    r = c["classifiers"][n][key][i]
                    cells += [_fmt(r.get(s)) for s in shown]
                rows.append(cells)
            lines += _table(head, rows)
    return "\n".join(lines).rstrip() + "\n"


def render_selective_markdown(results: Mapping[str, Any], classifier: str = "network") -> str:
    """Markdown sections of :func:`selective_protocols` output (percent, group-bootstrap intervals).

    Parameters
    ----------
    results : mapping
        Output of :func:`selective_protocols`.
    classifier : str
        Name of the classifier in the headings.

    Returns
    -------
    str
    """
    st = results["settings"]
    pct = int(round(100 * st["ci"]))
    protos = results["protocols"]
    lines = [f"## Selective prediction ({classifier})", ""]
    if not protos:
        return "\n".join(lines + ["No predictions with probabilities: nothing to report.", ""])
    lines += [
        "Risk–coverage: patterns sorted by decreasing confidence, accuracy of the labelled ones against the fraction "
        "labelled. AURC = area under the risk (1 − accuracy) curve, lower is better; intervals: "
        f"{pct} % percentile intervals over {st['n_boot']} resamples of whole material groups. The confidence is the "
        "weights card's calibrated confidence where the card holds one, else the raw margin. Targets (issue 15, "
        "judged on point estimates at the card's default threshold): zone axes "
        f"≥ {100 * st['target_accuracy']:.0f} % "
        f"of labelled patterns right; random orientations at most {100 * st['target_random_labelled']:.0f} % labelled "
        f"unless ≥ {100 * st['target_accuracy']:.0f} % right.", "",
    ]
    rows = []
    for p in protos:
        c = p["calibration"]
        thr = "–" if c.get("threshold") is None else f"{c['threshold']:.4g}"
        goal = "" if c.get("accuracy_goal") is None else f" (goal {100 * c['accuracy_goal']:.0f} %)"
        rows.append([p["protocol"], str(p.get("weights") or "–"), c["confidence"], thr + goal,
                     c.get("confidence_fitted_on", "–")])
    lines += _table(["protocol", "weights", "confidence", "default threshold", "confidence calibrated on"], rows, 5)
    head = ["protocol", "regime", "input", "patterns", "groups", "accuracy (all)", "AURC %",
            "labelled %", "accuracy of labelled %", "target"]
    rows = []
    for p in protos:
        for r in p["conditions"]:
            t = r.get("target")
            rows.append([p["protocol"], r["regime"], _input(r), str(r["n"]), str(r["n_groups"]),
                         _pct(r["accuracy"]), _pct(r["aurc"]), _pct(r.get("labelled")),
                         _pct(r.get("selective_accuracy")),
                         "–" if t is None else ("met" if t["met"] else "**missed**") + f" ({t['rule']})"])
    lines += ["### Risk–coverage and abstention at the card's threshold", ""]
    lines += _table(head, rows, 3)
    figs = [p for p in protos if p.get("figure")]
    for p in figs:
        lines += [f"![risk–coverage, {p['protocol']}]({p['figure']})", ""]
    comps = [p for p in protos if p.get("score_comparison")]
    if comps:
        lines += ["### Raw scores compared by AURC (zone-axis patterns, every input and corrupted copy pooled)", "",
                  "Same patterns and group resamples for every score of a protocol; 'minus margin' is paired "
                  "(negative = better than the margin). 'calibrated' is the card's confidence.", ""]
        for p in comps:
            head = ["score", "AURC %", "E-AURC %", "minus margin (points)",
                    f"coverage at {100 * st['target_accuracy']:.0f} % right", "accuracy at 50 % coverage"]
            rows = []
            for r in p["score_comparison"]["rows"]:
                d = r["minus_reference"]
                diff = "–" if d["mean"] is None else (f"{100 * d['mean']:+.1f}" + (
                    "" if d["low"] is None else f" [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"))
                rows.append([r["name"], _pct(r["aurc"]), f"{100 * r['e_aurc']:.1f}", diff,
                             f"{100 * r['coverage_at_goal']:.1f} %", f"{100 * r['accuracy_at_half']:.1f} %"])
            lines += [f"**{p['protocol']}** ({p.get('weights') or 'weights not named'})", ""] + _table(head, rows, 1)
    lines += _coverage_markdown(protos)
    return "\n".join(lines).rstrip() + "\n"


def _coverage_markdown(protos: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = ["## Conformal crystal-system sets", ""]
    with_sets = [p for p in protos if p.get("coverage")]
    without = [p["protocol"] for p in protos if not p.get("coverage")]
    if without:
        lines += [f"No conformal calibration in the card of the weights serving: {', '.join(without)}.", ""]
    if not with_sets:
        return lines
    lines += [
        "Split-conformal sets are valid only for data exchangeable with their calibration data: for `known`, a "
        "calibration on known-material validation patterns; for `unseen-*`, the split model's own validation groups. "
        "A coverage below nominal on a protocol whose calibration data are not exchangeable with it says so, and is "
        "not a fault of the method. Calibration data (the card's `fitted_on`):", "",
    ]
    fitted: dict[str, list[str]] = {}
    for p in with_sets:
        src = p["calibration"].get("conformal_fitted_on", "not stated in the card")
        lines.append(f"- `{p['protocol']}` ({p.get('weights') or 'weights not named'}): {src}; card default level "
                     f"{100 * p['calibration']['conformal_default_coverage']:.1f} %")
        fitted.setdefault(src, []).append(p["protocol"])
    lines.append("")
    for src, ps in fitted.items():
        if "known" in ps and len(ps) > 1:
            lines += [f"Note: one calibration ({src}) serves {', '.join(ps)}: it can be exchangeable with at most "
                      "one of `known` and `unseen-*`.", ""]
    lines += ["Coverage and set sizes with 95 % group-bootstrap intervals; **short** = coverage more than 2 points "
              "below nominal with the nominal level above the interval.", ""]
    head = ["protocol", "regime", "input", "patterns", "groups", "nominal %", "CS coverage %", "CS mean set size",
            "SG coverage %", "SG mean set size", "flag"]
    rows = []
    for p in with_sets:
        for r in p["coverage"]:
            nominal = f"{100 * r['nominal']:.1f}" + (" (card default)" if r["default_level"] else "")
            rows.append([p["protocol"], r["regime"], _input(r), str(r["n"]), str(r["n_groups"]), nominal,
                         _pct(r["coverage"]), _pct(r["mean_set_size"], 1.0, 2), _pct(r["sg_coverage"]),
                         _pct(r["sg_mean_set_size"], 1.0, 1), "**short**" if r["below_nominal"] else "ok"])
    return lines + _table(head, rows, 3)


def _p(v: Any) -> str:
    return "–" if v is None or v != v else f"{100 * float(v):.1f}"


def render_detail_markdown(d: Mapping[str, Any]) -> str:
    """Per-classifier detail (:func:`py4dstem_gnn.evaluation.detail.detail`): the paper's tables."""
    from .detail import PAPER_FIGURES, PAPER_VIEWS

    cls, k = d["classifiers"], d["k_views"]
    names = list(cls)
    L = [f"## Detail: `{d['protocol']}`, {d['patterns']} patterns ({d['n_patterns']} patterns, {d['n_materials']} "
         "materials)", "",
         f"'k views': mean over {d['n_draws']} seeded draws of the share of materials whose combined label is right "
         "(normalised geometric mean of the probabilities); soft vote: the arithmetic mean instead.", "",
         "### Headline against the published figures (%)", ""]
    curve = {n: {e["k"]: e for e in r.get("views_curve", [])} for n, r in cls.items()}
    rows, gaps = [], []
    for n, r in cls.items():
        kv = curve[n].get(k, {})
        ours = [r["cs_accuracy"], r["sg_accuracy"], kv.get("cs"), kv.get("sg")]
        rows.append([f"{n}: this run", *map(_p, ours),
                     "–" if "soft_vote" not in r else f"{_p(r['soft_vote']['cs'])} / {_p(r['soft_vote']['sg'])}"])
        p = PAPER_FIGURES.get(n)
        if p:
            paper = [*p["single"], *p["multi"]]
            rows.append([f"{n}: paper, {p['label']} (multi-view: {PAPER_VIEWS} views)", *(f"{v:.1f}" for v in paper), "–"])
            gaps.append(f"- **{n}** minus the paper (points): " + ", ".join(
                f"{lab} {100 * o - v:+.1f}" for lab, o, v in zip(("CS 1", "SG 1", f"CS {k}", f"SG {k}"), ours, paper)
                if o is not None and (lab.endswith(" 1") or k == PAPER_VIEWS)))
    L += _table(["classifier", "CS 1 pattern", "SG 1 pattern", f"CS {k} views", f"SG {k} views",
                 f"soft vote CS / SG, {k} views"], rows) + gaps + ([""] if gaps else [])
    ks = sorted({kk for c in curve.values() for kk in c})
    if ks:
        L += ["Accuracy against the number of views combined per material (%):", ""]
        L += _table(["classifier"] + [f"{w} k={kk}" for kk in ks for w in ("CS", "SG")],
                    [[n] + [_p(curve[n].get(kk, {}).get(w)) for kk in ks for w in ("cs", "sg")] for n in names])
    L += ["### Per crystal system: precision / recall / F1, single pattern (Table 2 layout, %)", ""]
    support = cls[names[0]]["cs_prf"]["support"]
    rows = [[name, str(support[c])] + [_p(cls[n]["cs_prf"][m][c]) for n in names for m in ("precision", "recall", "f1")]
            for c, name in enumerate(CRYSTAL_SYSTEMS)]
    rows.append(["macro average", str(sum(support))] + [_p(cls[n]["cs_prf"][m]) for n in names
                                                       for m in ("macro_precision", "macro_recall", "macro_f1")])
    rows.append(["weighted F1 / accuracy", str(sum(support))] + [v for n in names for v in
                ("–", _p(cls[n]["cs_prf"]["accuracy"]), _p(cls[n]["cs_prf"]["weighted_f1"]))])
    L += _table(["crystal system", "support"] + [f"{n} {m}" for n in names for m in ("P", "R", "F1")], rows)
    L += ["### Space-group accuracy by true crystal system (Table 4 layout, %)", ""]
    counts = cls[names[0]]["n_by_system"]
    rows = [[name, str(counts[c])] + [v for n in names for v in (_p(cls[n]["sg_accuracy_by_system"][c]),
                                                                 _p((cls[n].get("sg_k_by_system") or [None] * 7)[c]))]
            for c, name in enumerate(CRYSTAL_SYSTEMS)]
    L += _table(["crystal system", "patterns"] + [f"{n} {h}" for n in names for h in ("1 pattern", f"{k} views")], rows)
    cal = [(n, r["calibration"]) for n, r in cls.items() if r.get("calibration")]
    if cal:
        L += ["### Calibration (expected calibration error, 15 equal-width bins, %)", ""]
        L += _table(["classifier", "ECE CS", "ECE SG", "T (CS)", "T (SG)", "ECE CS scaled", "ECE SG scaled",
                     "NLL CS → scaled", "temperature fitted on", "helps?"],
                    [[n, _p(c["ece_cs"]), _p(c["ece_sg"]), ", ".join(f"{t:.2f}" for t in c["t_cs"]) or "–",
                      ", ".join(f"{t:.2f}" for t in c["t_sg"]) or "–", _p(c["ece_cs_scaled"]), _p(c["ece_sg_scaled"]),
                      f"{c['nll_cs']:.3f} → {c['nll_cs_scaled']:.3f}", c["temperature_source"],
                      "yes" if c["scaling_helps"] else "no"] for n, c in cal])
        L += ["The confidence of an ECE is the probability of the predicted class (crystal system; space group within "
              "it). Temperature scaling divides the log-probabilities by T and never changes the labels.", ""]
    timed = [(n, r["timings"]) for n, r in cls.items() if r.get("timings")]
    if timed:
        L += ["### Time per pattern", ""]
        L += _table(["classifier", "total (ms)", "patterns timed", "device", "threads / jobs"],
                    [[n, f"{t.get('per_pattern_ms', float('nan')):.3f}", str(t.get("n", "–")), str(t.get("device", "–")),
                      str(t.get("threads", "–"))] for n, t in timed])
    figs = d.get("figures") or []
    L += [f"![{f[:-4].replace('_', ' ')}]({f})" + "\n" for f in figs]
    return "\n".join(L).rstrip() + "\n"
