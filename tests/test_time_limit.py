"""``models.time_limit.TimeLimit``, the one clock of a run, driven by a fake clock."""

from __future__ import annotations

import math
import pickle

import pytest

from models.time_limit import (
    RESERVE_MAX_SHARE,
    RESERVE_MIN,
    RESERVE_SHARE,
    TimeLimit,
    default_reserve,
)


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_the_deadline_is_the_start_plus_the_limit_and_the_reserve_comes_off_the_work(clock):
    limit = TimeLimit.start(100, reserve=10, clock=clock)
    assert limit.limited and limit.started == 1000.0
    assert limit.deadline == 1100.0 and limit.work_deadline == 1090.0
    assert (limit.left(), limit.left_total(), limit.elapsed()) == (90.0, 100.0, 0.0)
    clock.advance(30)
    assert (limit.left(), limit.left_total(), limit.elapsed()) == (60.0, 70.0, 30.0)
    assert limit.used_share() == pytest.approx(0.3)


def test_age_starts_the_limit_in_the_past(clock):
    limit = TimeLimit.start(100, age=25, reserve=0, clock=clock)
    assert limit.started == 975.0 and limit.elapsed() == 25.0 and limit.left() == 75.0


def test_left_never_goes_below_zero_and_expired_turns_at_the_work_deadline(clock):
    limit = TimeLimit.start(100, reserve=10, clock=clock)
    clock.advance(89.5)
    assert not limit.expired() and limit.left() == pytest.approx(0.5)
    clock.advance(0.5)
    assert limit.expired() and limit.left() == 0.0 and limit.left_total() == 10.0
    clock.advance(50)
    assert limit.expired() and limit.left() == 0.0 and limit.left_total() == 0.0


def test_fits_compares_a_cost_with_the_work_left(clock):
    limit = TimeLimit.start(100, reserve=10, clock=clock)
    assert limit.fits(90) and not limit.fits(90.01)
    clock.advance(80)
    assert limit.fits(10) and not limit.fits(11)
    assert limit.fits(0)


@pytest.mark.parametrize(("seconds", "reserve"), [
    (10, 10 * RESERVE_MAX_SHARE),      # a short limit keeps at most its share back
    (100, RESERVE_MIN),                 # at least the minimum
    (10_000, 10_000 * RESERVE_SHARE),   # a long one keeps its share
])
def test_the_default_reserve(seconds, reserve):
    assert default_reserve(seconds) == pytest.approx(reserve)
    assert TimeLimit(seconds, 0.0, clock=FakeClock(0.0)).reserve == pytest.approx(reserve)


def test_the_default_reserve_grows_with_the_limit_and_stays_within_it():
    reserves = [default_reserve(s) for s in (1, 5, 20, 32, 100, 200, 1000, 10_000)]
    assert reserves == sorted(reserves)
    assert all(r <= s * RESERVE_MAX_SHARE for r, s in zip(reserves, (1, 5, 20, 32, 100, 200, 1000, 10_000), strict=True))


def test_no_limit_never_expires_and_everything_fits(clock):
    limit = TimeLimit.start(None, clock=clock)
    assert not limit.limited and limit.reserve == 0.0
    assert limit.deadline == math.inf and limit.left() == math.inf and limit.left_total() == math.inf
    clock.advance(1e9)
    assert not limit.expired() and limit.fits(1e12) and limit.used_share() == 0.0
    assert limit.elapsed() == 1e9


def test_within_is_capped_by_the_parents_work_left_and_keeps_no_reserve(clock):
    parent = TimeLimit.start(100, reserve=10, clock=clock)
    clock.advance(50)  # 40 s of work left
    part = parent.within(15)
    assert (part.seconds, part.reserve, part.started) == (15, 0.0, 1050.0)
    assert part.deadline == 1065.0 and part.left() == 15.0
    capped = parent.within(1000)
    assert capped.seconds == 40.0 and capped.deadline == parent.work_deadline
    whole = parent.within(None)
    assert whole.seconds == 40.0
    clock.advance(5)
    assert part.left() == 10.0 and capped.left() == 35.0 == parent.left()


def test_within_an_expired_limit_is_a_tiny_one_that_expires_at_once(clock):
    parent = TimeLimit.start(100, reserve=10, clock=clock)
    clock.advance(200)
    part = parent.within(30)
    assert part.limited and part.seconds == pytest.approx(1e-3)
    clock.advance(0.01)
    assert part.expired()


def test_within_no_limit(clock):
    assert TimeLimit.start(None, clock=clock).within(None).limited is False
    part = TimeLimit.start(None, clock=clock).within(20)
    assert part.seconds == 20 and part.reserve == 0.0 and part.started == 1000.0


@pytest.mark.parametrize("seconds", [0, -1, -0.5, math.inf, math.nan, "60"])
def test_a_limit_that_is_not_a_positive_finite_number_is_refused(seconds):
    with pytest.raises(ValueError, match="a positive number of seconds"):
        TimeLimit(seconds)


def test_a_limit_compares_by_its_numbers_and_pickles_with_the_real_clock():
    assert TimeLimit(60, 5.0, 2.0, FakeClock()) == TimeLimit(60, 5.0, 2.0)
    limit = TimeLimit(60, 5.0)
    assert pickle.loads(pickle.dumps(limit)) == limit
