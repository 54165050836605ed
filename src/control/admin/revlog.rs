//! The revocation log (`admin.revocation_log`): an append-only file of
//! [`Revocation::to_log_line`] lines, fsync'd before `POST /revoke` answers, replayed at
//! start so a restart forgets no revocation (SPEC §6), and compacted by rewriting the
//! live entries to a temporary file that is renamed over the log.
//!
//! Durability, step by step:
//! - `open` fsyncs the parent directory, so a newly created log survives a crash;
//! - `append` writes one whole line and `sync_data`s it before returning `Ok`; a failed
//!   append is rolled back (truncated to the last good length) so that no half line is
//!   ever followed by more entries; if even the rollback fails, the log refuses every
//!   later append until it is compacted (a half line in the middle would stop the next
//!   start, since replay never skips a corrupt complete line);
//! - `compact` writes `PATH.tmp`, fsyncs it, renames it over `PATH`, reopens, and fsyncs
//!   the directory; until the rename the old log is untouched.
//!
//! The log is for one process: two gateways must not share a file (no lock is taken).
//!
//! [`Revocation::to_log_line`]: crate::auth::revocation::Revocation::to_log_line

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::auth::revocation::{replay, RevocationSet};

/// A log smaller than this is never worth compacting.
pub const COMPACT_MIN_BYTES: u64 = 1024 * 1024;

/// Permissions of a log file we create: the log names subjects and token ids.
#[cfg(unix)]
const LOG_MODE: u32 = 0o600;

/// What [`RevocationLog::open`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenReport {
    /// Entries put into the set (still within their `keep_until`).
    pub replayed: usize,
    /// Entries skipped because their `keep_until` had passed.
    pub expired: usize,
    /// Length of a torn last line that was cut off (a write interrupted by a crash,
    /// never acknowledged); the caller logs it.
    pub torn_tail_bytes: Option<u64>,
}

/// An open revocation log, positioned for appending.
#[derive(Debug)]
pub struct RevocationLog {
    path: PathBuf,
    file: File,
    /// File length after the last good append: where a failed append is rolled back to.
    bytes: u64,
    /// Complete lines in the file (live or not), for [`RevocationLog::should_compact`].
    lines: usize,
    /// Set when the file may hold a half line or may no longer be the file at `path`;
    /// every append then fails until a compaction succeeds.
    poisoned: bool,
}

impl RevocationLog {
    /// Opens `path` (creating the file, mode 0600, but not its directory), replays it
    /// into `set` (skipping entries whose `keep_until` is before `now_unix`), cuts off a
    /// torn last line (reported in [`OpenReport::torn_tail_bytes`]), and positions for
    /// appending. A corrupt complete line is an error: nothing is skipped silently.
    /// Every error message names the path.
    pub fn open(
        path: &Path,
        set: &mut RevocationSet,
        now_unix: u64,
    ) -> Result<(RevocationLog, OpenReport), String> {
        let fail = |what: &str, error: &dyn std::fmt::Display| {
            format!("revocation log {}: {what}: {error}", path.display())
        };
        let mut file = open_for_append(path).map_err(|e| fail("cannot open", &e))?;
        sync_parent_dir(path).map_err(|e| fail("cannot sync its directory", &e))?;
        let mut contents = Vec::new();
        file.read_to_end(&mut contents)
            .map_err(|e| fail("cannot read", &e))?;
        let report = replay(&contents).map_err(|e| fail("cannot replay", &e))?;

        let mut replayed = 0;
        let mut expired = 0;
        for (revocation, keep_until) in report.entries {
            if keep_until < now_unix {
                expired += 1;
            } else {
                set.restore(revocation, keep_until);
                replayed += 1;
            }
        }

        let mut bytes = contents.len() as u64;
        let torn_tail_bytes = match report.torn_tail {
            Some(offset) => {
                let offset = offset as u64;
                file.set_len(offset)
                    .and_then(|()| file.sync_data())
                    .map_err(|e| fail("cannot cut off its torn last line", &e))?;
                let torn = bytes - offset;
                bytes = offset;
                Some(torn)
            }
            None => None,
        };

        let log = RevocationLog {
            path: path.to_owned(),
            file,
            bytes,
            lines: report.lines,
            poisoned: false,
        };
        let report = OpenReport {
            replayed,
            expired,
            torn_tail_bytes,
        };
        Ok((log, report))
    }

    /// Appends one line (from `Revocation::to_log_line`: exactly one `'\n'`, at the end)
    /// and fsyncs it before returning. An error means the revocation was NOT recorded:
    /// the caller must not insert it nor answer 200 (it answers 5xx).
    pub fn append(&mut self, line: &str) -> io::Result<()> {
        if self.poisoned {
            return Err(self.error(
                io::ErrorKind::Other,
                "an earlier write failed and could not be undone; refusing to append until the log is compacted",
            ));
        }
        let well_formed = line
            .strip_suffix('\n')
            .is_some_and(|body| !body.is_empty() && !body.contains('\n'));
        if !well_formed {
            return Err(self.error(
                io::ErrorKind::InvalidInput,
                "a log line must end with its only newline",
            ));
        }
        let written = self
            .file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.bytes += line.len() as u64;
                self.lines += 1;
                Ok(())
            }
            Err(error) => {
                // Undo a partial line so the next append does not follow it.
                let rolled_back = self
                    .file
                    .set_len(self.bytes)
                    .and_then(|()| self.file.sync_data());
                if rolled_back.is_err() {
                    self.poisoned = true;
                }
                Err(self.wrap(error))
            }
        }
    }

    /// Rewrites the log with exactly `set`'s entries (the caller runs
    /// `RevocationSet::expire` first to drop dead ones): write `PATH.tmp`, fsync it,
    /// rename it over `PATH`, reopen for appending, fsync the directory. If anything
    /// fails before the rename, the old log is untouched and stays in use. `set` must
    /// hold every entry appended so far (insert after each successful append).
    pub fn compact(&mut self, set: &RevocationSet) -> io::Result<()> {
        let tmp = tmp_path(&self.path);
        let (bytes, lines) = match write_snapshot(&tmp, set) {
            Ok(written) => written,
            Err(error) => {
                let _ = fs::remove_file(&tmp); // best effort: a leftover is rewritten next time
                return Err(wrap_path(&tmp, error));
            }
        };
        if let Err(error) = fs::rename(&tmp, &self.path) {
            let _ = fs::remove_file(&tmp);
            return Err(self.wrap(error));
        }
        // From here the new file is the log; the old handle points at an unlinked file,
        // and appending through it would lose revocations.
        match open_for_append(&self.path) {
            Ok(file) => self.file = file,
            Err(error) => {
                self.poisoned = true;
                return Err(self.wrap(error));
            }
        }
        self.bytes = bytes;
        self.lines = lines;
        // Until the rename is durable, a crash could bring back the old file, without
        // anything appended to the new one.
        match sync_parent_dir(&self.path) {
            Ok(()) => {
                self.poisoned = false;
                Ok(())
            }
            Err(error) => {
                self.poisoned = true;
                Err(self.wrap(error))
            }
        }
    }

    /// Whether compaction would pay: the file is over [`COMPACT_MIN_BYTES`] and holds
    /// more than twice as many lines as there are `live` entries.
    pub fn should_compact(&self, live: usize) -> bool {
        self.bytes > COMPACT_MIN_BYTES && self.lines > live.saturating_mul(2)
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size of the log in bytes, as far as this handle wrote it.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Complete lines in the log, live or expired.
    pub fn lines(&self) -> usize {
        self.lines
    }

    fn wrap(&self, error: io::Error) -> io::Error {
        wrap_path(&self.path, error)
    }

    fn error(&self, kind: io::ErrorKind, what: &str) -> io::Error {
        io::Error::new(
            kind,
            format!("revocation log {}: {what}", self.path.display()),
        )
    }
}

/// Adds the path to an I/O error, keeping its kind.
fn wrap_path(path: &Path, error: io::Error) -> io::Error {
    io::Error::new(
        error.kind(),
        format!("revocation log {}: {error}", path.display()),
    )
}

fn open_for_append(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(LOG_MODE);
    }
    options.open(path)
}

/// `PATH.tmp`, beside the log so the rename stays within one filesystem.
fn tmp_path(path: &Path) -> PathBuf {
    let mut tmp = OsString::from(path.as_os_str());
    tmp.push(".tmp");
    PathBuf::from(tmp)
}

/// Writes every entry of `set` to a fresh `tmp` and fsyncs it; returns (bytes, lines).
fn write_snapshot(tmp: &Path, set: &RevocationSet) -> io::Result<(u64, usize)> {
    // A leftover from an interrupted compaction is replaced, never followed if it is a
    // symlink (create_new refuses to open an existing name).
    match fs::remove_file(tmp) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(LOG_MODE);
    }
    let mut writer = BufWriter::new(options.open(tmp)?);
    let mut bytes = 0u64;
    let mut lines = 0usize;
    for (revocation, keep_until) in set.entries() {
        let line = revocation.to_log_line(keep_until);
        writer.write_all(line.as_bytes())?;
        bytes += line.len() as u64;
        lines += 1;
    }
    let file = writer.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok((bytes, lines))
}

/// Fsyncs the directory holding `path`, so that a created or renamed name is durable.
fn sync_parent_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::revocation::{RetentionPolicy, Revocation};
    use std::sync::atomic::{AtomicUsize, Ordering};

    const NOW: u64 = 1_800_000_000;
    const POLICY: RetentionPolicy = RetentionPolicy {
        leeway_secs: 30,
        retention_secs: 7 * 86_400,
    };

    /// A unique directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir()
                .join(format!("wsgate-revlog-{}-{name}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            if let Err(error) = fs::create_dir_all(&dir) {
                panic!("cannot create {}: {error}", dir.display());
            }
            TempDir(dir)
        }

        fn join(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn open(path: &Path, set: &mut RevocationSet, now: u64) -> (RevocationLog, OpenReport) {
        match RevocationLog::open(path, set, now) {
            Ok(opened) => opened,
            Err(error) => panic!("{error}"),
        }
    }

    fn ok<T>(result: io::Result<T>) -> T {
        match result {
            Ok(value) => value,
            Err(error) => panic!("{error}"),
        }
    }

    fn read(path: &Path) -> String {
        ok(fs::read_to_string(path))
    }

    fn jti(id: &str, exp: Option<u64>) -> Revocation {
        Revocation::Jti {
            jti: id.to_owned(),
            exp,
        }
    }

    fn sub(id: &str, before: u64) -> Revocation {
        Revocation::Sub {
            sub: id.to_owned(),
            before,
        }
    }

    /// The POST /revoke sequence: keep_until, append + fsync, then insert.
    fn revoke(log: &mut RevocationLog, set: &mut RevocationSet, r: Revocation, now: u64) {
        let keep_until = set.keep_until(&r, now);
        ok(log.append(&r.to_log_line(keep_until)));
        set.insert(r, keep_until);
    }

    fn sorted(set: &RevocationSet) -> Vec<(Revocation, u64)> {
        let mut entries: Vec<_> = set.entries().collect();
        entries.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
        entries
    }

    #[test]
    fn open_creates_an_empty_private_log() {
        let dir = TempDir::new("create");
        let path = dir.join("revocations.log");
        let mut set = RevocationSet::new(POLICY);
        let (log, report) = open(&path, &mut set, NOW);
        assert_eq!(
            report,
            OpenReport {
                replayed: 0,
                expired: 0,
                torn_tail_bytes: None
            }
        );
        assert!(set.is_empty());
        assert_eq!(
            (log.bytes(), log.lines(), log.path()),
            (0, 0, path.as_path())
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = ok(fs::metadata(&path)).permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn append_then_reopen_replays_everything() {
        let dir = TempDir::new("reopen");
        let path = dir.join("r.log");
        let mut set = RevocationSet::new(POLICY);
        let (mut log, _) = open(&path, &mut set, NOW);
        set.observe_lifetime(900);
        revoke(&mut log, &mut set, jti("t1", Some(NOW + 60)), NOW);
        revoke(&mut log, &mut set, jti("t2", None), NOW);
        revoke(&mut log, &mut set, sub("alice", NOW), NOW);
        assert_eq!(log.lines(), 3);
        assert_eq!(log.bytes(), ok(fs::metadata(&path)).len());
        drop(log);

        let mut again = RevocationSet::new(POLICY);
        let (log, report) = open(&path, &mut again, NOW + 1);
        assert_eq!(
            (report.replayed, report.expired, report.torn_tail_bytes),
            (3, 0, None)
        );
        assert_eq!(sorted(&again), sorted(&set));
        assert!(again.is_revoked(Some("t1"), "x", None));
        assert!(again.is_revoked(None, "alice", Some(NOW - 1)));
        assert!(!again.is_revoked(None, "alice", Some(NOW)));
        // The lifetime used for alice's entry came back with it.
        assert_eq!(again.longest_lifetime(), 900);
        assert_eq!(log.lines(), 3);
    }

    #[test]
    fn open_skips_expired_entries() {
        let dir = TempDir::new("expired");
        let path = dir.join("r.log");
        let lines = [
            jti("dead", Some(100)).to_log_line(130),
            jti("edge", None).to_log_line(NOW),
            sub("live", 5).to_log_line(NOW + 10),
        ];
        ok(fs::write(&path, lines.concat()));
        let mut set = RevocationSet::new(POLICY);
        let (log, report) = open(&path, &mut set, NOW);
        assert_eq!((report.replayed, report.expired), (2, 1));
        assert!(!set.is_revoked(Some("dead"), "x", None));
        assert!(set.is_revoked(Some("edge"), "x", None));
        // Expired lines still count toward compaction.
        assert_eq!(log.lines(), 3);
    }

    #[test]
    fn torn_tail_is_cut_reported_and_appending_continues() {
        let dir = TempDir::new("torn");
        let path = dir.join("r.log");
        let good = [
            jti("a", None).to_log_line(NOW + 5),
            sub("b", 1).to_log_line(NOW + 5),
        ]
        .concat();
        let torn = "{\"v\":1,\"jti\":\"c";
        ok(fs::write(&path, format!("{good}{torn}")));

        let mut set = RevocationSet::new(POLICY);
        let (mut log, report) = open(&path, &mut set, NOW);
        assert_eq!(report.torn_tail_bytes, Some(torn.len() as u64));
        assert_eq!(report.replayed, 2);
        assert_eq!(read(&path), good);
        assert_eq!(log.bytes(), good.len() as u64);

        revoke(&mut log, &mut set, jti("d", None), NOW);
        drop(log);
        let mut again = RevocationSet::new(POLICY);
        let (_, report) = open(&path, &mut again, NOW);
        assert_eq!((report.replayed, report.torn_tail_bytes), (3, None));
        assert!(again.is_revoked(Some("d"), "x", None));
        assert!(!again.is_revoked(Some("c"), "x", None));
    }

    #[test]
    fn corrupt_middle_line_refuses_to_open_and_names_path_and_line() {
        let dir = TempDir::new("corrupt");
        let path = dir.join("r.log");
        let a = jti("a", None).to_log_line(NOW + 5);
        ok(fs::write(&path, format!("{a}{{oops\n{a}")));
        let mut set = RevocationSet::new(POLICY);
        let error = RevocationLog::open(&path, &mut set, NOW).err();
        let Some(error) = error else {
            panic!("a corrupt log was opened");
        };
        assert!(error.contains(&path.display().to_string()), "{error}");
        assert!(error.contains("line 2"), "{error}");
        // Nothing was cut or rewritten.
        assert_eq!(read(&path), format!("{a}{{oops\n{a}"));

        ok(fs::write(
            &path,
            "{\"v\":9,\"jti\":\"a\",\"keep_until\":1}\n",
        ));
        let error = RevocationLog::open(&path, &mut set, NOW).err();
        assert!(
            matches!(&error, Some(e) if e.contains("line 1") && e.contains("version")),
            "{error:?}"
        );
    }

    #[test]
    fn compaction_keeps_live_entries_drops_expired_and_survives_reopen() {
        let dir = TempDir::new("compact");
        let path = dir.join("r.log");
        let mut set = RevocationSet::new(POLICY);
        let (mut log, _) = open(&path, &mut set, NOW);
        set.observe_lifetime(600);
        for i in 0..50 {
            revoke(
                &mut log,
                &mut set,
                jti(&format!("short-{i}"), Some(NOW + 10)),
                NOW,
            );
        }
        revoke(&mut log, &mut set, jti("long", Some(NOW + 86_400)), NOW);
        revoke(&mut log, &mut set, jti("no-exp", None), NOW);
        revoke(&mut log, &mut set, sub("alice", NOW), NOW);
        revoke(&mut log, &mut set, sub("alice", NOW), NOW); // a repeat: one entry
        assert_eq!(log.lines(), 54);

        let later = NOW + 100; // the short ones are now past exp + leeway
        assert_eq!(set.expire(later), 50);
        let live = sorted(&set);
        assert_eq!(live.len(), 3);
        ok(log.compact(&set));
        assert_eq!(log.lines(), 3);
        assert_eq!(log.bytes(), ok(fs::metadata(&path)).len());
        assert!(!tmp_path(&path).exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = ok(fs::metadata(&path)).permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }

        // Appends go to the new file.
        revoke(&mut log, &mut set, jti("after", None), later);
        drop(log);

        let mut again = RevocationSet::new(POLICY);
        let (log, report) = open(&path, &mut again, later);
        assert_eq!(
            (report.replayed, report.expired, report.torn_tail_bytes),
            (4, 0, None)
        );
        assert_eq!(sorted(&again), sorted(&set));
        assert!(again.is_revoked(Some("after"), "x", None));
        assert!(!again.is_revoked(Some("short-0"), "x", None));
        assert_eq!(log.lines(), 4);
    }

    #[test]
    fn failed_compaction_leaves_the_old_log_in_use() {
        let dir = TempDir::new("compact-fail");
        let path = dir.join("r.log");
        let mut set = RevocationSet::new(POLICY);
        let (mut log, _) = open(&path, &mut set, NOW);
        revoke(&mut log, &mut set, jti("a", None), NOW);
        let before = read(&path);
        // A directory where PATH.tmp must go: the snapshot cannot be written.
        ok(fs::create_dir(tmp_path(&path)));
        ok(fs::write(tmp_path(&path).join("keep"), "x"));
        let mut emptied = RevocationSet::new(POLICY);
        emptied.insert(jti("other", None), NOW);
        assert!(log.compact(&emptied).is_err());
        assert_eq!(read(&path), before);
        // The old log still takes appends, and they replay.
        revoke(&mut log, &mut set, jti("b", None), NOW);
        drop(log);
        let mut again = RevocationSet::new(POLICY);
        let (_, report) = open(&path, &mut again, NOW);
        assert_eq!(report.replayed, 2);
    }

    #[test]
    fn compaction_replaces_a_leftover_tmp_file() {
        let dir = TempDir::new("compact-leftover");
        let path = dir.join("r.log");
        ok(fs::write(
            tmp_path(&path),
            "garbage from an interrupted compaction",
        ));
        let mut set = RevocationSet::new(POLICY);
        let (mut log, _) = open(&path, &mut set, NOW);
        revoke(&mut log, &mut set, jti("a", None), NOW);
        ok(log.compact(&set));
        assert_eq!(
            read(&path),
            jti("a", None).to_log_line(NOW + POLICY.retention_secs)
        );
    }

    #[test]
    fn should_compact_needs_size_and_dead_lines() {
        let dir = TempDir::new("should");
        let path = dir.join("r.log");
        let mut set = RevocationSet::new(POLICY);
        let (mut log, _) = open(&path, &mut set, NOW);
        assert!(!log.should_compact(0));
        revoke(&mut log, &mut set, jti("small", None), NOW);
        assert!(!log.should_compact(0)); // small: never worth it
        drop(log);
        // Past COMPACT_MIN_BYTES, written in one go (an fsync per line would be slow).
        let pad = "p".repeat(1000);
        let mut contents = String::new();
        let mut n = 0;
        while contents.len() as u64 <= COMPACT_MIN_BYTES {
            contents.push_str(&jti(&format!("{pad}{n}"), Some(NOW)).to_log_line(NOW + 30));
            n += 1;
        }
        ok(fs::write(&path, &contents));
        let (log, _) = open(&path, &mut set, NOW);
        assert_eq!((log.bytes(), log.lines()), (contents.len() as u64, n));
        let lines = log.lines();
        assert!(log.should_compact(0));
        assert!(log.should_compact(lines / 2 - 1));
        assert!(!log.should_compact(lines / 2 + 1));
        assert!(!log.should_compact(lines));
    }

    #[test]
    fn append_refuses_malformed_lines() {
        let dir = TempDir::new("lines");
        let path = dir.join("r.log");
        let mut set = RevocationSet::new(POLICY);
        let (mut log, _) = open(&path, &mut set, NOW);
        for line in ["", "\n", "{}", "{}\n{}\n", "{}\n\n"] {
            let error = log.append(line).err();
            assert!(
                matches!(&error, Some(e) if e.kind() == io::ErrorKind::InvalidInput),
                "{line:?}"
            );
        }
        assert_eq!(read(&path), "");
    }

    #[test]
    fn open_fails_loudly_where_no_file_can_be() {
        let dir = TempDir::new("missing-dir");
        let mut set = RevocationSet::new(POLICY);
        for path in [
            dir.join("no/such/dir/r.log"),
            PathBuf::from("/proc/wsgate-no-such-dir/r.log"),
            dir.0.clone(), // a directory, not a file
        ] {
            let error = RevocationLog::open(&path, &mut set, NOW).err();
            assert!(
                matches!(&error, Some(e) if e.contains(&path.display().to_string())),
                "{path:?}: {error:?}"
            );
        }
    }

    #[cfg(unix)]
    #[test]
    fn read_only_log_fails_to_open_unless_root() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new("readonly");
        let path = dir.join("r.log");
        ok(fs::write(&path, ""));
        ok(fs::set_permissions(
            &path,
            fs::Permissions::from_mode(0o400),
        ));
        // Root bypasses mode bits: then there is nothing to assert here.
        if OpenOptions::new().append(true).open(&path).is_ok() {
            return;
        }
        let mut set = RevocationSet::new(POLICY);
        let error = RevocationLog::open(&path, &mut set, NOW).err();
        assert!(
            matches!(&error, Some(e) if e.contains(&path.display().to_string())),
            "{error:?}"
        );
    }

    /// A log whose writes fail (/dev/full: ENOSPC) refuses the append, and since its
    /// length cannot be rolled back either, every later append too.
    #[cfg(target_os = "linux")]
    #[test]
    fn append_to_a_full_device_fails_and_stays_failed() {
        let path = Path::new("/dev/full");
        let Ok(file) = OpenOptions::new().append(true).open(path) else {
            return; // no /dev/full in this sandbox
        };
        let mut log = RevocationLog {
            path: path.to_owned(),
            file,
            bytes: 0,
            lines: 0,
            poisoned: false,
        };
        let line = jti("a", None).to_log_line(1);
        let first = log.append(&line).err();
        assert!(
            matches!(&first, Some(e) if e.to_string().contains("/dev/full")),
            "{first:?}"
        );
        assert_eq!(log.lines(), 0);
        let second = log.append(&line).err();
        assert!(
            matches!(&second, Some(e) if e.to_string().contains("refusing")),
            "{second:?}"
        );
    }
}
