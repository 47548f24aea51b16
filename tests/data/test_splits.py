import numpy as np
import pytest

from twotower.data import (Interactions, held_out_users_split, make_split, random_split,
                            temporal_split)
from twotower.errors import ConfigError, DataError


def _pairs(x):
    return set(zip(x.users.tolist(), x.items.tolist(), x.timestamps.tolist()))


def test_random_split_deterministic_and_disjoint(ml100k):
    a, b = random_split(ml100k, 0.2, seed=7), random_split(ml100k, 0.2, seed=7)
    assert np.array_equal(a.test.users, b.test.users) and np.array_equal(a.test.items, b.test.items)
    assert len(a.train) == 80_000 and len(a.test) == 20_000
    assert not _pairs(a.train) & _pairs(a.test)
    c = random_split(ml100k, 0.2, seed=8)
    assert not np.array_equal(a.test.items, c.test.items)


def test_temporal_split_holds_out_each_users_latest(ml100k):
    s = temporal_split(ml100k, 0.2)
    last_train = np.full(ml100k.n_users, -1)
    np.maximum.at(last_train, s.train.users, s.train.timestamps)
    first_test = np.full(ml100k.n_users, np.iinfo(np.int64).max)
    np.minimum.at(first_test, s.test.users, s.test.timestamps)
    assert np.all(last_train <= first_test)
    counts = np.bincount(ml100k.users, minlength=ml100k.n_users)
    test_counts = np.bincount(s.test.users, minlength=ml100k.n_users)
    assert np.array_equal(test_counts, np.maximum(1, np.floor(0.2 * counts)).astype(int))


def test_held_out_users_absent_from_train(ml100k):
    s = held_out_users_split(ml100k, 0.1, seed=1)
    held = set(s.test.users.tolist())
    assert held and not held & set(s.train.users.tolist())
    assert set(s.history.users.tolist()) >= held


def test_bad_split_arguments(ml100k):
    with pytest.raises(DataError, match="split must be one of"):
        make_split(ml100k, "sideways")
    with pytest.raises(Exception, match="test_fraction"):
        random_split(ml100k, 1.5)


def test_global_temporal_split_cuts_the_whole_log_at_one_time(ml100k):
    from twotower.data import Interactions, global_temporal_split
    s = global_temporal_split(ml100k, 0.2)
    assert s.train.timestamps.max() < s.test.timestamps.min()  # no training row is later
    assert len(s.train) + len(s.test) == len(ml100k)
    assert 0.2 <= len(s.test) / len(ml100k) < 0.21  # ties at the cutoff go to test
    assert _pairs(s.train) | _pairs(s.test) == _pairs(ml100k)
    assert s.train.user_vocab == ml100k.user_vocab and s.test.item_vocab == ml100k.item_vocab
    again = make_split(ml100k, "global-temporal", 0.2)
    assert np.array_equal(again.test.users, s.test.users)
    # the per-user split lets other users' later rows into training; this one does not
    per_user = temporal_split(ml100k, 0.2)
    assert per_user.train.timestamps.max() > per_user.test.timestamps.min()
    # coarse times: the rows of the cutoff's time all go to test, on one side
    x = Interactions.from_ids([1, 2, 3, 4, 5], [1, 2, 3, 4, 5],
                              timestamps=np.array([1, 2, 2, 2, 3]))
    with pytest.warns(UserWarning, match="80% of the rows are test, not 0.4: 3 rows share"):
        cut = global_temporal_split(x, 0.4)
    assert sorted(cut.test.timestamps.tolist()) == [2, 2, 2, 3]
    with pytest.raises(DataError, match="too coarse"):
        global_temporal_split(Interactions.from_ids([1, 2], [1, 2],
                                                    timestamps=np.array([5, 5])), 0.5)
    with pytest.raises(DataError, match="needs timestamps"):
        global_temporal_split(Interactions.from_ids([1, 2], [1, 2]), 0.5)


def test_global_temporal_split_names_the_fraction_when_it_leaves_nothing_to_train_on():
    """Distinct times, but a test_fraction that rounds to every row (or a single row): the
    error blamed coarse times."""
    from twotower.data import Interactions, global_temporal_split
    x = Interactions.from_ids(list(range(10)), list(range(10)), timestamps=np.arange(10))
    with pytest.raises(DataError, match="test_fraction 0.99 .* every one of the 10 rows"):
        global_temporal_split(x, 0.99)
    one = Interactions.from_ids([1], [1], timestamps=np.array([5]))
    with pytest.raises(DataError, match="test_fraction 0.2 .* every one of the 1 rows"):
        global_temporal_split(one, 0.2)
    assert len(global_temporal_split(x, 0.9).train) == 1


@pytest.mark.parametrize("seed", [1.5, -1, True, "7"])
def test_split_seeds_are_checked_by_name(seed):
    """A float or negative seed reached numpy (`SeedSequence expects int`)."""
    x = Interactions.from_ids([1, 2, 1, 3], [1, 2, 3, 1])
    with pytest.raises(DataError, match=r"`seed` must be a non-negative integer"):
        random_split(x, 0.5, seed=seed)
    with pytest.raises(DataError, match=r"`seed` must be a non-negative integer"):
        held_out_users_split(x, 0.5, seed=seed)


def test_splits_of_a_small_log_by_hand():
    """What MovieLens (no one-row users, every share exact) never shows: ties in time keep
    file order, a one-row user keeps the row in training, the per-user test share is floored
    and the random split's train size rounded."""
    users = ["a", "b", "b", "b", "c", "c", "c", "c", "c", "c", "c"]
    items = [1, 1, 2, 3, 1, 2, 3, 4, 5, 6, 7]
    x = Interactions.from_ids(users, items,
                              timestamps=np.array([5, 7, 7, 7, 1, 2, 3, 4, 5, 6, 7]))
    s = temporal_split(x, 0.34)

    def pairs(part):
        return sorted(zip(part.user_vocab.ids[part.users].tolist(),
                          part.item_vocab.ids[part.items].tolist()))
    # b: 3 rows tied at time 7, floor(0.34 * 3) = 1 test row: the file's last; c: 2 of 7
    assert pairs(s.test) == [("b", 3), ("c", 6), ("c", 7)]
    assert ("a", 1) in pairs(s.train) and len(s.train) == 8
    assert len(random_split(x.take(np.arange(7)), 0.2, seed=0).train) == 6  # round(5.6)


def test_held_out_users_are_about_the_share_asked_for():
    rng = np.random.default_rng(4)
    users = np.repeat(np.arange(1000), 3)
    x = Interactions.from_ids(users, rng.integers(0, 50, len(users)),
                              timestamps=np.arange(len(users)))
    s = held_out_users_split(x, 0.1, seed=1)
    held = set(s.test.user_vocab.ids[s.test.users].tolist()) | set(
        s.history.user_vocab.ids[s.history.users].tolist())
    assert 70 <= len(held) <= 130
    assert not held & set(s.train.user_vocab.ids[s.train.users].tolist())


def test_untimed_held_out_users_history_is_drawn_with_the_seed():
    """Without timestamps the held users' rows are split at random with ``seed``: another
    seed holding the same users draws another history (a fixed inner seed passed every
    test before), the same seed the same one, and history + test keep every held row."""
    users = np.repeat(np.arange(40), 10)
    x = Interactions.from_ids(users, np.tile(np.arange(10), 40))

    def parts(seed):
        s = held_out_users_split(x, 0.999, seed=seed)  # (nearly) every user held out
        held = set(s.history.users.tolist()) | set(s.test.users.tolist())
        hist = sorted(zip(s.history.users.tolist(), s.history.items.tolist()))
        test = sorted(zip(s.test.users.tolist(), s.test.items.tolist()))
        return held, hist, test

    held1, hist1, test1 = parts(1)
    held2, hist2, test2 = parts(2)
    assert held1 == held2 and len(held1) >= 39
    assert len(hist1) + len(test1) == 10 * len(held1)
    assert hist1 != hist2
    assert parts(1)[1] == hist1


def test_held_out_users_split_names_its_own_arguments():
    """Its fractions were named `test_fraction` (an argument it does not have), and a share
    that held nobody out gave an empty test part and history, unsaid."""
    x = Interactions.from_ids(np.repeat(np.arange(50), 4), np.tile(np.arange(4), 50))
    for kw, said in ((dict(history_fraction=1.0), "history_fraction must be strictly"),
                     (dict(history_fraction=2), "history_fraction must be between"),
                     (dict(user_fraction=0.0), "user_fraction must be strictly"),
                     (dict(user_fraction=0.001), "user_fraction 0.001 of 50 users holds "
                                                 "none out with seed 1")):
        with pytest.raises((DataError, ConfigError), match=said):
            held_out_users_split(x, **{"user_fraction": 0.2, "seed": 1, **kw})


@pytest.mark.parametrize("fraction", [0, 0.0, 1.0, 1.5, -0.1, float("nan")])
def test_a_fraction_out_of_range_is_one_error_class(fraction):
    """0 and 1 raised DataError, 1.5 and -0.1 ConfigError, for the same argument."""
    from twotower.data import random_split, temporal_split
    x = Interactions.from_ids(list(range(10)), list(range(10)), timestamps=np.arange(10))
    for split in (random_split, temporal_split):
        with pytest.raises(ConfigError, match=r"split\.test_fraction must be"):
            split(x, fraction)


def test_per_user_test_share_is_not_lost_to_float_rounding():
    """1 - 0.8 is 0.19999999999999996 and 0.29 * 100 is 28.999999999999996: a user with
    10 rows got 9 history rows and 1 test row with history_fraction 0.8, and 100 rows at
    test_fraction 0.29 gave 28 test rows."""
    users = np.repeat(np.arange(4), 10)
    x = Interactions.from_ids(users, np.tile(np.arange(10), 4),
                              timestamps=np.tile(np.arange(10), 4))
    s = held_out_users_split(x, 0.5, seed=0, history_fraction=0.8)
    held = np.unique(s.test.users)
    assert len(held)
    assert np.bincount(s.history.users)[held].tolist() == [8] * len(held)
    assert np.bincount(s.test.users)[held].tolist() == [2] * len(held)
    y = Interactions.from_ids(np.zeros(100, int), np.arange(100), timestamps=np.arange(100))
    assert [len(temporal_split(y, f).test) for f in (0.29, 0.57, 0.58, 0.2)] == [29, 57, 58, 20]
    assert len(temporal_split(y, 1 - 1e-12).test) == 99  # each user keeps a training row


def test_global_temporal_split_messages_show_the_cutoff_as_a_date():
    """The cutoff was shown as a bare count of seconds (1709251200)."""
    from twotower.data import Interactions, global_temporal_split
    day = 1709251200  # 2024-03-01
    x = Interactions.from_ids([1, 2, 3, 4, 5], [1, 2, 3, 4, 5],
                              timestamps=np.array([day - 86400, day, day, day, day + 86400]))
    with pytest.warns(UserWarning, match=r"share the cutoff time 1709251200 "
                                         r"\(2024-03-01T00:00:00Z\)"):
        global_temporal_split(x, 0.4)
    with pytest.raises(DataError, match=r"cutoff time 1709251200 \(2024-03-01T00:00:00Z\)"):
        global_temporal_split(Interactions.from_ids([1, 2], [1, 2],
                                                    timestamps=np.array([day, day])), 0.5)


@pytest.mark.parametrize("unit, per_second", [("ms", 10**3), ("us", 10**6), ("ns", 10**9),
                                              ("s", None)])
def test_times_within_one_second_order_the_splits_and_histories(tmp_path, unit, per_second):
    """Times finer than seconds were floored to whole seconds when read: two events of a
    user within one second then kept file order, so a log written out of order held out
    the earlier one, and the global cutoff took a whole second's rows. Now they are kept
    to the unit given (``s``: seconds with fractions, 1700000000.9); rows with equal times
    still keep file order."""
    from twotower.data import global_temporal_split, read_interactions

    def at(seconds, fraction=0.0):  # the time as the file writes it
        if per_second is None:
            return f"{seconds + fraction:.1f}"
        # (one tick more: a time only the unit given holds, kept in that unit)
        return str(seconds * per_second + round(fraction * per_second) + (fraction > 0))
    t = 1_700_000_000
    rows = [("a", "old", at(t - 5)),
            ("a", "late", at(t, 0.9)),    # the user's latest, though not last in the file
            ("a", "early", at(t, 0.1)),
            ("b", "x", at(t - 9)), ("b", "y", at(t - 8)),
            ("c", "x", at(t - 7)),
            ("c", "first", at(t - 6, 0.5)),  # c's two latest share one time: file order
            ("c", "second", at(t - 6, 0.5))]
    p = tmp_path / "log.csv"
    p.write_text("user_id,item_id,timestamp\n" + "".join(f"{u},{i},{w}\n" for u, i, w in rows))
    x = read_interactions(p, time_col="timestamp", time_unit="s" if per_second is None
                          else unit)

    def pairs(part):
        return sorted(zip(part.user_vocab.ids_of(part.users).tolist(),
                          part.item_vocab.ids_of(part.items).tolist()))
    held = temporal_split(x, 0.34)  # each user's latest row
    assert pairs(held.test) == [("a", "late"), ("b", "y"), ("c", "second")]
    # the two latest rows of the whole log (a: 0.9 s and 0.1 s into the second t)
    cut = global_temporal_split(x, 0.25)
    assert pairs(cut.test) == [("a", "early"), ("a", "late")]
    users, items, rank = x.recency_ranks()  # each user's latest first: the history order
    latest = {x.user_vocab.ids[u]: x.item_vocab.ids[i]
              for u, i, r in zip(users, items, rank) if r == 0}
    assert latest == {"a": "late", "b": "y", "c": "second"}
    assert x.time_unit == ("ms" if per_second is None else unit)


def test_seconds_and_dates_are_kept_as_int64_seconds_as_before(ml100k, tmp_path):
    """Whole seconds stay int64 seconds (the splits of such data are unchanged), dates
    written YYYYMMDD too."""
    from twotower.data import read_interactions
    assert ml100k.time_unit == "s" and ml100k.timestamps.dtype == np.int64
    assert ml100k.timestamps.min() == 874724710 and ml100k.timestamps.max() == 893286638
    p = tmp_path / "dates.csv"
    p.write_text("user_id,item_id,timestamp\na,1,20240302\na,2,20240301\n")
    x = read_interactions(p, time_col="timestamp", time_unit="yyyymmdd")
    assert (x.timestamps.tolist(), x.time_unit) == ([1709337600, 1709251200], "s")
    assert temporal_split(x, 0.5).test.item_vocab.ids_of(temporal_split(x, 0.5).test.items
                                                         ).tolist() == [1]


def test_global_cutoff_messages_show_the_time_to_its_unit():
    """The cutoff's time in a message is read in the unit the times count (milliseconds
    here, to the millisecond), not as seconds."""
    from twotower.data import global_temporal_split
    t = 1_700_000_000_000
    x = Interactions.from_ids([1, 2, 3, 4], [1, 2, 3, 4], timestamps=[t, t + 1, t + 1, t + 1],
                              time_unit="ms")
    with pytest.warns(UserWarning, match=r"3 rows share the cutoff time 1700000000001 "
                                         r"\(2023-11-14T22:13:20\.001Z\)"):
        cut = global_temporal_split(x, 0.25)
    assert len(cut.train) == 1
