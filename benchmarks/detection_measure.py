"""The ``measure`` step of ``benchmarks/detection.py`` (see its docstring): statistics, causes, aggregation."""

from __future__ import annotations

import inspect
import logging
import time
from pathlib import Path

import numpy as np

from _report import command_line, write_report

logger = logging.getLogger("benchmarks.detection")
ROOT = Path(__file__).resolve().parents[1]
CS_NAMES = ("tric", "mono", "ortho", "tetra", "trig", "hex", "cubic")
NET_NAMES = ("obl", "rect", "c-rect", "square", "hex")
Q_BINS = (0.0, 0.5, 1.0, 1.5, 2.1)
I_BINS = (-np.inf, -3.5, -3.0, -2.5, -2.0, -1.0, np.inf)


# ------------------------------------------------------------------ spot statistics

def _split_beam(pl: np.ndarray, tol: float = 0.05) -> np.ndarray:
    """Diffracted spots (the spot nearest q = 0 removed when within ``tol``)."""
    pl = np.asarray(pl, np.float64).reshape(-1, 3)
    if not len(pl):
        return pl
    r = np.hypot(pl[:, 0], pl[:, 1])
    i = int(np.argmin(r))
    return np.delete(pl, i, axis=0) if r[i] < tol else pl


def _step_threshold(rel: np.ndarray, hit: np.ndarray, infield: np.ndarray) -> float:
    """Relative intensity ``t`` maximising (found spots above t) + (lost spots below t), in-field spots."""
    r, h = rel[infield], hit[infield]
    if not h.any():
        return np.nan
    o = np.argsort(r)
    r, h = r[o], h[o]
    # threshold just below spot j: misses among 0..j-1 + hits among j..n-1
    miss_below = np.concatenate([[0], np.cumsum(~h)])
    hit_above = np.concatenate([np.cumsum(h[::-1])[::-1], [0]])
    j = int(np.argmax(miss_below + hit_above))
    if j == 0:
        return float(r[0])
    return float(np.sqrt(r[j - 1] * r[j])) if j < r.size else float(r[-1])


def pair_sets(true_set, det_set, preset):
    """Per-pattern pairing of true and detected diffracted spots; returns a dict of flat arrays."""
    from py4dstem_gnn.data.detector import match_spots

    tol = preset.disk_radius * preset.pixel_size
    rows = {"t_q": [], "t_I": [], "t_hit": [], "t_infield": [], "t_pat": [], "e_dx": [], "e_dy": [], "e_q": [],
            "e_I": [], "e_rad": [], "f_q": [], "f_pat": [], "scale": [], "t_rel": [], "thr": []}
    pairs = []
    for i in range(len(true_set)):
        t = _split_beam(true_set[i])
        d = _split_beam(det_set[i])
        t2d, d2t = match_spots(t, d, tol)
        hit = t2d >= 0
        tq = np.hypot(t[:, 0], t[:, 1])
        rows["t_q"].append(tq)
        rows["t_I"].append(t[:, 2])
        rows["t_hit"].append(hit)
        rows["t_infield"].append(np.abs(t[:, :2]).max(1) < preset.q_max if len(t) else np.zeros(0, bool))
        rows["t_pat"].append(np.full(len(t), i))
        rel = t[:, 2] / max(float(t[:, 2].max()), 1e-30) if len(t) else np.zeros(0)
        rows["t_rel"].append(rel)
        # the pattern's detection threshold relative to its brightest diffracted spot: the step in relative
        # intensity that best separates found from lost in-field spots
        rows["thr"].append(np.array([_step_threshold(rel, hit, np.abs(t[:, :2]).max(1) < preset.q_max)]))
        dd = d[t2d[hit]]
        tt = t[hit]
        rows["e_dx"].append(dd[:, 0] - tt[:, 0])
        rows["e_dy"].append(dd[:, 1] - tt[:, 1])
        rows["e_q"].append(tq[hit])
        rows["e_I"].append(tt[:, 2])
        rows["e_rad"].append(np.hypot(dd[:, 0], dd[:, 1]) - tq[hit])
        fq = np.hypot(d[d2t < 0, 0], d[d2t < 0, 1])
        rows["f_q"].append(fq)
        rows["f_pat"].append(np.full(len(fq), i))
        # detected intensity units -> the true list's (median ratio over the matched spots)
        s = float(np.median(tt[:, 2] / np.maximum(dd[:, 2], 1e-12))) if hit.any() else np.nan
        rows["scale"].append(np.array([s]))
        pairs.append((t, d, t2d, d2t, s))
    flat = {k: np.concatenate(v) if v else np.zeros(0) for k, v in rows.items()}
    return flat, pairs


def spot_statistics(flat, n_patterns, preset) -> dict:
    px = preset.pixel_size
    err = np.hypot(flat["e_dx"], flat["e_dy"]) / px
    out = {
        "n_patterns": n_patterns,
        "true_per_pattern": flat["t_q"].size / n_patterns,
        "recall": float(flat["t_hit"].mean()),
        "recall_in_field": float(flat["t_hit"][flat["t_infield"]].mean()),
        "beyond_edge_share": float((~flat["t_infield"]).mean()),
        "false_per_pattern": flat["f_q"].size / n_patterns,
        "err_median_px": float(np.median(err)),
        "err_p90_px": float(np.percentile(err, 90)),
        "err_rms_coord_px": float(np.sqrt(np.mean(np.concatenate([flat["e_dx"], flat["e_dy"]]) ** 2)) / px),
        "err_rms_coord_q": float(np.sqrt(np.mean(np.concatenate([flat["e_dx"], flat["e_dy"]]) ** 2))),
        "radial_bias_rel": float(np.median(flat["e_rad"] / np.maximum(flat["e_q"], 1e-6))),
    }
    qb = np.digitize(flat["e_q"], Q_BINS) - 1
    out["err_by_q"] = [(f"{Q_BINS[b]:.1f}-{Q_BINS[b + 1]:.1f}", int((qb == b).sum()),
                        float(np.median(err[qb == b])) if (qb == b).any() else np.nan,
                        float(np.sqrt(np.mean(np.concatenate([flat["e_dx"][qb == b], flat["e_dy"][qb == b]]) ** 2)) / px)
                        if (qb == b).any() else np.nan) for b in range(len(Q_BINS) - 1)]
    lI = np.log10(np.maximum(flat["e_I"], 1e-12))
    ib = np.digitize(lI, I_BINS) - 1
    out["err_by_I"] = [(int((ib == b).sum()), float(np.median(err[ib == b])) if (ib == b).any() else np.nan)
                       for b in range(len(I_BINS) - 1)]
    lt = np.log10(np.maximum(flat["t_I"], 1e-12))
    tb = np.digitize(lt, I_BINS) - 1
    inf = flat["t_infield"]
    out["miss_by_I"] = [(int((tb == b).sum()), float(1 - flat["t_hit"][(tb == b) & inf].mean()) if ((tb == b) & inf).any() else np.nan)
                        for b in range(len(I_BINS) - 1)]
    # intensity (relative to the incident beam) at which half of the in-field spots are found
    grid = np.linspace(-4.5, 0, 46)
    rec = [flat["t_hit"][inf & (np.abs(lt - g) < 0.1)].mean() if (inf & (np.abs(lt - g) < 0.1)).sum() > 20 else np.nan
           for g in grid]
    rec = np.asarray(rec)
    ok = np.flatnonzero(rec >= 0.5)
    out["I50"] = float(10 ** grid[ok[0]]) if ok.size else np.nan
    thr = flat["thr"][np.isfinite(flat["thr"])]
    out["thr_rel_p10_p50_p90"] = [float(x) for x in np.percentile(thr, [10, 50, 90])]
    # misses above the pattern's own threshold, in field (merges, peaks lost near others)
    pat_thr = flat["thr"][flat["t_pat"].astype(int)]
    above = inf & (flat["t_rel"] > pat_thr)
    out["miss_above_threshold"] = float(1 - flat["t_hit"][above].mean())
    fq = flat["f_q"]
    out["false_q_quartiles"] = [float(x) for x in np.percentile(fq, [25, 50, 75])] if fq.size else [np.nan] * 3
    return out


# ------------------------------------------------------------------ causes

def cause_lists(pairs, cause: str) -> list[np.ndarray]:
    """Clean lists with one cause of the detection applied (beam at q = 0 kept first)."""
    beam = np.array([[0.0, 0.0, 1.0]])
    out = []
    for t, d, t2d, d2t, s in pairs:
        s = 1.0 if not np.isfinite(s) else s
        hit = t2d >= 0
        if cause == "positions":
            q = t.copy()
            q[hit, :2] = d[t2d[hit], :2]
        elif cause == "misses":
            q = t[hit]
        elif cause == "intensities":
            q = t.copy()
            q[hit, 2] = d[t2d[hit], 2] * s
        elif cause == "false":
            f = d[d2t < 0].copy()
            f[:, 2] *= s
            q = np.concatenate([t, f])
        elif cause == "detected":
            q = d.copy()
            q[:, 2] *= s
        else:
            raise ValueError(cause)
        bi = max(float(q[:, 2].max()) if len(q) else 1.0, 1.0) * 10
        out.append(np.concatenate([beam * [1, 1, bi], q]).astype(np.float32))
    return out


def geometry_damage(clean_lists, lists, sigma_q) -> dict:
    from py4dstem_gnn.geometry import pattern_geometry
    from py4dstem_gnn.geometry.uncertainty import net_type_sets

    g0 = pattern_geometry(clean_lists)
    u = net_type_sets(lists, sigma_q)
    found1 = u["found"]
    both = g0.found & found1
    same_net = g0.net_type[both] == u["net_type"][both]
    r0 = g0.b_len / np.maximum(g0.a_len, 1e-9)
    r1 = u["b_len"] / np.maximum(u["a_len"], 1e-9)
    dr = np.abs(r1 - r0)[both] / r0[both]
    dg = np.abs(u["gamma_deg"] - g0.gamma_deg)[both]
    mask = u["compatible"]
    in_set = mask[np.flatnonzero(both), np.maximum(g0.net_type[both], 0)]
    lab_u = u["net_type_uncertain"]
    # a wrong fixed-tolerance label whose set holds the clean type: the uncertainty made it honest
    wrong = both & (g0.net_type != u["net_type"])
    rescued = mask[np.flatnonzero(wrong), np.maximum(g0.net_type[wrong], 0)]
    sq = both & (g0.net_type == 3)
    hx = both & (g0.net_type == 4)
    return {
        "found": float(found1.mean()), "same_net": float(same_net.mean()),
        "same_net_uncertain": float((lab_u[both] == g0.net_type[both]).mean()),
        "clean_in_set": float(in_set.mean()), "set_size": float(mask[both].sum(1).mean()),
        "rescued": float(rescued.mean()) if rescued.size else np.nan,
        "ratio_err_median": float(np.median(dr)), "gamma_err_median": float(np.median(dg)),
        "ratio_err_p90": float(np.percentile(dr, 90)), "gamma_err_p90": float(np.percentile(dg, 90)),
        "square_kept": float((u["net_type"][sq] == 3).mean()) if sq.any() else np.nan,
        "square_kept_uncertain": float(mask[sq, 3].mean()) if sq.any() else np.nan,
        "hex_kept": float((u["net_type"][hx] == 4).mean()) if hx.any() else np.nan,
        "hex_kept_uncertain": float(mask[hx, 4].mean()) if hx.any() else np.nan,
    }


# ------------------------------------------------------------------ network

def predict(lists, model):
    import py4dstem_gnn as pg

    kw = {"phases": None} if "phases" in inspect.signature(pg.predict_pointlists).parameters else {}
    return pg.predict_pointlists(lists, model=model, device="cpu", **kw)


def bootstrap(correct, groups, n_boot):
    from py4dstem_gnn.evaluation.bootstrap import group_bootstrap

    b = group_bootstrap(np.asarray(correct, float), groups, n_boot=n_boot, seed=0)
    return b


def fmt_ci(b) -> str:
    return f"{100 * b.mean:.1f} [{100 * b.low:.1f}, {100 * b.high:.1f}]"


def shares(labels, n=7) -> np.ndarray:
    return np.bincount(np.asarray(labels), minlength=n)[:n] / max(len(labels), 1)


def multi_view(pred, material, cs_true, rule):
    from py4dstem_gnn.predict import aggregate_views

    kw = {} if rule == "product" else {"rule": rule}
    agg = aggregate_views(pred, material, **kw)
    keys = agg.meta["groups"]
    first = np.unique(material, return_index=True)[1]
    y = np.asarray(cs_true)[first]
    return agg, keys, y


# ------------------------------------------------------------------ the report

def measure(args) -> None:
    from py4dstem_gnn.data.dataset import PatternSet
    from py4dstem_gnn.data.detector import get_preset
    from py4dstem_gnn.data.structures import load_manifest
    from detection import SOURCES, detected_path

    t_start = time.perf_counter()
    man = load_manifest()
    group_of = np.asarray(man["group"])
    lines = ["# Spots as py4DSTEM detects them (issue 22)", "",
             f"Command: `{command_line('detection.py', None)}`", "",
             "Stored Bloch-wave test sets (`data/bloch_test_za.h5`, `data/bloch_test_random.h5`), rendered on "
             "each detector preset of `py4dstem_gnn.data.detector` and detected with py4DSTEM's "
             "`find_Bragg_disks` (`data/detected_<preset>_{za,random}.h5`, built by "
             "`python benchmarks/detection.py build`). Network: the shipped default weights "
             f"(`{args.model}`), CPU. Intervals: 95 % bootstrap over material groups (manifest column `group`, "
             f"{args.n_boot} resamples).", ""]
    clean = {w: PatternSet.from_hdf5(ROOT / SOURCES[w]) for w in ("za", "random", "val_za")}
    keep = {}
    if args.max_materials:
        rng = np.random.default_rng(0)
        for w, s in clean.items():
            mats = np.unique(s.material)
            pick = rng.choice(mats, min(args.max_materials, mats.size), replace=False)
            keep[w] = np.flatnonzero(np.isin(s.material, pick))
            clean[w] = s.subset(keep[w])
        lines += [f"Seeded subset (numpy default_rng(0)) of {args.max_materials} materials per set.", ""]
    clean_pred = {}
    for w, s in clean.items():
        t0 = time.perf_counter()
        clean_pred[w] = predict(s.pointlists, args.model)
        logger.info("clean %s predicted in %.0f s", w, time.perf_counter() - t0)

    stats_rows, cause_rows, geo_rows, acc_rows, share_rows, agg_rows = [], [], [], [], [], []
    rules = ("product", "mean", "vote")
    measured = {}
    for name in args.presets:
        preset = get_preset(name)
        for w in ("za", "random", "val_za"):
            path = detected_path(name, w)
            if not path.exists():
                logger.warning("%s missing: skipped", path)
                continue
            det = PatternSet.from_hdf5(path)
            if w in keep:
                det = det.subset(keep[w])
            src = clean[w]
            assert np.array_equal(det.material, src.material)
            flat, pairs = pair_sets(src, det, preset)
            st = spot_statistics(flat, len(src), preset)
            measured[(name, w)] = st
            if w != "val_za":
                stats_rows.append((name, w, st))
            pd_ = predict(det.pointlists, args.model)
            groups = group_of[src.material]
            y = src.crystal_system.astype(int)
            if w != "val_za":
                b0 = bootstrap(clean_pred[w].crystal_system == y, groups, args.n_boot)
                b1 = bootstrap(pd_.crystal_system == y, groups, args.n_boot)
                acc_rows.append((name, w, b0, b1))
                share_rows.append((name, w, shares(y), shares(clean_pred[w].crystal_system), shares(pd_.crystal_system)))
            # multi-view (zone axes: the views of one material)
            if w in ("za", "val_za"):
                mgroups = group_of[np.unique(src.material)]
                for rule in rules:
                    for label, p in (("clean", clean_pred[w]), ("detected", pd_)):
                        agg, keys, yk = multi_view(p, src.material, y, rule)
                        b = bootstrap(agg.crystal_system == yk, mgroups, args.n_boot)
                        # single pattern on the same footing: each material's share of correct views
                        inv = np.unique(src.material, return_inverse=True)[1]
                        per_mat = np.bincount(inv, p.crystal_system == y) / np.bincount(inv)
                        b1 = bootstrap(per_mat, mgroups, args.n_boot)
                        agg_rows.append((name, w, rule, label, b, shares(agg.crystal_system), b1,
                                         float(np.mean(agg.confidence))))
            if w == "za":
                sigma = st["err_rms_coord_q"]
                for cause in ("positions", "misses", "intensities", "false", "detected"):
                    lists = cause_lists(pairs, cause)
                    pc = predict(lists, args.model)
                    bc = bootstrap(pc.crystal_system == y, groups, args.n_boot)
                    cause_rows.append((name, cause, bc, shares(pc.crystal_system)))
                    geo_rows.append((name, cause, geometry_damage(src.pointlists, lists, sigma)))
                # the augmentation preset fitted to these statistics, on the clean lists
                from py4dstem_gnn.data.augment import AugmentConfig, augment_pointlists

                lists = augment_pointlists(src.pointlists, np.random.default_rng(0), AugmentConfig.detected(name))
                pc = predict(lists, args.model)
                cause_rows.append((name, "AugmentConfig.detected", bootstrap(pc.crystal_system == y, groups, args.n_boot),
                                   shares(pc.crystal_system)))
                geo_rows.append((name, "AugmentConfig.detected", geometry_damage(src.pointlists, lists, sigma)))
                lists = augment_pointlists(src.pointlists, np.random.default_rng(0), AugmentConfig.calibrated())
                pc = predict(lists, args.model)
                cause_rows.append((name, "AugmentConfig.calibrated", bootstrap(pc.crystal_system == y, groups, args.n_boot),
                                   shares(pc.crystal_system)))
                geo_rows.append((name, "AugmentConfig.calibrated", geometry_damage(src.pointlists, lists, sigma)))
            logger.info("%s %s done (%.0f s)", name, w, time.perf_counter() - t_start)

    # ---- write
    lines += ["## Detected-vs-true spot statistics", "",
              "Pairs: a detected peak within one disk radius of a true diffracted spot (closest pairs first, one to "
              "one); direct beam excluded on both sides. Errors are distances in detector pixels; `rms/coord` is the "
              "per-coordinate RMS error; radial bias is the median of (|q_det| - |q_true|) / |q_true|. `I50`: intensity "
              "(relative to the incident beam) above which at least half of the in-field spots are found. Threshold / "
              "brightest: per pattern, the intensity relative to its brightest diffracted spot that best separates its "
              "found from its lost in-field spots (a step); missed above threshold: in-field spots brighter than "
              "that and still lost (merged, crowded, noise).", "",
              "| preset | set | true spots/pat | recall | recall in field | beyond edge | false/pat | err median px | "
              "err p90 px | rms/coord px | rms/coord 1/Å | radial bias | I50 | threshold / brightest p10, p50, p90 | "
              "missed above threshold | false-peak |q| quartiles |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, w, st in stats_rows:
        lines.append(f"| {name} | {w} | {st['true_per_pattern']:.1f} | {st['recall']:.3f} | {st['recall_in_field']:.3f} | "
                     f"{st['beyond_edge_share']:.3f} | {st['false_per_pattern']:.2f} | {st['err_median_px']:.3f} | "
                     f"{st['err_p90_px']:.3f} | {st['err_rms_coord_px']:.3f} | {st['err_rms_coord_q']:.4f} | "
                     f"{100 * st['radial_bias_rel']:+.2f} % | {st['I50']:.1e} | "
                     + ", ".join(f"{x:.1e}" for x in st["thr_rel_p10_p50_p90"]) + f" | {st['miss_above_threshold']:.3f} | "
                     + ", ".join(f"{x:.2f}" for x in st["false_q_quartiles"]) + " |")
    lines += ["", "Position error (median px; RMS per coordinate px) by |q| (1/Å), zone-axis sets:", "",
              "| preset | " + " | ".join(f"|q| {lab}" for lab, *_ in stats_rows[0][2]["err_by_q"]) + " |",
              "|---|" + "---|" * len(Q_BINS[:-1])]
    for name, w, st in stats_rows:
        if w == "za":
            lines.append(f"| {name} | " + " | ".join(f"{m:.2f} / {r:.2f} (n={n})" for _, n, m, r in st["err_by_q"]) + " |")
    ilab = ["<-3.5", "-3.5..-3", "-3..-2.5", "-2.5..-2", "-2..-1", ">-1"]
    lines += ["", "Position error (median px) and miss rate of in-field spots by log10 intensity (relative to the "
              "incident beam), zone-axis sets:", "",
              "| preset | quantity | " + " | ".join(ilab) + " |", "|---|---|" + "---|" * len(ilab)]
    for name, w, st in stats_rows:
        if w == "za":
            lines.append(f"| {name} | err median px | " + " | ".join(f"{m:.2f}" for _, m in st["err_by_I"]) + " |")
            lines.append(f"| {name} | miss rate | " + " | ".join(f"{m:.2f} (n={n})" for n, m in st["miss_by_I"]) + " |")

    lines += ["", "## Crystal-system accuracy, clean vs detected (single pattern)", "",
              "| preset | set | clean | detected | difference |", "|---|---|---|---|---|"]
    for name, w, b0, b1 in acc_rows:
        lines.append(f"| {name} | {w} | {fmt_ci(b0)} | {fmt_ci(b1)} | {100 * (b1.mean - b0.mean):+.1f} |")
    lines += ["", "Predicted-class shares (single pattern) vs true shares; the issue's target: no class above 1.5x its "
              "true share.", "", "| preset | set | input | " + " | ".join(CS_NAMES) + " | max ratio |",
              "|---|---|---|" + "---|" * 8]
    for name, w, ts, cs_, ds in share_rows:
        for lab, s in (("true", ts), ("clean", cs_), ("detected", ds)):
            ratio = "" if lab == "true" else f"{np.max(s / np.maximum(ts, 1e-9)):.2f} ({CS_NAMES[int(np.argmax(s / np.maximum(ts, 1e-9)))]})"
            lines.append(f"| {name} | {w} | {lab} | " + " | ".join(f"{100 * x:.1f}" for x in s) + f" | {ratio} |")

    lines += ["", "## One cause at a time (zone-axis sets)", "",
              "Each row takes the clean lists and applies ONE part of what the detector did to the same patterns: "
              "`positions` moves every found spot to its detected position (about the measured origin), nothing "
              "lost or added; `misses` drops the spots the detector lost (weak, merged, beyond the edge), exact "
              "positions; `intensities` gives the found spots their detected intensity (scaled by the per-pattern "
              "median ratio); `false` adds the unmatched detected peaks; `detected` is the full detection. "
              "Geometry: share of patterns whose net type equals the clean one (fixed tolerances; with the "
              "uncertainty of `geometry.uncertainty`, sigma = the preset's RMS per-coordinate error), share where "
              "the clean type is in the compatible set, median / p90 relative error of b*/a* and error of gamma* "
              "(deg), share of clean square / hexagonal nets kept (in brackets: still in the compatible set). "
              "`wrong net: clean in set`: of the patterns whose fixed-tolerance net type differs from the clean one, "
              "the share whose compatible set holds the clean type. Set size counts the implied lower types "
              "(a square net's set is at least square, rectangular, centred rectangular, oblique).", "",
              "| preset | cause | CS accuracy | ortho share | net same | net same (uncert.) | clean in set | "
              "wrong net: clean in set | set size | "
              "b*/a* err med / p90 | gamma* err med / p90 | square kept (uncert.) | hex kept (uncert.) |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (name, cause, bc, sh), (_, _, g) in zip(cause_rows, geo_rows):
        lines.append(f"| {name} | {cause} | {fmt_ci(bc)} | {100 * sh[2]:.1f} | {g['same_net']:.3f} | "
                     f"{g['same_net_uncertain']:.3f} | {g['clean_in_set']:.3f} | {g['rescued']:.3f} | {g['set_size']:.2f} | "
                     f"{100 * g['ratio_err_median']:.2f} % / {100 * g['ratio_err_p90']:.2f} % | "
                     f"{g['gamma_err_median']:.2f} / {g['gamma_err_p90']:.2f} | {g['square_kept']:.2f} "
                     f"({g['square_kept_uncertain']:.2f}) | {g['hex_kept']:.2f} ({g['hex_kept_uncertain']:.2f}) |")

    lines += ["", "## Multi-view (all zone axes of one material) by aggregation rule", "",
              "`product`: normalised geometric mean of the views (the rule before this issue); `mean`: arithmetic "
              "mean of the probabilities (linear pool); `vote`: majority of the per-view labels, ties broken by the "
              "mean probability. Material-level accuracy (all zone-axis views of a material, up to 6), intervals over "
              "material groups; `single pattern, per material`: each material's share of correctly classified "
              "views, averaged over materials (the single-pattern accuracy on the same footing); `mean "
              "confidence`: the aggregate's confidence (calibrated per number of views with the maps of the "
              "weights' card, which were fitted on the product rule); `val_za` is the held-out validation set "
              "(`data/bloch_val_za.h5` and its detected copies in `data/cache/`) on which the default is chosen.", "",
              "| preset | set | rule | input | multi-view CS | single pattern, per material | multi - single | "
              "ortho share of materials | mean confidence |", "|---|---|---|---|---|---|---|---|---|"]
    for name, w, rule, label, b, sh, b1, conf in agg_rows:
        lines.append(f"| {name} | {w} | {rule} | {label} | {fmt_ci(b)} | {fmt_ci(b1)} | {100 * (b.mean - b1.mean):+.1f} | "
                     f"{100 * sh[2]:.1f} | {conf:.3f} |")
    lines += ["", f"Total time: {time.perf_counter() - t_start:.0f} s.", ""]
    write_report(lines, args.out)
    import json

    js = {f"{k[0]}/{k[1]}": v for k, v in measured.items()}
    Path(args.out).with_suffix(".json").write_text(json.dumps(js, indent=1, default=float))
