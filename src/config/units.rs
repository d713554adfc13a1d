//! Human-friendly units in configuration values: durations (`60s`, `500ms`, `1m30s`) and byte
//! sizes (`32KiB`, `100MiB`, or a plain number of bytes).

use std::fmt;
use std::time::Duration as StdDuration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written with units, e.g. `60s`, `500ms`, `2m`, `1h30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub StdDuration);

impl Duration {
    pub const fn from_secs(s: u64) -> Self {
        Duration(StdDuration::from_secs(s))
    }

    pub const fn from_millis(ms: u64) -> Self {
        Duration(StdDuration::from_millis(ms))
    }

    pub fn get(self) -> StdDuration {
        self.0
    }

    /// Parses `1h30m`, `60s`, `500ms`, `250us`; a unit is required for every number.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err("empty duration; write e.g. `60s` or `500ms`".into());
        }
        let mut total: u128 = 0; // nanoseconds
        let mut rest = t;
        while !rest.is_empty() {
            let digits = rest
                .bytes()
                .take_while(|b| b.is_ascii_digit() || *b == b'.')
                .count();
            if digits == 0 {
                return Err(format!(
                    "invalid duration \"{text}\": expected a number at \"{rest}\""
                ));
            }
            let (num, after) = rest.split_at(digits);
            let unit_len = after
                .bytes()
                .take_while(|b| b.is_ascii_alphabetic())
                .count();
            let (unit, after) = after.split_at(unit_len);
            let scale: u128 = match unit {
                "ns" => 1,
                "us" | "µs" => 1_000,
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60_000_000_000,
                "h" => 3_600_000_000_000,
                "d" => 86_400_000_000_000,
                "" => {
                    return Err(format!(
                        "invalid duration \"{text}\": missing unit (use ms, s, m or h, e.g. `{num}s`)"
                    ));
                }
                other => {
                    return Err(format!(
                        "invalid duration \"{text}\": unknown unit `{other}` (use ns, us, ms, s, m, h or d)"
                    ));
                }
            };
            let value: f64 = num
                .parse()
                .map_err(|_| format!("invalid duration \"{text}\": bad number \"{num}\""))?;
            let ns = value * scale as f64;
            if !ns.is_finite() || ns > 1e21 {
                return Err(format!("invalid duration \"{text}\": too large"));
            }
            total += ns as u128;
            rest = after;
        }
        let secs = u64::try_from(total / 1_000_000_000)
            .map_err(|_| format!("duration \"{text}\" too large"))?;
        Ok(Duration(StdDuration::new(
            secs,
            (total % 1_000_000_000) as u32,
        )))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        let ms = d.as_millis();
        if !d.subsec_nanos().is_multiple_of(1_000_000) {
            write!(f, "{}us", d.as_micros())
        } else if !ms.is_multiple_of(1000) {
            write!(f, "{ms}ms")
        } else {
            write!(f, "{}s", d.as_secs())
        }
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration with a unit, e.g. \"60s\" or \"500ms\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                Duration::parse(v).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
                Err(E::custom(format!(
                    "a duration needs a unit: write \"{v}s\" or \"{v}ms\""
                )))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                self.visit_i64(v as i64)
            }
        }
        d.deserialize_str(V)
    }
}

/// A size in bytes written as `32KiB`, `100MiB`, `1GiB`, `64KB` or a plain number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const fn kib(n: u64) -> Self {
        ByteSize(n * 1024)
    }

    pub const fn mib(n: u64) -> Self {
        ByteSize(n * 1024 * 1024)
    }

    pub fn get(self) -> u64 {
        self.0
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let digits = t.bytes().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            return Err(format!(
                "invalid size \"{text}\": expected a number, e.g. `32KiB`"
            ));
        }
        let (num, unit) = t.split_at(digits);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("invalid size \"{text}\": number too large"))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" | "Ki" | "K" | "k" => 1 << 10,
            "MiB" | "Mi" | "M" => 1 << 20,
            "GiB" | "Gi" | "G" => 1 << 30,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            other => {
                return Err(format!(
                    "invalid size \"{text}\": unknown unit `{other}` (use B, KiB, MiB, GiB, KB, MB or GB)"
                ));
            }
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("invalid size \"{text}\": too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        if n != 0 && n.is_multiple_of(1 << 30) {
            write!(f, "{}GiB", n >> 30)
        } else if n != 0 && n.is_multiple_of(1 << 20) {
            write!(f, "{}MiB", n >> 20)
        } else if n != 0 && n.is_multiple_of(1 << 10) {
            write!(f, "{}KiB", n >> 10)
        } else {
            write!(f, "{n}")
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size, e.g. \"32KiB\", \"100MiB\" or a number of bytes")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
        }
        d.deserialize_any(V)
    }
}
