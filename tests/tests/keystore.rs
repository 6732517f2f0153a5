//! The Postgres session store against `wacore`'s own `InMemoryBackend`: one
//! sequence of operations covering every method of the five storage traits,
//! run on both, must give identical answers. Plus: at rest the values are
//! sealed (a `pg_dump` holds none of the key bytes in clear), a value moved
//! to another row does not open, and the master key is checked at start.

use std::{collections::HashMap, sync::Arc};

use herald_tests::{TestDb, fixtures::Fixture};
use herald_worker::{
    keystore::{self, DataKey, KeyError, MasterKey},
    session::whatsapp::{
        library::{
            bytes::Bytes,
            store::traits::{
                AppStateSyncKey, Backend, DeviceInfo, DeviceListRecord, LidPnMappingEntry,
                MsgSecretEntry, PendingInboundKey, PendingInboundRow, SignalStore, TcTokenEntry,
            },
            wacore::{
                appstate::{hash::HashState, processor::AppStateMutationMAC},
                store::{Device, InMemoryBackend},
            },
        },
        store::PgBackend,
    },
};
use uuid::Uuid;

/// Distinctive secret bytes, to look for in a dump afterwards.
fn secret(tag: u8) -> [u8; 32] {
    let mut bytes = [0u8; 32];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = tag.wrapping_mul(31).wrapping_add(i as u8 * 7) ^ 0xA5;
    }
    bytes
}

fn lid(lid: &str, phone: &str, at: i64) -> LidPnMappingEntry {
    LidPnMappingEntry {
        lid: lid.into(),
        phone_number: phone.into(),
        created_at: at,
        updated_at: at,
        learning_source: "usync".into(),
    }
}

fn sorted<T: std::fmt::Debug>(items: Vec<T>) -> String {
    let mut shown: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
    shown.sort();
    format!("{shown:?}")
}

/// Runs every store method in a fixed order and records each answer.
async fn exercise(b: &dyn Backend, device: &Device) -> Vec<String> {
    let mut log: Vec<String> = Vec::new();
    macro_rules! rec {
        ($label:expr, $value:expr) => {
            log.push(format!("{}: {:?}", $label, $value))
        };
    }
    let alice = "5511900000001@s.whatsapp.net";
    let alice_dev = "5511900000001:3@s.whatsapp.net";
    let bob = "5511900000002@s.whatsapp.net";

    // SignalStore
    rec!("load_identity none", b.load_identity(alice).await.unwrap());
    b.put_identity(alice, secret(1)).await.unwrap();
    b.put_identities_batch(&[
        (Arc::from(bob), secret(2)),
        (Arc::from(alice_dev), secret(3)),
    ])
    .await
    .unwrap();
    rec!("load_identity", b.load_identity(alice).await.unwrap());
    rec!(
        "load_identity dev",
        b.load_identity(alice_dev).await.unwrap()
    );
    b.delete_identity(bob).await.unwrap();
    rec!("identity deleted", b.load_identity(bob).await.unwrap());
    rec!("get_session none", b.get_session(alice).await.unwrap());
    b.put_session(alice, &secret(4)).await.unwrap();
    b.put_sessions_batch(&[
        (Arc::from(bob), Bytes::from(secret(5).to_vec())),
        (Arc::from(alice), Bytes::from(secret(6).to_vec())),
    ])
    .await
    .unwrap();
    rec!("get_session", b.get_session(alice).await.unwrap());
    rec!("has_session", b.has_session(bob).await.unwrap());
    b.delete_session(bob).await.unwrap();
    rec!("has_session deleted", b.has_session(bob).await.unwrap());
    for user in [
        "5511900000001",
        "5511900000002",
        "551190000000",
        "5511900000003",
    ] {
        rec!(
            format!("has_signal_state_for_user {user}"),
            b.has_signal_state_for_user(user).await.unwrap()
        );
    }
    rec!("max prekey empty", b.get_max_prekey_id().await.unwrap());
    b.store_prekey(7, &secret(7), false).await.unwrap();
    b.store_prekeys_batch(
        &[
            (8, Bytes::from(secret(8).to_vec())),
            (30, Bytes::from(secret(9).to_vec())),
        ],
        true,
    )
    .await
    .unwrap();
    rec!("load_prekey", b.load_prekey(8).await.unwrap());
    rec!("load_prekey none", b.load_prekey(9).await.unwrap());
    rec!(
        "load_prekeys_batch",
        b.load_prekeys_batch(&[30, 9, 7, 8]).await.unwrap()
    );
    b.mark_prekeys_uploaded(&[7, 99]).await.unwrap();
    rec!("marked does not add", b.load_prekey(99).await.unwrap());
    rec!("max prekey", b.get_max_prekey_id().await.unwrap());
    b.remove_prekey(30).await.unwrap();
    rec!(
        "max prekey after remove",
        b.get_max_prekey_id().await.unwrap()
    );
    b.store_signed_prekey(1, &secret(10)).await.unwrap();
    b.store_signed_prekey(2, &secret(11)).await.unwrap();
    b.store_signed_prekey(1, &secret(12)).await.unwrap();
    rec!("load_signed_prekey", b.load_signed_prekey(1).await.unwrap());
    rec!(
        "load_all_signed_prekeys",
        sorted(b.load_all_signed_prekeys().await.unwrap())
    );
    b.remove_signed_prekey(2).await.unwrap();
    rec!("signed removed", b.load_signed_prekey(2).await.unwrap());
    b.put_sender_key("group@g.us::alice", &secret(13))
        .await
        .unwrap();
    b.put_sender_keys_batch(&[(
        Arc::from("group@g.us::bob"),
        Bytes::from(secret(14).to_vec()),
    )])
    .await
    .unwrap();
    rec!(
        "get_sender_key",
        b.get_sender_key("group@g.us::bob").await.unwrap()
    );
    b.delete_sender_key("group@g.us::alice").await.unwrap();
    rec!(
        "sender key deleted",
        b.get_sender_key("group@g.us::alice").await.unwrap()
    );

    // AppSyncStore
    rec!(
        "latest sync key none",
        b.get_latest_sync_key_id().await.unwrap()
    );
    rec!("get_sync_key none", b.get_sync_key(b"key-1").await.unwrap());
    for (id, tag) in [(&b"key-1"[..], 15u8), (&b"key-2"[..], 16)] {
        b.set_sync_key(
            id,
            AppStateSyncKey {
                key_data: secret(tag).to_vec(),
                fingerprint: vec![tag],
                timestamp: 1_700_000_000 + i64::from(tag),
            },
        )
        .await
        .unwrap();
    }
    rec!("get_sync_key", b.get_sync_key(b"key-1").await.unwrap());
    rec!("latest sync key", b.get_latest_sync_key_id().await.unwrap());
    rec!(
        "get_version default",
        serde_json::to_string(&b.get_version("regular").await.unwrap()).unwrap()
    );
    let mut state = HashState {
        version: 42,
        ..HashState::default()
    };
    state.hash[0] = 9;
    state
        .index_value_map
        .insert("idx".into(), secret(17).to_vec());
    b.set_version("regular", state).await.unwrap();
    rec!(
        "get_version",
        serde_json::to_string(&b.get_version("regular").await.unwrap()).unwrap()
    );
    let mac = |i: u8, v: u8| AppStateMutationMAC {
        index_mac: vec![i; 32],
        value_mac: vec![v; 32],
    };
    b.put_mutation_macs("regular", 1, &[mac(1, 10), mac(2, 20), mac(3, 30)])
        .await
        .unwrap();
    b.put_mutation_macs("critical", 1, &[mac(1, 40)])
        .await
        .unwrap();
    rec!(
        "get_mutation_mac",
        b.get_mutation_mac("regular", &[2; 32]).await.unwrap()
    );
    let found: HashMap<[u8; 32], Vec<u8>> = b
        .get_mutation_macs("regular", &[[1; 32], [9; 32], [3; 32]])
        .await
        .unwrap();
    rec!("get_mutation_macs", sorted(found.into_iter().collect()));
    b.delete_mutation_macs("regular", &[vec![1; 32]])
        .await
        .unwrap();
    rec!(
        "mac deleted",
        b.get_mutation_mac("regular", &[1; 32]).await.unwrap()
    );
    b.clear_mutation_macs("regular").await.unwrap();
    rec!(
        "macs cleared",
        b.get_mutation_mac("regular", &[3; 32]).await.unwrap()
    );
    rec!(
        "other collection kept",
        b.get_mutation_mac("critical", &[1; 32]).await.unwrap()
    );

    // ProtocolStore: sender-key devices
    b.set_sender_key_status("g1@g.us", &[("d1", true), ("d2", false)])
        .await
        .unwrap();
    b.set_sender_key_status("g2@g.us", &[("d1", false), ("d3", true)])
        .await
        .unwrap();
    b.set_sender_key_status("g1@g.us", &[("d2", true)])
        .await
        .unwrap();
    rec!(
        "sender key devices",
        sorted(b.get_sender_key_devices("g1@g.us").await.unwrap())
    );
    b.delete_sender_key_device_rows(&["d1"]).await.unwrap();
    rec!(
        "after deleting d1 (g2)",
        sorted(b.get_sender_key_devices("g2@g.us").await.unwrap())
    );
    b.delete_sender_key_device_rows(&[]).await.unwrap();
    b.clear_sender_key_devices("g1@g.us").await.unwrap();
    rec!(
        "g1 cleared",
        b.get_sender_key_devices("g1@g.us").await.unwrap()
    );
    b.clear_all_sender_key_devices().await.unwrap();
    rec!(
        "all cleared",
        b.get_sender_key_devices("g2@g.us").await.unwrap()
    );

    // LID <-> PN
    rec!("lid none", b.get_lid_mapping("100").await.unwrap());
    b.put_lid_mapping(&lid("100", "5511900000001", 1))
        .await
        .unwrap();
    b.put_lid_mappings(&[
        lid("200", "5511900000002", 2),
        lid("300", "5511900000003", 3),
    ])
    .await
    .unwrap();
    rec!("get_lid_mapping", b.get_lid_mapping("200").await.unwrap());
    rec!(
        "get_pn_mapping",
        b.get_pn_mapping("5511900000001").await.unwrap()
    );
    // A LID moving to another phone drops the old reverse entry.
    b.put_lid_mapping(&lid("100", "5511900000009", 4))
        .await
        .unwrap();
    rec!(
        "old phone forgotten",
        b.get_pn_mapping("5511900000001").await.unwrap()
    );
    rec!(
        "new phone",
        b.get_pn_mapping("5511900000009").await.unwrap()
    );
    rec!(
        "all lid mappings",
        sorted(b.get_all_lid_mappings().await.unwrap())
    );

    // Base keys
    b.save_base_key(alice, "m1", &secret(18)).await.unwrap();
    rec!(
        "same base key",
        b.has_same_base_key(alice, "m1", &secret(18)).await.unwrap()
    );
    rec!(
        "other base key",
        b.has_same_base_key(alice, "m1", &secret(19)).await.unwrap()
    );
    rec!(
        "unknown message",
        b.has_same_base_key(alice, "m2", &secret(18)).await.unwrap()
    );
    b.delete_base_key(alice, "m1").await.unwrap();
    rec!(
        "base key deleted",
        b.has_same_base_key(alice, "m1", &secret(18)).await.unwrap()
    );

    // Device lists
    let record = |user: &str, ts: i64| DeviceListRecord {
        user: user.into(),
        devices: vec![
            DeviceInfo {
                device_id: 0,
                key_index: None,
                is_hosted: false,
            },
            DeviceInfo {
                device_id: 3,
                key_index: Some(2),
                is_hosted: true,
            },
        ],
        timestamp: ts,
        phash: Some("ph".into()),
        raw_id: Some(1),
    };
    rec!(
        "devices none",
        b.get_devices("5511900000001").await.unwrap()
    );
    b.update_device_list(record("5511900000001", 1))
        .await
        .unwrap();
    b.update_device_lists(vec![record("5511900000002", 2), record("5511900000001", 3)])
        .await
        .unwrap();
    rec!("get_devices", b.get_devices("5511900000001").await.unwrap());
    b.delete_devices("5511900000002").await.unwrap();
    rec!(
        "devices deleted",
        b.get_devices("5511900000002").await.unwrap()
    );

    // Group metadata
    rec!("group none", b.get_group_metadata("g@g.us").await.unwrap());
    b.put_group_metadata("g@g.us", b"v1").await.unwrap();
    b.put_group_metadata("g@g.us", b"v2").await.unwrap();
    rec!("group", b.get_group_metadata("g@g.us").await.unwrap());
    b.delete_group_metadata("g@g.us").await.unwrap();
    rec!(
        "group deleted",
        b.get_group_metadata("g@g.us").await.unwrap()
    );

    // Trusted-contact tokens
    rec!("tc none", b.get_tc_token(alice).await.unwrap());
    b.put_tc_token(
        alice,
        &TcTokenEntry {
            token: secret(20).to_vec(),
            token_timestamp: 1000,
            sender_timestamp: None,
        },
    )
    .await
    .unwrap();
    b.touch_tc_token_sender_timestamp(alice, 1500)
        .await
        .unwrap();
    b.touch_tc_token_sender_timestamp(alice, 1200)
        .await
        .unwrap();
    b.touch_tc_token_sender_timestamp(bob, 900).await.unwrap();
    b.store_received_tc_token(alice, &secret(21), 800)
        .await
        .unwrap();
    rec!("older token kept", b.get_tc_token(alice).await.unwrap());
    b.store_received_tc_token(alice, &secret(22), 2000)
        .await
        .unwrap();
    b.store_received_tc_token(bob, &secret(23), 100)
        .await
        .unwrap();
    b.store_received_tc_token("carol@s.whatsapp.net", &secret(24), 50)
        .await
        .unwrap();
    rec!("newer token stored", b.get_tc_token(alice).await.unwrap());
    rec!(
        "token over an empty one",
        b.get_tc_token(bob).await.unwrap()
    );
    rec!("tc jids", sorted(b.get_all_tc_token_jids().await.unwrap()));
    rec!(
        "expired tokens",
        b.delete_expired_tc_tokens(150, 950).await.unwrap()
    );
    rec!(
        "tc jids after",
        sorted(b.get_all_tc_token_jids().await.unwrap())
    );
    b.delete_tc_token(alice).await.unwrap();
    rec!("tc deleted", b.get_tc_token(alice).await.unwrap());

    // Sent messages
    b.store_sent_message(alice, "s1", &secret(25))
        .await
        .unwrap();
    b.store_sent_message(alice, "s2", &secret(26))
        .await
        .unwrap();
    rec!("take", b.take_sent_message(alice, "s1").await.unwrap());
    rec!(
        "take twice",
        b.take_sent_message(alice, "s1").await.unwrap()
    );
    rec!(
        "none expired",
        b.delete_expired_sent_messages(0).await.unwrap()
    );
    rec!(
        "all expired",
        b.delete_expired_sent_messages(i64::MAX).await.unwrap()
    );
    rec!("gone", b.take_sent_message(alice, "s2").await.unwrap());

    // Pending inbound
    rec!(
        "pending none",
        b.get_pending_inbound(alice, alice, "p1").await.unwrap()
    );
    b.store_pending_inbound(alice, alice, "p1", &secret(27))
        .await
        .unwrap();
    b.store_pending_inbound_batch(&[
        PendingInboundRow {
            chat: "g@g.us",
            sender: alice,
            id: "p2",
            message: &secret(28),
        },
        PendingInboundRow {
            chat: "g@g.us",
            sender: bob,
            id: "p2",
            message: &secret(29),
        },
    ])
    .await
    .unwrap();
    rec!(
        "pending",
        b.get_pending_inbound("g@g.us", bob, "p2").await.unwrap()
    );
    b.delete_pending_inbound(alice, alice, "p1").await.unwrap();
    rec!(
        "pending deleted",
        b.get_pending_inbound(alice, alice, "p1").await.unwrap()
    );
    b.delete_pending_inbound_batch(&[PendingInboundKey {
        chat: "g@g.us",
        sender: alice,
        id: "p2",
    }])
    .await
    .unwrap();
    rec!(
        "batch deleted",
        b.get_pending_inbound("g@g.us", alice, "p2").await.unwrap()
    );
    rec!(
        "none expired",
        b.delete_expired_pending_inbound(0).await.unwrap()
    );
    rec!(
        "expired",
        b.delete_expired_pending_inbound(i64::MAX).await.unwrap()
    );

    // MsgSecretStore
    rec!(
        "secret none",
        b.get_msg_secret(alice, alice, "x1").await.unwrap()
    );
    b.put_msg_secret(alice, alice, "x1", &secret(30))
        .await
        .unwrap();
    let entry = |id: &str, tag: u8, expires: i64, ts: i64| MsgSecretEntry {
        chat: Arc::from(alice),
        sender: Arc::from(bob),
        msg_id: Arc::from(id),
        secret: secret(tag),
        expires_at: expires,
        message_ts: ts,
    };
    rec!(
        "put_msg_secrets",
        b.put_msg_secrets(vec![entry("x2", 31, 500, 10), entry("x3", 32, 0, 20)])
            .await
            .unwrap()
    );
    // Merged on conflict: 0 (never) wins, later times win.
    b.put_msg_secrets(vec![entry("x2", 33, 700, 5), entry("x3", 34, 900, 30)])
        .await
        .unwrap();
    rec!(
        "secret with ts",
        b.get_msg_secret_with_ts(alice, bob, "x2").await.unwrap()
    );
    rec!(
        "never expires",
        b.get_msg_secret_with_ts(alice, bob, "x3").await.unwrap()
    );
    rec!(
        "secret",
        b.get_msg_secret(alice, alice, "x1").await.unwrap()
    );
    rec!(
        "expired 600",
        b.delete_expired_msg_secrets(600).await.unwrap()
    );
    rec!(
        "expired 800",
        b.delete_expired_msg_secrets(800).await.unwrap()
    );
    rec!("x2 gone", b.get_msg_secret(alice, bob, "x2").await.unwrap());
    rec!(
        "x3 kept",
        b.get_msg_secret(alice, bob, "x3").await.unwrap().is_some()
    );

    // DeviceStore
    rec!("exists before", b.exists().await.unwrap());
    rec!("load before", b.load().await.unwrap().is_some());
    rec!("create", b.create().await.unwrap());
    rec!("exists after create", b.exists().await.unwrap());
    rec!("create again", b.create().await.unwrap());
    b.save(device).await.unwrap();
    let loaded = b.load().await.unwrap().expect("saved");
    rec!("load", serde_json::to_string(&loaded).unwrap());
    rec!("props rebuilt", loaded.device_props.os.is_some());
    b.snapshot_db("conformance", None).await.unwrap();
    rec!("resource report", b.resource_report().await);
    log
}

async fn pg_backend(db: &TestDb, master: &MasterKey) -> (PgBackend, Uuid) {
    let fixture = Fixture::new(db).await;
    let number = fixture.number(db, 1, 100).await;
    let client = db.pool.get().await.unwrap();
    keystore::check_master_key(&client, master).await.unwrap();
    let key = DataKey::for_number(&client, master, fixture.tenant_id, number)
        .await
        .unwrap();
    (PgBackend::new(db.pool.clone(), Arc::new(key)), number)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_store_answers_exactly_like_wacores_in_memory_store() {
    let db = TestDb::create().await;
    let (master, _) = MasterKey::generate(1);
    let (postgres, _) = pg_backend(&db, &master).await;
    let device = Device::new();
    let memory = InMemoryBackend::new();
    let expected = exercise(&memory, &device).await;
    let actual = exercise(&postgres, &device).await;
    assert!(expected.len() > 80, "{} answers compared", expected.len());
    for (i, (want, got)) in expected.iter().zip(&actual).enumerate() {
        assert_eq!(got, want, "answer {i} differs");
    }
    assert_eq!(actual.len(), expected.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_are_sealed_at_rest_and_do_not_open_elsewhere() {
    let db = TestDb::create().await;
    let (master, _) = MasterKey::generate(1);
    let (postgres, number) = pg_backend(&db, &master).await;
    let device = Device::new();
    exercise(&postgres, &device).await;
    let a = "5511900000001@s.whatsapp.net";
    postgres.put_session(a, &secret(40)).await.unwrap();
    postgres
        .put_session("5511900000009@s.whatsapp.net", &secret(41))
        .await
        .unwrap();

    // A dump of the database holds none of the secrets in clear.
    // As Herald's own services see the data (row-level security applies to
    // the tables' owner too).
    let dump = std::process::Command::new("pg_dump")
        .args([
            "--data-only",
            "--no-owner",
            "--enable-row-security",
            &db.url,
        ])
        .env("PGOPTIONS", "-c herald.scope=service")
        .output()
        .expect("pg_dump runs");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dump = String::from_utf8_lossy(&dump.stdout).to_lowercase();
    assert!(dump.contains("session_rows"), "the dump has the table");
    // The device's private keys (serialised as private ‖ public bytes).
    let device_json = serde_json::to_value(&device).unwrap();
    let private_key = |field: &str| {
        let bytes: Vec<u8> = serde_json::from_value(device_json[field].clone()).unwrap();
        hex::encode(&bytes[..32])
    };
    let mut needles: Vec<String> = (1..=41u8).map(|t| hex::encode(secret(t))).collect();
    needles.push(hex::encode(device.adv_secret_key));
    needles.push(private_key("identity_key"));
    needles.push(private_key("noise_key"));
    needles.push(private_key("signed_pre_key"));
    for needle in &needles {
        // Any 16-byte stretch of a secret would be a leak.
        assert!(
            !dump.contains(&needle[..32]) && !dump.contains(&needle[32..]),
            "secret bytes {needle} appear in clear in the dump"
        );
    }

    // Swapping two rows' sealed values: neither opens any more.
    let client = db.pool.get().await.unwrap();
    client
        .execute(
            "WITH pair AS (
                 SELECT key, value FROM session_rows
                  WHERE number_id = $1 AND kind = 'session' AND key IN ($2, $3))
             UPDATE session_rows r SET value = p.value
               FROM pair p
              WHERE r.number_id = $1 AND r.kind = 'session' AND r.key <> p.key
                AND r.key IN ($2, $3)",
            &[&number, &a, &"5511900000009@s.whatsapp.net"],
        )
        .await
        .unwrap();
    assert!(
        postgres.get_session(a).await.is_err(),
        "a moved value does not open"
    );
    assert!(
        postgres
            .get_session("5511900000009@s.whatsapp.net")
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_master_key_is_refused_and_rotation_rewraps_every_data_key() {
    let db = TestDb::create().await;
    let (first, _) = MasterKey::generate(1);
    let (postgres, number) = pg_backend(&db, &first).await;
    postgres
        .put_session("x@s.whatsapp.net", b"state")
        .await
        .unwrap();
    let client = db.pool.get().await.unwrap();

    // Another key of the same version: refused before use.
    let (impostor, _) = MasterKey::generate(1);
    assert!(matches!(
        keystore::check_master_key(&client, &impostor).await,
        Err(KeyError::WrongMasterKey(1))
    ));
    assert!(MasterKey::from_env_var("HERALD_TEST_UNSET_MASTER_KEY").is_err());

    // Rotation to version 2 re-wraps; the old key no longer starts a worker.
    let (second, _) = MasterKey::generate(2);
    let mut rotating = db.pool.get().await.unwrap();
    assert_eq!(
        keystore::rotate_master_key(&mut rotating, &first, &second)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        keystore::rotate_master_key(&mut rotating, &first, &second)
            .await
            .unwrap(),
        0,
        "a second run changes nothing"
    );
    assert!(matches!(
        keystore::check_master_key(&client, &first).await,
        Err(KeyError::OtherMasterVersion { .. })
    ));
    keystore::check_master_key(&client, &second).await.unwrap();
    // The session opens under the new master key, unchanged.
    let key = DataKey::for_number(&client, &second, Uuid::nil(), number)
        .await
        .unwrap();
    let reopened = PgBackend::new(db.pool.clone(), Arc::new(key));
    assert_eq!(
        reopened
            .get_session("x@s.whatsapp.net")
            .await
            .unwrap()
            .as_deref(),
        Some(&b"state"[..])
    );
}
