"""Basic auth for the endpoints: bcrypt hashes checked in a rationed thread, outcomes remembered.

The users and their hashes come from the web config (:mod:`mail_exporter.webconfig`);
this module decides whether an ``Authorization`` header names one of them with the
right password, without letting anyone who can reach the port queue unbounded bcrypt
work (see :class:`BasicAuth`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
import secrets
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Final

import bcrypt

from mail_exporter.slots import Slots, SlotsFull

logger = logging.getLogger(__name__)

HASHING_THREADS: Final = 1
"""bcrypt checks computed at once."""
WAITING_PER_USER: Final = 4
"""bcrypt checks that may wait for a thread, per user name presented."""
# Remembered successful logins, at most: a new entry beyond this starts the set afresh.
_MAX_VERIFIED = 1024
# Remembered failed logins, at most: the oldest goes first.
_MAX_REFUSED = 4096


class HashingBusy(Exception):
    """Too many password checks wait for this user name: answer 503 at once."""


class _Hashing:
    """The threads bcrypt runs in and the turns at them; handed on across reloads."""

    def __init__(self) -> None:
        self._turns = Slots(HASHING_THREADS, max_waiting=WAITING_PER_USER)
        self._threads = ThreadPoolExecutor(HASHING_THREADS, thread_name_prefix="bcrypt")
        self._shedding = False

    async def run(
        self, queue: bytes | None, settled: Callable[[], bool | None], check: Callable[[], bool]
    ) -> bool:
        """``check()`` in a hashing thread once ``queue`` has its turn, unless ``settled()``
        knows the answer by then (another request with the same credentials was first)."""
        try:
            await self._turns.acquire(queue)
        except SlotsFull:
            if not self._shedding:
                self._shedding = True
                logger.warning(
                    "basic auth: more than %d password checks wait for one user; "
                    "answering 503 to more until they are done",
                    WAITING_PER_USER,
                )
            raise HashingBusy from None
        known = settled()
        if known is not None:
            self._release()
            return known
        done = asyncio.wrap_future(self._threads.submit(check))
        # The turn ends with the computation, not with its waiter (a client may go away).
        done.add_done_callback(lambda _: self._release())
        return await asyncio.shield(done)

    def _release(self) -> None:
        self._turns.release()
        if self._shedding and not self._turns.queued:
            self._shedding = False
            logger.info("basic auth: no more password checks waiting; 503s are over")


class BasicAuth:
    """Checks ``Authorization: Basic`` headers against bcrypt hashes.

    bcrypt is slow on purpose, which makes it a lever for anyone who can reach the port:

    - Every outcome is remembered under a keyed hash (HMAC with a per-process random key)
      of the user, the hash in force and the password presented. The next scrape with the
      right credentials skips bcrypt, and a client retrying an outdated password costs
      one check, not one a request. Passwords are never kept. A changed hash makes its
      entries useless at once, since the hash is part of the key.
    - Checks run in threads of their own, ``HASHING_THREADS`` at once: guessing costs
      that many CPUs at most, never stalls the event loop and never takes the threads
      /metrics renders in. Checks waiting for a thread queue per user name presented and
      the queues take turns, so guesses at one user's password delay another user by a
      few checks at most. Each queue holds ``WAITING_PER_USER``; past it a request gets
      503 with ``Retry-After`` at once, and the log says so once while it lasts. Names
      that are not configured share one queue, so inventing names buys no more turns;
      the price is that during such a flood, whether a name is configured can show
      (503 at once, or an answer later). User names are not the secret; passwords are.
    - An unknown user is checked against a decoy hash of the highest cost in use, so
      timing alone does not tell which users exist.
    - A reload hands all this on (:meth:`take_over`): credentials verified before stay
      verified while their user's hash is the same, so scrapes need no new bcrypt check,
      and checks in flight keep counting against the bound.
    """

    def __init__(self, users: Mapping[str, str]) -> None:
        self._hashes = {name.encode(): value.encode() for name, value in users.items()}
        self._decoy_cost = max(int(value[4:6]) for value in users.values())
        self._decoy: bytes | None = None
        self._key = secrets.token_bytes(32)
        self._verified: set[bytes] = set()
        self._refused: OrderedDict[bytes, None] = OrderedDict()
        self._hashing = _Hashing()

    def take_over(self, previous: BasicAuth) -> None:
        """Share what ``previous`` (the running web config's) remembers, and its threads."""
        self._key = previous._key
        self._verified = previous._verified
        self._refused = previous._refused
        self._hashing = previous._hashing
        if previous._decoy_cost == self._decoy_cost:
            self._decoy = previous._decoy

    async def allows(self, authorization: str | None) -> bool:
        """Whether the ``Authorization`` header names a user with the right password.

        Raises :class:`HashingBusy` when too many checks wait for that user name."""
        credentials = _basic_credentials(authorization)
        if credentials is None:
            return False
        user, _, password = credentials.partition(b":")
        hashed = self._hashes.get(user)
        # Neither a user name nor a hash holds ":", so the joined fields are unambiguous.
        key = hmac.digest(self._key, b":".join((user, hashed or b"", password)), "sha256")
        known = self._known(key)
        if known is not None:
            return known
        queue = user if hashed is not None else None
        valid = await self._hashing.run(
            queue, lambda: self._known(key), lambda: self._verify(hashed, password)
        )
        self._remember(key, valid)
        return valid

    def _known(self, key: bytes) -> bool | None:
        if key in self._verified:
            return True
        return False if key in self._refused else None

    def _remember(self, key: bytes, valid: bool) -> None:
        if valid:
            if len(self._verified) >= _MAX_VERIFIED:
                self._verified.clear()
            self._verified.add(key)
            return
        self._refused[key] = None
        if len(self._refused) > _MAX_REFUSED:
            self._refused.popitem(last=False)

    def _verify(self, hashed: bytes | None, password: bytes) -> bool:
        if hashed is None:
            if self._decoy is None:
                self._decoy = bcrypt.hashpw(b"decoy", bcrypt.gensalt(self._decoy_cost))
            _checkpw(password, self._decoy)
            return False
        return _checkpw(password, hashed)


def _checkpw(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password, hashed)  # compares in constant time
    except ValueError:  # longer than bcrypt's 72 bytes: no configured password is
        return False


def _basic_credentials(authorization: str | None) -> bytes | None:
    """``user:password`` from a Basic authorization header, or None."""
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        credentials = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    return credentials if b":" in credentials else None


def hash_password(password: str, cost: int) -> str:
    """A bcrypt hash for ``basic_auth_users``."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost)).decode()
