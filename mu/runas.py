"""Running as the owner of MU_HOME: root drops to the folder's owner before touching it, and
every file in it is checked usable before anything starts, with one line saying what to do.

Why: a command run by root on a data folder owned by `mu` would leave root-owned files the
server (running as `mu`) cannot read: the store, the journal, the blocklist.
"""

import os
import pwd
import stat
import sys

from . import safeio


class HomeError(Exception):
    """MU_HOME cannot be used by this process; str() is one line naming the fix."""


def command_name() -> str:
    """How the operator runs mu here, for advice in messages: the installed wrapper sets
    MU_COMMAND; the single-file build is argv[0]; otherwise the script."""
    if os.environ.get("MU_COMMAND"):
        return os.environ["MU_COMMAND"]
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else "mu.py"
    if os.path.basename(argv0) == "mu.py":
        return "python mu.py"
    return argv0


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _nearest_existing(path: str) -> str:
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def home_owner(home: str) -> int:
    """The uid that owns MU_HOME (or, before it exists, the folder it will be made in)."""
    return os.stat(_nearest_existing(home)).st_uid


def drop_to_owner(home: str, serving: bool) -> None:
    """When run by root on a MU_HOME owned by another user, become that user (commands) or
    refuse (the server: binding port 25 needs what systemd grants the unit)."""
    if os.geteuid() != 0:
        return
    uid = home_owner(home)
    if uid == 0:
        return
    name = _user_name(uid)
    if serving:
        raise HomeError(f"MU_HOME={home} belongs to user {name}; start the server as that user: "
                        f"systemctl start mu (or: runuser -u {name} -- {command_name()} --serve)")
    try:
        entry = pwd.getpwuid(uid)
        gid, groups = entry.pw_gid, os.getgrouplist(entry.pw_name, entry.pw_gid)
        os.environ.update(HOME=entry.pw_dir, USER=entry.pw_name, LOGNAME=entry.pw_name)
    except KeyError:   # an owner with no passwd entry: its group from the folder
        gid = os.stat(_nearest_existing(home)).st_gid
        groups = [gid]
    unreadable = _unreadable_as(uid, gid, groups)
    if unreadable:
        raise HomeError(f"MU_HOME={home} belongs to user {name}, who cannot read {unreadable} (this Python "
                        f"or mu itself); run the command as {name} with a Python {name} can read, "
                        f"or use the installed command (make install: /opt/mu/mu)")
    try:
        os.setgroups(groups)
        os.setgid(gid)
        os.setuid(uid)
    except OSError as exc:
        raise HomeError(f"MU_HOME={home} belongs to user {name} and switching to it failed "
                        f"({exc.strerror or exc}); run: runuser -u {name} -- {command_name()} ...") from None


def _code_folders() -> list:
    """Where this process imports from: the standard library, mu, its dependencies."""
    import importlib.util
    folders = [os.path.dirname(os.__file__), os.path.dirname(os.path.abspath(__file__))]
    for name in ("bottle", "dkim", "dns"):
        spec = importlib.util.find_spec(name)
        if spec and spec.origin:
            folders.append(os.path.dirname(spec.origin))
    return folders


def _unreadable_as(uid: int, gid: int, groups: list):
    """The first code folder the user could not read (imports after switching would fail
    with a traceback), or None. Asked in a child process that switches, so we need not."""
    folders = _code_folders()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            os.setgroups(groups)
            os.setgid(gid)
            os.setuid(uid)
            bad = next((f for f in folders if not os.access(f, os.R_OK | os.X_OK)), "")
        except OSError:
            bad = folders[0]
        os.write(write_end, bad.encode())
        os._exit(0)
    os.close(write_end)
    try:
        answer = os.read(read_end, 4096).decode()
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    return answer or None


def check_home(home: str) -> None:
    """Check that this process can use MU_HOME and every file in it. A MU_HOME that does not
    exist yet is made by the first command that writes (a refused command leaves nothing),
    so here its nearest existing parent must let us make it."""
    if os.path.lexists(home) and not os.path.isdir(home):
        raise HomeError(f"MU_HOME: {home} is not a folder")
    if not os.path.exists(home):
        parent = os.path.dirname(os.path.abspath(home))
        while parent and not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.access(parent, os.W_OK | os.X_OK):
            raise HomeError(f"MU_HOME: cannot create {home}: {parent} is not writable by {_user_name(os.geteuid())}")
        return
    try:
        safeio.ensure_dir(home)
    except OSError as exc:
        raise HomeError(f"MU_HOME: cannot create or use {home}: {exc.strerror or exc}") from None
    me = _user_name(os.geteuid())
    if not os.access(home, os.R_OK | os.W_OK | os.X_OK):
        owner = _user_name(os.stat(home).st_uid)
        raise HomeError(f"MU_HOME: {home} belongs to {owner} and is not writable by {me}; "
                        f"run mu as {owner} (or as root, which runs commands as {owner})")
    folders = [home] + [os.path.join(home, d) for d in ("blobs",) if os.path.isdir(os.path.join(home, d))]
    for folder in folders:
        for entry in sorted(os.listdir(folder)):
            path = os.path.join(folder, entry)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue   # removed meanwhile (a pack reclaimed, a temporary file renamed)
            need = os.R_OK | os.W_OK | (os.X_OK if stat.S_ISDIR(st.st_mode) else 0)
            if entry == "keys":
                continue   # optional: an unusable DKIM key turns signing off, with a log line
            if not os.access(path, need):
                owner = _user_name(st.st_uid)
                raise HomeError(f"MU_HOME: {path} belongs to {owner} and cannot be used by {me} "
                                f"(files made by an earlier command run as root?); "
                                f"fix with: chown -R {me}: {home}")
