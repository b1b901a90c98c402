//! Resource ids as Tencent spells them: a prefix and 8 lower-case
//! alphanumerics (`sg-1a2b3c4d`, `ipm-...`, `ipmg-...`, `ppm-...`,
//! `ppmg-...`, `ins-...`, `cls-...`).

use crate::error::ModelError;
use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The id's prefix, with its dash.
            pub const PREFIX: &'static str = $prefix;

            /// Parses an id, naming `field` in the error.
            pub fn parse_field(field: &str, value: &str) -> Result<Self, ModelError> {
                check_id(field, value, $prefix).map(|()| Self(value.to_string()))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ModelError;
            fn try_from(value: String) -> Result<Self, ModelError> {
                Self::parse_field(stringify!($name), &value)
            }
        }

        impl std::str::FromStr for $name {
            type Err = ModelError;
            fn from_str(value: &str) -> Result<Self, ModelError> {
                Self::parse_field(stringify!($name), value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// A security group id, `sg-xxxxxxxx`.
    SecurityGroupId,
    "sg-"
);
id_type!(
    /// An address template id, `ipm-xxxxxxxx`.
    AddressTemplateId,
    "ipm-"
);
id_type!(
    /// An address template group id, `ipmg-xxxxxxxx`.
    AddressTemplateGroupId,
    "ipmg-"
);
id_type!(
    /// A service template id, `ppm-xxxxxxxx`.
    ServiceTemplateId,
    "ppm-"
);
id_type!(
    /// A service template group id, `ppmg-xxxxxxxx`.
    ServiceTemplateGroupId,
    "ppmg-"
);
id_type!(
    /// An instance (node) id, `ins-xxxxxxxx`.
    InstanceId,
    "ins-"
);
id_type!(
    /// A cluster id, `cls-xxxxxxxx`.
    ClusterId,
    "cls-"
);

/// The number of characters after an id's prefix.
pub const ID_SUFFIX_LEN: usize = 8;

fn check_id(field: &str, value: &str, prefix: &str) -> Result<(), ModelError> {
    let Some(rest) = value.strip_prefix(prefix) else {
        return Err(ModelError::malformed(
            field,
            value,
            format_args!("expected {prefix} followed by 8 lower-case letters or digits"),
        ));
    };
    let ok = rest.len() == ID_SUFFIX_LEN
        && rest
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(ModelError::malformed(
            field,
            value,
            format_args!("expected {prefix} followed by 8 lower-case letters or digits"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn ids_need_prefix_and_eight_lower_alnum() {
        assert!(SecurityGroupId::parse_field("f", "sg-0a1b2c3d").is_ok());
        for bad in [
            "sg-0A1B2C3D",
            "sg-123",
            "sg-123456789",
            "ipm-12345678",
            "sg_12345678",
            "",
        ] {
            let err = SecurityGroupId::parse_field("SecurityGroupId", bad).unwrap_err();
            assert_eq!(
                err.code(),
                ErrorCode::InvalidParameterValueMalformed,
                "{bad}"
            );
            assert!(err.message().contains("SecurityGroupId"));
        }
        assert!(AddressTemplateGroupId::parse_field("f", "ipmg-abcdefgh").is_ok());
        assert!(AddressTemplateId::parse_field("f", "ipmg-abcdefgh").is_err());
    }
}
