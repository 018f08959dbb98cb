"""User accounts: names, roles, passwords (scrypt), credits, API tokens, web sessions, app
passwords, and logging in (`login` for the web, `authenticate_client` for mail clients),
throttled per account and per client address."""

import hashlib
import hmac
import re
import secrets
import time

from .ratelimit import Throttle, address_key

USERNAME_RE = re.compile(r"^[a-z][a-z0-9_.-]{2,31}$")
# Role addresses that must stay with the operators (RFC 2142, RFC 5321 §4.5.1).
RESERVED_NAMES = frozenset({"postmaster", "abuse", "admin", "root", "mailer-daemon", "noreply"})
MIN_PASSWORD_CHARS = 6        # for self-service sign-up on the web
MIN_OPERATOR_PASSWORD_CHARS = 1   # the CLI's operator picks their own policy
MAX_PASSWORD_CHARS = 1024
MAX_USERNAME_CHARS = 32       # USERNAME_RE's bound: anything longer names nobody
SESSION_SECONDS = 30 * 24 * 3600
INVITE_SECONDS = 7 * 24 * 3600
# A token's "last used" is recorded at most this often: a journal write per API request
# would cost more than the listing is worth.
TOKEN_USED_RESOLUTION_SECONDS = 3600
TOKEN_ID_CHARS = 8            # the listing's id: the start of the token's SHA-256, never the token
MAX_LOGIN_FAILURES = 10       # failures in a row for one account before it is locked
LOGIN_LOCK_SECONDS = 15 * 60
# App passwords: 20 characters of a 32-letter alphabet (100 bits; no 0/o, 1/l to misread),
# shown in groups of five. Random, not chosen, so a fast hash (SHA-256) stores them safely.
APP_PASSWORD_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"
APP_PASSWORD_CHARS = 20
APP_PASSWORD_GROUP = 5
MAX_APP_PASSWORDS = 100       # per user
MAX_LABEL_CHARS = 64

# scrypt cost: ~50 ms and 16 MiB per hash on a small server.
_SCRYPT = {"n": 2 ** 14, "r": 8, "p": 1}


class AccountError(ValueError):
    """A request about accounts that cannot be done; the text says why."""


class NotFound(AccountError):
    pass


class InviteInvalid(AccountError):
    pass


class LoginThrottled(AccountError):
    """Too many failed logins: for this account (`scope` "account") or from this client's
    network (`scope` "address"); refused without looking at the secret."""

    def __init__(self, scope: str):
        super().__init__("too many failed logins for this account" if scope == "account"
                         else "too many failed logins from this network")
        self.scope = scope


class LoginThrottle:
    """The failure counts every login shares (web, IMAP, submission): MAX_LOGIN_FAILURES in
    a row lock an account for LOGIN_LOCK_SECONDS; `per_address` failures from one client
    address (an IPv6 /64), whatever the accounts, lock that address as long."""

    def __init__(self, per_address: int, per_account: int = MAX_LOGIN_FAILURES,
                 lock_seconds: float = LOGIN_LOCK_SECONDS):
        self.by_account = Throttle(per_account, lock_seconds)
        self.by_address = Throttle(per_address, lock_seconds)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def hash_password(password: str) -> dict:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, maxmem=64 * 1024 * 1024, **_SCRYPT)
    return {"alg": "scrypt", "salt": salt.hex(), "hash": digest.hex(), **_SCRYPT}


def check_password(password: str, stored: dict) -> bool:
    if len(password) > MAX_PASSWORD_CHARS:   # never spend scrypt on a megabyte
        return False
    digest = hashlib.scrypt(password.encode("utf-8"), salt=bytes.fromhex(stored["salt"]),
                            n=stored["n"], r=stored["r"], p=stored["p"], maxmem=64 * 1024 * 1024)
    return hmac.compare_digest(digest.hex(), stored["hash"])


# Checking a password for a name that does not exist costs the same as for one that does.
_DUMMY_HASH = hash_password(secrets.token_hex(8))


def normalize_name(name: str) -> str:
    return (name or "").strip().lower()


def new_app_password() -> str:
    """`abcde-fghij-kmnop-qrstu`: typed on a phone, read aloud, pasted; never chosen."""
    chars = "".join(secrets.choice(APP_PASSWORD_ALPHABET) for _ in range(APP_PASSWORD_CHARS))
    return "-".join(chars[i:i + APP_PASSWORD_GROUP] for i in range(0, APP_PASSWORD_CHARS, APP_PASSWORD_GROUP))


def _app_password_hash(secret: str):
    """The stored hash of what a client sent, if it has the shape of an app password (case,
    spaces and dashes as the user typed them do not matter); else None."""
    if len(secret) > 4 * APP_PASSWORD_CHARS:
        return None
    compact = "".join(secret.split()).replace("-", "").lower()
    if len(compact) != APP_PASSWORD_CHARS or any(c not in APP_PASSWORD_ALPHABET for c in compact):
        return None
    return _sha256(compact)


def validate_label(label: str) -> str:
    """An app password's label as stored: what the user typed, outer blanks removed."""
    label = (label or "").strip()
    if not label:
        raise AccountError("an app password needs a label (the device it is for)")
    if len(label) > MAX_LABEL_CHARS:
        raise AccountError(f"a label is at most {MAX_LABEL_CHARS} characters")
    if not all(c.isprintable() for c in label):
        raise AccountError("a label cannot hold control characters")
    return label


def validate_new_name(name: str) -> str:
    name = normalize_name(name)
    if not USERNAME_RE.match(name):
        raise AccountError("username must be 3-32 characters: a letter, then letters, digits, '.', '_' or '-'")
    if name in RESERVED_NAMES:
        raise AccountError(f"username {name!r} is reserved")
    return name


def validate_password(password: str, minimum: int = MIN_PASSWORD_CHARS) -> None:
    if not password:
        raise AccountError("password must not be empty")
    if len(password) < minimum:
        raise AccountError(f"password must be at least {minimum} characters")
    if len(password) > MAX_PASSWORD_CHARS:
        raise AccountError("password is too long")


class Accounts:
    def __init__(self, store, mail_domain: str = None, throttle: LoginThrottle = None):
        self.store = store
        self.mail_domain = mail_domain    # NAME@mail_domain logs in as NAME (mail clients)
        self.throttle = throttle or LoginThrottle(per_address=50)

    # ------------------------------------------------------------ users

    def create(self, name: str, password: str, admin: bool = False, credits: int = 0,
               admin_if_first: bool = False, min_password_chars: int = MIN_PASSWORD_CHARS,
               invite: str = None) -> dict:
        """A new account. With `invite`, the invitation is used up in the same write (and the
        account is refused when it is not valid); `admin_if_first` makes it an admin when
        there is none yet."""
        name = validate_new_name(name)
        validate_password(password, min_password_chars)
        if credits < 0:
            raise AccountError("credits cannot be negative")
        pw = hash_password(password)

        invite_hash = _sha256(invite) if invite else None

        def build(state, _refs):
            if name in state.users:
                raise AccountError(f"user {name!r} already exists")
            records = []
            if invite_hash:
                entry = state.invites.get(invite_hash)
                if not entry or entry["expires"] < time.time():
                    raise InviteInvalid("this invitation link is not valid (used, revoked or expired)")
                records.append({"op": "invite.del", "hash": invite_hash})
            role = "admin" if admin or (admin_if_first and not any(
                u["role"] == "admin" for u in state.users.values())) else "user"
            fields = {"role": role, "credits": credits, "pw": pw, "created_at": time.time(),
                      "disabled": False}
            records.append({"op": "user.put", "name": name, "fields": fields})
            return records, dict(fields, name=name)

        return self.store.commit(build)

    def get(self, name: str):
        with self.store.reading() as state:
            user = state.users.get(normalize_name(name))
            return dict(user) if user else None

    def require(self, name: str) -> dict:
        user = self.get(name)
        if user is None:
            raise NotFound(f"no such user: {name}")
        return user

    def all(self) -> list:
        with self.store.reading() as state:
            return [dict(state.users[n]) for n in sorted(state.users)]

    def has_admin(self) -> bool:
        with self.store.reading() as state:
            return any(u["role"] == "admin" and not u.get("disabled") for u in state.users.values())

    def admins(self) -> list:
        with self.store.reading() as state:
            return sorted(n for n, u in state.users.items() if u["role"] == "admin" and not u.get("disabled"))

    def update(self, name: str, role: str = None, credits: int = None, disabled: bool = None) -> dict:
        name = normalize_name(name)
        fields = {}
        if role is not None:
            fields["role"] = role
        if credits is not None:
            if credits < 0:
                raise AccountError("credits cannot be negative")
            fields["credits"] = credits
        if disabled is not None:
            fields["disabled"] = disabled

        def build(state, _refs):
            if name not in state.users:
                raise NotFound(f"no such user: {name}")
            return [{"op": "user.put", "name": name, "fields": fields}], dict(state.users[name], **fields)

        return self.store.commit(build)

    def set_password(self, name: str, password: str, min_password_chars: int = MIN_PASSWORD_CHARS,
                     keep_session: str = None) -> dict:
        """A new password; every web session of the user ends, but `keep_session` (the
        session id of the page that changed it)."""
        name = normalize_name(name)
        validate_password(password, min_password_chars)
        pw = hash_password(password)
        keep = _sha256(keep_session) if keep_session else None

        def build(state, _refs):
            if name not in state.users:
                raise NotFound(f"no such user: {name}")
            return [{"op": "user.put", "name": name, "fields": {"pw": pw}},
                    {"op": "user.sessions.del", "user": name, "keep": keep}], dict(state.users[name], pw=pw)

        return self.store.commit(build)

    def add_credits(self, name: str, delta: int) -> dict:
        name = normalize_name(name)

        def build(state, _refs):
            user = state.users.get(name)
            if user is None:
                raise NotFound(f"no such user: {name}")
            if user["credits"] + delta < 0:
                raise AccountError("credits cannot go below zero")
            return [{"op": "user.credit", "name": name, "delta": delta}], user["credits"] + delta

        return self.store.commit(build)

    def authenticate(self, name: str, password: str):
        """The user if the password is right and the account enabled, else None."""
        if len(name or "") > MAX_USERNAME_CHARS:
            check_password(password[:MAX_PASSWORD_CHARS], _DUMMY_HASH)
            return None
        user = self.get(name)
        if user is None:
            check_password(password, _DUMMY_HASH)
            return None
        if not check_password(password, user["pw"]) or user.get("disabled"):
            return None
        return user

    # ------------------------------------------------------------ logging in

    def login(self, name: str, password: str, peer: str):
        """The web login: the user if NAME's account password is right (never an app
        password: those are for mail clients), else None; LoginThrottled when refused."""
        return self._login(name, password, peer, app_passwords=False)

    def authenticate_client(self, name: str, secret: str, peer: str):
        """A mail client's login (IMAP, submission): NAME or NAME@MAIL_DOMAIN with the
        account password or one of the account's app passwords.

        Returns the user (a dict, with `credential`: "password" or "app-password:LABEL", for
        `still_valid`), or None for wrong credentials or a disabled account. Raises
        LoginThrottled, without looking at the secret, while the client's address is
        locked; while only the account is locked, its app passwords still work (they cannot
        be guessed, so the lock is not there for them) and its password is not tried.
        Failures count in the same throttles as the web login's."""
        return self._login(name, secret, peer, app_passwords=True)

    def login_name(self, name: str):
        """The account NAME (or NAME@MAIL_DOMAIN) names, normalized; None if it can name none."""
        name = normalize_name(name)
        local, at, domain = name.rpartition("@")
        if at:
            if not self.mail_domain or domain.rstrip(".") != self.mail_domain.lower():
                return None
            name = local
        return name if name and len(name) <= MAX_USERNAME_CHARS else None

    def _login(self, name: str, secret: str, peer: str, app_passwords: bool):
        throttle = self.throttle
        client = address_key(peer or "")
        if throttle.by_address.refused(client):
            raise LoginThrottled("address")
        secret = secret if isinstance(secret, str) else ""
        account = self.login_name(name)
        if account is None:   # names nobody: nothing to count it against but the address
            throttle.by_address.count(client)
            return None
        locked = throttle.by_account.refused(account)
        user = self.get(account)
        credential = None   # (what it is, the stored hash it matched)
        if user is not None and app_passwords:
            credential = self._matching_app_password(account, secret)
        if credential is None:
            if locked:
                raise LoginThrottled("account")
            if user is None:
                check_password(secret, _DUMMY_HASH)
            elif check_password(secret, user["pw"]):
                credential = ("password", user["pw"]["hash"])
        if credential is None or user.get("disabled"):
            throttle.by_account.count(account)
            throttle.by_address.count(client)
            return None
        if credential[0] == "password":
            # Only the password ends its lock: a phone logging in with an app password every
            # few minutes would otherwise give someone guessing the password fresh tries.
            throttle.by_account.forget(account)
        return dict(user, credential=credential[0], credential_hash=credential[1])

    def still_valid(self, user: dict) -> bool:
        """Whether a login (`authenticate_client`'s result) would still succeed: the account
        enabled, its password unchanged, the app password it used not revoked. Sessions
        ask before each transaction, so a revocation takes effect at once."""
        current = self.get(user["name"])
        if current is None or current.get("disabled"):
            return False
        credential = user.get("credential", "password")
        if credential == "password":
            return current["pw"]["hash"] == user.get("credential_hash")
        label = credential.split(":", 1)[1]
        with self.store.reading() as state:
            entry = state.app_passwords.get(current["name"], {}).get(label)
        return entry is not None and entry["hash"] == user.get("credential_hash")

    # ------------------------------------------------------------ app passwords

    def _matching_app_password(self, name: str, secret: str):
        digest = _app_password_hash(secret)
        if digest is None:
            return None
        with self.store.reading() as state:
            entries = dict(state.app_passwords.get(name, {}))
        for label, entry in entries.items():
            if hmac.compare_digest(entry["hash"], digest):
                self._note_app_password_used(name, label, entry)
                return f"app-password:{label}", entry["hash"]
        return None

    def _note_app_password_used(self, name: str, label: str, entry: dict) -> None:
        now = time.time()
        last_used = entry.get("last_used")
        if last_used is not None and now - last_used < TOKEN_USED_RESOLUTION_SECONDS:
            return
        record = {"op": "apppw.used", "user": name, "label": label, "at": now}
        try:
            self.store.commit(lambda state, refs: ([record], None))
        except Exception:   # bookkeeping only: the login goes on
            pass

    def create_app_password(self, name: str, label: str = None) -> tuple:
        """(label, password) of a new app password for the user; the password is shown
        once and kept only as a hash. Without `label`, the first free `device-N`."""
        name = normalize_name(name)
        label = validate_label(label) if label is not None else None
        password = new_app_password()
        digest = _app_password_hash(password)

        def build(state, _refs):
            if name not in state.users:
                raise NotFound(f"no such user: {name}")
            mine = state.app_passwords.get(name, {})
            taken = {k.casefold() for k in mine}
            chosen = label
            if chosen is None:
                chosen = next(f"device-{n}" for n in range(1, len(mine) + 2) if f"device-{n}" not in taken)
            elif chosen.casefold() in taken:
                raise AccountError(f"{name} already has an app password labelled {chosen!r}; "
                                   f"revoke it first or choose another label")
            if len(mine) >= MAX_APP_PASSWORDS:
                raise AccountError(f"{name} has {MAX_APP_PASSWORDS} app passwords already; revoke some first")
            return [{"op": "apppw.add", "user": name, "label": chosen, "hash": digest, "at": time.time()}], chosen

        return self.store.commit(build), password

    def app_passwords(self, name: str) -> list:
        """[{label, created_at, last_used}] of the user's app passwords, oldest first."""
        name = self.require(name)["name"]
        with self.store.reading() as state:
            found = [{"label": label, "created_at": e["created_at"], "last_used": e.get("last_used")}
                     for label, e in state.app_passwords.get(name, {}).items()]
        return sorted(found, key=lambda e: (e["created_at"], e["label"]))

    def revoke_app_password(self, name: str, label: str) -> str:
        """Remove the user's app password with this label (case-insensitively); return
        the label as it was stored. Clients using it are refused from their next login
        or transaction on."""
        name = normalize_name(name)
        wanted = (label or "").strip()

        def build(state, _refs):
            if name not in state.users:
                raise NotFound(f"no such user: {name}")
            mine = state.app_passwords.get(name, {})
            found = wanted if wanted in mine else next((k for k in mine if k.casefold() == wanted.casefold()), None)
            if found is None:
                raise NotFound(f"{name} has no app password labelled {wanted!r}")
            return [{"op": "apppw.del", "user": name, "label": found}], found

        return self.store.commit(build)

    # ------------------------------------------------------------ API tokens

    def issue_token(self, name: str) -> str:
        name = normalize_name(name)
        token = "mu_" + secrets.token_urlsafe(32)

        def build(state, _refs):
            if name not in state.users:
                raise NotFound(f"no such user: {name}")
            return [{"op": "token.add", "hash": _sha256(token), "user": name, "at": time.time()}], token

        return self.store.commit(build)

    def user_for_token(self, token: str):
        if not token or len(token) > 200:
            return None
        digest = _sha256(token)
        with self.store.reading() as state:
            entry = state.tokens.get(digest)
            user = entry and state.users.get(entry["user"])
            if not user or user.get("disabled"):
                return None
            user, last_used = dict(user), entry.get("last_used")
        now = time.time()
        if last_used is None or now - last_used >= TOKEN_USED_RESOLUTION_SECONDS:
            try:
                self.store.commit(lambda state, refs: ([{"op": "token.used", "hash": digest, "at": now}], None))
            except Exception:   # bookkeeping only: the request goes on
                pass
        return user

    def tokens(self, name: str) -> list:
        """[{id, created_at, last_used}] of a user's API tokens, oldest first."""
        name = self.require(name)["name"]
        with self.store.reading() as state:
            found = [{"id": h[:TOKEN_ID_CHARS], "created_at": t["created_at"], "last_used": t.get("last_used")}
                     for h, t in state.tokens.items() if t["user"] == name]
        return sorted(found, key=lambda t: t["created_at"])

    def revoke_token(self, name: str, token_id: str) -> str:
        """Remove the user's token whose id (the listing's) is `token_id`; return the id."""
        name = normalize_name(name)
        token_id = (token_id or "").strip().lower()
        if len(token_id) < TOKEN_ID_CHARS:
            raise AccountError(f"a token id has {TOKEN_ID_CHARS} characters (see users token NAME --list)")

        def build(state, _refs):
            if name not in state.users:
                raise NotFound(f"no such user: {name}")
            matches = [h for h, t in state.tokens.items() if t["user"] == name and h.startswith(token_id)]
            if not matches:
                raise NotFound(f"{name} has no token {token_id}")
            return [{"op": "token.del", "hash": h} for h in matches], token_id

        return self.store.commit(build)

    # ------------------------------------------------------------ invitations (MU_SIGNUP=invite)

    def create_invite(self, by: str) -> str:
        """A one-use sign-up code, valid INVITE_SECONDS."""
        code = secrets.token_urlsafe(18)
        record = {"op": "invite.add", "hash": _sha256(code), "by": normalize_name(by), "at": time.time(),
                  "expires": time.time() + INVITE_SECONDS}
        self.store.commit(lambda state, refs: ([record], None))
        return code

    def invites(self) -> list:
        now = time.time()
        with self.store.reading() as state:
            return sorted((dict(v, id=k[:TOKEN_ID_CHARS]) for k, v in state.invites.items() if v["expires"] > now),
                          key=lambda v: v["created_at"])

    def invite_valid(self, code: str) -> bool:
        if not code or len(code) > 100:
            return False
        with self.store.reading() as state:
            entry = state.invites.get(_sha256(code))
            return bool(entry and entry["expires"] > time.time())

    def revoke_invite(self, invite_id: str) -> None:
        def build(state, _refs):
            matches = [h for h in state.invites if h.startswith(invite_id) and len(invite_id) >= TOKEN_ID_CHARS]
            if not matches:
                raise NotFound("no such invitation")
            return [{"op": "invite.del", "hash": h} for h in matches], None
        self.store.commit(build)

    # ------------------------------------------------------------ web sessions

    def new_session(self, name: str) -> tuple:
        sid = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(24)
        record = {"op": "session.add", "hash": _sha256(sid), "user": normalize_name(name), "csrf": csrf,
                  "expires": time.time() + SESSION_SECONDS}
        self.store.commit(lambda state, refs: ([record], None))
        return sid, csrf

    def session(self, sid: str):
        """(user, csrf) for a live session id, else None."""
        if not sid:
            return None
        with self.store.reading() as state:
            entry = state.sessions.get(_sha256(sid))
            if not entry or entry["expires"] < time.time():
                return None
            user = state.users.get(entry["user"])
            if not user or user.get("disabled"):
                return None
            return dict(user), entry["csrf"]

    def end_session(self, sid: str) -> None:
        if sid:
            record = {"op": "session.del", "hash": _sha256(sid)}
            self.store.commit(lambda state, refs: ([record], None))
