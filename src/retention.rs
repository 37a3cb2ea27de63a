//! Retention of old-root snapshots: the policy (`keep_last`, `keep_daily`, …) and the time
//! zone its calendar buckets are counted in.

use std::fmt;

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

#[cfg(test)]
mod tests {
    use super::*;

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
