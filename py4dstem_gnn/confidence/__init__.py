"""Confidence of a label: calibrated probability of being right, and conformal prediction sets.

One place for what prediction reads and evaluation fits:

``calibration``  raw scores of the crystal-system probabilities, the isotonic map to a calibrated
                 confidence, the default threshold from an accuracy goal, and reading both from a
                 weights' card (:func:`~.calibration.apply_model_calibration`, used by ``predict``).
``conformal``    split-conformal quantiles, crystal-system set masks, space-group set sizes
                 (:func:`~.conformal.prediction_sets`, used by ``predict``, ``classify`` and evaluation).
``fit``          fitting both on stored validation sets and writing them into the card
                 (``py4dstem-gnn calibrate``); the only module here that runs the network.

Dependencies point one way: ``fit`` -> ``calibration``, ``conformal`` (and ``predict``, at call time);
``calibration`` and ``conformal`` import only :mod:`py4dstem_gnn.labels`.
"""
