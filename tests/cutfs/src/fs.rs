//! The FUSE side: each kernel request is answered from the [`Volume`].
//!
//! Every open is `direct_io` and attributes are never cached, so every `write` and `read` of the
//! process under test reaches the volume: nothing can become durable behind its back (with no
//! page cache for the file, `sync_file_range` has nothing to write). Locks (`flock`, `fcntl`) are
//! left to the kernel: without a lock op and without the lock capabilities, FUSE locks locally.

use std::ffi::OsStr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use crate::volume::{Kind, Volume};

/// Attributes and entries are not cached: sizes change under the kernel's feet on a cut.
const TTL: Duration = Duration::ZERO;

/// The filesystem: a volume shared with the thread that waits for the cut command.
pub struct CutFs {
    pub volume: Arc<Mutex<Volume>>,
    pub hold: Arc<Hold>,
}

/// While held, every `fsync` waits (a disk that takes its time): what waits for durability
/// visibly waits, what does not goes on.
#[derive(Default)]
pub struct Hold {
    held: Mutex<bool>,
    released: Condvar,
}

impl Hold {
    /// Toggles the hold; true when syncs are held now.
    pub fn toggle(&self) -> bool {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        *held = !*held;
        self.released.notify_all();
        *held
    }

    fn wait(&self) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        while *held {
            held = self.released.wait(held).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl CutFs {
    fn vol(&self) -> MutexGuard<'_, Volume> {
        // A panic in one request must not wedge the mount: the data is still consistent.
        self.volume.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn attr(v: &Volume, ino: u64) -> Result<FileAttr, i32> {
    let n = v.node(ino)?;
    let (kind, perm, nlink) = match n.kind {
        Kind::Dir => (FileType::Directory, 0o755, 2),
        Kind::File => (FileType::RegularFile, 0o644, 1),
    };
    let size = n.data.len() as u64;
    let now = SystemTime::now();
    Ok(FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: now,
        mtime: now,
        ctime: now,
        crtime: now,
        kind,
        perm,
        nlink,
        uid: unsafe { libc::geteuid() },
        gid: unsafe { libc::getegid() },
        rdev: 0,
        blksize: 4096,
        flags: 0,
    })
}

fn errno(e: i32) -> Errno {
    Errno::from_i32(e)
}

/// Answers an operation with no result: ok, or its errno.
fn empty<T>(reply: ReplyEmpty, result: Result<T, i32>) {
    match result {
        Ok(_) => reply.ok(),
        Err(e) => reply.error(errno(e)),
    }
}

impl Filesystem for CutFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let v = self.vol();
        match v.lookup(parent.0, name).and_then(|i| attr(&v, i)) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match attr(&self.vol(), ino.0) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut v = self.vol();
        let r = match size {
            Some(len) => v.set_len(ino.0, len, false),
            None => Ok(()),
        };
        match r.and_then(|()| attr(&v, ino.0)) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let mut v = self.vol();
        match v
            .create(parent.0, name, Kind::Dir)
            .and_then(|i| attr(&v, i))
        {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(reply, self.vol().remove(parent.0, name, Kind::File))
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(reply, self.vol().remove(parent.0, name, Kind::Dir))
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if !flags.is_empty() {
            return reply.error(Errno::from_i32(libc::EINVAL));
        }
        empty(
            reply,
            self.vol().rename(parent.0, name, newparent.0, newname),
        )
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.vol().node(ino.0) {
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut v = self.vol();
        let ino = match v.lookup(parent.0, name) {
            Ok(_) if flags & libc::O_EXCL != 0 => Err(libc::EEXIST),
            Ok(i) => Ok(i),
            Err(libc::ENOENT) => v.create(parent.0, name, Kind::File),
            Err(e) => Err(e),
        };
        let ino = ino.and_then(|i| {
            if flags & libc::O_TRUNC != 0 {
                v.set_len(i, 0, false)?;
            }
            Ok(i)
        });
        match ino.and_then(|i| attr(&v, i)) {
            Ok(a) => reply.created(
                &TTL,
                &a,
                Generation(0),
                FileHandle(0),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.vol().read(ino.0, offset, size) {
            Ok(d) => reply.data(d),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.vol().write(ino.0, offset, data) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2) makes nothing durable.
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.hold.wait();
        empty(reply, self.vol().sync(ino.0))
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let children = match self.vol().children(ino.0) {
            Ok(c) => c,
            Err(e) => return reply.error(errno(e)),
        };
        let dots = [
            (ino.0, ".".into(), Kind::Dir),
            (ino.0, "..".into(), Kind::Dir),
        ];
        for (i, (child, name, kind)) in dots
            .into_iter()
            .chain(children)
            .enumerate()
            .skip(offset as usize)
        {
            let kind = match kind {
                Kind::Dir => FileType::Directory,
                Kind::File => FileType::RegularFile,
            };
            if reply.add(INodeNo(child), i as u64 + 1, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.hold.wait();
        empty(reply, self.vol().sync_dir(ino.0))
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        empty(reply, self.vol().node(ino.0))
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let r = match mode {
            0 => self.vol().set_len(ino.0, offset + length, true),
            libc::FALLOC_FL_KEEP_SIZE => self.vol().node(ino.0).map(|_| ()),
            _ => Err(libc::EOPNOTSUPP),
        };
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }
}
