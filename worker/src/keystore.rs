//! Session state at rest: envelope encryption with XChaCha20-Poly1305.
//!
//! - The **master key** comes from the environment (`HERALD_MASTER_KEY`,
//!   `<version>:<base64 of 32 bytes>`); it never touches the database. A
//!   sealed check value per version (`master_key_checks`) makes a wrong key a
//!   startup error instead of a stream of undecryptable sessions.
//! - Each number has its own random **data key**, stored wrapped by the
//!   master key (`session_keys`); rotating the master key re-wraps these
//!   only ([`rotate_master_key`]).
//! - Every stored item is sealed with the number's data key, its associated
//!   data binding it to the tenant, the number, the data key's version and
//!   the item's own kind and identifiers: a value moved to another row, or
//!   another number, does not open.
//!
//! Nonces are 192-bit random (XChaCha), so random nonces never need a
//! counter.

use std::fmt;

use base64::{Engine, engine::general_purpose::STANDARD};
use chacha20poly1305::{
    KeyInit, XChaCha20Poly1305, XNonce,
    aead::{Aead, Payload},
};
use herald_shared::db::{
    self, DbError,
    session_rows::{self, WrappedKey},
};
use rand::RngExt;
use uuid::Uuid;

/// The environment variable holding the master key.
pub const MASTER_KEY_ENV: &str = "HERALD_MASTER_KEY";

const NONCE_LEN: usize = 24;
const CHECK_PLAINTEXT: &[u8] = b"herald master key check";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "{MASTER_KEY_ENV} is not set: session keys cannot be opened. Generate one with \
         `herald-worker master-key generate` and keep it safe (losing it means re-pairing every number)"
    )]
    MissingMasterKey,
    #[error("{MASTER_KEY_ENV} is malformed: {0} (expected <version>:<base64 of 32 bytes>)")]
    MalformedMasterKey(String),
    #[error(
        "{MASTER_KEY_ENV} (version {0}) is not the master key Herald's session keys were sealed with"
    )]
    WrongMasterKey(i32),
    #[error(
        "session keys are wrapped by master key version(s) {found:?}, but {MASTER_KEY_ENV} is version {ours}: \
         start the worker with the current master key (after a rotation, the new one)"
    )]
    OtherMasterVersion { found: Vec<i32>, ours: i32 },
    #[error("a sealed session value does not open (tampered with, or moved from another row)")]
    Undecryptable,
    #[error(transparent)]
    Db(#[from] DbError),
}

/// The master key: wraps data keys, nothing else.
pub struct MasterKey {
    version: i32,
    cipher: XChaCha20Poly1305,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey(version {}, <redacted>)", self.version)
    }
}

impl MasterKey {
    /// Parses `<version>:<base64 of 32 bytes>`.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let malformed = |why: &str| KeyError::MalformedMasterKey(why.to_string());
        let (version, encoded) = text
            .trim()
            .split_once(':')
            .ok_or_else(|| malformed("no version"))?;
        let version: i32 = version
            .parse()
            .ok()
            .filter(|v| *v > 0)
            .ok_or_else(|| malformed("the version is not a positive number"))?;
        let bytes = STANDARD
            .decode(encoded)
            .map_err(|_| malformed("the key is not base64"))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| malformed("the key is not 32 bytes"))?;
        Ok(Self {
            version,
            cipher: XChaCha20Poly1305::new(&key.into()),
        })
    }

    /// The master key from `HERALD_MASTER_KEY`.
    pub fn from_env() -> Result<Self, KeyError> {
        Self::from_env_var(MASTER_KEY_ENV)
    }

    pub fn from_env_var(name: &str) -> Result<Self, KeyError> {
        match std::env::var(name) {
            Ok(text) if !text.trim().is_empty() => Self::parse(&text),
            _ => Err(KeyError::MissingMasterKey),
        }
    }

    /// A new random key of `version`, and its text form for the environment.
    pub fn generate(version: i32) -> (Self, String) {
        let key: [u8; 32] = rand::rng().random();
        let text = format!("{version}:{}", STANDARD.encode(key));
        (Self::parse(&text).expect("a generated key parses"), text)
    }

    pub fn version(&self) -> i32 {
        self.version
    }

    fn wrap_ad(&self, tenant_id: Uuid, number_id: Uuid, key_version: i32) -> Vec<u8> {
        let mut ad = b"herald.data-key.v1".to_vec();
        ad.extend_from_slice(tenant_id.as_bytes());
        ad.extend_from_slice(number_id.as_bytes());
        ad.extend_from_slice(&key_version.to_be_bytes());
        ad.extend_from_slice(&self.version.to_be_bytes());
        ad
    }

    /// Opens a number's wrapped data key, if this key wraps it.
    fn unwrap_key(&self, number_id: Uuid, key: &WrappedKey) -> Result<Vec<u8>, KeyError> {
        if key.master_version != self.version {
            return Err(KeyError::OtherMasterVersion {
                found: vec![key.master_version],
                ours: self.version,
            });
        }
        open(
            &self.cipher,
            &self.wrap_ad(key.tenant_id, number_id, key.key_version),
            &key.wrapped,
        )
    }

    fn check_ad(&self) -> Vec<u8> {
        let mut ad = b"herald.master-check.v1".to_vec();
        ad.extend_from_slice(&self.version.to_be_bytes());
        ad
    }
}

fn seal(cipher: &XChaCha20Poly1305, ad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let nonce: [u8; NONCE_LEN] = rand::rng().random();
    let ciphertext = cipher
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: plaintext,
                aad: ad,
            },
        )
        .expect("encryption of in-memory data cannot fail");
    let mut sealed = nonce.to_vec();
    sealed.extend_from_slice(&ciphertext);
    sealed
}

fn open(cipher: &XChaCha20Poly1305, ad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, KeyError> {
    if sealed.len() < NONCE_LEN {
        return Err(KeyError::Undecryptable);
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    let nonce = XNonce::try_from(nonce).map_err(|_| KeyError::Undecryptable)?;
    cipher
        .decrypt(
            &nonce,
            Payload {
                msg: ciphertext,
                aad: ad,
            },
        )
        .map_err(|_| KeyError::Undecryptable)
}

/// At start: proves `master` is the key the database's session keys were
/// sealed with (recording its check value the first time a version is
/// used), and that no data key is wrapped by another version.
pub async fn check_master_key(
    client: &impl db::GenericClient,
    master: &MasterKey,
) -> Result<(), KeyError> {
    if !check_master_key_version(client, master).await? {
        let sealed = seal(&master.cipher, &master.check_ad(), CHECK_PLAINTEXT);
        session_rows::insert_master_check(client, master.version, &sealed).await?;
    }
    let other: Vec<i32> = session_rows::master_versions_in_use(client)
        .await?
        .into_iter()
        .filter(|v| *v != master.version)
        .collect();
    if !other.is_empty() {
        return Err(KeyError::OtherMasterVersion {
            found: other,
            ours: master.version,
        });
    }
    Ok(())
}

/// Re-wraps every data key from `old` to `new` in one transaction (the
/// session items themselves are untouched). Returns how many were re-wrapped.
/// Keys already under `new` are left alone, so running it twice is harmless.
pub async fn rotate_master_key(
    client: &mut deadpool_postgres::Client,
    old: &MasterKey,
    new: &MasterKey,
) -> Result<usize, KeyError> {
    let tx = client.transaction().await.map_err(DbError::from)?;
    check_master_key_version(&tx, old).await?;
    let sealed = seal(&new.cipher, &new.check_ad(), CHECK_PLAINTEXT);
    session_rows::insert_master_check(&tx, new.version, &sealed).await?;
    let mut rewrapped = 0;
    for (number_id, key) in session_rows::lock_all_keys(&tx).await? {
        if key.master_version == new.version {
            continue;
        }
        let raw = old.unwrap_key(number_id, &key)?;
        let wrapped = seal(
            &new.cipher,
            &new.wrap_ad(key.tenant_id, number_id, key.key_version),
            &raw,
        );
        session_rows::rewrap(&tx, number_id, new.version, &wrapped).await?;
        rewrapped += 1;
    }
    tx.commit().await.map_err(DbError::from)?;
    Ok(rewrapped)
}

/// Opens the version's check value with `master`: `Ok(false)` when the
/// version has none yet.
async fn check_master_key_version(
    client: &impl db::GenericClient,
    master: &MasterKey,
) -> Result<bool, KeyError> {
    match session_rows::master_check(client, master.version).await? {
        Some(sealed) => {
            open(&master.cipher, &master.check_ad(), &sealed)
                .map_err(|_| KeyError::WrongMasterKey(master.version))?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// A number's data key, ready to seal and open its items.
pub struct DataKey {
    tenant_id: Uuid,
    number_id: Uuid,
    version: i32,
    cipher: XChaCha20Poly1305,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "DataKey(number {}, version {}, <redacted>)",
            self.number_id, self.version
        )
    }
}

impl DataKey {
    /// The number's data key, created (random, version 1) on first use.
    pub async fn for_number(
        client: &impl db::GenericClient,
        master: &MasterKey,
        tenant_id: Uuid,
        number_id: Uuid,
    ) -> Result<Self, KeyError> {
        if session_rows::data_key(client, number_id).await?.is_none() {
            // Rows left without a key (a wipe that raced a client's last
            // writes) can never be opened again: clear them first.
            session_rows::wipe(client, number_id).await?;
            let raw: [u8; 32] = rand::rng().random();
            let key = WrappedKey {
                tenant_id,
                key_version: 1,
                master_version: master.version,
                wrapped: seal(
                    &master.cipher,
                    &master.wrap_ad(tenant_id, number_id, 1),
                    &raw,
                ),
            };
            session_rows::insert_data_key(client, number_id, &key).await?;
        }
        let stored = session_rows::data_key(client, number_id)
            .await?
            .ok_or(KeyError::Undecryptable)?;
        let raw = master.unwrap_key(number_id, &stored)?;
        let raw: [u8; 32] = raw.try_into().map_err(|_| KeyError::Undecryptable)?;
        Ok(Self {
            tenant_id: stored.tenant_id,
            number_id,
            version: stored.key_version,
            cipher: XChaCha20Poly1305::new(&raw.into()),
        })
    }

    pub fn number_id(&self) -> Uuid {
        self.number_id
    }

    fn ad(&self, kind: &str, key: &str, sub: &str) -> Vec<u8> {
        let mut ad = b"herald.session.v1".to_vec();
        ad.extend_from_slice(self.tenant_id.as_bytes());
        ad.extend_from_slice(self.number_id.as_bytes());
        ad.extend_from_slice(&self.version.to_be_bytes());
        for part in [kind, key, sub] {
            ad.extend_from_slice(&(part.len() as u32).to_be_bytes());
            ad.extend_from_slice(part.as_bytes());
        }
        ad
    }

    /// Seals one item's value for its row.
    pub fn seal(&self, kind: &str, key: &str, sub: &str, plaintext: &[u8]) -> Vec<u8> {
        seal(&self.cipher, &self.ad(kind, key, sub), plaintext)
    }

    /// Opens one item's value read from its row.
    pub fn open(
        &self,
        kind: &str,
        key: &str,
        sub: &str,
        sealed: &[u8],
    ) -> Result<Vec<u8>, KeyError> {
        open(&self.cipher, &self.ad(kind, key, sub), sealed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_key(tenant: Uuid, number: Uuid, version: i32) -> DataKey {
        DataKey {
            tenant_id: tenant,
            number_id: number,
            version,
            cipher: XChaCha20Poly1305::new(&[7u8; 32].into()),
        }
    }

    #[test]
    fn sealed_values_open_only_in_their_own_row_and_number() {
        let (tenant, number) = (Uuid::new_v4(), Uuid::new_v4());
        let key = data_key(tenant, number, 1);
        let sealed = key.seal("session", "123@s.whatsapp.net", "", b"ratchet");
        assert_eq!(
            key.open("session", "123@s.whatsapp.net", "", &sealed)
                .unwrap(),
            b"ratchet"
        );
        assert!(!sealed.windows(7).any(|w| w == b"ratchet"), "not in clear");
        assert!(
            key.open("session", "456@s.whatsapp.net", "", &sealed)
                .is_err()
        );
        assert!(
            key.open("identity", "123@s.whatsapp.net", "", &sealed)
                .is_err()
        );
        assert!(
            data_key(tenant, Uuid::new_v4(), 1)
                .open("session", "123@s.whatsapp.net", "", &sealed)
                .is_err(),
            "another number"
        );
        assert!(
            data_key(Uuid::new_v4(), number, 1)
                .open("session", "123@s.whatsapp.net", "", &sealed)
                .is_err(),
            "another tenant"
        );
        assert!(
            data_key(tenant, number, 2)
                .open("session", "123@s.whatsapp.net", "", &sealed)
                .is_err(),
            "another key version"
        );
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(
            key.open("session", "123@s.whatsapp.net", "", &flipped)
                .is_err()
        );
        assert_ne!(
            sealed,
            key.seal("session", "123@s.whatsapp.net", "", b"ratchet"),
            "fresh nonce each time"
        );
    }

    #[test]
    fn master_keys_parse_with_a_version_and_refuse_anything_else() {
        let (key, text) = MasterKey::generate(3);
        assert_eq!(key.version(), 3);
        assert_eq!(MasterKey::parse(&text).unwrap().version(), 3);
        assert!(!format!("{key:?}").contains(text.split(':').nth(1).unwrap()));
        for bad in [
            "",
            "no-version",
            "0:AAAA",
            "x:AAAA",
            "1:not base64!",
            "1:AAAAAAAA",
        ] {
            assert!(MasterKey::parse(bad).is_err(), "{bad:?}");
        }
    }
}
