//! Byte sizes as operators write them in flags and Helm values: `1048576`, `512KiB`,
//! `64MiB`, `10GiB`, or the decimal `64MB` / `1GB`.

/// Parses a size in bytes. Binary units (KiB, MiB, GiB, TiB) are powers of 1024,
/// decimal ones (KB, MB, GB, TB) powers of 1000; a bare number is bytes. Case-insensitive
/// and spaces between number and unit are allowed; fractions are not (an exact size is
/// what a limit needs).
pub fn parse_byte_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let digits = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    if digits == 0 {
        return Err(format!(
            "'{text}' is not a size such as 1048576, 512KiB, 64MiB or 10GiB"
        ));
    }
    let number: u64 = trimmed[..digits]
        .parse()
        .map_err(|_| format!("'{text}' is too large"))?;
    let unit = trimmed[digits..].trim().to_ascii_lowercase();
    let multiplier: u64 = match unit.as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        "tib" | "t" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "'{text}' has an unknown unit '{}' (use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB)",
                &trimmed[digits..].trim()
            ));
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("'{text}' is too large"))
}

/// A size for messages: the largest binary unit that divides it exactly, else bytes.
pub fn format_byte_size(bytes: u64) -> String {
    for (unit, size) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    format!("{bytes} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn units() {
        assert_eq!(parse_byte_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_byte_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_byte_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_byte_size(" 10 gib "), Ok(10 << 30));
        assert_eq!(parse_byte_size("64m"), Ok(64 << 20));
        assert_eq!(parse_byte_size("64MB"), Ok(64_000_000));
        assert_eq!(parse_byte_size("1TB"), Ok(1_000_000_000_000));
        assert_eq!(parse_byte_size("0"), Ok(0));
    }

    #[test]
    fn refusals_say_why() {
        assert!(parse_byte_size("").unwrap_err().contains("not a size"));
        assert!(parse_byte_size("MiB").unwrap_err().contains("not a size"));
        assert!(
            parse_byte_size("1.5GiB")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(parse_byte_size("-1").unwrap_err().contains("not a size"));
        assert!(
            parse_byte_size("10 parsecs")
                .unwrap_err()
                .contains("'parsecs'")
        );
        assert!(
            parse_byte_size("99999999999999999999")
                .unwrap_err()
                .contains("too large")
        );
        assert!(
            parse_byte_size("20000000TiB")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn formats_exact_units() {
        assert_eq!(format_byte_size(64 << 20), "64MiB");
        assert_eq!(format_byte_size(1536), "1536 bytes");
        assert_eq!(format_byte_size(10 << 30), "10GiB");
        assert_eq!(format_byte_size(0), "0 bytes");
    }

    proptest! {
        #[test]
        fn formatted_sizes_parse_back(bytes in any::<u64>()) {
            let text = format_byte_size(bytes);
            let text = text.trim_end_matches(" bytes");
            prop_assert_eq!(parse_byte_size(text), Ok(bytes));
        }
    }
}
