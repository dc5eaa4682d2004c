"""Confinement of an executor worker process, applied once after its warm imports.

Layers, strongest first (`confine` returns the names of those that are active):
- rlimits: address space (memory bombs raise MemoryError), file size, no new processes, no core.
- Landlock (Linux >= 5.13): reads only below the Python installation and system libraries (no
  /proc, so no parent's environment), writes only below the scratch dir, no TCP bind/connect
  (ABI 4), no signals to processes outside the sandbox (ABI 6).
- seccomp (Linux x86_64/aarch64): fork/exec/socket/ptrace/mount/unshare, signals to other processes
  (kill, tkill, tgkill, sigqueue, pidfd; Landlock scopes signals only from ABI 6), and chmod/chown/xattr
  (file metadata, which Landlock does not cover) fail with EPERM, so neither fork bombs
  (RLIMIT_NPROC does not bind root) nor UDP nor ctypes get around it.
- Python audit hooks, only where Landlock is unavailable: the same rules at the Python level
  (best effort: they do not bind native code, so ctypes is refused as well).
Landlock and seccomp are called through ctypes; no Python binding of them ships with the stdlib.
"""

from __future__ import annotations

import ctypes
import os
import platform
import resource
import struct
import sys

# ---- Landlock (include/uapi/linux/landlock.h) ----
_SYS_LANDLOCK_CREATE_RULESET, _SYS_LANDLOCK_ADD_RULE, _SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
_FS_EXECUTE, _FS_WRITE_FILE, _FS_READ_FILE, _FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_FS_TRUNCATE, _FS_IOCTL_DEV = 1 << 14, 1 << 15
_FS_V1_ALL = (1 << 13) - 1
_FS_REFER = 1 << 13
_FILE_ACCESS = _FS_EXECUTE | _FS_WRITE_FILE | _FS_READ_FILE | _FS_TRUNCATE | _FS_IOCTL_DEV
_NET_BIND_TCP, _NET_CONNECT_TCP = 1, 2
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1, 2
_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2

# System read-only roots besides the Python installation and sys.path.
_SYSTEM_READ_ROOTS = ("/usr", "/lib", "/lib64", "/bin", "/sys/devices/system/cpu",
                      "/dev/null", "/dev/zero", "/dev/urandom")


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _check(result: int, what: str) -> int:
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")
    return result


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 if unavailable."""
    if sys.platform != "linux":
        return 0
    return max(0, _libc.syscall(_SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(1)))


_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # .../rstar_jax


def read_roots() -> list[str]:
    """Directories/files a worker may read: the interpreter, its libraries, sys.path, system libs.
    A source checkout on sys.path gives its `rstar_jax` package only: run directories often live in
    the checkout, and their problem files hold the gold answers."""
    installed = (sys.prefix, sys.base_prefix, sys.exec_prefix)
    roots = {*installed, *_SYSTEM_READ_ROOTS, _PACKAGE}
    checkout = os.path.dirname(_PACKAGE)
    if any(checkout.startswith(os.path.join(prefix, "")) for prefix in installed):
        checkout = None  # an installed package: its parent is site-packages
    roots.update(path for p in sys.path if p and (path := os.path.abspath(p)) != checkout)
    return sorted(r for r in roots if os.path.exists(r))


def _landlock(abi: int, scratch: str) -> None:
    fs = _FS_V1_ALL | (_FS_REFER if abi >= 2 else 0) | (_FS_TRUNCATE if abi >= 3 else 0)
    fs |= _FS_IOCTL_DEV if abi >= 5 else 0
    attr = _RulesetAttr(fs, _NET_BIND_TCP | _NET_CONNECT_TCP if abi >= 4 else 0,
                        _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL if abi >= 6 else 0)
    size = 8 if abi < 4 else 16 if abi < 6 else 24  # the struct grew with the ABI
    ruleset = _check(_libc.syscall(_SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr),
                                   ctypes.c_size_t(size), ctypes.c_uint32(0)), "landlock_create_ruleset")
    try:
        rules = [(root, _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR) for root in read_roots()]
        rules.append((scratch, fs))
        for path, access in rules:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            try:
                if not os.path.isdir(path):
                    access &= _FILE_ACCESS
                rule = _PathBeneathAttr(access & fs, fd)
                _check(_libc.syscall(_SYS_LANDLOCK_ADD_RULE, ruleset, 1, ctypes.byref(rule), 0),
                       f"landlock_add_rule({path})")
            finally:
                os.close(fd)
        _check(_libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")
        _check(_libc.syscall(_SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0), "landlock_restrict_self")
    finally:
        os.close(ruleset)


# ---- seccomp-bpf (linux/seccomp.h, linux/filter.h) ----
_ARCHES = {  # machine: (AUDIT_ARCH, clone, clone3, tgkill, syscalls that fail with EPERM)
    "x86_64": (0xC000003E, 56, 435, 234, {
        "fork": 57, "vfork": 58, "execve": 59, "execveat": 322, "socket": 41, "ptrace": 101,
        "process_vm_readv": 310, "process_vm_writev": 311, "kill": 62, "tkill": 200,
        "rt_sigqueueinfo": 129, "rt_tgsigqueueinfo": 297, "pidfd_open": 434, "pidfd_send_signal": 424,
        "mount": 165,
        "umount2": 166, "unshare": 272, "setns": 308, "chroot": 161, "pivot_root": 155,
        "chmod": 90, "fchmod": 91, "chown": 92, "fchown": 93, "lchown": 94, "fchownat": 260,
        "fchmodat": 268, "fchmodat2": 452, "setxattr": 188, "lsetxattr": 189, "fsetxattr": 190,
        "removexattr": 197, "lremovexattr": 198, "fremovexattr": 199}),
    "aarch64": (0xC00000B7, 220, 435, 131, {
        "execve": 221, "execveat": 281, "socket": 198, "ptrace": 117, "process_vm_readv": 270,
        "process_vm_writev": 271, "kill": 129, "tkill": 130, "rt_sigqueueinfo": 138,
        "rt_tgsigqueueinfo": 240, "pidfd_open": 434, "pidfd_send_signal": 424, "mount": 40, "umount2": 39,
        "unshare": 97, "setns": 268, "chroot": 51, "pivot_root": 41, "fchmod": 52,
        "fchmodat": 53, "fchownat": 54, "fchown": 55, "fchmodat2": 452, "setxattr": 5,
        "lsetxattr": 6, "fsetxattr": 7, "removexattr": 14, "lremovexattr": 15, "fremovexattr": 16}),
}
_BPF_LD_W_ABS, _BPF_JEQ_K, _BPF_JGE_K, _BPF_JSET_K, _BPF_RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
_RET_ALLOW, _RET_ERRNO = 0x7FFF0000, 0x00050000
_EPERM, _ENOSYS = 1, 38
_CLONE_THREAD = 0x00010000
_X32_SYSCALL_BIT = 0x40000000


def _bpf(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def _seccomp_program(machine: str, pid: int) -> bytes:
    """Deny process creation (threads allowed), exec, sockets, ptrace, signals to other processes
    (process `pid` may signal itself: abort and raise), namespaces, metadata."""
    arch, clone, clone3, tgkill, denied = _ARCHES[machine]
    deny, allow = _bpf(_BPF_RET_K, _RET_ERRNO | _EPERM), _bpf(_BPF_RET_K, _RET_ALLOW)
    prog = [_bpf(_BPF_LD_W_ABS, 4), _bpf(_BPF_JEQ_K, arch, 1, 0), deny,  # foreign arch: deny all
            _bpf(_BPF_LD_W_ABS, 0)]
    if machine == "x86_64":
        prog += [_bpf(_BPF_JGE_K, _X32_SYSCALL_BIT, 0, 1), deny]
    for nr in denied.values():
        prog += [_bpf(_BPF_JEQ_K, nr, 0, 1), deny]
    prog += [_bpf(_BPF_JEQ_K, tgkill, 0, 4), _bpf(_BPF_LD_W_ABS, 16),  # args[0]: the target's tgid
             _bpf(_BPF_JEQ_K, pid, 0, 1), allow, deny]
    # clone3 hides its flags in memory: ENOSYS makes glibc fall back to clone for threads.
    prog += [_bpf(_BPF_JEQ_K, clone3, 0, 1), _bpf(_BPF_RET_K, _RET_ERRNO | _ENOSYS)]
    prog += [_bpf(_BPF_JEQ_K, clone, 0, 3), _bpf(_BPF_LD_W_ABS, 16),  # args[0]: clone flags
             _bpf(_BPF_JSET_K, _CLONE_THREAD, 1, 0), deny]
    prog.append(allow)
    return b"".join(prog)


def _seccomp(machine: str) -> None:
    program = _seccomp_program(machine, os.getpid())
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = struct.pack("@HP", len(program) // 8, ctypes.addressof(buffer))  # struct sock_fprog
    _check(_libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")
    _check(_libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.c_char_p(fprog), 0, 0),
           "prctl(SECCOMP)")


# ---- audit hooks (fallback) ----
_REFUSED_EVENTS = frozenset({
    "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "pty.spawn",
    "subprocess.Popen", "os.kill", "os.killpg", "socket.__new__", "socket.connect", "socket.bind",
    "socket.getaddrinfo", "socket.sendto", "ctypes.dlopen", "ctypes.dlsym", "ctypes.dlsym/handle",
})
_PATH_EVENTS = frozenset({
    "os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.symlink",
    "os.link", "os.truncate", "os.utime", "shutil.rmtree", "shutil.copyfile", "shutil.move",
})
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _audit_guard(scratch: str) -> None:
    scratch = os.path.realpath(scratch) + os.sep

    def inside(path) -> bool:
        return isinstance(path, int) or os.path.realpath(os.fsdecode(path)).startswith(scratch)

    def hook(event: str, args: tuple) -> None:
        if event in _REFUSED_EVENTS:
            raise PermissionError(f"{event} is not allowed in the sandbox")
        if event == "open":
            path, mode, flags = args
            writes = (flags or 0) & _WRITE_FLAGS or any(c in (mode or "") for c in "wax+")
            if not isinstance(path, int) and (writes or os.fsdecode(path).startswith("/proc")) \
                    and not inside(path):
                raise PermissionError(f"opening {path!r} is not allowed in the sandbox")
        elif event in _PATH_EVENTS and args and not inside(args[0]):
            raise PermissionError(f"{event}({args[0]!r}) is not allowed in the sandbox")

    sys.addaudithook(hook)


def _vm_size_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def confine(scratch: str, *, memory_mb: int, max_file_mb: int, kernel: bool = True) -> list[str]:
    """Confine this process to `scratch`; returns the active layers. Irreversible.

    `kernel=False` skips Landlock/seccomp (to exercise the audit-hook fallback).
    """
    layers = ["rlimits"]
    if sys.platform == "linux":  # the address-space limit is on top of what is mapped already
        resource.setrlimit(resource.RLIMIT_AS, (_vm_size_bytes() + memory_mb * 2**20,) * 2)
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_mb * 2**20,) * 2)
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    abi = landlock_abi() if kernel else 0
    if abi:
        _landlock(abi, scratch)
        layers.append(f"landlock-abi{abi}")
    machine = platform.machine()
    if kernel and sys.platform == "linux" and machine in _ARCHES:
        _seccomp(machine)
        layers.append("seccomp")
    if not abi:  # last: the hooks refuse the ctypes calls that install seccomp
        _audit_guard(scratch)
        layers.append("audit-hooks")
    return layers
