"""User accounts: names, roles, passwords (scrypt), credits, API tokens and web sessions."""

import hashlib
import hmac
import re
import secrets
import time

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

# scrypt cost: ~50 ms and 16 MiB per hash on a small server.
_SCRYPT = {"n": 2 ** 14, "r": 8, "p": 1}


class AccountError(ValueError):
    """A request about accounts that cannot be done; the text says why."""


class NotFound(AccountError):
    pass


class InviteInvalid(AccountError):
    pass


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
    def __init__(self, store):
        self.store = store

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
