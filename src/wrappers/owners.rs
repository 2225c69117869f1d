//! Owners at rest, for the security wrappers: the keyed hash a wrapper indexes an owner
//! under, and listings and "log out everywhere" across the forms an owner may be stored in
//! (the plain owner earlier releases wrote, then one keyed hash per key).

use std::collections::HashMap;

use hmac::{KeyInit, Mac};
use sha2::Sha256;

use crate::error::Result;
use crate::session::{Owner, SessionId};
use crate::store::{OwnedSession, SessionStore};

type HmacSha256 = hmac::Hmac<Sha256>;

/// A pre-keyed HMAC-SHA-256 whose key is derived from a wrapper's key (never equal to it):
/// it names each owner by `<prefix><64 hexadecimal digits>`.
#[derive(Clone)]
pub(crate) struct OwnerMac {
    mac: HmacSha256,
}

impl OwnerMac {
    /// Keyed with `HMAC-SHA-256(key, label)`.
    pub(crate) fn derive(key: &[u8], label: &[u8]) -> Self {
        let keyed = |bytes: &[u8]| match HmacSha256::new_from_slice(bytes) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC accepts keys of any length"),
        };
        let mut derive = keyed(key);
        derive.update(label);
        OwnerMac {
            mac: keyed(&derive.finalize().into_bytes()),
        }
    }

    /// The owner a wrapper stores instead of `owner`: `prefix` then the hexadecimal
    /// `HMAC(derived key, len(context) || context || owner)`. Distinct owners (or contexts)
    /// give distinct hashes; nobody without the key can tell which owner a hash stands for,
    /// nor check a guess.
    pub(crate) fn hidden(&self, prefix: &str, context: &str, owner: &Owner) -> Owner {
        let mut mac = self.mac.clone();
        // Contexts are far below 4 GiB.
        mac.update(&(context.len() as u32).to_be_bytes());
        mac.update(context.as_bytes());
        mac.update(owner.as_str().as_bytes());
        let hidden = format!("{prefix}{}", hex::encode(mac.finalize().into_bytes()));
        match Owner::new(hidden) {
            Ok(hidden) => hidden,
            Err(_) => unreachable!("a short prefix and 64 hexadecimal digits are a valid owner"),
        }
    }
}

/// The sessions of one owner stored under each of `forms` (the inner store's owners that
/// stand for it, oldest form first), each entry with the position of the form it was found
/// under. A session rewritten from an older form to a newer one while this runs is found
/// under the newer one (forms are listed in order, and a later listing wins), so it is
/// neither missed nor listed twice.
pub(crate) async fn list_across<S: SessionStore + ?Sized>(
    inner: &S,
    forms: &[Owner],
    with_data: bool,
) -> Result<Vec<(usize, OwnedSession)>> {
    let mut found: Vec<(usize, OwnedSession)> = Vec::new();
    let mut at: HashMap<SessionId, usize> = HashMap::new();
    for (form, owner) in forms.iter().enumerate() {
        for entry in inner.sessions_of(owner, with_data).await? {
            match at.get(&entry.id) {
                Some(&i) => found[i] = (form, entry),
                None => {
                    at.insert(entry.id.clone(), found.len());
                    found.push((form, entry));
                }
            }
        }
    }
    Ok(found)
}

/// Ends every live session stored under each of `forms` (oldest first, so that a session
/// rewritten into a newer form meanwhile is still ended there) but `except`; the total.
pub(crate) async fn destroy_across<S: SessionStore + ?Sized>(
    inner: &S,
    forms: &[Owner],
    except: Option<&SessionId>,
) -> Result<u64> {
    let mut ended = 0u64;
    for owner in forms {
        ended = ended.saturating_add(inner.destroy_owner(owner, except).await?);
    }
    Ok(ended)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_owners_depend_on_the_key_the_label_the_context_and_the_owner() {
        let ada = Owner::new("ada@example.com").unwrap();
        let bob = Owner::new("bob@example.com").unwrap();
        let a = OwnerMac::derive(&[1; 32], b"label");
        let hidden = a.hidden("oh.", "", &ada);
        assert!(hidden.as_str().starts_with("oh."));
        assert_eq!(hidden.as_str().len(), 3 + 64);
        assert!(!hidden.as_str().contains("ada"));
        assert_eq!(hidden, a.hidden("oh.", "", &ada));
        for other in [
            a.hidden("oh.", "", &bob),
            a.hidden("oh.", "x", &ada),
            OwnerMac::derive(&[2; 32], b"label").hidden("oh.", "", &ada),
            OwnerMac::derive(&[1; 32], b"other").hidden("oh.", "", &ada),
        ] {
            assert_ne!(other.as_str()[3..], hidden.as_str()[3..]);
        }
        // The context is length-prefixed: moving bytes between it and the owner changes
        // the hash.
        let ab = Owner::new("ab").unwrap();
        let b = Owner::new("b").unwrap();
        assert_ne!(a.hidden("", "", &ab), a.hidden("", "a", &b));
    }
}
