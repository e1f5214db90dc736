//! Logging: `defmt` with the `defmt` feature, otherwise plain text through
//! [`crate::Display::log`].

/// Logs a line: `log!(display, "format {}", args...)`. The format string must use only `{}`
/// placeholders so that it is valid for both `defmt` and `core::fmt`.
#[cfg(feature = "defmt")]
macro_rules! log {
    ($display:expr, $($arg:tt)*) => {{
        let _ = &$display;
        defmt::info!($($arg)*);
    }};
}

/// Logs a line: `log!(display, "format {}", args...)`. The format string must use only `{}`
/// placeholders so that it is valid for both `defmt` and `core::fmt`.
#[cfg(not(feature = "defmt"))]
macro_rules! log {
    ($display:expr, $($arg:tt)*) => {{
        $crate::ui::Display::log(&mut $display, format_args!($($arg)*));
    }};
}
