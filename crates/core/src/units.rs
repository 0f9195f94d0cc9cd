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

#[cfg(test)]
mod tests {
    use super::bytes;

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
