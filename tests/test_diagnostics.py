"""Warnings that name the likely cause (calibration, all-unlabelled scans) and the TypeError for ``bv.cal``."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

py4DSTEM = pytest.importorskip("py4DSTEM")

from py4dstem_gnn.data.synthetic import random_braggvectors  # noqa: E402
from py4dstem_gnn.diagnostics import (  # noqa: E402
    SAMPLE_POSITIONS,
    CalibrationWarning,
    ScanOutcomeWarning,
    check_vectors_calibration,
    warn_scan_outcome,
)

ORIGIN = (64.2, 63.7)


def _bv(calibrate: bool = True, shape=(6, 7)):
    return random_braggvectors(shape, spots=(8, 12), qshape=(128, 128), origin=ORIGIN, q_pixel_size=0.015,
                               seed=1, calibrate=calibrate)


def _messages(fn, *args, **kwargs) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn(*args, **kwargs)
    return [f"{w.category.__name__}: {w.message}" for w in caught]


# --- calibration ---------------------------------------------------------------------------------


def test_a_calibrated_scan_passes_silently():
    assert _messages(check_vectors_calibration, _bv()) == []


def test_nothing_calibrated_names_origin_and_pixel_size():
    msgs = _messages(check_vectors_calibration, _bv(calibrate=False))
    assert len(msgs) == 2 and all(m.startswith("CalibrationWarning") for m in msgs)
    assert "origin" in msgs[0] and "never measured" in msgs[0] and "measure_origin" in msgs[0]
    assert "detector pixels" in msgs[1] and "set_Q_pixel_size" in msgs[1]


def test_origin_measured_but_never_set():
    bv = _bv(calibrate=False)
    bv.calibration.set_Q_pixel_size(0.015)
    bv.calibration.set_Q_pixel_units("A^-1")
    bv.calibration.set_origin_meas((np.full(bv.Rshape, ORIGIN[0]), np.full(bv.Rshape, ORIGIN[1])))
    (msg,) = _messages(check_vectors_calibration, bv)
    assert "measured but never set" in msg and "fit_origin" in msg


def test_origin_by_hand_at_the_detector_centre():
    bv = _bv()
    bv.calibration.set_origin((64.0, 64.0))
    (msg,) = _messages(check_vectors_calibration, bv)
    assert "detector centre" in msg and "never measured" in msg


def test_origin_off_the_direct_beam():
    bv = _bv()
    bv.calibration.set_origin((50.0, 70.0))
    (msg,) = _messages(check_vectors_calibration, bv)
    assert "does not sit on the direct beam" in msg


def test_pixel_units():
    bv = _bv()
    bv.calibration.set_Q_pixel_units("pixels")
    (msg,) = _messages(check_vectors_calibration, bv)
    assert "units are 'pixels'" in msg and "A^-1" in msg


@pytest.mark.parametrize("size, word", [(0.3, "too large"), (0.0003, "too small")])
def test_implausible_pixel_size(size, word):
    bv = _bv()
    bv.calibration.set_Q_pixel_size(size)
    (msg,) = _messages(check_vectors_calibration, bv)
    assert word in msg and "set_Q_pixel_size" in msg


def test_setcal_switched_off():
    bv = _bv()
    bv.setcal(center=False, ellipse=False, pixel=False, rotate=False)
    (msg,) = _messages(check_vectors_calibration, bv)
    assert "setcal() was never called" in msg
    bv.setcal(center=True, pixel=False)
    (msg,) = _messages(check_vectors_calibration, bv)
    assert "not applied: pixel" in msg and "bv.setcal()" in msg


def test_the_check_reads_a_sample_of_positions_not_the_scan():
    bv = _bv(shape=(40, 40))
    reads = []
    getter = bv._raw_vector_getter

    class Counting:
        def __getitem__(self, pos):
            reads.append(pos)
            return getter[pos]

    bv._raw_vector_getter = Counting()
    assert _messages(check_vectors_calibration, bv) == []
    assert 0 < len(reads) <= SAMPLE_POSITIONS


# --- scan outcome --------------------------------------------------------------------------------


def test_all_invalid_for_lack_of_spots_names_the_detection():
    (msg,) = _messages(warn_scan_outcome, np.full((24, 24), 2), np.zeros((24, 24), bool), 5)
    assert msg.startswith("ScanOutcomeWarning: 0 of 576 positions")
    assert "minPeakSpacing" in msg and "edgeBoundary" in msg and "min_spots" in msg


def test_all_invalid_with_spots_names_the_calibration_and_threshold():
    (msg,) = _messages(warn_scan_outcome, np.full((24, 24), 20), np.zeros((24, 24), bool), 5)
    assert "calibration" in msg and "Q pixel size" in msg and "confidence_threshold" in msg


def test_all_invalid_with_a_template_scale_gives_the_number():
    (msg,) = _messages(warn_scan_outcome, np.full((24, 24), 20), np.zeros((24, 24), bool), 5, q_scale_median=0.5)
    assert "the matched templates say your Q pixel size is off by -50.0 %" in msg


def test_a_labelled_scan_is_silent_unless_the_scale_is_off():
    valid = np.zeros((10, 10), bool)
    valid[:3] = True  # 30 % labelled: vacuum elsewhere is normal
    assert _messages(warn_scan_outcome, np.full((10, 10), 20), valid, 5) == []
    assert _messages(warn_scan_outcome, np.full((10, 10), 20), valid, 5, q_scale_median=1.01) == []
    (msg,) = _messages(warn_scan_outcome, np.full((10, 10), 20), valid, 5, q_scale_median=1.08)
    assert "off by +8.0 %" in msg


def test_classify_braggvectors_warns_with_the_cause():
    from py4dstem_gnn.classify import classify_braggvectors
    from py4dstem_gnn.toy import tiny_model

    bv = _bv()
    bv.calibration.set_origin((64.0, 64.0))
    with pytest.warns(CalibrationWarning, match="detector centre"):
        classify_braggvectors(bv, model=tiny_model(), progress=False, median_filter=None, phases=None)
    with pytest.warns(ScanOutcomeWarning, match="fewer than min_spots=30"):
        classify_braggvectors(_bv(), model=tiny_model(), progress=False, min_spots=30, phases=None)


# --- wrong input -----------------------------------------------------------------------------------


@pytest.mark.parametrize("getter", ["cal", "raw"])
def test_passing_bv_cal_says_pass_bv(getter):
    from py4dstem_gnn.classify import classify_braggvectors

    bv = _bv()
    with pytest.raises(TypeError, match=r"pass `bv` \(the BraggVectors itself\), not `bv.cal`"):
        classify_braggvectors(getattr(bv, getter), progress=False)
