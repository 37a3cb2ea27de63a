//! Retention of old-root snapshots: the policy (`keep_last`, `keep_daily`, …), the time zone
//! its calendar buckets are counted in, and the pure planner that decides, for a list of
//! snapshot times, which to keep and why.

use std::fmt;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

/// How many periods a rule keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Keep {
    #[default]
    None,
    Count(u32),
    All,
}

impl Keep {
    pub fn is_none(self) -> bool {
        matches!(self, Keep::None | Keep::Count(0))
    }
}

impl fmt::Display for Keep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Keep::None => f.write_str("0"),
            Keep::Count(n) => write!(f, "{n}"),
            Keep::All => f.write_str("all"),
        }
    }
}

impl Serialize for Keep {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Keep::None => s.serialize_u32(0),
            Keep::Count(n) => s.serialize_u32(*n),
            Keep::All => s.serialize_str("all"),
        }
    }
}

impl<'de> Deserialize<'de> for Keep {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Keep, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Keep;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a count (0 or more) or \"all\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Keep, E> {
                u32::try_from(v)
                    .map(|n| if n == 0 { Keep::None } else { Keep::Count(n) })
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Keep, E> {
                u32::try_from(v)
                    .map(|n| if n == 0 { Keep::None } else { Keep::Count(n) })
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(v), &self))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Keep, E> {
                match v {
                    "all" => Ok(Keep::All),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// A retention policy. Rules are independent: a snapshot kept by any rule is kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Policy {
    pub keep_last: Keep,
    pub keep_daily: Keep,
    pub keep_weekly: Keep,
    pub keep_monthly: Keep,
    pub keep_yearly: Keep,
    /// IANA name of the zone calendar buckets are counted in; `None` is the system's.
    pub timezone: Option<String>,
}

impl Default for Policy {
    /// The seed's "5 recent + 1/week for 4 weeks + 1/month".
    fn default() -> Policy {
        Policy {
            keep_last: Keep::Count(5),
            keep_daily: Keep::None,
            keep_weekly: Keep::Count(4),
            keep_monthly: Keep::All,
            keep_yearly: Keep::None,
            timezone: None,
        }
    }
}

impl Policy {
    /// Whether no rule keeps anything (which the configuration refuses).
    pub fn keeps_nothing(&self) -> bool {
        [
            self.keep_last,
            self.keep_daily,
            self.keep_weekly,
            self.keep_monthly,
            self.keep_yearly,
        ]
        .iter()
        .all(|k| k.is_none())
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rules = [
            ("last", self.keep_last),
            ("daily", self.keep_daily),
            ("weekly", self.keep_weekly),
            ("monthly", self.keep_monthly),
            ("yearly", self.keep_yearly),
        ];
        let parts: Vec<String> = rules
            .iter()
            .filter(|(_, k)| !k.is_none())
            .map(|(name, k)| format!("{name} {k}"))
            .collect();
        write!(f, "{}", parts.join(", "))?;
        match &self.timezone {
            Some(tz) => write!(f, " ({tz})"),
            None => write!(f, " (local time)"),
        }
    }
}

/// When a snapshot was taken, as its name says: the time, then the suffix that tells
/// apart snapshots a frozen clock gave the same time (0 for none). Snapshots sort by
/// this, everywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp {
    pub time: Timestamp,
    pub seq: u32,
}

impl Stamp {
    pub fn at(time: Timestamp) -> Stamp {
        Stamp { time, seq: 0 }
    }
}

/// What the planner decided for one snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub keep: bool,
    /// Every rule that keeps it (`last`, `weekly 2025-W10`, `newest`, `future`, …).
    pub reasons: Vec<String>,
}

/// A calendar rule: how it names the period a snapshot falls in.
type Bucket = fn(&jiff::ZonedDateTime) -> String;

fn rules(policy: &Policy) -> [(&'static str, Keep, Option<Bucket>); 5] {
    [
        ("last", policy.keep_last, None),
        (
            "daily",
            policy.keep_daily,
            Some(|z| z.strftime("%Y-%m-%d").to_string()),
        ),
        (
            "weekly",
            policy.keep_weekly,
            Some(|z| {
                let week = z.date().iso_week_date();
                format!("{}-W{:02}", week.year(), week.week())
            }),
        ),
        (
            "monthly",
            policy.keep_monthly,
            Some(|z| z.strftime("%Y-%m").to_string()),
        ),
        (
            "yearly",
            policy.keep_yearly,
            Some(|z| z.strftime("%Y").to_string()),
        ),
    ]
}

/// Decides which snapshots to keep. `stamps[i]` is snapshot i's stamp, `None` when its
/// name was not recognised. The result is in the same order as `stamps`.
///
/// Semantics (restic's, without its "keep the oldest" fallback): walking snapshots newest
/// first (by time, then suffix), each rule keeps the newest snapshot of each of its N most
/// recent periods that have one; a snapshot kept by any rule is kept. Never deleted
/// whatever the policy: the newest snapshot, snapshots dated after `now`, and names that
/// were not recognised; these take no part in the rules.
pub fn plan(
    stamps: &[Option<Stamp>],
    policy: &Policy,
    tz: &TimeZone,
    now: Timestamp,
) -> Vec<Decision> {
    let mut decisions = vec![Decision::default(); stamps.len()];
    let mut order = Vec::with_capacity(stamps.len());
    for (i, stamp) in stamps.iter().enumerate() {
        match stamp {
            None => decisions[i].reasons.push("unrecognised name".into()),
            Some(s) if s.time > now => decisions[i].reasons.push("future".into()),
            Some(s) => order.push((*s, i)),
        }
    }
    // Newest first; equal stamps in input order, so the plan is deterministic.
    order.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    if let Some(&(_, newest)) = order.first() {
        decisions[newest].reasons.push("newest".into());
    }
    for (name, keep, bucket) in rules(policy) {
        let mut budget = match keep {
            Keep::None => continue,
            Keep::Count(n) => n as usize,
            Keep::All => usize::MAX,
        };
        let mut last_period: Option<String> = None;
        for &(stamp, i) in &order {
            if budget == 0 {
                break;
            }
            let period = bucket.map(|f| f(&stamp.time.to_zoned_datetime(tz.clone())));
            if period.is_some() && period == last_period {
                continue;
            }
            decisions[i].reasons.push(match &period {
                Some(p) => format!("{name} {p}"),
                None => name.to_string(),
            });
            budget -= 1;
            last_period = period;
        }
    }
    for d in &mut decisions {
        d.keep = !d.reasons.is_empty();
    }
    decisions
}

/// One entry of the snapshot directory for [`plan_entries`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Candidate {
    pub stamp: Option<Stamp>,
    /// Why it is not an old-root snapshot gc may delete at all (`blank snapshot`,
    /// `read-write`, `not a subvolume (…)`, `pending reset`): kept, and no part in the
    /// rules.
    pub held: Vec<String>,
    /// Why it must be kept although it is an old root like the others (`mounted at …`,
    /// `last reset`): it takes part in the rules, and is kept whatever they say.
    pub protected: Vec<String>,
    /// Why it is to be deleted whatever the rules say: an earlier gc began to (it is no
    /// longer a whole old root, and takes no part in the rules). Still kept when
    /// `protected` (mounted).
    pub finish: Option<String>,
}

/// [`plan`] over the entries that are old-root snapshots, with every other entry kept
/// for its reasons.
pub fn plan_entries(
    entries: &[Candidate],
    policy: &Policy,
    tz: &TimeZone,
    now: Timestamp,
) -> Vec<Decision> {
    let part: Vec<usize> = (0..entries.len())
        .filter(|&i| entries[i].held.is_empty() && entries[i].finish.is_none())
        .collect();
    let stamps: Vec<Option<Stamp>> = part.iter().map(|&i| entries[i].stamp).collect();
    let mut planned = plan(&stamps, policy, tz, now).into_iter();
    let mut decisions: Vec<Decision> = entries
        .iter()
        .map(|e| Decision {
            keep: true,
            reasons: e.held.clone(),
        })
        .collect();
    for &i in &part {
        decisions[i] = planned.next().expect("one decision per planned entry");
    }
    for (d, e) in decisions.iter_mut().zip(entries) {
        if let Some(why) = &e.finish {
            *d = Decision {
                keep: !e.protected.is_empty(),
                reasons: std::iter::once(why.clone())
                    .chain(e.protected.iter().cloned())
                    .collect(),
            };
            continue;
        }
        d.reasons.extend(e.protected.iter().cloned());
        d.keep = !d.reasons.is_empty();
    }
    decisions
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ts(s: &str) -> Timestamp {
        format!("{s}:00Z").replace(' ', "T").parse().unwrap()
    }

    fn policy(last: Keep, daily: Keep, weekly: Keep, monthly: Keep, yearly: Keep) -> Policy {
        Policy {
            keep_last: last,
            keep_daily: daily,
            keep_weekly: weekly,
            keep_monthly: monthly,
            keep_yearly: yearly,
            timezone: None,
        }
    }

    /// The example: UTC, keep_last=5, keep_weekly=4, keep_monthly="all".
    #[test]
    fn the_seed_policy_on_three_months_of_snapshots() {
        let times = [
            "2025-01-06 08:00",
            "2025-01-20 09:00",
            "2025-01-31 18:00",
            "2025-02-03 08:00",
            "2025-02-04 08:00",
            "2025-02-14 12:00",
            "2025-02-28 22:00",
            "2025-03-01 09:00",
            "2025-03-03 08:00",
            "2025-03-03 20:00",
            "2025-03-05 08:00",
            "2025-03-06 08:00",
            "2025-03-07 08:00",
        ];
        let input: Vec<_> = times.iter().map(|t| Some(Stamp::at(ts(t)))).collect();
        let decisions = plan(
            &input,
            &Policy::default(),
            &TimeZone::UTC,
            ts("2025-03-08 00:00"),
        );
        let deleted: Vec<&str> = times
            .iter()
            .zip(&decisions)
            .filter(|(_, d)| !d.keep)
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(
            deleted,
            ["2025-01-06 08:00", "2025-01-20 09:00", "2025-02-03 08:00"]
        );
        let reasons = |t: &str| {
            decisions[times.iter().position(|x| *x == t).unwrap()]
                .reasons
                .clone()
        };
        assert_eq!(
            reasons("2025-03-07 08:00"),
            ["newest", "last", "weekly 2025-W10", "monthly 2025-03"]
        );
        assert_eq!(reasons("2025-03-01 09:00"), ["weekly 2025-W09"]);
        assert_eq!(reasons("2025-02-28 22:00"), ["monthly 2025-02"]);
        assert_eq!(reasons("2025-02-04 08:00"), ["weekly 2025-W06"]);
        assert_eq!(reasons("2025-01-31 18:00"), ["monthly 2025-01"]);
    }

    #[test]
    fn table_of_policies() {
        use Keep::{All, Count, None as No};
        let now = ts("2025-06-30 12:00");
        type Case = (&'static str, Policy, Vec<&'static str>, Vec<bool>);
        let cases: Vec<Case> = vec![
            (
                "keep_last 2 keeps the two newest",
                policy(Count(2), No, No, No, No),
                vec!["2025-06-01 00:00", "2025-06-02 00:00", "2025-06-03 00:00"],
                vec![false, true, true],
            ),
            (
                "daily keeps the newest of each day",
                policy(No, Count(2), No, No, No),
                vec![
                    "2025-06-01 08:00",
                    "2025-06-01 20:00",
                    "2025-06-02 08:00",
                    "2025-06-02 09:00",
                ],
                vec![false, true, false, true],
            ),
            (
                "daily counts days that have snapshots, not calendar days",
                policy(No, Count(2), No, No, No),
                vec!["2025-01-01 00:00", "2025-03-01 00:00", "2025-06-01 00:00"],
                vec![false, true, true],
            ),
            (
                "yearly all",
                policy(No, No, No, No, All),
                vec![
                    "2023-05-01 00:00",
                    "2023-12-31 23:00",
                    "2024-01-01 01:00",
                    "2025-02-01 00:00",
                ],
                vec![false, true, true, true],
            ),
            (
                "ISO week year: 2024-12-30 is in 2025-W01 with 2025-01-02",
                policy(No, No, Count(1), No, No),
                vec!["2024-12-29 12:00", "2024-12-30 12:00", "2025-01-02 12:00"],
                vec![false, false, true],
            ),
            (
                "the newest survives any policy",
                policy(No, No, No, No, Count(1)),
                vec!["2025-01-01 00:00", "2025-06-01 00:00"],
                vec![false, true],
            ),
        ];
        for (name, policy, times, want) in cases {
            let input: Vec<_> = times.iter().map(|t| Some(Stamp::at(ts(t)))).collect();
            let got: Vec<bool> = plan(&input, &policy, &TimeZone::UTC, now)
                .iter()
                .map(|d| d.keep)
                .collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn future_and_unrecognised_are_kept_and_take_no_part() {
        let times = vec![
            Some(Stamp::at(ts("2025-06-01 00:00"))),
            Some(Stamp::at(ts("2025-06-02 00:00"))),
            Some(Stamp::at(ts("2030-01-01 00:00"))),
            None,
        ];
        let p = policy(
            Keep::Count(1),
            Keep::None,
            Keep::None,
            Keep::None,
            Keep::None,
        );
        let d = plan(&times, &p, &TimeZone::UTC, ts("2025-06-03 00:00"));
        assert_eq!(
            d.iter().map(|d| d.keep).collect::<Vec<_>>(),
            [false, true, true, true]
        );
        assert_eq!(d[1].reasons, ["newest", "last"]);
        assert_eq!(d[2].reasons, ["future"]);
        assert_eq!(d[3].reasons, ["unrecognised name"]);
    }

    #[test]
    fn calendar_buckets_follow_the_time_zone() {
        // 23:30 UTC on the 1st is already the 2nd in Berlin: two days in UTC, one in Berlin.
        let times = vec![
            Some(Stamp::at(ts("2025-06-01 23:30"))),
            Some(Stamp::at(ts("2025-06-02 08:00"))),
        ];
        let p = policy(
            Keep::None,
            Keep::Count(5),
            Keep::None,
            Keep::None,
            Keep::None,
        );
        let now = ts("2025-06-03 00:00");
        let utc = plan(&times, &p, &TimeZone::UTC, now);
        let berlin = plan(&times, &p, &TimeZone::get("Europe/Berlin").unwrap(), now);
        assert!(utc[0].keep);
        assert!(!berlin[0].keep);
    }

    fn keep_strategy() -> impl Strategy<Value = Keep> {
        prop_oneof![
            Just(Keep::None),
            (1u32..6).prop_map(Keep::Count),
            Just(Keep::All)
        ]
    }

    proptest! {
        #[test]
        fn planning_again_on_the_kept_set_deletes_nothing_and_the_newest_is_kept(
            offsets in prop::collection::vec(0i64..(400 * 86_400), 1..40),
            rules in prop::collection::vec(keep_strategy(), 5),
        ) {
            let p = policy(rules[0], rules[1], rules[2], rules[3], rules[4]);
            let base = ts("2024-01-01 00:00");
            let times: Vec<Option<Stamp>> = offsets
                .iter()
                .map(|s| Some(Stamp::at(base.checked_add(jiff::SignedDuration::from_secs(*s)).unwrap())))
                .collect();
            let now = ts("2026-01-01 00:00");
            let first = plan(&times, &p, &TimeZone::UTC, now);
            let newest = times.iter().enumerate().max_by_key(|(i, t)| (*t, std::cmp::Reverse(*i))).unwrap().0;
            prop_assert!(first[newest].keep);
            let kept: Vec<Option<Stamp>> = times
                .iter()
                .zip(&first)
                .filter(|(_, d)| d.keep)
                .map(|(t, _)| *t)
                .collect();
            let second = plan(&kept, &p, &TimeZone::UTC, now);
            prop_assert!(second.iter().all(|d| d.keep));
        }
    }

    /// A frozen clock: equal times, told apart by the suffix. The highest suffix is the
    /// newest, whatever order the names come in.
    #[test]
    fn equal_times_order_by_suffix() {
        let t = ts("2026-01-15 06:30");
        let stamps: Vec<_> = [2, 0, 1]
            .iter()
            .map(|&seq| Some(Stamp { time: t, seq }))
            .collect();
        let p = policy(
            Keep::Count(2),
            Keep::None,
            Keep::None,
            Keep::None,
            Keep::None,
        );
        let d = plan(&stamps, &p, &TimeZone::UTC, ts("2026-01-15 07:00"));
        assert_eq!(d[0].reasons, ["newest", "last"]);
        assert_eq!(d[2].reasons, ["last"]);
        assert!(!d[1].keep);
        // Daily: one day, one snapshot kept, the one with the highest suffix.
        let p = policy(
            Keep::None,
            Keep::Count(1),
            Keep::None,
            Keep::None,
            Keep::None,
        );
        let d = plan(&stamps, &p, &TimeZone::UTC, ts("2026-01-15 07:00"));
        assert_eq!(
            d.iter().map(|d| d.keep).collect::<Vec<_>>(),
            [true, false, false]
        );
    }

    /// Held entries are kept and change nothing for the others; protected ones take part
    /// and are kept whatever the rules say.
    #[test]
    fn held_entries_take_no_part_and_protected_ones_are_kept() {
        let at = |s: &str| Some(Stamp::at(ts(s)));
        let entries = vec![
            Candidate {
                stamp: at("2025-06-03 00:00"),
                held: vec!["blank snapshot".into()],
                protected: vec![],
                finish: None,
            },
            Candidate {
                stamp: at("2025-06-02 00:00"),
                ..Candidate::default()
            },
            Candidate {
                stamp: at("2025-06-01 00:00"),
                held: vec![],
                protected: vec!["last reset".into()],
                finish: None,
            },
            Candidate {
                stamp: at("2025-05-01 00:00"),
                ..Candidate::default()
            },
            Candidate {
                stamp: at("2025-04-01 00:00"),
                held: vec!["read-write".into()],
                protected: vec!["mounted at /mnt".into()],
                finish: None,
            },
        ];
        let p = policy(
            Keep::Count(1),
            Keep::None,
            Keep::None,
            Keep::None,
            Keep::None,
        );
        let d = plan_entries(&entries, &p, &TimeZone::UTC, ts("2025-07-01 00:00"));
        let reasons: Vec<Vec<String>> = d.iter().map(|d| d.reasons.clone()).collect();
        assert_eq!(
            reasons,
            [
                vec!["blank snapshot".to_string()],
                vec!["newest".into(), "last".into()],
                vec!["last reset".into()],
                vec![],
                vec!["read-write".into(), "mounted at /mnt".into()],
            ]
        );
        assert_eq!(
            d.iter().map(|d| d.keep).collect::<Vec<_>>(),
            [true, true, true, false, true]
        );
    }

    /// A snapshot an earlier gc left half deleted is deleted whatever the rules say, takes
    /// no part in them (the newest whole one is still "newest"), and is kept only while
    /// something of it is mounted.
    #[test]
    fn half_deleted_entries_are_finished_unless_mounted() {
        let at = |s: &str| Some(Stamp::at(ts(s)));
        let half = |protected: Vec<String>| Candidate {
            stamp: at("2025-06-03 00:00"),
            held: vec![],
            protected,
            finish: Some("partly deleted by an earlier gc".into()),
        };
        let entries = vec![
            half(vec![]),
            Candidate {
                stamp: at("2025-06-02 00:00"),
                ..Candidate::default()
            },
            half(vec!["mounted at /mnt".into()]),
        ];
        let p = policy(Keep::All, Keep::None, Keep::None, Keep::None, Keep::None);
        let d = plan_entries(&entries, &p, &TimeZone::UTC, ts("2025-07-01 00:00"));
        assert_eq!(
            d.iter().map(|d| d.keep).collect::<Vec<_>>(),
            [false, true, true]
        );
        assert_eq!(d[0].reasons, ["partly deleted by an earlier gc"]);
        assert_eq!(d[1].reasons, ["newest", "last"]);
        assert_eq!(
            d[2].reasons,
            ["partly deleted by an earlier gc", "mounted at /mnt"]
        );
    }

    #[test]
    fn the_default_is_the_seeds_policy_and_keeps_something() {
        let p = Policy::default();
        assert!(!p.keeps_nothing());
        assert_eq!(p.to_string(), "last 5, weekly 4, monthly all (local time)");
    }

    #[test]
    fn zero_everywhere_keeps_nothing() {
        let p = Policy {
            keep_last: Keep::Count(0),
            keep_daily: Keep::None,
            keep_weekly: Keep::None,
            keep_monthly: Keep::None,
            keep_yearly: Keep::None,
            timezone: None,
        };
        assert!(p.keeps_nothing());
    }
}
