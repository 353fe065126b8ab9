"""Evaluation: one report path, protocols x regimes x inputs x classifiers.

Entry point (Python)::

    from py4dstem_gnn.evaluation.report import evaluate, write_report

    payload = evaluate(
        {"network": pred_net, "forest": pred_rf, "match": pred_match},   # name -> prediction object
        {"material": ..., "space_group": ..., "regime": ..., "corrupted": ...},  # one entry per pattern
        manifest,                                # columns group, split_type, split_material
        k_views=(6, 10), n_boot=1000, figure_dir="reports/x")
    write_report(payload, "reports/x", "Protocols: x", info={"command": "..."})

A **classifier** is one more entry of that mapping: any object (or mapping) with, per pattern of
the stored set, ``crystal_system_probs`` (n, 7) and ``space_group_probs`` (n, 230) -- or the labels
``crystal_system`` (0..6) and ``space_group`` (1..230) -- and optionally ``confidence`` (n,) and
``meta`` (the card's ``confidence_calibration`` / ``conformal``, ``timings``). Give
``{protocol: object}`` instead when each protocol has its own weights. Labels without probabilities
get single-pattern figures only; multi-view figures, risk–coverage and sets need probabilities
(or, for risk–coverage, a ``confidence``). On the command line (``py4dstem-gnn evaluate``, alias
``protocols``) a classifier kind is one entry of :data:`py4dstem_gnn.evaluation.cli.LOADERS`.

Modules, in data-flow order::

    cli        stored sets + corrupted copy -> predictions per protocol (LOADERS) -> report.evaluate -> files
    report     evaluate(): accuracy cells + selective prediction and conformal sets per classifier + detail
    protocols  membership of each protocol; accuracy per protocol x regime x input, paired differences
    selective  risk–coverage curves, AURC, scores compared, coverage per condition, risk–coverage figure
    detail     per-classifier paper tables (P/R/F1, SG by system, calibration, timing) and five figures
    markdown   the Markdown of all sections
    metrics    accuracy, confusion, P/R/F1, ECE, temperature scaling, view aggregation (pure numpy)
    bootstrap  intervals that resample whole material groups

Confidence is fitted in :mod:`py4dstem_gnn.confidence.fit` (``py4dstem-gnn calibrate``); the random
forest and gradient-boosting references live in :mod:`py4dstem_gnn.baselines`.
"""
