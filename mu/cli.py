"""The command line: `--serve` and the `users`, `blocklist`, `dkim` and `doctor` commands.

Every error is one line on stderr and exit status 2, with nothing written. Run by root on a
MU_HOME that belongs to another user, every command runs as that user (see `runas`).
"""

import argparse
import datetime
import getpass
import os
import sys

from . import config as config_mod
from . import runas

EXIT_USAGE = 2


class CLIError(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mu.py",
        description="mu: a self-hosted messaging and mail server. With no command, serves the web "
                    "app on :8080 and SMTP on MAIL_PORT.",
        epilog="Configuration is read from the environment: MU_HOME, MAIL_PORT, MAIL_DOMAIN, "
               "MAIL_SELECTOR, CREDIT_COST_EMAIL, MAIL_MAX_SIZE, ... (see README).")
    p.add_argument("--serve", action="store_true", help="run the web app, SMTP receiver and queue (default)")
    p.add_argument("--address", default=None, metavar="HOST:PORT",
                   help="web listen address (default MU_WEB_ADDRESS, else :8080: all interfaces)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    users = sub.add_parser("users", help="manage accounts").add_subparsers(dest="action", metavar="ACTION")
    users.required = True
    add = users.add_parser("add", help="create an account (password from stdin or a prompt)")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="make the account an admin")
    add.add_argument("--credits", type=_nonneg_int, default=0, metavar="N", help="starting credit balance")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    users.add_parser("list", help="one line per user: NAME ROLE CREDITS (and 'disabled' for a disabled account)")
    st = users.add_parser("set", help="change a user's role or credits")
    st.add_argument("name")
    role = st.add_mutually_exclusive_group()
    role.add_argument("--admin", dest="admin", action="store_true", default=None)
    role.add_argument("--no-admin", dest="admin", action="store_false")
    st.add_argument("--credits", type=_nonneg_int, metavar="N", help="set the credit balance")
    dis = st.add_mutually_exclusive_group()
    dis.add_argument("--disable", dest="disabled", action="store_true", default=None)
    dis.add_argument("--enable", dest="disabled", action="store_false")
    tok = users.add_parser("token", help="print a new API token for a user; --list and --revoke ID manage them")
    tok.add_argument("name")
    tok_action = tok.add_mutually_exclusive_group()
    tok_action.add_argument("--list", action="store_true",
                            help="list the user's tokens: ID CREATED LAST-USED (never the tokens themselves)")
    tok_action.add_argument("--revoke", metavar="ID", help="revoke the token with this id (from --list)")
    app_pw = users.add_parser("app-password", help="print a new app password for a mail client (IMAP, "
                                                   "submission); --list and --revoke LABEL manage them")
    app_pw.add_argument("name")
    app_pw.add_argument("--label", metavar="L", help="what the password is for, e.g. the device "
                                                     "(default: the first free device-N)")
    app_pw_action = app_pw.add_mutually_exclusive_group()
    app_pw_action.add_argument("--list", action="store_true",
                               help="list the user's app passwords: CREATED LAST-USED LABEL (never the passwords)")
    app_pw_action.add_argument("--revoke", metavar="L", help="revoke the app password labelled L")
    pw = users.add_parser("passwd", help="set a new password (stdin when not a terminal, else a prompt)")
    pw.add_argument("name")
    pw.add_argument("--password-stdin", action="store_true", help="read the password from stdin")

    bl = sub.add_parser("blocklist", help="manage blocked senders").add_subparsers(dest="action", metavar="ACTION")
    bl.required = True
    for action, text in (("add", "block an email, *@domain or IP"), ("remove", "unblock a value")):
        b = bl.add_parser(action, help=text)
        b.add_argument("value")
    bl.add_parser("list", help="list blocked values")

    dk = sub.add_parser("dkim", help="DKIM signing").add_subparsers(dest="action", metavar="ACTION")
    dk.required = True
    dk.add_parser("status", help="say whether DKIM signing is on")
    gen = dk.add_parser("generate", help="make MU_HOME/keys/dkim.key and dkim.pub and print the DNS record")
    gen.add_argument("--selector", default=None, help="DKIM selector (default MAIL_SELECTOR)")

    imp = sub.add_parser("import", help="import mail: an mbox file, a Maildir, or a folder of .eml files")
    imp.add_argument("name", help="the user the mail is for")
    imp.add_argument("path")
    imp.add_argument("--folder", metavar="F", help="the mailbox it goes to (default INBOX; a Maildir's "
                                                    "folders keep their names)")
    exp = sub.add_parser("export", help="write a user's mailboxes as a Maildir tree")
    exp.add_argument("name")
    exp.add_argument("dest")
    bk = sub.add_parser("backup", help="a consistent copy of MU_HOME, taken while the server runs")
    bk.add_argument("dest")
    sub.add_parser("check", help="verify the store: every record and blob readable, indexes in order")

    sub.add_parser("doctor", help="check DNS records and ports for MAIL_DOMAIN")
    sub.add_parser("compact", help="fold the journal into the snapshot and give back deleted messages' "
                                   "disk space now (the server also does it by itself)")
    return p


def _nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def parse_address(text: str) -> tuple:
    host, sep, port = text.strip().rpartition(":")
    if not sep:
        host, port = "", text.strip()
    try:
        port_num = int(port)
        if not 0 <= port_num <= 65535:
            raise ValueError
    except ValueError:
        raise CLIError(f"--address: expected HOST:PORT, got {text!r}") from None
    return host.strip("[]"), port_num


def _read_password(args) -> str:
    if getattr(args, "password_stdin", False) or not sys.stdin.isatty():
        line = sys.stdin.readline()
        return line.rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Repeat password: ") != first:
        raise CLIError("passwords do not match")
    return first


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = config_mod.load()
    except config_mod.ConfigError as exc:
        print(f"mu: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        serving = args.command is None
        try:
            runas.drop_to_owner(cfg.home, serving=serving)
            runas.check_home(cfg.home)
        except runas.HomeError as exc:
            raise CLIError(str(exc)) from None
        if serving:
            host, port = parse_address(args.address) if args.address is not None else cfg.web_address
            from .app import serve
            return serve(cfg, host, port)
        return run_command(cfg, args)
    except CLIError as exc:
        print(f"mu: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def run_command(cfg, args) -> int:
    from .accounts import MIN_OPERATOR_PASSWORD_CHARS, AccountError, Accounts
    from .blocklist import Blocklist, BlocklistError, classify
    try:
        if args.command == "users":
            from .store import Store
            accounts = Accounts(Store(cfg.home))
            if args.action == "add":
                password = _read_password(args)
                user = accounts.create(args.name, password, admin=args.admin, credits=args.credits,
                                       min_password_chars=MIN_OPERATOR_PASSWORD_CHARS)
                print(f"created {user['role']} {user['name']}")
            elif args.action == "list":
                for user in accounts.all():
                    print(f"{user['name']} {user['role']} {user['credits']}" + (" disabled" if user.get("disabled") else ""))
            elif args.action == "set":
                if args.admin is None and args.credits is None and args.disabled is None:
                    raise CLIError("users set: nothing to change (use --admin, --no-admin, --credits N)")
                role = None if args.admin is None else ("admin" if args.admin else "user")
                user = accounts.update(args.name, role=role, credits=args.credits, disabled=args.disabled)
                print(f"{user['name']} {user['role']} {user['credits']}")
            elif args.action == "token" and args.list:
                for token in accounts.tokens(args.name):
                    print(f"{token['id']} {_when(token['created_at'])} {_when(token['last_used'])}")
            elif args.action == "token" and args.revoke is not None:
                print(f"revoked token {accounts.revoke_token(args.name, args.revoke)} of {accounts.require(args.name)['name']}")
            elif args.action == "token":
                print(accounts.issue_token(args.name))
            elif args.action == "app-password" and (args.list or args.revoke is not None) and args.label is not None:
                raise CLIError("users app-password: --label names a new app password; it goes without --list and --revoke")
            elif args.action == "app-password" and args.list:
                for entry in accounts.app_passwords(args.name):
                    print(f"{_when(entry['created_at'])} {_when(entry['last_used'])} {entry['label']}")
            elif args.action == "app-password" and args.revoke is not None:
                label = accounts.revoke_app_password(args.name, args.revoke)
                print(f"revoked app password {label} of {accounts.require(args.name)['name']}")
            elif args.action == "app-password":
                _label, password = accounts.create_app_password(args.name, args.label)
                print(password)
            elif args.action == "passwd":
                accounts.require(args.name)   # before asking for a password
                user = accounts.set_password(args.name, _read_password(args),
                                             min_password_chars=MIN_OPERATOR_PASSWORD_CHARS)
                print(f"password changed for {user['name']}; their web sessions were ended")
        elif args.command == "blocklist":
            if args.action in ("add", "remove"):
                classify(args.value)   # a bad value is refused before anything is written
                blocklist = Blocklist(_home(cfg), strict=True)
            else:
                blocklist = Blocklist(cfg.home, strict=True)
            if args.action == "add":
                blocklist.add(args.value)
            elif args.action == "remove":
                blocklist.remove(args.value)
            else:
                for entry in blocklist.entries():
                    print(entry["value"])
        elif args.command == "dkim" and args.action == "generate":
            return _dkim_generate(cfg, args.selector or cfg.dkim_selector)
        elif args.command == "dkim":
            from .delivery.signer import Signer
            print(Signer(cfg).status_text())
        elif args.command == "doctor":
            from .doctor import run_doctor
            return run_doctor(cfg)
        elif args.command in ("import", "export"):
            return _transfer(cfg, args)
        elif args.command == "backup":
            from .backup import BackupError, backup
            from .store import Store
            if os.path.exists(args.dest) and (not os.path.isdir(args.dest) or os.listdir(args.dest)):
                raise CLIError(f"{args.dest}: exists and is not an empty folder")
            if not os.path.exists(os.path.join(cfg.home, "mail.json")):
                raise CLIError(f"{cfg.home}: no store there (MU_HOME)")
            try:
                done = backup(Store(cfg.home), args.dest)
            except BackupError as exc:
                raise CLIError(str(exc)) from None
            print(f"backed up {cfg.home} to {os.path.abspath(args.dest)} ({done['files']} files, {done['bytes']} bytes)")
        elif args.command == "check":
            from .backup import check
            from .store import Store
            problems, facts = check(Store(cfg.home))
            for line in facts:
                print(line)
            for line in problems:
                print(f"PROBLEM: {line}")
            print(f"{len(problems)} problems" if problems else "store OK")
            return 1 if problems else 0
        elif args.command == "compact":
            from .store import Store
            result = Store(cfg.home).reclaim_blobs(min_dead_bytes=0, always_compact=True)
            print(f"compacted; segments: {len(result['rewritten'])} rewritten, {len(result['removed'])} removed, "
                  f"{result['bytes_freed']} bytes freed")
    except (AccountError, BlocklistError) as exc:
        raise CLIError(str(exc)) from None
    return 0


def _when(ts) -> str:
    """A time for listings: RFC 3339 in UTC, or `never`."""
    if not ts:
        return "never"
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _dkim_generate(cfg, selector: str) -> int:
    import os

    from . import dkimkeys
    if not selector or any(not (c.isalnum() or c in ".-_") for c in selector):
        raise CLIError(f"--selector: expected letters, digits, '.', '-' or '_', got {selector!r}")
    try:
        key_path, pub_path = dkimkeys.generate(os.path.join(cfg.home, "keys"))
    except dkimkeys.DKIMKeyError as exc:
        raise CLIError(str(exc)) from None
    print(f"DKIM key written to {key_path} (public key: {pub_path})")
    print()
    print("Publish this DNS TXT record:")
    print()
    print(dkimkeys.txt_record(selector, cfg.domain, dkimkeys.public_key_text(pub_path)))
    print()
    print(f"Then run mu with MAIL_DOMAIN={cfg.domain} MAIL_SELECTOR={selector}")
    return 0


def _transfer(cfg, args) -> int:
    from .accounts import normalize_name
    from .app import App
    from .transfer import TransferError, detect, export_mail, import_mail
    if args.command == "import":
        try:
            detect(args.path)
        except TransferError as exc:
            raise CLIError(str(exc)) from None
    elif os.path.exists(args.dest) and (not os.path.isdir(args.dest) or os.listdir(args.dest)):
        raise CLIError(f"{args.dest}: exists and is not an empty folder")
    name = normalize_name(args.name)
    if not os.path.exists(os.path.join(cfg.home, "mail.json")):
        raise CLIError(f"no such user: {args.name} (no store at {cfg.home})")
    app = App(cfg)
    if app.accounts.get(name) is None:
        raise CLIError(f"no such user: {args.name}")
    try:
        if args.command == "import":
            if args.folder:
                from .mailstore import valid_mailbox_name, MailStoreError
                try:
                    valid_mailbox_name(args.folder)
                except MailStoreError as exc:
                    raise CLIError(f"--folder: {exc.text}") from None
            result = import_mail(app.mailstore, name, args.path, args.folder)
            print(result.summary())
            return 0
        counts = export_mail(app.mailstore, name, args.dest)
        print(f"exported {sum(counts.values())} messages in {len(counts)} mailboxes to {args.dest}")
        return 0
    except TransferError as exc:
        raise CLIError(str(exc)) from None


def _home(cfg) -> str:
    from .safeio import ensure_dir
    return ensure_dir(cfg.home)
