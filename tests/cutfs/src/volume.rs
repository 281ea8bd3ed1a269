//! The volatile view of the backing directory: what a machine's page cache holds, and what of it
//! the disk (the backing directory) has been told to keep.
//!
//! The model of a power cut, as POSIX allows it:
//! - A file's data and size live only here until that file is `fsync`ed or `fdatasync`ed; the
//!   sync writes its dirty pages and its size to the backing file.
//! - A new file exists only here until it is synced itself, or its directory is synced (which
//!   makes the entry durable, with whatever of its data was synced: nothing yet).
//! - `mkdir`, `unlink`, `rmdir` and `rename` reach the backing directory at once (as if the
//!   journal committed them immediately): the lenient side, so they never explain a loss.
//! - [`Volume::cut`] drops everything not synced and answers every later request with `EIO`;
//!   the backing directory then holds exactly what a disk would after the power went.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Granularity of dirty tracking: a sync writes whole pages of the in-memory file.
const PAGE: u64 = 4096;

/// An error as the kernel wants it: an errno.
pub type Errno = i32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

/// One inode of the volatile view.
#[derive(Debug)]
pub struct Node {
    /// Path relative to the root (empty for the root); renames rewrite it.
    pub path: PathBuf,
    pub kind: Kind,
    /// The file's whole content as the running system sees it.
    pub data: Vec<u8>,
    /// Pages of `data` that differ from the backing file (page index).
    dirty: BTreeSet<u64>,
    /// Whether the entry exists in the backing directory (created durably).
    in_backing: bool,
}

/// What a cut threw away, for the test's log.
#[derive(Debug, Default)]
pub struct Dropped {
    pub dirty_pages: usize,
    /// Files whose creation never became durable (paths under the mount).
    pub never_synced: Vec<PathBuf>,
}

#[derive(Debug)]
pub struct Volume {
    backing: PathBuf,
    nodes: HashMap<u64, Node>,
    by_path: HashMap<PathBuf, u64>,
    next_ino: u64,
    /// Set by a cut: the machine is off, nothing is answered any more.
    cut: bool,
}

fn io_errno(e: io::Error) -> Errno {
    e.raw_os_error().unwrap_or(libc::EIO)
}

impl Volume {
    /// Reads the whole backing directory into memory (the data dirs this serves are small).
    pub fn load(backing: &Path) -> io::Result<Volume> {
        let mut v = Volume {
            backing: backing.to_owned(),
            nodes: HashMap::new(),
            by_path: HashMap::new(),
            next_ino: 2,
            cut: false,
        };
        v.insert_node(1, PathBuf::new(), Kind::Dir, Vec::new(), true);
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            for entry in fs::read_dir(backing.join(&rel))? {
                let entry = entry?;
                let child = rel.join(entry.file_name());
                let ino = v.next_ino;
                v.next_ino += 1;
                if entry.file_type()?.is_dir() {
                    v.insert_node(ino, child.clone(), Kind::Dir, Vec::new(), true);
                    stack.push(child);
                } else {
                    let data = fs::read(backing.join(&child))?;
                    v.insert_node(ino, child, Kind::File, data, true);
                }
            }
        }
        Ok(v)
    }

    fn insert_node(&mut self, ino: u64, path: PathBuf, kind: Kind, data: Vec<u8>, durable: bool) {
        self.by_path.insert(path.clone(), ino);
        self.nodes.insert(
            ino,
            Node {
                path,
                kind,
                data,
                dirty: BTreeSet::new(),
                in_backing: durable,
            },
        );
    }

    fn live(&self) -> Result<(), Errno> {
        if self.cut {
            Err(libc::EIO)
        } else {
            Ok(())
        }
    }

    pub fn node(&self, ino: u64) -> Result<&Node, Errno> {
        self.live()?;
        self.nodes.get(&ino).ok_or(libc::ENOENT)
    }

    fn node_mut(&mut self, ino: u64) -> Result<&mut Node, Errno> {
        self.live()?;
        self.nodes.get_mut(&ino).ok_or(libc::ENOENT)
    }

    fn child_path(&self, parent: u64, name: &std::ffi::OsStr) -> Result<PathBuf, Errno> {
        let p = self.node(parent)?;
        if p.kind != Kind::Dir {
            return Err(libc::ENOTDIR);
        }
        Ok(p.path.join(name))
    }

    pub fn lookup(&self, parent: u64, name: &std::ffi::OsStr) -> Result<u64, Errno> {
        let path = self.child_path(parent, name)?;
        self.by_path.get(&path).copied().ok_or(libc::ENOENT)
    }

    /// The entries of directory `ino`: (inode, name, kind).
    pub fn children(&self, ino: u64) -> Result<Vec<(u64, std::ffi::OsString, Kind)>, Errno> {
        let dir = self.node(ino)?;
        if dir.kind != Kind::Dir {
            return Err(libc::ENOTDIR);
        }
        let mut out: Vec<_> = self
            .nodes
            .iter()
            .filter(|(&i, n)| i != 1 && n.path.parent() == Some(dir.path.as_path()))
            .map(|(&i, n)| (i, n.path.file_name().unwrap().to_owned(), n.kind))
            .collect();
        out.sort_by(|a, b| a.1.cmp(&b.1));
        Ok(out)
    }

    /// Creates a file (volatile until synced) or a directory (durable at once).
    pub fn create(
        &mut self,
        parent: u64,
        name: &std::ffi::OsStr,
        kind: Kind,
    ) -> Result<u64, Errno> {
        let path = self.child_path(parent, name)?;
        if self.by_path.contains_key(&path) {
            return Err(libc::EEXIST);
        }
        if kind == Kind::Dir {
            fs::create_dir(self.backing.join(&path)).map_err(io_errno)?;
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.insert_node(ino, path, kind, Vec::new(), kind == Kind::Dir);
        Ok(ino)
    }

    pub fn read(&self, ino: u64, offset: u64, size: u32) -> Result<&[u8], Errno> {
        let n = self.node(ino)?;
        let start = (offset as usize).min(n.data.len());
        let end = (start + size as usize).min(n.data.len());
        Ok(&n.data[start..end])
    }

    /// Marks pages `[from, to)` (bytes) dirty.
    fn mark(n: &mut Node, from: u64, to: u64) {
        if to > from {
            n.dirty.extend(from / PAGE..to.div_ceil(PAGE));
        }
    }

    pub fn write(&mut self, ino: u64, offset: u64, data: &[u8]) -> Result<(), Errno> {
        let n = self.node_mut(ino)?;
        let end = offset + data.len() as u64;
        let old = n.data.len() as u64;
        if end > old {
            n.data.resize(end as usize, 0);
            // A hole between the old end and this write is zeros here but may be stale there.
            Self::mark(n, old, offset);
        }
        n.data[offset as usize..end as usize].copy_from_slice(data);
        Self::mark(n, offset, end);
        Ok(())
    }

    /// `truncate`/`set_len`, and `fallocate` growing the file (`grow_only`).
    pub fn set_len(&mut self, ino: u64, len: u64, grow_only: bool) -> Result<(), Errno> {
        let n = self.node_mut(ino)?;
        if n.kind != Kind::File {
            return Err(libc::EISDIR);
        }
        let old = n.data.len() as u64;
        if grow_only && len <= old {
            return Ok(());
        }
        n.data.resize(len as usize, 0);
        if len > old {
            Self::mark(n, old, len);
        } else {
            // The size itself changed: the next sync must truncate the backing file.
            n.dirty.insert(len / PAGE);
        }
        Ok(())
    }

    /// `fsync`/`fdatasync`: the file's entry, dirty pages and size reach the backing file.
    pub fn sync(&mut self, ino: u64) -> Result<(), Errno> {
        if self.node(ino)?.kind == Kind::Dir {
            return self.sync_dir(ino);
        }
        let backing = self.backing.clone();
        let n = self.node_mut(ino)?;
        if n.dirty.is_empty() && n.in_backing {
            return Ok(());
        }
        let f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(backing.join(&n.path))
            .map_err(io_errno)?;
        let len = n.data.len() as u64;
        for &page in &n.dirty {
            let from = page * PAGE;
            if from >= len {
                continue;
            }
            let to = (from + PAGE).min(len);
            f.write_all_at(&n.data[from as usize..to as usize], from)
                .map_err(io_errno)?;
        }
        f.set_len(len).map_err(io_errno)?;
        n.dirty.clear();
        n.in_backing = true;
        Ok(())
    }

    /// `fsync` of a directory: its entries become durable (with whatever data was synced).
    pub fn sync_dir(&mut self, ino: u64) -> Result<(), Errno> {
        let backing = self.backing.clone();
        for (child, _, kind) in self.children(ino)? {
            let n = self.nodes.get_mut(&child).expect("child listed");
            if kind == Kind::File && !n.in_backing {
                fs::File::create(backing.join(&n.path)).map_err(io_errno)?;
                n.in_backing = true;
                // Everything it holds is now unsynced relative to an empty backing file.
                let len = n.data.len() as u64;
                Self::mark(n, 0, len);
            }
        }
        Ok(())
    }

    /// `unlink` and `rmdir`.
    pub fn remove(&mut self, parent: u64, name: &std::ffi::OsStr, kind: Kind) -> Result<(), Errno> {
        let ino = self.lookup(parent, name)?;
        let n = self.node(ino)?;
        match (n.kind, kind) {
            (Kind::Dir, Kind::File) => return Err(libc::EISDIR),
            (Kind::File, Kind::Dir) => return Err(libc::ENOTDIR),
            (Kind::Dir, Kind::Dir) if !self.children(ino)?.is_empty() => {
                return Err(libc::ENOTEMPTY)
            }
            _ => {}
        }
        let n = self.nodes.remove(&ino).expect("looked up");
        self.by_path.remove(&n.path);
        if n.in_backing {
            let p = self.backing.join(&n.path);
            match kind {
                Kind::Dir => fs::remove_dir(p),
                Kind::File => fs::remove_file(p),
            }
            .map_err(io_errno)?;
        }
        Ok(())
    }

    pub fn rename(
        &mut self,
        parent: u64,
        name: &std::ffi::OsStr,
        new_parent: u64,
        new_name: &std::ffi::OsStr,
    ) -> Result<(), Errno> {
        let ino = self.lookup(parent, name)?;
        let to = self.child_path(new_parent, new_name)?;
        if let Some(&old) = self.by_path.get(&to) {
            if old == ino {
                return Ok(());
            }
            let kind = self.nodes[&old].kind;
            self.remove(new_parent, new_name, kind)?;
        }
        let from = self.nodes[&ino].path.clone();
        if self.nodes[&ino].in_backing {
            fs::rename(self.backing.join(&from), self.backing.join(&to)).map_err(io_errno)?;
        }
        // The node and, for a directory, everything under it move.
        let moved: Vec<u64> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.path.starts_with(&from))
            .map(|(&i, _)| i)
            .collect();
        for i in moved {
            let n = self.nodes.get_mut(&i).expect("listed");
            let rest = n.path.strip_prefix(&from).expect("prefix").to_owned();
            self.by_path.remove(&n.path);
            n.path = if rest.as_os_str().is_empty() {
                to.clone()
            } else {
                to.join(rest)
            };
            self.by_path.insert(n.path.clone(), i);
        }
        Ok(())
    }

    /// The power goes: everything not synced is gone, and nothing is answered any more.
    pub fn cut(&mut self) -> Dropped {
        let mut d = Dropped::default();
        for n in self.nodes.values() {
            d.dirty_pages += n.dirty.len();
            if n.kind == Kind::File && !n.in_backing {
                d.never_synced.push(n.path.clone());
            }
        }
        d.never_synced.sort();
        self.cut = true;
        self.nodes.clear();
        self.by_path.clear();
        d
    }
}
