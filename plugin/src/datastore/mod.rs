//! A small layer over `etcd-client` (v3 API): typed reads, atomic
//! compare-and-swap writes, and the rules for reaching etcd
//! (`members.rs`): one deadline per request over every call, retries and
//! re-reads included, and members that failed are not tried again while
//! others are untried. A write whose answer was lost may have committed,
//! so after a failed attempt the keys are re-read before the write is
//! tried again.

pub mod keys;
mod members;
pub mod model;

use etcd_client::{
    Certificate, Compare, CompareOp, GetOptions, Identity, TlsOptions, Txn, TxnOp, TxnOpResponse,
};
use members::{Failure, Members};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::config::EtcdConfig;

#[derive(Debug, thiserror::Error)]
pub enum DatastoreError {
    #[error(
        "etcd is unreachable (tried {endpoints}): {detail}. Check the etcd settings: \
         ETCD_ENDPOINTS, or [etcd] endpoints and the TLS files in the config file"
    )]
    Unreachable { endpoints: String, detail: String },
    #[error("etcd refused the request: {0}")]
    Request(String),
    #[error("etcd key {key} holds a document that cannot be parsed: {detail}")]
    Corrupt { key: String, detail: String },
    #[error("cannot set up the etcd client: {0}")]
    Setup(String),
    /// The snapshot revision a plan read at was compacted away: plan again.
    #[error("etcd compacted the revision a request was reading")]
    Compacted,
}

pub type Result<T> = std::result::Result<T, DatastoreError>;

/// A value read from etcd with the revision a compare-and-swap needs.
#[derive(Debug, Clone)]
pub struct Versioned<T> {
    pub key: String,
    pub value: T,
    pub mod_revision: i64,
}

/// One precondition of an atomic write.
#[derive(Debug, Clone)]
enum Guard {
    Absent(String),
    Unchanged(String, i64),
    /// No key under the prefix was created after the revision.
    NoneCreatedAfter(String, i64),
}

/// An atomic multi-key write: every guard must hold, then every put and
/// delete is applied in one etcd transaction, or nothing is.
#[derive(Debug, Default, Clone)]
pub struct WriteBatch {
    guards: Vec<Guard>,
    puts: Vec<(String, Vec<u8>)>,
    deletes: Vec<String>,
}

impl WriteBatch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates `key`; the batch fails if it exists.
    pub fn create<T: Serialize>(&mut self, key: &str, value: &T) -> &mut Self {
        self.guards.push(Guard::Absent(key.to_string()));
        self.put(key, value)
    }

    /// Replaces `key` if it is still at `mod_revision`.
    pub fn update<T: Serialize>(&mut self, key: &str, mod_revision: i64, value: &T) -> &mut Self {
        self.guards
            .push(Guard::Unchanged(key.to_string(), mod_revision));
        self.put(key, value)
    }

    /// Creates `key` when `mod_revision` is None, else updates it.
    pub fn upsert<T: Serialize>(
        &mut self,
        key: &str,
        mod_revision: Option<i64>,
        value: &T,
    ) -> &mut Self {
        match mod_revision {
            Some(rev) => self.update(key, rev, value),
            None => self.create(key, value),
        }
    }

    /// Deletes `key` if it is still at `mod_revision`.
    pub fn delete(&mut self, key: &str, mod_revision: i64) -> &mut Self {
        self.guards
            .push(Guard::Unchanged(key.to_string(), mod_revision));
        self.deletes.push(key.to_string());
        self
    }

    /// Applies the batch only while `key` is still at `mod_revision`
    /// (a read the batch depends on, written by nobody here).
    pub fn require_unchanged(&mut self, key: &str, mod_revision: i64) -> &mut Self {
        self.guards
            .push(Guard::Unchanged(key.to_string(), mod_revision));
        self
    }

    /// Applies the batch only if no key under `prefix` was created after
    /// `revision` (the listing the batch was planned on is still complete).
    pub fn require_no_keys_created_after(&mut self, prefix: &str, revision: i64) -> &mut Self {
        self.guards
            .push(Guard::NoneCreatedAfter(prefix.to_string(), revision));
        self
    }

    /// Deletes `key` whatever it holds (absent is fine).
    pub fn put_delete(&mut self, key: &str) -> &mut Self {
        self.deletes.push(key.to_string());
        self
    }

    /// Writes `key` whatever it holds (libcalico-go's Apply).
    pub fn put<T: Serialize>(&mut self, key: &str, value: &T) -> &mut Self {
        let bytes = serde_json::to_vec(value).expect("datastore documents always serialize");
        self.puts.push((key.to_string(), bytes));
        self
    }

    pub fn is_empty(&self) -> bool {
        self.puts.is_empty() && self.deletes.is_empty()
    }

    /// How many etcd operations the batch needs (etcd caps a txn at 128).
    pub fn len(&self) -> usize {
        self.puts.len() + self.deletes.len()
    }

    fn to_txn(&self) -> Txn {
        let compares: Vec<Compare> = self
            .guards
            .iter()
            .map(|g| match g {
                Guard::Absent(k) => Compare::version(k.as_str(), CompareOp::Equal, 0),
                Guard::Unchanged(k, rev) => {
                    Compare::mod_revision(k.as_str(), CompareOp::Equal, *rev)
                }
                // etcd compares every key of the range (an empty range
                // compares a zero revision, so it holds).
                Guard::NoneCreatedAfter(prefix, rev) => {
                    Compare::create_revision(prefix.as_str(), CompareOp::Less, *rev + 1)
                        .with_prefix()
                }
            })
            .collect();
        let mut ops: Vec<TxnOp> = self
            .puts
            .iter()
            .map(|(k, v)| TxnOp::put(k.as_str(), v.clone(), None))
            .collect();
        ops.extend(self.deletes.iter().map(|k| TxnOp::delete(k.as_str(), None)));
        Txn::new().when(compares).and_then(ops)
    }
}

/// One read of a [`Datastore::read_batch`].
#[derive(Debug, Clone)]
pub enum Read {
    Key(String),
    Prefix(String),
    /// Keys only, no values.
    PrefixKeys(String),
}

/// An undecoded entry; `decode` turns it into a document.
#[derive(Debug, Clone)]
pub struct RawEntry {
    pub key: String,
    pub value: Vec<u8>,
    pub mod_revision: i64,
}

impl RawEntry {
    fn from_kv(kv: &etcd_client::KeyValue) -> Self {
        RawEntry {
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            value: kv.value().to_vec(),
            mod_revision: kv.mod_revision(),
        }
    }

    pub fn decode<T: DeserializeOwned>(&self) -> Result<Versioned<T>> {
        let value = serde_json::from_slice(&self.value).map_err(|e| DatastoreError::Corrupt {
            key: self.key.clone(),
            detail: e.to_string(),
        })?;
        Ok(Versioned {
            key: self.key.clone(),
            value,
            mod_revision: self.mod_revision,
        })
    }
}

pub struct Datastore {
    members: Members,
}

/// A read at a revision etcd has compacted (gRPC OUT_OF_RANGE).
fn is_compacted(err: &etcd_client::Error) -> bool {
    const OUT_OF_RANGE: i32 = 11;
    matches!(err, etcd_client::Error::GRpcStatus(s) if i32::from(s.code()) == OUT_OF_RANGE)
}

/// The error with its causes (a TLS failure hides in the source chain).
fn describe(err: &etcd_client::Error) -> String {
    let mut text = match err {
        etcd_client::Error::GRpcStatus(s) => format!("{:?}: {}", s.code(), s.message()),
        other => other.to_string(),
    };
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

impl Datastore {
    /// Builds the clients. Nothing is contacted yet: errors surface on the
    /// first request, where they are retried and reported. The request's
    /// deadline (`deadline_ms`) starts now.
    pub async fn connect(cfg: &EtcdConfig) -> Result<Self> {
        Ok(Datastore {
            members: Members::connect(cfg).await?,
        })
    }

    pub fn endpoints(&self) -> &[String] {
        self.members.urls()
    }

    async fn call<T, F, Fut>(&self, op: F) -> Result<T>
    where
        F: Fn(etcd_client::KvClient) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        self.members.call(op).await
    }

    /// The current etcd revision (the store's version; tests and
    /// diagnostics use it).
    pub async fn revision(&self) -> Result<i64> {
        let resp = self
            .call(|mut kv| async move {
                kv.get("/calico/", Some(GetOptions::new().with_count_only()))
                    .await
            })
            .await?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
    }

    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<Versioned<T>>> {
        let resp = self
            .call(|mut kv| async move { kv.get(key, None).await })
            .await?;
        resp.kvs().first().map(decode).transpose()
    }

    /// Reads several keys in one round trip.
    pub async fn get_many<T: DeserializeOwned>(
        &self,
        keys: &[String],
    ) -> Result<Vec<Option<Versioned<T>>>> {
        let reads: Vec<Read> = keys.iter().cloned().map(Read::Key).collect();
        self.read_batch(&reads)
            .await?
            .iter()
            .map(|entries| entries.first().map(RawEntry::decode).transpose())
            .collect()
    }

    /// Reads several keys and prefixes in one round trip (a txn of range
    /// gets): the IPAM hot path needs pools, config, handle and affinities
    /// together. Returns the raw entries per read, in order.
    pub async fn read_batch(&self, reads: &[Read]) -> Result<Vec<Vec<RawEntry>>> {
        Ok(self.read_batch_at(reads, None).await?.0)
    }

    /// Like `read_batch`, at etcd revision `at` (None: the latest); also
    /// returns the revision read, so later reads can see the same snapshot.
    pub async fn read_batch_at(
        &self,
        reads: &[Read],
        at: Option<i64>,
    ) -> Result<(Vec<Vec<RawEntry>>, i64)> {
        let mut out = Vec::with_capacity(reads.len());
        let mut revision = at.unwrap_or(0);
        for chunk in reads.chunks(128) {
            // Every chunk after the first reads the first one's revision.
            let pinned = (revision > 0).then_some(revision);
            let opts = |o: GetOptions| match pinned {
                Some(r) => o.with_revision(r),
                None => o,
            };
            let ops: Vec<TxnOp> = chunk
                .iter()
                .map(|r| match r {
                    Read::Key(k) => TxnOp::get(k.as_str(), Some(opts(GetOptions::new()))),
                    Read::Prefix(p) => {
                        TxnOp::get(p.as_str(), Some(opts(GetOptions::new().with_prefix())))
                    }
                    Read::PrefixKeys(p) => TxnOp::get(
                        p.as_str(),
                        Some(opts(GetOptions::new().with_prefix().with_keys_only())),
                    ),
                })
                .collect();
            let resp = self
                .call(|mut kv| {
                    let txn = Txn::new().and_then(ops.clone());
                    async move { kv.txn(txn).await }
                })
                .await?;
            if revision == 0 {
                revision = resp.header().map(|h| h.revision()).unwrap_or(0);
            }
            for op in resp.op_responses() {
                let TxnOpResponse::Get(get) = op else {
                    return Err(DatastoreError::Request("unexpected txn answer".into()));
                };
                out.push(get.kvs().iter().map(RawEntry::from_kv).collect());
            }
        }
        Ok((out, revision))
    }

    /// Every document under `prefix` (which must end in `/`).
    pub async fn list<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<Versioned<T>>> {
        debug_assert!(prefix.ends_with('/'));
        let resp = self
            .call(
                |mut kv| async move { kv.get(prefix, Some(GetOptions::new().with_prefix())).await },
            )
            .await?;
        resp.kvs().iter().map(decode).collect()
    }

    /// The keys under `prefix`, without values (cheap over many blocks).
    pub async fn list_keys(&self, prefix: &str) -> Result<Vec<String>> {
        debug_assert!(prefix.ends_with('/'));
        let resp = self
            .call(|mut kv| async move {
                kv.get(
                    prefix,
                    Some(GetOptions::new().with_prefix().with_keys_only()),
                )
                .await
            })
            .await?;
        Ok(resp
            .kvs()
            .iter()
            .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
            .collect())
    }

    /// Applies `batch` atomically. Ok(false): a guard failed (someone else
    /// wrote first); the caller re-reads and tries again.
    pub async fn commit(&self, batch: &WriteBatch) -> Result<bool> {
        if batch.is_empty() && batch.guards.is_empty() {
            return Ok(true);
        }
        let txn = batch.to_txn();
        let mut first = true;
        loop {
            if !first && self.already_applied(batch).await? {
                // The earlier attempt committed but its answer was lost.
                return Ok(true);
            }
            first = false;
            let send = |mut kv: etcd_client::KvClient| {
                let txn = txn.clone();
                async move { kv.txn(txn).await }
            };
            match self.members.attempt(&send).await {
                Ok(resp) => return Ok(resp.succeeded()),
                Err(Failure::Retry) => continue,
                Err(Failure::Fatal(e)) => return Err(e),
            }
        }
    }

    /// True when every put of `batch` is in etcd as written and every
    /// deleted key is gone. Puts carry fresh sequence numbers or timestamps,
    /// so a match means our own earlier attempt committed.
    async fn already_applied(&self, batch: &WriteBatch) -> Result<bool> {
        let mut reads: Vec<Read> = batch
            .puts
            .iter()
            .map(|(k, _)| Read::Key(k.clone()))
            .collect();
        reads.extend(batch.deletes.iter().map(|k| Read::Key(k.clone())));
        let found = self.read_batch(&reads).await?;
        let (puts, deletes) = found.split_at(batch.puts.len());
        let puts_there = batch
            .puts
            .iter()
            .zip(puts)
            .all(|((_, value), got)| got.first().map(|e| e.value.as_slice()) == Some(value));
        let deletes_gone = deletes.iter().all(|got| got.is_empty());
        Ok(puts_there && deletes_gone && !(batch.puts.is_empty() && batch.deletes.is_empty()))
    }
}

fn decode<T: DeserializeOwned>(kv: &etcd_client::KeyValue) -> Result<Versioned<T>> {
    RawEntry::from_kv(kv).decode()
}

fn tls_options(cfg: &EtcdConfig) -> Result<Option<TlsOptions>> {
    use crate::files::{check_pem, read_bounded, Pem};
    let read = |path: &str, kind: Pem| {
        let bytes = read_bounded(std::path::Path::new(path))
            .map_err(|e| DatastoreError::Setup(format!("cannot read TLS file {path}: {e}")))?;
        check_pem(&bytes, kind).map_err(|why| DatastoreError::Setup(format!("{why}: {path}")))?;
        Ok::<_, DatastoreError>(bytes)
    };
    let mut tls = TlsOptions::new();
    let mut used = false;
    if let Some(ca) = &cfg.ca_cert_file {
        tls = tls.ca_certificate(Certificate::from_pem(read(ca, Pem::Certificate)?));
        used = true;
    }
    match (&cfg.cert_file, &cfg.key_file) {
        (Some(cert), Some(key)) => {
            tls = tls.identity(Identity::from_pem(
                read(cert, Pem::Certificate)?,
                read(key, Pem::PrivateKey)?,
            ));
            used = true;
        }
        (None, None) => {}
        _ => {
            return Err(DatastoreError::Setup(
                "etcd TLS needs both a certificate file and a key file".into(),
            ))
        }
    }
    Ok(used.then_some(tls))
}
