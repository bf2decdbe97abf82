//! Closed sets of metric label values, declared once: the `labels!` macro. A leaf: `wire` and
//! `telemetry` both declare their label enums with it, and it imports nothing.

/// Declares a closed set of label values: a fieldless enum, every value in declaration order
/// (`ALL`), and each value's label (`as_str`, also its `Display`). A value cannot be left out of
/// `ALL`, so `telemetry::install` registers every series of a closed set at 0 and none drifts
/// away.
macro_rules! labels {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident { $($(#[$variant_meta:meta])* $variant:ident => $label:literal),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $name {
            $($(#[$variant_meta])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The label value.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $label),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
