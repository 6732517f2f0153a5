//! The `wacore` storage backend over Postgres: every item of a number's
//! WhatsApp session (Signal identities, sessions and prekeys, app-state keys
//! and hashes, LID mappings, device lists, tokens, …) as a sealed row of
//! `session_rows` (see [`crate::keystore`]), so any worker holding the
//! number's lease can open it. Semantics follow `wacore`'s own
//! `InMemoryBackend` method for method; `tests/tests/keystore.rs` runs the
//! same operations against both and requires identical answers.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicI32, Ordering},
    },
};

use herald_shared::db::{
    DbError, GenericClient, Pool,
    session_rows::{self, NewRows, Select, StoredRow},
};
use uuid::Uuid;
use whatsapp_rust::{
    async_trait,
    bytes::Bytes,
    store::{
        error::{Result, StoreError},
        traits::{
            AppStateSyncKey, AppSyncStore, DeviceListRecord, DeviceStore, LidPnMappingEntry,
            MsgSecretEntry, MsgSecretStore, ProtocolStore, SignalStore, TcTokenEntry,
        },
    },
    wacore::{
        appstate::{hash::HashState, processor::AppStateMutationMAC},
        client_profile::ClientProfile,
        store::{Device, device::DEVICE_PROPS},
    },
};

use crate::keystore::{DataKey, KeyError};

const IDENTITY: &str = "identity";
const SESSION: &str = "session";
const PREKEY: &str = "prekey";
const SIGNED_PREKEY: &str = "signed_prekey";
const SENDER_KEY: &str = "sender_key";
const SYNC_KEY: &str = "sync_key";
const LATEST_SYNC_KEY: &str = "latest_sync_key";
const APP_STATE_VERSION: &str = "app_state_version";
const MUTATION_MAC: &str = "mutation_mac";
const SENDER_KEY_DEVICE: &str = "sender_key_device";
const LID: &str = "lid";
const PN_TO_LID: &str = "pn_lid";
const BASE_KEY: &str = "base_key";
const DEVICE_LIST: &str = "device_list";
const GROUP_METADATA: &str = "group_metadata";
const TC_TOKEN: &str = "tc_token";
const SENT_MESSAGE: &str = "sent_message";
const PENDING_INBOUND: &str = "pending_inbound";
const MSG_SECRET: &str = "msg_secret";
const DEVICE: &str = "device";

/// Sent messages kept at most (as `InMemoryBackend`), trimmed to 3/4.
const MAX_SENT_MESSAGES: i64 = 4096;

/// Joins identifiers that together name one item (none contains it).
const SEP: char = '\u{1f}';

fn db(err: DbError) -> StoreError {
    StoreError::Database(Box::new(err))
}

fn sealed(err: KeyError) -> StoreError {
    match err {
        KeyError::Db(err) => db(err),
        other => StoreError::Serialization(Box::new(other)),
    }
}

fn json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|err| StoreError::Serialization(Box::new(err)))
}

fn from_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|err| StoreError::Serialization(Box::new(err)))
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

fn join(a: &str, b: &str) -> String {
    format!("{a}{SEP}{b}")
}

/// One number's WhatsApp session store.
pub struct PgBackend {
    pool: Pool,
    key: Arc<DataKey>,
    /// `DeviceStore::create` numbers devices per backend, as the in-memory
    /// store does.
    next_device_id: AtomicI32,
}

impl PgBackend {
    pub fn new(pool: Pool, key: Arc<DataKey>) -> Self {
        Self {
            pool,
            key,
            next_device_id: AtomicI32::new(1),
        }
    }

    fn number(&self) -> Uuid {
        self.key.number_id()
    }

    async fn client(&self) -> Result<deadpool_postgres::Client> {
        self.pool.get().await.map_err(|err| db(err.into()))
    }

    fn seal_row(&self, kind: &str, key: &str, sub: &str, value: &[u8]) -> StoredRow {
        StoredRow {
            key: key.to_string(),
            sub: sub.to_string(),
            value: self.key.seal(kind, key, sub, value),
            n1: None,
            n2: None,
            flag: false,
        }
    }

    fn open_row(&self, kind: &str, row: &StoredRow) -> Result<Vec<u8>> {
        self.key
            .open(kind, &row.key, &row.sub, &row.value)
            .map_err(sealed)
    }

    async fn put_rows(&self, kind: &str, rows: Vec<StoredRow>) -> Result<()> {
        let mut batch = NewRows::default();
        for row in rows {
            batch.push(row);
        }
        let client = self.client().await?;
        session_rows::put(&client, self.number(), kind, &batch)
            .await
            .map_err(db)
    }

    async fn put_value(&self, kind: &str, key: &str, sub: &str, value: &[u8]) -> Result<()> {
        self.put_rows(kind, vec![self.seal_row(kind, key, sub, value)])
            .await
    }

    async fn row(&self, kind: &str, key: &str, sub: &str) -> Result<Option<StoredRow>> {
        let client = self.client().await?;
        session_rows::get(&client, self.number(), kind, key, sub)
            .await
            .map_err(db)
    }

    async fn value(&self, kind: &str, key: &str, sub: &str) -> Result<Option<Vec<u8>>> {
        match self.row(kind, key, sub).await? {
            Some(row) => Ok(Some(self.open_row(kind, &row)?)),
            None => Ok(None),
        }
    }

    async fn remove(&self, kind: &str, which: Select<'_>) -> Result<u64> {
        let client = self.client().await?;
        session_rows::delete(&client, self.number(), kind, which)
            .await
            .map_err(db)
    }

    async fn remove_one(&self, kind: &str, key: &str) -> Result<()> {
        let keys = [key.to_string()];
        self.remove(kind, Select::Keys(&keys)).await.map(|_| ())
    }

    async fn rows(&self, kind: &str, key: Option<&str>) -> Result<Vec<StoredRow>> {
        let client = self.client().await?;
        session_rows::list(&client, self.number(), kind, key)
            .await
            .map_err(db)
    }

    async fn has_row(&self, kind: &str, key: &str, sub: &str) -> Result<bool> {
        let client = self.client().await?;
        session_rows::exists(&client, self.number(), kind, key, sub)
            .await
            .map_err(db)
    }

    /// Deletes the number's whole session (its rows and its data key).
    pub async fn wipe(
        client: &impl GenericClient,
        number_id: Uuid,
    ) -> std::result::Result<u64, DbError> {
        session_rows::wipe(client, number_id).await
    }
}

fn array32(bytes: Vec<u8>) -> Result<[u8; 32]> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Validation("a stored 32-byte value has another length".into()))
}

#[async_trait]
impl SignalStore for PgBackend {
    async fn put_identity(&self, address: &str, key: [u8; 32]) -> Result<()> {
        self.put_value(IDENTITY, address, "", &key).await
    }

    async fn put_identities_batch(&self, identities: &[(Arc<str>, [u8; 32])]) -> Result<()> {
        let rows = identities
            .iter()
            .map(|(address, key)| self.seal_row(IDENTITY, address, "", key))
            .collect();
        self.put_rows(IDENTITY, rows).await
    }

    async fn load_identity(&self, address: &str) -> Result<Option<[u8; 32]>> {
        self.value(IDENTITY, address, "")
            .await?
            .map(array32)
            .transpose()
    }

    async fn delete_identity(&self, address: &str) -> Result<()> {
        self.remove_one(IDENTITY, address).await
    }

    async fn get_session(&self, address: &str) -> Result<Option<Bytes>> {
        Ok(self.value(SESSION, address, "").await?.map(Bytes::from))
    }

    async fn put_session(&self, address: &str, session: &[u8]) -> Result<()> {
        self.put_value(SESSION, address, "", session).await
    }

    async fn put_sessions_batch(&self, sessions: &[(Arc<str>, Bytes)]) -> Result<()> {
        let rows = sessions
            .iter()
            .map(|(address, session)| self.seal_row(SESSION, address, "", session))
            .collect();
        self.put_rows(SESSION, rows).await
    }

    async fn delete_session(&self, address: &str) -> Result<()> {
        self.remove_one(SESSION, address).await
    }

    async fn has_session(&self, address: &str) -> Result<bool> {
        self.has_row(SESSION, address, "").await
    }

    async fn has_signal_state_for_user(&self, user: &str) -> Result<bool> {
        let client = self.client().await?;
        session_rows::any_of_user(&client, self.number(), &[SESSION, IDENTITY], user)
            .await
            .map_err(db)
    }

    async fn store_prekey(&self, id: u32, record: &[u8], uploaded: bool) -> Result<()> {
        self.store_prekeys_batch(&[(id, Bytes::copy_from_slice(record))], uploaded)
            .await
    }

    async fn store_prekeys_batch(&self, keys: &[(u32, Bytes)], uploaded: bool) -> Result<()> {
        let rows = keys
            .iter()
            .map(|(id, record)| StoredRow {
                n1: Some(i64::from(*id)),
                flag: uploaded,
                ..self.seal_row(PREKEY, &id.to_string(), "", record)
            })
            .collect();
        self.put_rows(PREKEY, rows).await
    }

    async fn load_prekey(&self, id: u32) -> Result<Option<Bytes>> {
        Ok(self
            .value(PREKEY, &id.to_string(), "")
            .await?
            .map(Bytes::from))
    }

    async fn load_prekeys_batch(&self, ids: &[u32]) -> Result<Vec<(u32, Bytes)>> {
        let keys: Vec<String> = ids.iter().map(u32::to_string).collect();
        let client = self.client().await?;
        let found = session_rows::get_keys(&client, self.number(), PREKEY, &keys, "")
            .await
            .map_err(db)?;
        let mut by_key: HashMap<String, Bytes> = HashMap::new();
        for row in &found {
            by_key.insert(row.key.clone(), Bytes::from(self.open_row(PREKEY, row)?));
        }
        // In the order asked, as the in-memory store answers.
        Ok(ids
            .iter()
            .filter_map(|id| by_key.get(&id.to_string()).map(|r| (*id, r.clone())))
            .collect())
    }

    async fn mark_prekeys_uploaded(&self, ids: &[u32]) -> Result<()> {
        let ids: Vec<i64> = ids.iter().map(|id| i64::from(*id)).collect();
        let client = self.client().await?;
        session_rows::set_flag(&client, self.number(), PREKEY, &ids)
            .await
            .map_err(db)
    }

    async fn remove_prekey(&self, id: u32) -> Result<()> {
        self.remove_one(PREKEY, &id.to_string()).await
    }

    async fn get_max_prekey_id(&self) -> Result<u32> {
        let client = self.client().await?;
        let max = session_rows::max_n1(&client, self.number(), PREKEY)
            .await
            .map_err(db)?;
        Ok(max.map_or(0, |m| m as u32))
    }

    async fn store_signed_prekey(&self, id: u32, record: &[u8]) -> Result<()> {
        let row = StoredRow {
            n1: Some(i64::from(id)),
            ..self.seal_row(SIGNED_PREKEY, &id.to_string(), "", record)
        };
        self.put_rows(SIGNED_PREKEY, vec![row]).await
    }

    async fn load_signed_prekey(&self, id: u32) -> Result<Option<Vec<u8>>> {
        self.value(SIGNED_PREKEY, &id.to_string(), "").await
    }

    async fn load_all_signed_prekeys(&self) -> Result<Vec<(u32, Vec<u8>)>> {
        let mut all = Vec::new();
        for row in self.rows(SIGNED_PREKEY, None).await? {
            let id = row.n1.unwrap_or_default() as u32;
            all.push((id, self.open_row(SIGNED_PREKEY, &row)?));
        }
        Ok(all)
    }

    async fn remove_signed_prekey(&self, id: u32) -> Result<()> {
        self.remove_one(SIGNED_PREKEY, &id.to_string()).await
    }

    async fn put_sender_key(&self, address: &str, record: &[u8]) -> Result<()> {
        self.put_value(SENDER_KEY, address, "", record).await
    }

    async fn put_sender_keys_batch(&self, sender_keys: &[(Arc<str>, Bytes)]) -> Result<()> {
        let rows = sender_keys
            .iter()
            .map(|(address, record)| self.seal_row(SENDER_KEY, address, "", record))
            .collect();
        self.put_rows(SENDER_KEY, rows).await
    }

    async fn get_sender_key(&self, address: &str) -> Result<Option<Vec<u8>>> {
        self.value(SENDER_KEY, address, "").await
    }

    async fn delete_sender_key(&self, address: &str) -> Result<()> {
        self.remove_one(SENDER_KEY, address).await
    }
}

#[async_trait]
impl AppSyncStore for PgBackend {
    async fn get_sync_key(&self, key_id: &[u8]) -> Result<Option<AppStateSyncKey>> {
        self.value(SYNC_KEY, &hex::encode(key_id), "")
            .await?
            .map(|bytes| from_json(&bytes))
            .transpose()
    }

    async fn set_sync_key(&self, key_id: &[u8], key: AppStateSyncKey) -> Result<()> {
        self.put_value(SYNC_KEY, &hex::encode(key_id), "", &json(&key)?)
            .await?;
        self.put_value(LATEST_SYNC_KEY, "", "", key_id).await
    }

    async fn get_version(&self, name: &str) -> Result<HashState> {
        Ok(match self.value(APP_STATE_VERSION, name, "").await? {
            Some(bytes) => from_json(&bytes)?,
            None => HashState::default(),
        })
    }

    async fn set_version(&self, name: &str, state: HashState) -> Result<()> {
        self.put_value(APP_STATE_VERSION, name, "", &json(&state)?)
            .await
    }

    async fn put_mutation_macs(
        &self,
        name: &str,
        version: u64,
        mutations: &[AppStateMutationMAC],
    ) -> Result<()> {
        let rows = mutations
            .iter()
            .map(|m| StoredRow {
                n1: Some(version as i64),
                ..self.seal_row(MUTATION_MAC, name, &hex::encode(&m.index_mac), &m.value_mac)
            })
            .collect();
        self.put_rows(MUTATION_MAC, rows).await
    }

    async fn get_mutation_mac(&self, name: &str, index_mac: &[u8]) -> Result<Option<Vec<u8>>> {
        self.value(MUTATION_MAC, name, &hex::encode(index_mac))
            .await
    }

    async fn delete_mutation_macs(&self, name: &str, index_macs: &[Vec<u8>]) -> Result<()> {
        let subs: Vec<String> = index_macs.iter().map(hex::encode).collect();
        self.remove(MUTATION_MAC, Select::KeySubs(name, &subs))
            .await
            .map(|_| ())
    }

    async fn clear_mutation_macs(&self, name: &str) -> Result<()> {
        self.remove(MUTATION_MAC, Select::Key(name))
            .await
            .map(|_| ())
    }

    async fn get_latest_sync_key_id(&self) -> Result<Option<Vec<u8>>> {
        self.value(LATEST_SYNC_KEY, "", "").await
    }
}

#[async_trait]
impl ProtocolStore for PgBackend {
    async fn get_sender_key_devices(&self, group_jid: &str) -> Result<Vec<(String, bool)>> {
        Ok(self
            .rows(SENDER_KEY_DEVICE, Some(group_jid))
            .await?
            .into_iter()
            .map(|row| (row.sub, row.flag))
            .collect())
    }

    async fn set_sender_key_status(&self, group_jid: &str, entries: &[(&str, bool)]) -> Result<()> {
        let rows = entries
            .iter()
            .map(|(device, has_key)| StoredRow {
                flag: *has_key,
                ..self.seal_row(SENDER_KEY_DEVICE, group_jid, device, b"")
            })
            .collect();
        self.put_rows(SENDER_KEY_DEVICE, rows).await
    }

    async fn clear_sender_key_devices(&self, group_jid: &str) -> Result<()> {
        self.remove(SENDER_KEY_DEVICE, Select::Key(group_jid))
            .await
            .map(|_| ())
    }

    async fn delete_sender_key_device_rows(&self, device_jids: &[&str]) -> Result<()> {
        if device_jids.is_empty() {
            return Ok(());
        }
        let subs: Vec<String> = device_jids.iter().map(|d| d.to_string()).collect();
        self.remove(SENDER_KEY_DEVICE, Select::Subs(&subs))
            .await
            .map(|_| ())
    }

    async fn clear_all_sender_key_devices(&self) -> Result<()> {
        self.remove(SENDER_KEY_DEVICE, Select::All)
            .await
            .map(|_| ())
    }

    async fn get_lid_mapping(&self, lid: &str) -> Result<Option<LidPnMappingEntry>> {
        self.value(LID, lid, "")
            .await?
            .map(|bytes| from_json(&bytes))
            .transpose()
    }

    async fn get_pn_mapping(&self, phone: &str) -> Result<Option<LidPnMappingEntry>> {
        match self.value(PN_TO_LID, phone, "").await? {
            Some(lid) => {
                let lid = String::from_utf8(lid)
                    .map_err(|err| StoreError::Serialization(Box::new(err)))?;
                self.get_lid_mapping(&lid).await
            }
            None => Ok(None),
        }
    }

    async fn put_lid_mapping(&self, entry: &LidPnMappingEntry) -> Result<()> {
        // A LID that moved to another phone drops its old reverse entry.
        if let Some(old) = self.get_lid_mapping(&entry.lid).await?
            && old.phone_number != entry.phone_number
        {
            self.remove_one(PN_TO_LID, &old.phone_number).await?;
        }
        self.put_value(PN_TO_LID, &entry.phone_number, "", entry.lid.as_bytes())
            .await?;
        self.put_value(LID, &entry.lid, "", &json(entry)?).await
    }

    async fn get_all_lid_mappings(&self) -> Result<Vec<LidPnMappingEntry>> {
        let mut all = Vec::new();
        for row in self.rows(LID, None).await? {
            all.push(from_json(&self.open_row(LID, &row)?)?);
        }
        Ok(all)
    }

    async fn save_base_key(&self, address: &str, message_id: &str, base_key: &[u8]) -> Result<()> {
        self.put_value(BASE_KEY, address, message_id, base_key)
            .await
    }

    async fn has_same_base_key(
        &self,
        address: &str,
        message_id: &str,
        current_base_key: &[u8],
    ) -> Result<bool> {
        Ok(self
            .value(BASE_KEY, address, message_id)
            .await?
            .is_some_and(|stored| stored == current_base_key))
    }

    async fn delete_base_key(&self, address: &str, message_id: &str) -> Result<()> {
        let subs = [message_id.to_string()];
        self.remove(BASE_KEY, Select::KeySubs(address, &subs))
            .await
            .map(|_| ())
    }

    async fn update_device_list(&self, record: DeviceListRecord) -> Result<()> {
        self.put_value(DEVICE_LIST, &record.user, "", &json(&record)?)
            .await
    }

    async fn get_devices(&self, user: &str) -> Result<Option<DeviceListRecord>> {
        self.value(DEVICE_LIST, user, "")
            .await?
            .map(|bytes| from_json(&bytes))
            .transpose()
    }

    async fn delete_devices(&self, user: &str) -> Result<()> {
        self.remove_one(DEVICE_LIST, user).await
    }

    async fn get_group_metadata(&self, group_jid: &str) -> Result<Option<Vec<u8>>> {
        self.value(GROUP_METADATA, group_jid, "").await
    }

    async fn put_group_metadata(&self, group_jid: &str, blob: &[u8]) -> Result<()> {
        self.put_value(GROUP_METADATA, group_jid, "", blob).await
    }

    async fn delete_group_metadata(&self, group_jid: &str) -> Result<()> {
        self.remove_one(GROUP_METADATA, group_jid).await
    }

    async fn get_tc_token(&self, jid: &str) -> Result<Option<TcTokenEntry>> {
        match self.row(TC_TOKEN, jid, "").await? {
            Some(row) => Ok(Some(TcTokenEntry {
                token: self.open_row(TC_TOKEN, &row)?,
                token_timestamp: row.n1.unwrap_or_default(),
                sender_timestamp: row.n2,
            })),
            None => Ok(None),
        }
    }

    async fn put_tc_token(&self, jid: &str, entry: &TcTokenEntry) -> Result<()> {
        let row = StoredRow {
            n1: Some(entry.token_timestamp),
            n2: entry.sender_timestamp,
            flag: !entry.token.is_empty(),
            ..self.seal_row(TC_TOKEN, jid, "", &entry.token)
        };
        self.put_rows(TC_TOKEN, vec![row]).await
    }

    async fn delete_tc_token(&self, jid: &str) -> Result<()> {
        self.remove_one(TC_TOKEN, jid).await
    }

    async fn get_all_tc_token_jids(&self) -> Result<Vec<String>> {
        let client = self.client().await?;
        session_rows::keys(&client, self.number(), TC_TOKEN)
            .await
            .map_err(db)
    }

    async fn delete_expired_tc_tokens(&self, token_cutoff: i64, sender_cutoff: i64) -> Result<u32> {
        let client = self.client().await?;
        let deleted = session_rows::delete_stale_tokens(
            &client,
            self.number(),
            TC_TOKEN,
            token_cutoff,
            sender_cutoff,
        )
        .await
        .map_err(db)?;
        Ok(deleted as u32)
    }

    async fn touch_tc_token_sender_timestamp(
        &self,
        jid: &str,
        sender_timestamp: i64,
    ) -> Result<()> {
        let empty = self.key.seal(TC_TOKEN, jid, "", b"");
        let client = self.client().await?;
        session_rows::touch_sender_time(
            &client,
            self.number(),
            TC_TOKEN,
            jid,
            &empty,
            sender_timestamp,
        )
        .await
        .map_err(db)
    }

    async fn store_received_tc_token(
        &self,
        jid: &str,
        token: &[u8],
        token_timestamp: i64,
    ) -> Result<()> {
        let sealed_token = self.key.seal(TC_TOKEN, jid, "", token);
        let client = self.client().await?;
        session_rows::store_newer_token(
            &client,
            self.number(),
            TC_TOKEN,
            jid,
            &sealed_token,
            token_timestamp,
            !token.is_empty(),
        )
        .await
        .map_err(db)
    }

    async fn store_sent_message(
        &self,
        chat_jid: &str,
        message_id: &str,
        payload: &[u8],
    ) -> Result<()> {
        let client = self.client().await?;
        let stored = session_rows::count(&client, self.number(), SENT_MESSAGE)
            .await
            .map_err(db)?;
        if stored >= MAX_SENT_MESSAGES {
            let drop = stored - MAX_SENT_MESSAGES * 3 / 4;
            session_rows::delete_oldest(&client, self.number(), SENT_MESSAGE, drop)
                .await
                .map_err(db)?;
        }
        drop(client);
        let row = StoredRow {
            n1: Some(now_secs()),
            ..self.seal_row(SENT_MESSAGE, chat_jid, message_id, payload)
        };
        self.put_rows(SENT_MESSAGE, vec![row]).await
    }

    async fn take_sent_message(&self, chat_jid: &str, message_id: &str) -> Result<Option<Vec<u8>>> {
        let client = self.client().await?;
        let taken = session_rows::take(&client, self.number(), SENT_MESSAGE, chat_jid, message_id)
            .await
            .map_err(db)?;
        taken
            .map(|row| self.open_row(SENT_MESSAGE, &row))
            .transpose()
    }

    async fn delete_expired_sent_messages(&self, cutoff_timestamp: i64) -> Result<u32> {
        self.remove(SENT_MESSAGE, Select::N1Below(cutoff_timestamp))
            .await
            .map(|n| n as u32)
    }

    async fn store_pending_inbound(
        &self,
        chat: &str,
        sender: &str,
        id: &str,
        message: &[u8],
    ) -> Result<()> {
        let row = StoredRow {
            n1: Some(now_secs()),
            ..self.seal_row(PENDING_INBOUND, chat, &join(sender, id), message)
        };
        self.put_rows(PENDING_INBOUND, vec![row]).await
    }

    async fn get_pending_inbound(
        &self,
        chat: &str,
        sender: &str,
        id: &str,
    ) -> Result<Option<Vec<u8>>> {
        self.value(PENDING_INBOUND, chat, &join(sender, id)).await
    }

    async fn delete_pending_inbound(&self, chat: &str, sender: &str, id: &str) -> Result<()> {
        let subs = [join(sender, id)];
        self.remove(PENDING_INBOUND, Select::KeySubs(chat, &subs))
            .await
            .map(|_| ())
    }

    async fn delete_expired_pending_inbound(&self, cutoff_timestamp: i64) -> Result<u32> {
        self.remove(PENDING_INBOUND, Select::N1Below(cutoff_timestamp))
            .await
            .map(|n| n as u32)
    }
}

#[async_trait]
impl MsgSecretStore for PgBackend {
    async fn put_msg_secrets(&self, entries: Vec<MsgSecretEntry>) -> Result<usize> {
        let stored = entries.len();
        // One statement cannot touch a row twice: the last entry for a key
        // wins, its times merged with the earlier ones as the store would.
        let mut merged: HashMap<(String, String), (Vec<u8>, i64, i64)> = HashMap::new();
        for entry in entries {
            let key = (entry.chat.to_string(), join(&entry.sender, &entry.msg_id));
            let value =
                merged
                    .entry(key)
                    .or_insert((Vec::new(), entry.expires_at, entry.message_ts));
            value.0 = entry.secret.to_vec();
            value.1 =
                whatsapp_rust::store::traits::merge_msg_secret_expiry(value.1, entry.expires_at);
            value.2 = whatsapp_rust::store::traits::merge_msg_secret_message_ts(
                value.2,
                entry.message_ts,
            );
        }
        let mut batch = NewRows::default();
        for ((chat, sub), (secret, expires_at, message_ts)) in merged {
            batch.push(StoredRow {
                n1: Some(expires_at),
                n2: Some(message_ts),
                ..self.seal_row(MSG_SECRET, &chat, &sub, &secret)
            });
        }
        let client = self.client().await?;
        session_rows::put_merging_times(&client, self.number(), MSG_SECRET, &batch)
            .await
            .map_err(db)?;
        Ok(stored)
    }

    async fn get_msg_secret(
        &self,
        chat: &str,
        sender: &str,
        msg_id: &str,
    ) -> Result<Option<Vec<u8>>> {
        self.value(MSG_SECRET, chat, &join(sender, msg_id)).await
    }

    async fn get_msg_secret_with_ts(
        &self,
        chat: &str,
        sender: &str,
        msg_id: &str,
    ) -> Result<Option<(Vec<u8>, i64)>> {
        match self.row(MSG_SECRET, chat, &join(sender, msg_id)).await? {
            Some(row) => Ok(Some((
                self.open_row(MSG_SECRET, &row)?,
                row.n2.unwrap_or_default(),
            ))),
            None => Ok(None),
        }
    }

    async fn delete_expired_msg_secrets(&self, cutoff_timestamp: i64) -> Result<u32> {
        let client = self.client().await?;
        let deleted =
            session_rows::delete_expired(&client, self.number(), MSG_SECRET, cutoff_timestamp)
                .await
                .map_err(db)?;
        Ok(deleted as u32)
    }
}

#[async_trait]
impl DeviceStore for PgBackend {
    async fn save(&self, device: &Device) -> Result<()> {
        self.put_value(DEVICE, "", "", &json(device)?).await
    }

    async fn load(&self) -> Result<Option<Device>> {
        let Some(bytes) = self.value(DEVICE, "", "").await? else {
            return Ok(None);
        };
        let mut device: Device = from_json(&bytes)?;
        // Not serialised by `Device`: rebuilt as the SQLite store does.
        device.device_props = Arc::new(DEVICE_PROPS.clone());
        device.client_profile = ClientProfile::web();
        Ok(Some(device))
    }

    async fn exists(&self) -> Result<bool> {
        self.has_row(DEVICE, "", "").await
    }

    async fn create(&self) -> Result<i32> {
        let id = self.next_device_id.fetch_add(1, Ordering::Relaxed);
        if !self.has_row(DEVICE, "", "").await? {
            self.save(&Device::new()).await?;
        }
        Ok(id)
    }
}
