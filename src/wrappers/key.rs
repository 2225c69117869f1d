//! [`Key`]: a 256-bit secret key for the security wrappers.

use std::fmt;

use zeroize::Zeroize;

use crate::error::{Error, Result};

/// A 256-bit secret key for [`HashedIds`](crate::wrappers::hashed_ids::HashedIds) and
/// [`Encrypted`](crate::wrappers::encrypted::Encrypted).
///
/// A key comes from 32 random bytes ([`generate`](Key::generate)), from bytes you hold
/// ([`from_bytes`](Key::from_bytes)) or from 64 hexadecimal digits
/// ([`from_hex`](Key::from_hex), the form to keep in a secret manager or an environment
/// variable). `Debug` never shows it, no error ever contains it, and its bytes are zeroed
/// when it is dropped.
///
/// ```
/// use session_stores::wrappers::key::Key;
///
/// let key = Key::generate().unwrap();
/// let hex = key.to_hex(); // store this in your secret manager
/// assert_eq!(hex.len(), 64);
/// assert_eq!(Key::from_hex(&hex).unwrap(), key);
/// assert_eq!(format!("{key:?}"), "Key(<redacted>)");
/// assert!(Key::from_hex("not hex").is_err());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; Key::LEN]);

impl Key {
    /// The length of a key in bytes.
    pub const LEN: usize = 32;

    /// A new key from the operating system's CSPRNG. An [`Error::Backend`] only if the OS
    /// cannot supply random bytes.
    pub fn generate() -> Result<Key> {
        let mut key = Key([0; Key::LEN]);
        getrandom::fill(&mut key.0).map_err(|err| Error::Backend {
            operation: "generate key",
            id: None,
            source: Box::new(err),
        })?;
        Ok(key)
    }

    /// A key from exactly [`Key::LEN`] bytes; any other length is an [`Error::Config`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Key> {
        let bytes: [u8; Key::LEN] = bytes.try_into().map_err(|_| {
            Error::config(format!(
                "a key must be {} bytes, not {}",
                Key::LEN,
                bytes.len()
            ))
        })?;
        Ok(Key(bytes))
    }

    /// A key from 64 hexadecimal digits (either case; surrounding whitespace is ignored).
    /// Anything else is an [`Error::Config`] that does not repeat the text it was given.
    pub fn from_hex(hex: &str) -> Result<Key> {
        let hex = hex.trim();
        if hex.len() != 2 * Key::LEN {
            return Err(Error::config(format!(
                "a key must be {} hexadecimal digits, not {} characters",
                2 * Key::LEN,
                hex.len()
            )));
        }
        let mut key = Key([0; Key::LEN]);
        hex::decode_to_slice(hex, &mut key.0)
            .map_err(|_| Error::config("a key must be hexadecimal digits only"))?;
        Ok(key)
    }

    /// The key as 64 lowercase hexadecimal digits, for storing it in a secret manager.
    /// Treat the result as the secret it is.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The key's bytes. Treat them as the secret they are.
    pub fn as_bytes(&self) -> &[u8; Key::LEN] {
        &self.0
    }

    /// Whether `other` is the same key, compared in constant time.
    pub fn same_as(&self, other: &Key) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(self.0.ct_eq(&other.0))
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

/// Reads keys from the environment variable `var`: one key, or several separated by commas
/// (for a key ring, the current key first), each as 64 hexadecimal digits. Errors are
/// [`Error::Config`] naming the variable, never its value.
pub fn keys_from_env(var: &str) -> Result<Vec<Key>> {
    let value = std::env::var(var).map_err(|err| {
        Error::config(format!(
            "the key variable `{var}` is {}",
            match err {
                std::env::VarError::NotPresent => "not set",
                std::env::VarError::NotUnicode(_) => "not valid text",
            }
        ))
    })?;
    keys_from_list(&value).map_err(|err| match err {
        Error::Config { message, .. } => {
            Error::config(format!("the key variable `{var}`: {message}"))
        }
        other => other,
    })
}

/// Parses one key or several separated by commas, each as 64 hexadecimal digits.
pub(crate) fn keys_from_list(list: &str) -> Result<Vec<Key>> {
    let keys = list
        .split(',')
        .enumerate()
        .map(|(n, hex)| {
            Key::from_hex(hex).map_err(|err| match err {
                Error::Config { message, .. } => {
                    Error::config(format!("key {} of the list: {message}", n + 1))
                }
                other => other,
            })
        })
        .collect::<Result<Vec<Key>>>()?;
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_differ_and_round_trip_through_hex() {
        let a = Key::generate().unwrap();
        let b = Key::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(Key::from_hex(&a.to_hex()).unwrap(), a);
        assert_eq!(Key::from_hex(&a.to_hex().to_uppercase()).unwrap(), a);
        assert_eq!(Key::from_bytes(a.as_bytes()).unwrap(), a);
    }

    #[test]
    fn bad_keys_are_config_errors_that_do_not_repeat_the_text() {
        let secret = "zz".repeat(32);
        let err = Key::from_hex(&secret).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Config);
        assert!(!err.to_string().contains(&secret), "{err}");
        assert!(Key::from_hex(&"ab".repeat(31)).is_err());
        assert!(Key::from_bytes(&[0; 31]).is_err());
        assert!(Key::from_bytes(&[0; 33]).is_err());
        let a = Key::generate().unwrap().to_hex();
        let list = format!("{a},{}", "0".repeat(63));
        let err = keys_from_list(&list).unwrap_err();
        assert!(err.to_string().contains("key 2"), "{err}");
        assert!(!err.to_string().contains(&a), "{err}");
        assert_eq!(keys_from_list(&format!("{a}, {a}")).unwrap().len(), 2);
    }

    #[test]
    fn a_missing_variable_is_named() {
        let err = keys_from_env("SESSION_STORES_TEST_NO_SUCH_KEY_VAR").unwrap_err();
        assert!(
            err.to_string()
                .contains("SESSION_STORES_TEST_NO_SUCH_KEY_VAR")
        );
        assert!(err.to_string().contains("not set"));
    }
}
