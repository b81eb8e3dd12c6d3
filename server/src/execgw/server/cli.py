"""The `execgw` command."""

from __future__ import annotations

import argparse
import asyncio
import enum
import os
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

from execgw.server.chain import (
    DEFAULT_KEY_ENV,
    ENV_NAME_RULE,
    Chain,
    ChainKeyError,
    chain_from_env,
    optional_chain_from_env,
    valid_env_name,
)
from execgw.server.cli_client import add_client_commands
from execgw.server.cli_kite import add_kite_commands
from execgw.server.cli_replay import add_replay_command
from execgw.server.cli_trace import add_trace_commands
from execgw.server.config import ROLES, ConfigError, GatewayConfig, load_config
from execgw.server.telemetry.logs import LOG_FORMATS, configure_logging


class ServeExit(enum.IntEnum):
    """`execgw serve` exit codes (README "Operations"), so a supervisor can tell a
    mistake to fix from a failure worth a restart."""

    STOPPED = 0
    # bad config or mode, the HMAC key variable unset or too short, a TLS file missing or
    # unusable, or a non-loopback listen address without TLS and auth (server.insecure)
    CONFIG = 2
    JOURNAL = 3  # journal unreadable, corrupt, newer, or its chain/key does not match
    CANNOT_START = 4  # any other OS error while starting, or no span export process
    JOURNAL_IN_USE = 5  # another process writes this journal
    LISTEN = 6  # the listen address is in use, does not resolve or is not local


def _serve(args: argparse.Namespace) -> int:
    from execgw.server.app import serve
    from execgw.server.journal import JournalError, JournalInUse
    from execgw.server.listen import ListenFailed
    from execgw.server.telemetry.export_process import ExportProcessError

    try:
        config = load_config(Path(args.config)) if args.config else GatewayConfig()
        if args.listen:
            config = config.with_overrides(listen=args.listen)
    except ConfigError as e:
        return _refuse(f"config error: {e}", ServeExit.CONFIG)
    try:
        asyncio.run(serve(config))
    except JournalInUse as e:
        return _refuse(str(e), ServeExit.JOURNAL_IN_USE)
    except JournalError as e:
        return _refuse(f"journal error: {e}", ServeExit.JOURNAL)
    except ListenFailed as e:
        return _refuse(str(e), ServeExit.LISTEN)
    except ConfigError as e:  # TLS files, or the non-loopback rule (execgw.server.transport)
        return _refuse(f"config error: {e}", ServeExit.CONFIG)
    except ChainKeyError as e:
        return _refuse(f"config error: {e}", ServeExit.CONFIG)
    except NotImplementedError as e:
        return _refuse(str(e), ServeExit.CONFIG)
    except (OSError, ExportProcessError) as e:
        return _refuse(f"cannot start: {e}", ServeExit.CANNOT_START)
    return ServeExit.STOPPED


def _refuse(message: str, code: ServeExit) -> int:
    print(f"execgw: {message}", file=sys.stderr)
    return code


def _journal_config(args: argparse.Namespace) -> GatewayConfig | None:
    return load_config(Path(args.config)) if args.config else None


def _journal_path(args: argparse.Namespace) -> Path:
    if args.journal:
        return Path(args.journal)
    config = _journal_config(args) or GatewayConfig()
    return Path(config.journal.path)


def _journal_chain(args: argparse.Namespace) -> Chain:
    """The key for a keyed journal: from --hmac-key-env, else the variable the config
    names, else EXECGW_JOURNAL_HMAC_KEY when it is set.

    A variable the operator named (--hmac-key-env, or the config's hmac_key_env) is
    required, and then so is a keyed journal: the journal refuses a key it was not
    made with, so a relabelled plain copy of a keyed journal cannot pass. Only the
    default variable is optional, so that a plain journal verifies without a config."""
    if args.hmac_key_env is not None:
        if not valid_env_name(args.hmac_key_env):
            raise ChainKeyError(f"--hmac-key-env {ENV_NAME_RULE}")
        return chain_from_env(args.hmac_key_env, named_by="--hmac-key-env")
    config = _journal_config(args)
    if config is None:
        return optional_chain_from_env(DEFAULT_KEY_ENV)
    return chain_from_env(config.journal.hmac_key_env)


def _journal_verify(args: argparse.Namespace) -> int:
    from execgw.server.anchors import AnchorFileError, check_anchors, read_anchors
    from execgw.server.audit import verify
    from execgw.server.journal import Journal, JournalError

    try:
        # Anchors first: a running gateway may append one for a head this walk has
        # not reached yet, which would look like a truncated journal.
        anchors = read_anchors(Path(args.anchor)) if args.anchor else None
        journal = Journal(_journal_path(args), read_only=True, chain=_journal_chain(args))
        try:
            report = verify(journal)
            anchored = (
                None
                if anchors is None
                else check_anchors(
                    journal,
                    anchors,
                    head_sequence=report.head_sequence,
                    first_sequence=report.first_sequence,
                    before_first_hash=report.before_first_hash,
                )
            )
        finally:
            journal.close()
    except (JournalError, ConfigError, ChainKeyError, AnchorFileError) as e:
        print(f"execgw: journal verify FAILED: {e}", file=sys.stderr)
        return 1
    line = (
        f"journal OK: {report.events} events, head sequence {report.head_sequence}, "
        f"head hash {report.head_hash}, chain {journal.chain.name}"
    )
    if report.first_sequence > 1:
        line += f"; pruned below {report.first_sequence} (sealed record)"
    if report.snapshots:
        line += f"; snapshot at {report.snapshots[-1]} sealed"
    if report.archived_orders:
        line += f"; {report.archived_orders} archived orders sealed"
    if anchored is not None:
        line += (
            f"; {anchored.checked} anchors match (latest: sequence {anchored.latest.sequence} "
            f"at {anchored.latest.time})"
        )
        if anchored.pruned:
            line += f", {anchored.pruned} older than the retained events"
    print(line)
    return 0


def _journal_export(args: argparse.Namespace) -> int:
    from execgw.server.audit import export
    from execgw.server.journal import Journal, JournalError

    try:
        journal = Journal(_journal_path(args), read_only=True, chain=_journal_chain(args))
        try:
            if args.output == "-":
                count = export(journal, sys.stdout, args.format, args.timezone)
            else:
                with open(args.output, "w", newline="", encoding="utf-8") as out:
                    count = export(journal, out, args.format, args.timezone)
        finally:
            journal.close()
    except (JournalError, ConfigError, ChainKeyError) as e:
        print(f"execgw: journal export failed: {e}", file=sys.stderr)
        return 1
    print(f"exported {count} events", file=sys.stderr)
    return 0


def _token_new(args: argparse.Namespace) -> int:
    from execgw.server.tokens import TokenEntryError, new_token, render_new_token, token_entry

    token = new_token()
    try:
        entry = token_entry(args.name, args.role, args.strategy, token)
    except TokenEntryError as e:
        print(f"execgw: token new: {e}", file=sys.stderr)
        return 2
    sys.stdout.write(render_new_token(entry, token))
    return 0


# The contract release this code speaks: the latest image in proto/releases (the
# Makefile's RELEASED_CONTRACT; tests/test_cli_ops.py holds the two together).
CONTRACT_RELEASE = "v1.1"
CONTRACT_PACKAGE = "execgw.v1"


def version_text() -> str:
    """Both distributions' versions and the contract's: its release and a fingerprint
    (sha256 prefix) of the descriptors the installed stubs were generated from, so two
    builds that speak different protos show different fingerprints."""
    import hashlib
    from importlib.metadata import PackageNotFoundError, version

    from execgw.v1 import gateway_pb2, market_data_pb2, orders_pb2

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    digest = hashlib.sha256()
    for module in (orders_pb2, market_data_pb2, gateway_pb2):
        digest.update(module.DESCRIPTOR.serialized_pb)
    return (
        f"execgw-server {installed('execgw-server')}\n"
        f"execgw-client {installed('execgw-client')}\n"
        f"contract {CONTRACT_PACKAGE} {CONTRACT_RELEASE} (descriptors sha256 "
        f"{digest.hexdigest()[:12]})\n"
    )


class _Version(argparse.Action):
    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the versions and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        try:
            sys.stdout.write(version_text())
            sys.stdout.flush()
        except BrokenPipeError:
            parser.exit(_closed_pipe())
        parser.exit()


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(f"unknown time zone {name!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="execgw", description="execgw execution gateway")
    parser.add_argument("--version", action=_Version)
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help="YAML config file (default: embedded defaults)")
    serve.add_argument("--listen", help="HOST:PORT, overrides the config's listen")
    serve.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="text lines, or one JSON object per line; both carry trace_id, span_id and "
        "session of the order path",
    )
    serve.set_defaults(func=_serve)

    add_replay_command(sub)

    journal = sub.add_parser("journal", help="audit the durable journal")
    journal_sub = journal.add_subparsers(dest="journal_command", required=True)
    for name, func, text in (
        ("verify", _journal_verify, "check the hash chain across every event"),
        ("export", _journal_export, "write the journal out"),
    ):
        cmd = journal_sub.add_parser(name, help=text)
        cmd.add_argument("--config", help="take the journal path from this config")
        cmd.add_argument("--journal", help="journal file (overrides --config)")
        cmd.add_argument(
            "--hmac-key-env",
            metavar="NAME",
            help="environment variable with the key of a keyed journal (default: the "
            f"config's journal.hmac_key_env, or {DEFAULT_KEY_ENV} if set, without --config); "
            "a variable named here or in the config must be set, and the journal keyed",
        )
        cmd.set_defaults(func=func)
        if name == "verify":
            cmd.add_argument(
                "--anchor",
                metavar="FILE",
                help="head anchors the gateway wrote (journal.anchor.path): also fail on a "
                "rewritten or truncated journal",
            )
        if name == "export":
            cmd.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
            cmd.add_argument("--output", "-o", default="-", help="file, or - for stdout")
            cmd.add_argument(
                "--timezone",
                type=_zone,
                default="Asia/Kolkata",
                help="timezone of the timestamp column, written with its offset",
            )

    token = sub.add_parser("token", help="bearer tokens for the config's auth.tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    token_new = token_sub.add_parser(
        "new", help="print a fresh token once, and the config entry (its sha256) to paste"
    )
    token_new.add_argument("--name", required=True, help="who the caller is; journaled")
    token_new.add_argument("--role", required=True, choices=ROLES)
    token_new.add_argument(
        "--strategy",
        action="append",
        default=[],
        help="a strategy code the token may trade (repeatable; the strategy role needs one)",
    )
    token_new.set_defaults(func=_token_new)

    add_client_commands(sub)
    add_kite_commands(sub)
    add_trace_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level, getattr(args, "log_format", "text"))
    try:
        code: int = args.func(args)
        sys.stdout.flush()
    except BrokenPipeError:
        return _closed_pipe()
    return code


# A reader that went away (`execgw orders | head -1`) is not an error worth a traceback:
# exit as a process killed by SIGPIPE would look to the shell, 128 + 13.
CLOSED_PIPE = 141


def _closed_pipe() -> int:
    """Point stdout at /dev/null, so the interpreter's last flush at exit cannot raise
    BrokenPipeError again, and report the closed pipe (the Python docs' recipe)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)
    return CLOSED_PIPE


if __name__ == "__main__":
    sys.exit(main())
