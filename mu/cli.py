"""The command line: `--serve` and the `users`, `blocklist`, `dkim` and `doctor` commands.

Every error is one line on stderr and exit status 2, with nothing written.
"""

import argparse
import getpass
import sys

from . import config as config_mod

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
    p.add_argument("--address", default=":8080", metavar="HOST:PORT",
                   help="web listen address (default :8080, all interfaces)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    users = sub.add_parser("users", help="manage accounts").add_subparsers(dest="action", metavar="ACTION")
    users.required = True
    add = users.add_parser("add", help="create an account (password from stdin or a prompt)")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="make the account an admin")
    add.add_argument("--credits", type=_nonneg_int, default=0, metavar="N", help="starting credit balance")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    users.add_parser("list", help="one line per user: NAME ROLE CREDITS")
    st = users.add_parser("set", help="change a user's role or credits")
    st.add_argument("name")
    role = st.add_mutually_exclusive_group()
    role.add_argument("--admin", dest="admin", action="store_true", default=None)
    role.add_argument("--no-admin", dest="admin", action="store_false")
    st.add_argument("--credits", type=_nonneg_int, metavar="N", help="set the credit balance")
    dis = st.add_mutually_exclusive_group()
    dis.add_argument("--disable", dest="disabled", action="store_true", default=None)
    dis.add_argument("--enable", dest="disabled", action="store_false")
    tok = users.add_parser("token", help="print a new API token for a user")
    tok.add_argument("name")

    bl = sub.add_parser("blocklist", help="manage blocked senders").add_subparsers(dest="action", metavar="ACTION")
    bl.required = True
    for action, text in (("add", "block an email, *@domain or IP"), ("remove", "unblock a value")):
        b = bl.add_parser(action, help=text)
        b.add_argument("value")
    bl.add_parser("list", help="list blocked values")

    dk = sub.add_parser("dkim", help="DKIM signing").add_subparsers(dest="action", metavar="ACTION")
    dk.required = True
    dk.add_parser("status", help="say whether DKIM signing is on")

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
    if args.password_stdin or not sys.stdin.isatty():
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
        if args.command is None:
            host, port = parse_address(args.address)
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
                    print(f"{user['name']} {user['role']} {user['credits']}")
            elif args.action == "set":
                if args.admin is None and args.credits is None and args.disabled is None:
                    raise CLIError("users set: nothing to change (use --admin, --no-admin, --credits N)")
                role = None if args.admin is None else ("admin" if args.admin else "user")
                user = accounts.update(args.name, role=role, credits=args.credits, disabled=args.disabled)
                print(f"{user['name']} {user['role']} {user['credits']}")
            elif args.action == "token":
                print(accounts.issue_token(args.name))
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
        elif args.command == "dkim":
            from .delivery.signer import Signer
            print(Signer(cfg).status_text())
        elif args.command == "doctor":
            from .doctor import run_doctor
            return run_doctor(cfg)
        elif args.command == "compact":
            from .store import Store
            result = Store(cfg.home).reclaim_blobs(min_dead_bytes=0, always_compact=True)
            print(f"compacted; blob packs: {len(result['rewritten'])} rewritten, {len(result['removed'])} removed, "
                  f"{result['bytes_freed']} bytes freed")
    except (AccountError, BlocklistError) as exc:
        raise CLIError(str(exc)) from None
    return 0


def _home(cfg) -> str:
    from .safeio import ensure_dir
    return ensure_dir(cfg.home)
