//! List-then-watch of one key prefix, as a stream of [`StoreEvent`]s.
//!
//! The list is read at one revision R and the watch starts at R+1, so no
//! change falls between them. A background task feeds a channel; it stops
//! when the consumer drops the stream.

use std::collections::HashSet;
use std::str::FromStr;
use std::time::Duration;

use etcd_client::{Client, EventType, GetOptions, KeyValue, WatchOptions};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::error::{Result, StoreError};
use crate::store::{EventStream, StoreEvent};

const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// Short: a watch back within half a second of etcd's return keeps the
/// agent's convergence after an outage within the 2 s the fault test asks
/// for, and a failed attempt against a down etcd costs next to nothing.
const BACKOFF_MAX: Duration = Duration::from_millis(500);
const LIST_LIMIT: usize = 256 << 20;

/// Lists `prefix` now (so an unreachable store fails the call), then
/// streams the list, `Synced` and every later change.
pub(crate) async fn list_and_watch<K, V>(
    client: &Client,
    prefix: String,
) -> Result<EventStream<StoreEvent<K, V>>>
where
    K: FromStr + Send + 'static,
    V: DeserializeOwned + Send + 'static,
{
    let (kvs, revision) = list(client, &prefix).await?;
    let (tx, rx) = mpsc::channel(1024);
    let mut watcher = Watcher {
        client: client.clone(),
        prefix,
        tx,
        known: HashSet::new(),
        revision,
    };
    tokio::spawn(async move {
        // Err means the consumer is gone: nothing left to do.
        let _ = watcher.run(kvs).await;
    });
    Ok(Box::pin(futures_util::stream::unfold(rx, |mut rx| async {
        rx.recv().await.map(|item| (item, rx))
    })))
}

/// Every key under `prefix` and the revision they were read at.
pub(crate) async fn list(client: &Client, prefix: &str) -> Result<(Vec<KeyValue>, i64)> {
    let mut resp = client
        .kv_client()
        // A full identity range is several MB of JSON, over gRPC's 4 MB default.
        .max_decoding_message_size(LIST_LIMIT)
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await
        .map_err(|e| StoreError::etcd("list", prefix, e))?;
    let revision = resp.header().map_or(0, |h| h.revision());
    Ok((resp.take_kvs(), revision))
}

/// Decodes a record; the key is what follows the prefix.
pub(crate) fn decode<K: FromStr, V: DeserializeOwned>(
    prefix: &str,
    kv: &KeyValue,
) -> Result<(K, V)> {
    let key = parse_key(prefix, kv.key())?;
    let value = serde_json::from_slice(kv.value()).map_err(|e| StoreError::corrupt(kv.key(), e))?;
    Ok((key, value))
}

fn parse_key<K: FromStr>(prefix: &str, key: &[u8]) -> Result<K> {
    std::str::from_utf8(key)
        .ok()
        .and_then(|k| k.strip_prefix(prefix))
        .and_then(|k| k.parse().ok())
        .ok_or_else(|| StoreError::corrupt(key, "key does not parse"))
}

/// The consumer has dropped the stream.
struct Gone;

enum WatchEnd {
    /// History before our revision was compacted: list again.
    Compacted,
    Failed(StoreError),
}

struct Watcher<K, V> {
    client: Client,
    prefix: String,
    tx: mpsc::Sender<Result<StoreEvent<K, V>>>,
    /// Keys the consumer currently holds, to tell it what vanished if we
    /// must list again.
    known: HashSet<Vec<u8>>,
    /// Every change up to here has been delivered.
    revision: i64,
}

impl<K: FromStr, V: DeserializeOwned> Watcher<K, V> {
    async fn run(&mut self, initial: Vec<KeyValue>) -> Result<(), Gone> {
        self.deliver_list(initial).await?;
        self.follow().await
    }

    /// Watches from `self.revision`, listing again when history is gone,
    /// until the consumer leaves.
    async fn follow(&mut self) -> Result<(), Gone> {
        let mut backoff = BACKOFF_MIN;
        let tx = self.tx.clone();
        loop {
            // An idle watch would never notice the consumer leaving.
            let end = tokio::select! {
                end = self.watch() => end?,
                () = tx.closed() => return Err(Gone),
            };
            match end {
                WatchEnd::Compacted => match list(&self.client, &self.prefix).await {
                    Ok((kvs, revision)) => {
                        self.revision = revision;
                        self.deliver_list(kvs).await?;
                        backoff = BACKOFF_MIN;
                        continue;
                    }
                    Err(e) => self.send(Err(e)).await?,
                },
                WatchEnd::Failed(e) => self.send(Err(e)).await?,
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Sends deletes for keys gone since the consumer's view, the current
    /// records, then `Synced`.
    async fn deliver_list(&mut self, kvs: Vec<KeyValue>) -> Result<(), Gone> {
        let now: HashSet<Vec<u8>> = kvs.iter().map(|kv| kv.key().to_vec()).collect();
        let gone: Vec<Vec<u8>> = self.known.difference(&now).cloned().collect();
        for key in gone {
            self.known.remove(&key);
            let event = parse_key(&self.prefix, &key).map(StoreEvent::Delete);
            self.send(event).await?;
        }
        for kv in &kvs {
            self.upsert(kv).await?;
        }
        self.send(Ok(StoreEvent::Synced)).await
    }

    async fn upsert(&mut self, kv: &KeyValue) -> Result<(), Gone> {
        let event = decode(&self.prefix, kv).map(|(k, v)| StoreEvent::Upsert(k, v));
        if event.is_ok() {
            self.known.insert(kv.key().to_vec());
        }
        self.send(event).await
    }

    /// Watches from the next undelivered revision until the watch breaks.
    async fn watch(&mut self) -> Result<WatchEnd, Gone> {
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(self.revision + 1)
            .with_progress_notify();
        let mut stream = match self
            .client
            .watch_client()
            .watch(self.prefix.as_str(), Some(options))
            .await
        {
            Ok(stream) => stream,
            Err(e) => return Ok(WatchEnd::Failed(StoreError::etcd("watch", &self.prefix, e))),
        };
        loop {
            let resp = match stream.message().await {
                Ok(Some(resp)) => resp,
                Ok(None) => {
                    let e = etcd_client::Error::WatchError("stream closed by server".into());
                    return Ok(WatchEnd::Failed(StoreError::etcd("watch", &self.prefix, e)));
                }
                Err(e) => return Ok(WatchEnd::Failed(StoreError::etcd("watch", &self.prefix, e))),
            };
            if resp.canceled() {
                if resp.compact_revision() > 0 {
                    return Ok(WatchEnd::Compacted);
                }
                let e = etcd_client::Error::WatchError(format!(
                    "canceled by server: {}",
                    resp.cancel_reason()
                ));
                return Ok(WatchEnd::Failed(StoreError::etcd("watch", &self.prefix, e)));
            }
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                match event.event_type() {
                    EventType::Put => self.upsert(kv).await?,
                    EventType::Delete => {
                        self.known.remove(kv.key());
                        let event = parse_key(&self.prefix, kv.key()).map(StoreEvent::Delete);
                        self.send(event).await?;
                    }
                }
                self.revision = self.revision.max(kv.mod_revision());
            }
        }
    }

    async fn send(&self, item: Result<StoreEvent<K, V>>) -> Result<(), Gone> {
        self.tx.send(item).await.map_err(|_| Gone)
    }
}

#[cfg(test)]
mod tests {
    use etcd_client::CompactionOptions;

    use super::*;
    use crate::testing::EtcdServer;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lists_again_after_compaction_and_reports_what_vanished() {
        let server = EtcdServer::start().expect("etcd must start");
        let client = Client::connect([server.endpoint()], None).await.unwrap();
        let mut kv = client.kv_client();
        kv.put("p/a", "1", None).await.unwrap();
        let seen = kv
            .put("p/b", "2", None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
        // Changes the consumer never saw, then their history is compacted.
        kv.delete("p/a", None).await.unwrap();
        kv.put("p/c", "3", None).await.unwrap();
        let now = kv
            .put("q/x", "4", None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
        kv.compact(now, Some(CompactionOptions::new().with_physical()))
            .await
            .unwrap();

        let (tx, mut rx) = mpsc::channel(16);
        let mut watcher: Watcher<String, u32> = Watcher {
            client,
            prefix: "p/".into(),
            tx,
            known: [b"p/a".to_vec(), b"p/b".to_vec()].into(),
            revision: seen,
        };
        let task = tokio::spawn(async move { watcher.follow().await.is_err() });
        let mut events = Vec::new();
        while events.last() != Some(&StoreEvent::Synced) {
            let event = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("event in time")
                .expect("watch open");
            events.push(event.expect("no error"));
        }
        assert_eq!(
            events,
            vec![
                StoreEvent::Delete("a".into()),
                StoreEvent::Upsert("b".into(), 2),
                StoreEvent::Upsert("c".into(), 3),
                StoreEvent::Synced,
            ]
        );
        // Later changes follow the new list.
        let mut kv = server_kv(&server).await;
        kv.put("p/d", "5", None).await.unwrap();
        let event = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(event, StoreEvent::Upsert("d".into(), 5));
        // The task ends once the consumer is gone.
        drop(rx);
        assert!(tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("watch task ends")
            .unwrap());
    }

    async fn server_kv(server: &EtcdServer) -> etcd_client::KvClient {
        Client::connect([server.endpoint()], None)
            .await
            .unwrap()
            .kv_client()
    }
}
