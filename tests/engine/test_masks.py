"""The one drop decision: thresholds per screening, the reason, and what the plan forecasts."""

from __future__ import annotations

import numpy as np
import pytest

from groundbreak.errors import UsageError
from groundbreak.masks import CLOUD, NODATA, SHADOW, VALID, DropRule, Screening, class_fractions, merge_classes
from groundbreak.names import ChipStatus


def fr(valid, nodata=0.0, cloud=0.0, shadow=0.0):
    return np.array([valid, nodata, cloud, shadow])


def test_exact_and_estimate_decide_at_min_valid_prefilter_below_it_by_the_margin():
    rule = DropRule(min_valid=0.5, prefilter_margin=0.15)
    assert rule.decide(fr(0.5, cloud=0.5), Screening.EXACT) is None  # exactly at the threshold: kept
    assert rule.decide(fr(0.49, cloud=0.51), Screening.EXACT) is ChipStatus.DROPPED_CLOUD
    assert rule.decide(fr(0.49, cloud=0.51), Screening.ESTIMATE) is ChipStatus.DROPPED_CLOUD
    assert rule.decide(fr(0.40, cloud=0.6), Screening.PREFILTER) is None  # close: decided on full resolution
    assert rule.decide(fr(0.34, nodata=0.1, shadow=0.56), Screening.PREFILTER) is ChipStatus.DROPPED_SHADOW


def test_the_reason_is_the_largest_unusable_class_ties_in_class_order():
    rule = DropRule(0.9)
    assert rule.decide(fr(0.2, nodata=0.4, cloud=0.4), Screening.EXACT) is ChipStatus.DROPPED_NODATA
    assert rule.decide(fr(0.2, cloud=0.4, shadow=0.4), Screening.EXACT) is ChipStatus.DROPPED_CLOUD


@pytest.mark.parametrize("min_valid", [-0.1, 1.5])
def test_min_valid_outside_0_1_is_a_usage_error(min_valid):
    with pytest.raises(UsageError, match="--min-valid"):
        DropRule(min_valid)


def test_precedence_nodata_over_cloud_over_shadow():
    classes = np.array([[VALID, CLOUD, NODATA, VALID]], np.uint8)
    decoded = np.array([[SHADOW, SHADOW, CLOUD, CLOUD]], np.uint8)
    merge_classes(classes, decoded, np.ones_like(classes, bool))
    assert classes.tolist() == [[SHADOW, CLOUD, NODATA, CLOUD]]
    assert class_fractions(classes).tolist() == [0.0, 0.25, 0.5, 0.25]


def test_8bit_masks_decode_by_table_exactly_as_by_search():
    from groundbreak.masks import SCL_MASK_VALUES, MaskSource, decode_mask

    source = MaskSource.of_classes("x.tif", SCL_MASK_VALUES, origin="test")
    band = np.random.default_rng(3).integers(0, 256, size=(64, 64)).astype(np.uint8)
    by_table = decode_mask(source, band)
    by_search = decode_mask(source, band.astype(np.uint16))  # not 8-bit: the per-class search
    assert by_table.dtype == np.uint8 and np.array_equal(by_table, by_search)
    assert set(np.unique(by_table)) == {VALID, NODATA, CLOUD, SHADOW}
