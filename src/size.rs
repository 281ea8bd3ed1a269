//! Sizes in bytes as the config writes them: `"64MiB"`, `"512 KiB"`, `"1GB"`, or a plain
//! integer of bytes. Binary units (KiB, MiB, GiB) are powers of 1024, decimal ones (kB, MB,
//! GB) of 1000, as systemd and Telegraf read them.

use serde::{Deserialize, Deserializer};

/// A byte count, typed at deserialisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error(
        "{0:?} is not a size like \"64MiB\" (a whole number, then B, KiB, MiB, GiB, kB, MB or GB)"
    )]
    Malformed(String),
    #[error("{0:?} is too large")]
    Overflow(String),
}

impl ByteSize {
    pub fn parse(s: &str) -> Result<ByteSize, SizeError> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (number, unit) = t.split_at(split);
        let number: u64 = number.parse().map_err(|_| SizeError::Malformed(s.into()))?;
        let factor: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "kB" | "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            _ => return Err(SizeError::Malformed(s.into())),
        };
        number
            .checked_mul(factor)
            .map(ByteSize)
            .ok_or_else(|| SizeError::Overflow(s.into()))
    }
}

impl std::fmt::Display for ByteSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0;
        for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] {
            if n >= 1 << shift && n % (1 << shift) == 0 {
                return write!(f, "{}{unit}", n >> shift);
            }
        }
        write!(f, "{n}B")
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bytes(n) => Ok(ByteSize(n)),
            Raw::Text(s) => ByteSize::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_binary_and_decimal_units() {
        for (text, n) in [
            ("64MiB", 64 << 20),
            ("64 MiB", 64 << 20),
            ("512KiB", 512 << 10),
            ("1GiB", 1 << 30),
            ("2GB", 2_000_000_000),
            ("10kB", 10_000),
            ("100", 100),
            ("7B", 7),
        ] {
            assert_eq!(ByteSize::parse(text), Ok(ByteSize(n)), "{text}");
        }
        for bad in ["", "MiB", "1.5MiB", "-1", "64mb", "64 MiBs"] {
            assert!(
                matches!(ByteSize::parse(bad), Err(SizeError::Malformed(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            ByteSize::parse("99999999999999GiB"),
            Err(SizeError::Overflow(_))
        ));
        assert_eq!(ByteSize(64 << 20).to_string(), "64MiB");
        assert_eq!(ByteSize(1000).to_string(), "1000B");
        #[derive(Deserialize)]
        struct T {
            a: ByteSize,
            b: ByteSize,
        }
        let t: T = toml::from_str("a = \"8MiB\"\nb = 4096").unwrap();
        assert_eq!((t.a, t.b), (ByteSize(8 << 20), ByteSize(4096)));
        assert!(toml::from_str::<T>("a = \"8 apples\"\nb = 1").is_err());
    }
}
