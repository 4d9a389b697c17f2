//! The storage a process runs on: MongoDB (official driver, majority writes) or the embedded
//! in-process store. Each service builds its own repositories from it; each collection has
//! exactly one owning service.

use std::fmt;
use std::time::Duration;

use mongodb::bson::doc;
use mongodb::options::{Acknowledgment, ClientOptions, ReadConcern, WriteConcern};

use crate::config::Settings;

/// Where documents live.
#[derive(Clone)]
pub enum Store {
    /// In-process maps: for development and tests; nothing survives the process.
    Embedded,
    /// A MongoDB database.
    Mongo(mongodb::Database),
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Store::Embedded => f.write_str("Store::Embedded"),
            Store::Mongo(database) => write!(f, "Store::Mongo({})", database.name()),
        }
    }
}

impl Store {
    /// Connects as the settings say: MongoDB when `MONGODB_URI` is set, embedded otherwise.
    pub async fn connect(settings: &Settings) -> anyhow::Result<Store> {
        match &settings.mongodb_uri {
            None => Ok(Store::Embedded),
            Some(uri) => {
                let database = connect_mongo(
                    uri.expose(),
                    &settings.mongodb_database,
                    settings.mongodb_write_timeout,
                )
                .await?;
                Ok(Store::Mongo(database))
            }
        }
    }

    /// A line for the start-up banner; never includes credentials.
    pub fn describe(&self) -> String {
        match self {
            Store::Embedded => {
                "embedded in-process store (not durable: set MONGODB_URI for production)".to_owned()
            }
            Store::Mongo(database) => format!("MongoDB database {:?}", database.name()),
        }
    }

    /// Checks that the store answers; the embedded store always does.
    pub async fn ping(&self) -> anyhow::Result<()> {
        match self {
            Store::Embedded => Ok(()),
            Store::Mongo(database) => {
                database.run_command(doc! { "ping": 1 }).await?;
                Ok(())
            }
        }
    }
}

/// Connects to MongoDB with majority write and read concerns and checks it answers. A
/// majority write that the replica set cannot confirm within `write_timeout` fails
/// (`wtimeout`) instead of blocking its caller without bound.
pub async fn connect_mongo(
    uri: &str,
    database: &str,
    write_timeout: Duration,
) -> anyhow::Result<mongodb::Database> {
    let mut options = ClientOptions::parse(uri)
        .await
        .map_err(|error| anyhow::anyhow!("invalid setting MONGODB_URI: {error}"))?;
    options.app_name = Some("payouts".to_owned());
    options.write_concern = Some(
        WriteConcern::builder()
            .w(Acknowledgment::Majority)
            .w_timeout(write_timeout)
            .build(),
    );
    options.read_concern = Some(ReadConcern::majority());
    options.server_selection_timeout = Some(Duration::from_secs(10));
    let client = mongodb::Client::with_options(options)?;
    let database = client.database(database);
    database
        .run_command(doc! { "ping": 1 })
        .await
        .map_err(|error| anyhow::anyhow!("MongoDB at MONGODB_URI does not answer: {error}"))?;
    Ok(database)
}

/// True when a MongoDB error is a unique-index violation (E11000).
pub fn is_duplicate_key(error: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    match error.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(write_error)) => write_error.code == 11000,
        ErrorKind::InsertMany(insert_many) => insert_many
            .write_errors
            .iter()
            .flatten()
            .any(|write_error| write_error.code == 11000),
        ErrorKind::Command(command_error) => command_error.code == 11000,
        _ => error.to_string().contains("E11000"),
    }
}

/// The documents matching `filter`, in `sort` order, at most `limit`.
pub async fn find_many<T>(
    collection: &mongodb::Collection<T>,
    filter: mongodb::bson::Document,
    sort: mongodb::bson::Document,
    limit: usize,
) -> Result<Vec<T>, crate::error::ServiceError>
where
    T: serde::de::DeserializeOwned + Send + Sync,
{
    use futures::TryStreamExt as _;
    collection
        .find(filter)
        .sort(sort)
        .limit(i64::try_from(limit).unwrap_or(i64::MAX))
        .await
        .map_err(mongo_error)?
        .try_collect()
        .await
        .map_err(mongo_error)
}

/// The `field` values of the documents matching `filter` (a projection of that one field;
/// documents without it count as ""): counts for gauges, without an aggregation pipeline
/// (the MongoDB test server has none).
pub async fn field_values<T>(
    collection: &mongodb::Collection<T>,
    filter: mongodb::bson::Document,
    field: &str,
) -> Result<Vec<String>, crate::error::ServiceError>
where
    T: Send + Sync,
{
    use futures::TryStreamExt as _;
    let mut cursor = collection
        .clone_with_type::<mongodb::bson::Document>()
        .find(filter)
        .projection(mongodb::bson::doc! { field: 1 })
        .await
        .map_err(mongo_error)?;
    let mut values = Vec::new();
    while let Some(document) = cursor.try_next().await.map_err(mongo_error)? {
        values.push(document.get_str(field).unwrap_or_default().to_owned());
    }
    Ok(values)
}

/// Stores `document` under `id` if the stored document is still at `expected_version` (0:
/// none is stored yet): a versioned compare-and-set. `Ok(false)` when another writer got
/// there first.
pub async fn put_versioned<T>(
    collection: &mongodb::Collection<T>,
    id: &str,
    document: T,
    expected_version: i64,
) -> Result<bool, crate::error::ServiceError>
where
    T: serde::Serialize + Send + Sync,
{
    if expected_version == 0 {
        return match collection.insert_one(document).await {
            Ok(_) => Ok(true),
            Err(error) if is_duplicate_key(&error) => Ok(false),
            Err(error) => Err(mongo_error(error)),
        };
    }
    let replaced = collection
        .replace_one(
            mongodb::bson::doc! { "_id": id, "version": expected_version },
            document,
        )
        .await
        .map_err(mongo_error)?;
    Ok(replaced.matched_count == 1)
}

/// Adds the page cursor of a list ordered by (`field`, `_id`) to `filter`: the items after
/// `after` (an item's time and id), newest first (`descending`) or oldest first.
pub fn after_cursor(
    filter: &mut mongodb::bson::Document,
    field: &str,
    after: Option<(chrono::DateTime<chrono::Utc>, String)>,
    descending: bool,
) {
    let Some((at, id)) = after else {
        return;
    };
    let at = to_bson_time(at);
    let op = if descending { "$lt" } else { "$gt" };
    let mut tie = mongodb::bson::Document::new();
    tie.insert(field, at);
    tie.insert("_id", mongodb::bson::doc! { op: id });
    let mut beyond = mongodb::bson::Document::new();
    beyond.insert(field, mongodb::bson::doc! { op: at });
    filter.insert("$or", vec![beyond, tie]);
}

/// A MongoDB failure as a service error: retryable, cause logged, not shown.
pub fn mongo_error(error: mongodb::error::Error) -> crate::error::ServiceError {
    crate::error::ServiceError::unavailable("store unavailable", error)
}

/// Milliseconds precision is what MongoDB stores.
pub fn to_bson_time(time: chrono::DateTime<chrono::Utc>) -> mongodb::bson::DateTime {
    mongodb::bson::DateTime::from_millis(time.timestamp_millis())
}

pub fn from_bson_time(time: mongodb::bson::DateTime) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(time.timestamp_millis()).unwrap_or_default()
}

/// Truncates to milliseconds, the precision both stores keep, so they agree.
pub fn store_precision(time: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(time.timestamp_millis()).unwrap_or_default()
}
