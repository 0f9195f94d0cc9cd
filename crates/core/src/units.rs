//! Quantities as people read them in reports: sizes in SI units with three significant
//! digits ("71 B", "4.21 kB", "1.46 MB"), so that 71 bytes never print as "0.00 MB".

/// `n` bytes in SI units (powers of 1000, as `ls -h --si` and the reports' MB figures):
/// whole bytes under 1 kB, else three significant digits.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["kB", "MB", "GB", "TB", "PB", "EB"];
    if n < 1000 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1000.0;
    let mut unit = 0;
    // 999.95 kB would print as "1000 kB": move up before rounding does.
    while v >= 999.5 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    let digits = match v {
        v if v < 9.995 => 2,
        v if v < 99.95 => 1,
        _ => 0,
    };
    format!("{v:.digits$} {}", UNITS[unit])
}

/// [`parse_bytes`] for a command-line option (clap's `value_parser`): the error says
/// what a size looks like.
pub fn parse_size_arg(s: &str) -> Result<u64, String> {
    parse_bytes(s)
        .ok_or_else(|| format!("{s:?} is not a size: use bytes or a number with k, M, G or T"))
}

/// A size as people write it, in the SI units [`bytes`] prints: `4G`, `20MB`, `512k`,
/// `1.5M`, `1500` (bytes). The suffix is k, M, G or T (either case), with or without `B`.
pub fn parse_bytes(s: &str) -> Option<u64> {
    let t = s.trim();
    let t = t.strip_suffix(['B', 'b']).unwrap_or(t);
    let (num, mult) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1e3),
        Some('m' | 'M') => (&t[..t.len() - 1], 1e6),
        Some('g' | 'G') => (&t[..t.len() - 1], 1e9),
        Some('t' | 'T') => (&t[..t.len() - 1], 1e12),
        _ => (t, 1.0),
    };
    let n: f64 = num.trim().parse().ok()?;
    (n.is_finite() && n >= 0.0 && n * mult < u64::MAX as f64).then_some((n * mult) as u64)
}

#[cfg(test)]
mod tests {
    use super::{bytes, parse_bytes};

    #[test]
    fn sizes_parse_in_the_units_they_print_in() {
        assert_eq!(parse_bytes("4G"), Some(4_000_000_000));
        assert_eq!(parse_bytes("20MB"), Some(20_000_000));
        assert_eq!(parse_bytes("512k"), Some(512_000));
        assert_eq!(parse_bytes("1.5M"), Some(1_500_000));
        assert_eq!(parse_bytes("1500"), Some(1500));
        assert_eq!(parse_bytes(" 2 TB "), Some(2_000_000_000_000));
        for bad in ["fast", "", "G", "-1M", "1e400", "NaN"] {
            assert_eq!(parse_bytes(bad), None, "{bad}");
        }
        assert_eq!(bytes(parse_bytes("4G").unwrap()), "4.00 GB");
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(71), "71 B");
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(1000), "1.00 kB");
        assert_eq!(bytes(4_212), "4.21 kB");
        assert_eq!(bytes(99_949), "99.9 kB");
        assert_eq!(bytes(999_499), "999 kB");
        assert_eq!(bytes(999_500), "1.00 MB");
        assert_eq!(bytes(1_463_176), "1.46 MB");
        assert_eq!(bytes(95_800_000_000), "95.8 GB");
        assert_eq!(bytes(u64::MAX), "18.4 EB");
    }
}
