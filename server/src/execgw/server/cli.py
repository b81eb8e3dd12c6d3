"""The `execgw` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from execgw.server.config import ConfigError, GatewayConfig, load_config


def _serve(args: argparse.Namespace) -> int:
    from execgw.server.app import serve

    try:
        config = load_config(Path(args.config)) if args.config else GatewayConfig()
        if args.listen:
            config = config.with_overrides(listen=args.listen)
    except ConfigError as e:
        print(f"execgw: config error: {e}", file=sys.stderr)
        return 2
    asyncio.run(serve(config))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="execgw", description="execgw execution gateway")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help="YAML config file (default: embedded defaults)")
    serve.add_argument("--listen", help="HOST:PORT, overrides the config's listen")
    serve.set_defaults(func=_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
