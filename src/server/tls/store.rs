//! The certificates the HTTPS listener serves, kept current with the files on disk. Each
//! configured pair is re-read when its files change (written in place, or replaced by a
//! rename or a symlink swap, as certbot and Kubernetes secret volumes do): a pair that
//! parses and matches is swapped in for new handshakes, anything else leaves the previous
//! pair serving and is logged once per distinct problem. Handshakes in progress and
//! established connections keep the certificate they started with.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::sign::CertifiedKey;

use super::sni::SniTable;
use crate::certificates::{self, CertificateError};
use crate::config::CertificateConfig;

/// The pairs of `tls.certificates` and the SNI table built from them.
#[derive(Debug)]
pub struct CertificateStore {
    table: Arc<ArcSwap<SniTable>>,
    entries: Mutex<Vec<Entry>>,
}

/// One configured pair: what it serves now and what its files looked like when last read.
#[derive(Debug)]
struct Entry {
    config: CertificateConfig,
    serving: Arc<CertifiedKey>,
    seen: Seen,
    /// The problem last logged for these files, so a bad file is reported once, not on
    /// every look.
    rejected: Option<CertificateError>,
}

/// The files of a pair as last read: their stamps say cheaply whether to read again,
/// their bytes whether a read found anything new.
#[derive(Debug, Default, PartialEq, Eq)]
struct Seen {
    stamps: Option<(FileStamp, FileStamp)>,
    cert: Vec<u8>,
    key: Vec<u8>,
}

/// What changes when a file is written or replaced: its identity (a rename or a symlink
/// swap brings another inode), size and times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<SystemTime>,
    #[cfg(unix)]
    identity: (u64, u64, i64, i64),
}

impl FileStamp {
    /// Following symlinks: what a read of `path` would see.
    fn of(path: &Path) -> Option<FileStamp> {
        let meta = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        let identity = {
            use std::os::unix::fs::MetadataExt;
            (meta.dev(), meta.ino(), meta.ctime(), meta.ctime_nsec())
        };
        Some(FileStamp {
            len: meta.len(),
            modified: meta.modified().ok(),
            #[cfg(unix)]
            identity,
        })
    }
}

/// Whether to read files whose stamps did not change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look {
    /// Only where a stamp changed (the periodic check).
    IfStamped,
    /// Every file (a change event: stamps of a coarse-clocked file system may not move).
    Always,
}

/// A new list of pairs, read and checked, not yet serving (see [`CertificateStore::commit`]).
#[derive(Debug)]
pub struct PreparedCertificates {
    entries: Vec<Entry>,
    table: SniTable,
}

impl CertificateStore {
    /// Read every pair; any failure fails the whole (nothing is served yet to fall back on).
    pub fn load(configs: &[CertificateConfig]) -> Result<CertificateStore, CertificateError> {
        let prepared = Self::prepare_from(&[], configs)?;
        Ok(CertificateStore {
            table: Arc::new(ArcSwap::from_pointee(prepared.table)),
            entries: Mutex::new(prepared.entries),
        })
    }

    /// The table handshakes read; swapped whole on every change.
    pub(super) fn table(&self) -> Arc<ArcSwap<SniTable>> {
        Arc::clone(&self.table)
    }

    /// Every certificate and key file, for the watcher.
    pub fn files(&self) -> Vec<PathBuf> {
        self.lock()
            .iter()
            .flat_map(|entry| [entry.config.cert.clone(), entry.config.key.clone()])
            .collect()
    }

    /// Check for a new list of pairs (a config reload): pairs whose files are the same
    /// keep what they serve and what was seen of them; the others are read now. Any
    /// failure leaves everything as it is.
    pub fn prepare(
        &self,
        configs: &[CertificateConfig],
    ) -> Result<PreparedCertificates, CertificateError> {
        let entries = self.lock();
        Self::prepare_from(&entries, configs)
    }

    /// Serve a prepared list from the next handshake on.
    pub fn commit(&self, prepared: PreparedCertificates) {
        let mut entries = self.lock();
        // Files looked at meanwhile carry their findings over.
        let mut next = prepared.entries;
        for entry in &mut next {
            if let Some(old) = entries
                .iter_mut()
                .find(|old| same_files(&old.config, &entry.config))
            {
                entry.serving = Arc::clone(&old.serving);
                entry.seen = std::mem::take(&mut old.seen);
                entry.rejected = old.rejected.take();
            }
        }
        *entries = next;
        self.publish(&entries);
    }

    fn prepare_from(
        current: &[Entry],
        configs: &[CertificateConfig],
    ) -> Result<PreparedCertificates, CertificateError> {
        let mut entries = Vec::with_capacity(configs.len());
        for config in configs {
            let kept = current.iter().find(|old| same_files(&old.config, config));
            let entry = match kept {
                Some(old) => Entry {
                    config: config.clone(),
                    serving: Arc::clone(&old.serving),
                    seen: Seen::default(),
                    rejected: None,
                },
                None => {
                    let stamps = stamps_of(config);
                    let cert = certificates::read_pem_file(&config.cert)?;
                    let key = certificates::read_pem_file(&config.key)?;
                    let pair = certificates::parse_pair(&config.cert, &cert, &config.key, &key)?;
                    Entry {
                        config: config.clone(),
                        serving: pair.certified,
                        seen: Seen { stamps, cert, key },
                        rejected: None,
                    }
                }
            };
            entries.push(entry);
        }
        let table = table_of(&entries).ok_or_else(|| CertificateError::NoCertificate {
            path: PathBuf::from("tls.certificates"),
        })?;
        Ok(PreparedCertificates { entries, table })
    }

    /// Look at every pair's files and serve what changed and is good. Blocking (file
    /// reads): call it off the async workers. Returns how many pairs were replaced.
    pub fn refresh(&self, look: Look) -> usize {
        let mut entries = self.lock();
        let mut replaced = 0;
        for entry in entries.iter_mut() {
            if entry.refresh(look) {
                replaced += 1;
            }
        }
        if replaced > 0 {
            self.publish(&entries);
        }
        replaced
    }

    fn publish(&self, entries: &[Entry]) {
        if let Some(table) = table_of(entries) {
            self.table.store(Arc::new(table));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        // The entries stay consistent whatever panicked: each field is replaced whole.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Entry {
    /// Re-read this pair if its files changed; `true` when a new pair now serves.
    fn refresh(&mut self, look: Look) -> bool {
        let stamps = stamps_of(&self.config);
        if look == Look::IfStamped && stamps.is_some() && stamps == self.seen.stamps {
            return false;
        }
        let read = certificates::read_pem_file(&self.config.cert)
            .and_then(|cert| certificates::read_pem_file(&self.config.key).map(|key| (cert, key)));
        let (cert, key) = match read {
            Ok(files) => files,
            Err(error) => {
                // Missing for a moment is normal mid-swap; missing for good is logged, once.
                self.seen.stamps = None;
                self.reject(error);
                return false;
            }
        };
        if cert == self.seen.cert && key == self.seen.key {
            self.seen.stamps = stamps;
            return false;
        }
        let parsed = certificates::parse_pair(&self.config.cert, &cert, &self.config.key, &key);
        self.seen = Seen { stamps, cert, key };
        match parsed {
            Ok(pair) => {
                self.serving = pair.certified;
                self.rejected = None;
                tracing::info!(
                    cert = %self.config.cert.display(),
                    key = %self.config.key.display(),
                    server_names = ?self.config.server_names,
                    "certificate reloaded; new handshakes use it"
                );
                true
            }
            Err(error) => {
                self.reject(error);
                false
            }
        }
    }

    fn reject(&mut self, error: CertificateError) {
        if self.rejected.as_ref() == Some(&error) {
            return;
        }
        tracing::warn!(
            cert = %self.config.cert.display(),
            key = %self.config.key.display(),
            file = %error.path().display(),
            reason = %error,
            "certificate pair rejected; the previous pair keeps serving"
        );
        self.rejected = Some(error);
    }
}

fn same_files(a: &CertificateConfig, b: &CertificateConfig) -> bool {
    a.cert == b.cert && a.key == b.key
}

fn stamps_of(config: &CertificateConfig) -> Option<(FileStamp, FileStamp)> {
    Some((FileStamp::of(&config.cert)?, FileStamp::of(&config.key)?))
}

fn table_of(entries: &[Entry]) -> Option<SniTable> {
    SniTable::new(
        entries
            .iter()
            .map(|entry| (&entry.config.server_names[..], &entry.serving)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Files {
        dir: tempfile::TempDir,
        config: CertificateConfig,
    }

    /// A certificate and key for `localhost`, as PEM.
    fn pair() -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    fn files(cert: &str, key: &str) -> Files {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = CertificateConfig {
            cert: dir.path().join("site.pem"),
            key: dir.path().join("site.key"),
            server_names: vec!["localhost".into()],
        };
        std::fs::write(&config.cert, cert).expect("cert");
        std::fs::write(&config.key, key).expect("key");
        Files { dir, config }
    }

    fn serving(store: &CertificateStore) -> Vec<u8> {
        store.table.load().pick(Some("localhost")).cert[0].to_vec()
    }

    fn der(pem: &str) -> Vec<u8> {
        use rustls_pki_types::pem::PemObject;
        rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
            .expect("pem")
            .to_vec()
    }

    #[test]
    fn a_new_pair_is_served_and_a_mismatched_one_kept_out() {
        let (first_cert, first_key) = pair();
        let (next_cert, next_key) = pair();
        let files = files(&first_cert, &first_key);
        let store = CertificateStore::load(std::slice::from_ref(&files.config)).expect("load");
        assert_eq!(serving(&store), der(&first_cert));
        assert_eq!(store.refresh(Look::Always), 0, "nothing changed");

        // Key first: mismatched, the first pair stays; remembered, so not reported again.
        std::fs::write(&files.config.key, &next_key).expect("key");
        assert_eq!(store.refresh(Look::Always), 0);
        assert_eq!(serving(&store), der(&first_cert));
        assert!(matches!(
            store.lock()[0].rejected,
            Some(CertificateError::KeyMismatch { .. })
        ));
        // Then the certificate: the pair matches and is served.
        std::fs::write(&files.config.cert, &next_cert).expect("cert");
        assert_eq!(store.refresh(Look::IfStamped), 1);
        assert_eq!(serving(&store), der(&next_cert));
        assert!(store.lock()[0].rejected.is_none());

        // A missing file leaves the pair serving too.
        std::fs::remove_file(&files.config.cert).expect("remove");
        assert_eq!(store.refresh(Look::IfStamped), 0);
        assert_eq!(serving(&store), der(&next_cert));
        assert!(files.dir.path().exists());
    }

    #[test]
    fn a_new_list_keeps_what_unchanged_entries_serve_and_reads_the_rest() {
        let (cert, key) = pair();
        let (other_cert, other_key) = pair();
        let first = files(&cert, &key);
        let second = files(&other_cert, &other_key);
        let store = CertificateStore::load(std::slice::from_ref(&first.config)).expect("load");
        let mut renamed = second.config.clone();
        renamed.server_names = vec!["other.test".into()];
        let prepared = store
            .prepare(&[first.config.clone(), renamed])
            .expect("prepare");
        assert_eq!(store.files().len(), 2, "nothing changes before the commit");
        store.commit(prepared);
        assert_eq!(store.files().len(), 4);
        let table = store.table.load();
        assert_eq!(
            table.pick(Some("other.test")).cert[0].to_vec(),
            der(&other_cert)
        );
        assert_eq!(table.pick(None).cert[0].to_vec(), der(&cert));

        // A list naming a file that does not exist is refused whole.
        let mut missing = first.config.clone();
        missing.cert = first.dir.path().join("missing.pem");
        assert!(store.prepare(&[missing]).is_err());
    }
}
