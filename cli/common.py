"""Helpers shared by the verb modules: option groups used by several verbs, misuse checks,
deprecation notes for old spellings. Imports nothing heavy (every `--help` loads it)."""
from __future__ import annotations

import argparse
import sys


def add_on_error_args(p: argparse.ArgumentParser, default_rejects: str, *, sub: bool = False) -> None:
    """--on-error/--rejects. sub=True: on a mode's parser below a verb that defines them
    too; defaults then come from the verb (argparse copies a subparser's defaults over
    the verb's values, so a mode keeps its own only where the verb has none)."""
    kw = {"default": argparse.SUPPRESS} if sub else {"default": "fail"}
    p.add_argument("--on-error", choices=("fail", "skip"), **kw,
                   help="bad input row: fail (stop, naming file, row and column; default) or skip it, count "
                        "it and write it to the rejects file; unreadable files and missing columns always fail")
    p.add_argument("--rejects", metavar="PATH", **({"default": argparse.SUPPRESS} if sub else {}),
                   help="with --on-error skip: where skipped rows are listed (file, row, column, error; "
                        f"never prompt text), JSON Lines; default {default_rejects}")


def rejects_misused(a) -> bool:
    if a.rejects and a.on_error != "skip":
        print(f"distillguard {a.cmd}: error: --rejects needs --on-error skip", file=sys.stderr)
        return True
    return False


def deprecated(old: str, new: str) -> None:
    """One line on stderr naming the spelling to use instead; the old one still runs."""
    print(f"distillguard: `{old}` is deprecated, use `{new}`", file=sys.stderr)


def add_client_tls_args(p: argparse.ArgumentParser) -> None:
    """How a client command (replay, feedback) reaches a scorer started with TLS and tokens."""
    p.add_argument("--tls", action="store_true", help="connect with TLS, verifying the server with the system's CAs")
    p.add_argument("--tls-ca", metavar="PEM", help="CA file verifying the server's certificate (implies --tls)")
    p.add_argument("--tls-cert", metavar="PEM", help="client certificate for mutual TLS (implies --tls)")
    p.add_argument("--tls-key", metavar="PEM", help="client private key for mutual TLS")
    p.add_argument("--token-file", metavar="FILE", help="file whose first token is sent as 'authorization: Bearer'")
