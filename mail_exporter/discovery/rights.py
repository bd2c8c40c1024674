"""What the current user may read, and what to grant when it may not.

Discovery runs as the exporter will (or as the admin trying it out), so a collector
that would fail for lack of rights is written into the config commented out, with the
reason and the grant that fixes it: a group to join, or the S.M.A.R.T. drop-in. Only
permissions are looked at (``os.access`` and the file's group): nothing is opened for
writing and no right is used to find out.
"""

from __future__ import annotations

import grp
import os
import pwd
from pathlib import Path

SMART_DROP_IN = "deploy/systemd/mail-exporter-smart.conf"


def user_name() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"uid {os.getuid()}"


def is_root() -> bool:
    return os.geteuid() == 0


def unreadable(path: Path, directory: bool = False) -> str:
    """ "" when this user can read ``path`` (list and enter a directory); else why not,
    with the group that would grant it when the group may read it."""
    wanted = os.R_OK | (os.X_OK if directory else 0)
    if os.access(path, wanted):
        return ""
    try:
        status = path.stat()
    except FileNotFoundError:
        return f"{path} does not exist"
    except OSError as error:
        return f"{path}: {error.strerror}"
    group_bits = 0o050 if directory else 0o040
    if status.st_mode & group_bits == group_bits:
        try:
            group = grp.getgrgid(status.st_gid).gr_name
        except KeyError:
            group = str(status.st_gid)
        return f"{path} is not readable by {user_name()}: add it to group {group}"
    return f"{path} is not readable by {user_name()} (only by its owner)"
