//! The references that migration 0009 checks per statement instead of per
//! row (`contacts.tenant_id`, `list_members.list_id`, `list_members.contact_id`)
//! keep the guarantees of the foreign keys they replaced: a row naming a
//! missing parent fails with 23503, deleting a parent deletes its children
//! (also from a tenant's transaction, under row-level security), a delete and
//! an insert naming the same parent wait for each other, and the key columns
//! do not change.

use herald_shared::{
    db::{self, DbError, Scope},
    domain::PhoneNumber,
};
use herald_tests::{TestDb, mobile};
use serde_json::Map;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

struct Parents {
    tenant: Uuid,
    list: Uuid,
    contact: Uuid,
}

async fn parents(db: &TestDb) -> Parents {
    let client = db.pool.get().await.unwrap();
    let tenant = Uuid::now_v7();
    db::tenants::insert(&client, tenant, "t").await.unwrap();
    let list = db::lists::insert(&client, tenant, "l").await.unwrap().id;
    let phone = PhoneNumber::parse(&mobile(1, 1), None).unwrap();
    let contact = db::contacts::insert(&client, tenant, &phone, None, &Map::new())
        .await
        .unwrap()
        .id;
    Parents {
        tenant,
        list,
        contact,
    }
}

async fn count(db: &TestDb, query: &str, id: Uuid) -> i64 {
    let client = db.pool.get().await.unwrap();
    client.query_one(query, &[&id]).await.unwrap().get(0)
}

async fn members_of_contact(db: &TestDb, contact: Uuid) -> i64 {
    count(
        db,
        "SELECT count(*) FROM list_members WHERE contact_id = $1",
        contact,
    )
    .await
}

/// The SQLSTATE and constraint of a failed statement.
fn violation(err: &DbError) -> (SqlState, Option<String>) {
    let DbError::Query(err) = err else {
        panic!("not a query error: {err}")
    };
    let db_error = err.as_db_error().expect("an error from the server");
    (
        db_error.code().clone(),
        db_error.constraint().map(str::to_string),
    )
}

fn fk(constraint: &str) -> (SqlState, Option<String>) {
    (
        SqlState::FOREIGN_KEY_VIOLATION,
        Some(constraint.to_string()),
    )
}

#[tokio::test]
async fn a_row_naming_a_missing_parent_fails_and_nothing_is_written() {
    let db = TestDb::create().await;
    let p = parents(&db).await;
    let client = db.pool.get().await.unwrap();
    let missing = Uuid::now_v7();

    // One good contact and one missing: the whole statement fails.
    let err = db::lists::add_members(&client, p.list, &[p.contact, missing])
        .await
        .unwrap_err();
    assert_eq!(violation(&err), fk("list_members_contact_id_fkey"));
    let err = db::lists::add_members(&client, missing, &[p.contact])
        .await
        .unwrap_err();
    assert_eq!(violation(&err), fk("list_members_list_id_fkey"));
    let phone = PhoneNumber::parse(&mobile(1, 2), None).unwrap();
    let err = db::contacts::insert(&client, missing, &phone, None, &Map::new())
        .await
        .unwrap_err();
    assert_eq!(violation(&err), fk("contacts_tenant_id_fkey"));

    assert_eq!(members_of_contact(&db, p.contact).await, 0);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM contacts WHERE tenant_id = $1",
            missing
        )
        .await,
        0
    );
    // The references that exist are accepted.
    assert_eq!(
        db::lists::add_members(&client, p.list, &[p.contact])
            .await
            .unwrap(),
        1
    );
}

#[tokio::test]
async fn deleting_a_parent_deletes_its_children() {
    let db = TestDb::create().await;
    let p = parents(&db).await;
    let client = db.pool.get().await.unwrap();
    let second = db::lists::insert(&client, p.tenant, "second")
        .await
        .unwrap()
        .id;
    db::lists::add_members(&client, p.list, &[p.contact])
        .await
        .unwrap();
    db::lists::add_members(&client, second, &[p.contact])
        .await
        .unwrap();

    // A list deleted by the API, in a tenant's transaction: row-level security
    // no longer shows the members of a deleted list, the cascade must still
    // reach them.
    let tenant_pool = db::connect_as(&db.config(), "references-test", Scope::Tenant).unwrap();
    let mut tenant_client = tenant_pool.get().await.unwrap();
    let tx = db::tenant_tx(&mut tenant_client, p.tenant).await.unwrap();
    assert!(db::lists::delete(&tx, p.tenant, p.list).await.unwrap());
    let scope: Option<String> = tx
        .query_one("SELECT current_setting('herald.scope', true)", &[])
        .await
        .unwrap()
        .get(0);
    assert_ne!(
        scope.as_deref(),
        Some("service"),
        "the trigger put the scope back"
    );
    tx.commit().await.unwrap();
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM list_members WHERE list_id = $1",
            p.list
        )
        .await,
        0
    );
    assert_eq!(members_of_contact(&db, p.contact).await, 1);

    let tx = db::tenant_tx(&mut tenant_client, p.tenant).await.unwrap();
    assert!(
        db::contacts::delete(&tx, p.tenant, p.contact)
            .await
            .unwrap()
    );
    tx.commit().await.unwrap();
    assert_eq!(members_of_contact(&db, p.contact).await, 0);

    let phone = PhoneNumber::parse(&mobile(1, 3), None).unwrap();
    db::contacts::insert(&client, p.tenant, &phone, None, &Map::new())
        .await
        .unwrap();
    client
        .execute("DELETE FROM tenants WHERE id = $1", &[&p.tenant])
        .await
        .unwrap();
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM contacts WHERE tenant_id = $1",
            p.tenant
        )
        .await,
        0
    );
}

#[tokio::test]
async fn a_delete_waits_for_the_insert_naming_its_parent_and_takes_its_rows() {
    let db = TestDb::create().await;
    let p = parents(&db).await;
    let mut inserting = db.pool.get().await.unwrap();
    let insert = inserting.transaction().await.unwrap();
    db::lists::add_members(&insert, p.list, &[p.contact])
        .await
        .unwrap();

    let deleting = db.pool.get().await.unwrap();
    let (tenant, contact) = (p.tenant, p.contact);
    let delete =
        tokio::spawn(async move { db::contacts::delete(&deleting, tenant, contact).await });
    // Without the parent locked, the delete would not wait, its cascade would
    // miss the uncommitted member, and the member would outlive its contact.
    db.until_waiting_for_a_lock("the delete to wait for the insert", "DELETE FROM contacts%")
        .await;
    insert.commit().await.unwrap();
    assert!(delete.await.unwrap().unwrap());
    assert_eq!(members_of_contact(&db, p.contact).await, 0);
}

#[tokio::test]
async fn an_insert_naming_a_parent_being_deleted_waits_then_fails() {
    let db = TestDb::create().await;
    let p = parents(&db).await;
    let mut deleting = db.pool.get().await.unwrap();
    let delete = deleting.transaction().await.unwrap();
    assert!(
        db::contacts::delete(&delete, p.tenant, p.contact)
            .await
            .unwrap()
    );

    let inserting = db.pool.get().await.unwrap();
    let (list, contact) = (p.list, p.contact);
    let insert =
        tokio::spawn(async move { db::lists::add_members(&inserting, list, &[contact]).await });
    db.until_waiting_for_a_lock(
        "the insert to wait for the delete",
        "INSERT INTO list_members%",
    )
    .await;
    delete.commit().await.unwrap();
    let err = insert.await.unwrap().unwrap_err();
    assert_eq!(violation(&err), fk("list_members_contact_id_fkey"));
    assert_eq!(members_of_contact(&db, p.contact).await, 0);
}

#[tokio::test]
async fn reference_columns_do_not_change() {
    let db = TestDb::create().await;
    let p = parents(&db).await;
    let client = db.pool.get().await.unwrap();
    db::lists::add_members(&client, p.list, &[p.contact])
        .await
        .unwrap();
    let other = Uuid::now_v7();
    db::tenants::insert(&client, other, "other").await.unwrap();
    for statement in [
        "UPDATE list_members SET contact_id = gen_random_uuid() WHERE list_id = $1",
        "UPDATE list_members SET list_id = gen_random_uuid() WHERE list_id = $1",
        "UPDATE lists SET id = gen_random_uuid() WHERE id = $1",
    ] {
        let err = client.execute(statement, &[&p.list]).await.unwrap_err();
        assert_eq!(
            err.code(),
            Some(&SqlState::FOREIGN_KEY_VIOLATION),
            "{statement}"
        );
    }
    for statement in [
        "UPDATE contacts SET id = gen_random_uuid() WHERE id = $1",
        "UPDATE contacts SET tenant_id = (SELECT id FROM tenants WHERE name = 'other') WHERE id = $1",
    ] {
        let err = client.execute(statement, &[&p.contact]).await.unwrap_err();
        assert_eq!(
            err.code(),
            Some(&SqlState::FOREIGN_KEY_VIOLATION),
            "{statement}"
        );
    }
    // Updates that leave the references alone go through.
    client
        .execute(
            "UPDATE contacts SET name = 'n' WHERE id = $1",
            &[&p.contact],
        )
        .await
        .unwrap();
    assert_eq!(members_of_contact(&db, p.contact).await, 1);
}
