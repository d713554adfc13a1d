//! Raw system calls aya 0.14 does not offer: `BPF_PROG_TEST_RUN`, and mounting bpffs for the
//! pinned links.

use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;
use std::path::Path;

const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// The `test` member of `union bpf_attr` (fields up to `batch_size`).
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// Runs program `prog_fd` `repeat` times on a copy of `packet`; returns the last return value.
pub fn prog_test_run(prog_fd: RawFd, packet: &[u8], repeat: u32) -> io::Result<u32> {
    let size =
        u32::try_from(packet.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let fd = u32::try_from(prog_fd).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut attr = TestRunAttr {
        prog_fd: fd,
        data_size_in: size,
        data_in: packet.as_ptr() as u64,
        repeat,
        ..TestRunAttr::default()
    };
    // SAFETY: `attr` is a valid, fully initialised bpf_attr prefix; the kernel only reads
    // `packet` (data_out is null, so nothing is written back but the attr itself).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestRunAttr,
            std::mem::size_of::<TestRunAttr>() as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(attr.retval)
}

/// Whether `path` is on a bpf filesystem.
pub fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct; `c` is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type as i64 == BPF_FS_MAGIC
}

/// Makes sure `dir` (under `/sys/fs/bpf`) exists on bpffs, mounting bpffs at `root` when
/// nothing is mounted there yet.
pub fn ensure_bpffs_dir(root: &Path, dir: &Path) -> io::Result<()> {
    if !is_bpffs(root) {
        let target = CString::new(root.as_os_str().as_encoded_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let fstype = c"bpf";
        // SAFETY: all pointers are NUL-terminated strings alive for the call; no data argument.
        let rc = unsafe {
            libc::mount(
                fstype.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!(
                    "{} is not bpffs and mounting it failed: {e}",
                    root.display()
                ),
            ));
        }
    }
    std::fs::create_dir_all(dir)
}
