//! Property test: no listing window the collector sends breaks Microsoft's AF20055 rules (both
//! ends or neither, start before end, at most 24 hours apart, start no more than 7 days back).
//!
//! Every path that lists content computes its windows with `puller::listing_windows`: pull and
//! push-mode reconciliation (from the cursor through `start_at`, round after round, with the clock
//! stepping forwards and backwards), the CLI's and the admin API's backfill (any requested range,
//! the 7-day clamp, the 24-hour split). Each window, as sent (`api_time`), is checked with the
//! emulator's own rule (`o365_emulator::check_listing_window`) at the collector's now.

use chrono::{DateTime, TimeDelta, Utc};
use o365_collector::pipeline::puller::{MAX_BACK, api_time, listing_windows, start_at};
use proptest::prelude::*;

/// 2026-11-25T00:00:00Z in ms.
const BASE_MS: i64 = 1_795_564_800_000;

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(BASE_MS + ms).unwrap()
}

/// Every window is one the API accepts at `now`, and together they cover what was asked for
/// (from where we stop going back, [`MAX_BACK`], a few minutes inside Microsoft's 7 days, at most,
/// to `min(end, now)` at least), in order, without holes.
fn check(
    wins: &[(DateTime<Utc>, DateTime<Utc>)],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), TestCaseError> {
    for (from, to) in wins {
        let (a, b) = (api_time(*from), api_time(*to));
        let verdict = o365_emulator::check_listing_window(Some(&a), Some(&b), now);
        prop_assert!(
            verdict.is_ok(),
            "window {a} .. {b} at {now} refused: {verdict:?}"
        );
    }
    for pair in wins.windows(2) {
        prop_assert_eq!(pair[0].1, pair[1].0, "contiguous");
    }
    let want_end = end.min(now);
    let want_start = start.max(now - MAX_BACK);
    if want_start < want_end {
        prop_assert!(!wins.is_empty(), "{want_start} .. {want_end} not listed");
        prop_assert!(wins[0].0 <= want_start);
        prop_assert!(wins[wins.len() - 1].1 >= want_end);
    }
    Ok(())
}

/// Milliseconds within ±`days` days.
fn ms_within(days: i64) -> impl Strategy<Value = i64> {
    -days * 86_400_000..days * 86_400_000
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Pull and reconciliation: rounds from the stored cursor, the clock stepping back and forth
    /// (a stepped wall clock, a replica whose clock differs, a downtime of days).
    #[test]
    fn pull_and_reconcile_windows_are_valid(
        first_now in ms_within(3),
        cursor in proptest::option::of(ms_within(12)),
        steps in proptest::collection::vec(
            prop_oneof![
                0i64..120_000,                    // the next round, within two minutes
                -3_600_000i64..3_600_000,         // a clock step of up to an hour either way
                0i64..10 * 86_400_000,            // a downtime of up to ten days
            ],
            1..8,
        ),
    ) {
        let mut now = at(first_now);
        let mut cursor = cursor.map(|c| at(first_now + c));
        for step in steps {
            let (start, _) = start_at(cursor, now);
            let wins = listing_windows(start, now, now);
            check(&wins, start, now, now)?;
            // The cursor moves to the last window's end, never backwards.
            if let Some((_, to)) = wins.last() {
                cursor = Some(cursor.map_or(*to, |c| c.max(*to)));
            }
            now += TimeDelta::milliseconds(step);
        }
    }

    /// Backfill (CLI and admin API): any requested range, also reaching past the 7 days, into
    /// the future, shorter than a second or longer than many days.
    #[test]
    fn backfill_windows_are_valid(
        now in ms_within(3),
        start in ms_within(12),
        len in prop_oneof![0i64..2_000, 0i64..30 * 86_400_000],
    ) {
        let now = at(now);
        let start = now + TimeDelta::milliseconds(start);
        let end = start + TimeDelta::milliseconds(len);
        let wins = listing_windows(start, end, now);
        check(&wins, start, end, now)?;
    }
}

/// Edge cases with fractions of a second: the first pull (24 hours back from a `now` with a
/// fraction, which splits into a 24-hour window and a sub-second one), and a backfill shorter than a
/// second: what is sent always has start < end in whole seconds.
#[test]
fn fractions_of_a_second_never_make_an_empty_window() {
    let now = at(700);
    let (start, _) = start_at(None, now);
    let wins = listing_windows(start, now, now);
    assert!(
        wins.iter().all(|(a, b)| api_time(*a) < api_time(*b)),
        "{wins:?}"
    );
    check(&wins, start, now, now).unwrap();
    // A backfill of less than a second within one second.
    let wins = listing_windows(
        at(-5_000) + TimeDelta::milliseconds(200),
        at(-5_000) + TimeDelta::milliseconds(700),
        now,
    );
    check(&wins, at(-4_800), at(-4_300), now).unwrap();
    assert_eq!(wins.len(), 1);
}
