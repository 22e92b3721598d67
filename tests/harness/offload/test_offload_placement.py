"""`harness.offload.balanced.placement`: first-fit placement and LRU eviction (pure)."""
import pytest

from harness.offload.balanced.placement import evictions, plan


@pytest.mark.parametrize("sizes, budget, expected", [
    ([4, 4, 4], 12, [True, True, True]),                   # everything fits
    ([4, 4, 4], 8, [True, True, False]),                   # in order until the budget is spent
    ([4, 9, 2, 1], 7, [True, False, True, True]),          # a unit too large is skipped, small ones still fill
    ([5, 5], 0, [False, False]),                           # no room: all streamed
    ([5, 5], -3, [False, False]),                          # over the watermark already
    ([], 10, []),
], ids=["all-fit", "in-order", "first-fit", "zero-budget", "negative-budget", "empty"])
def test_plan_is_first_fit_in_order(sizes, budget, expected):
    assert plan(sizes, budget) == expected


def test_plan_places_required_units_first_and_charges_them():
    assert plan([3, 6, 3], 6, required=[False, True, False]) == [False, True, False]
    assert plan([3, 6, 3], 9, required=[False, True, False]) == [True, True, False]
    assert plan([3, 6], 2, required=[False, True]) == [False, True]  # required even over budget


def test_plan_rejects_bad_input():
    with pytest.raises(ValueError, match="length"):
        plan([1, 2], 5, required=[True])
    with pytest.raises(ValueError, match=">= 0"):
        plan([1, -2], 5)


def test_evictions_lru_first_until_below_low_watermark():
    placed = [("text_encoder", 2), ("text_encoder_2", 9), ("vae", 1)]
    assert evictions(placed, used=12, low=3) == ["text_encoder", "text_encoder_2"]
    assert evictions(placed, used=12, low=12) == []
    assert evictions(placed, used=12, low=0) == ["text_encoder", "text_encoder_2", "vae"]
