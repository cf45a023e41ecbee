"""Runs the ``depot`` executable: the SDK's transfer engine.

Push and pull go through the same Swift code as the command line (content-defined chunking,
chunk negotiation, the local chunk cache, resumable uploads), so the SDK sends the same wire
bytes at the same speed, and there is one implementation to keep right. Each call is one child
process with ``--json`` output; errors come back as one JSON line on stderr
(``DEPOT_ERROR_FORMAT=json``) carrying the registry's error code.

Which executable, in order: ``executable=`` given to :class:`depot.Registry`, ``$DEPOT_CLI``,
the one bundled in this package at install time (``depot/_bin/depot``), ``depot`` on ``PATH``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Mapping, Sequence

from .errors import DepotError, UsageError, error_for

_BUNDLED = Path(__file__).resolve().parent / "_bin" / "depot"

# Exit status of a command whose arguments were refused before it ran (README, "Exit statuses").
_EX_USAGE = 2


def find_executable(explicit: str | os.PathLike[str] | None = None) -> str:
    """The path of the ``depot`` executable to run, or a :class:`DepotError` saying how to get one."""
    for candidate in (explicit, os.environ.get("DEPOT_CLI") or None):
        if candidate is not None:
            path = Path(candidate)
            if not (path.is_file() and os.access(path, os.X_OK)):
                raise DepotError(f"{path} is not an executable depot binary")
            return str(path)
    if _BUNDLED.is_file() and os.access(_BUNDLED, os.X_OK):
        return str(_BUNDLED)
    found = shutil.which("depot")
    if found:
        return found
    raise DepotError(
        "no depot executable: install the package from the Depot repository "
        "(pip install ./clients/python builds and bundles it), or set DEPOT_CLI to its path"
    )


class Engine:
    """Runs ``depot`` subcommands for one registry URL and credential."""

    def __init__(
        self,
        executable: str,
        url: str | None,
        token: str | None,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.executable = executable
        env = dict(os.environ)
        if url is not None:
            env["DEPOT_REGISTRY"] = url
        if token is not None:
            env["DEPOT_TOKEN"] = token
        env.update(extra_env or {})
        env["DEPOT_ERROR_FORMAT"] = "json"
        self._env = env

    def call(self, command: Sequence[str], positionals: Sequence[str] = (), options: Sequence[str] = ()) -> Any:
        """Runs ``depot COMMAND OPTIONS --json -- POSITIONALS`` and returns the decoded stdout.

        Callers pass options as ``--name=value`` and arguments after ``--``: a reference or a
        path that starts with ``-`` (hostile or not) is then an argument, never an option such
        as ``--registry=https://elsewhere`` that would send the token to another host."""
        for o in options:
            if not o.startswith("--"):
                raise UsageError(f"internal: option {o!r} is not --name[=value]", "USAGE")
        return self.run_json([*command, *options, "--json", "--", *positionals])

    def run_json(self, args: Sequence[str]) -> Any:
        """Runs ``depot ARGS`` (which must include ``--json``) and returns the decoded stdout."""
        out = self.run(args)
        try:
            return json.loads(out) if out.strip() else None
        except json.JSONDecodeError as e:
            raise DepotError(f"depot {args[0]} printed something that is not JSON: {out[:200]!r}") from e

    def run(self, args: Sequence[str]) -> str:
        """Runs ``depot ARGS``; stdout on success, the matching :class:`DepotError` otherwise."""
        try:
            proc = subprocess.run(
                [self.executable, *args],
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                check=False,
            )
        except OSError as e:
            raise DepotError(f"cannot run {self.executable}: {e}") from e
        if proc.returncode == 0:
            return proc.stdout.decode("utf-8", "replace")
        raise _error(proc.returncode, proc.stderr.decode("utf-8", "replace"), args)


def _error(returncode: int, stderr: str, args: Sequence[str]) -> DepotError:
    """The exception for a failed run: the JSON error line when there is one, else the text."""
    for line in reversed(stderr.strip().splitlines()):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            body = json.loads(line)
        except json.JSONDecodeError:
            continue
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            code = err.get("code")
            status = err.get("status")
            return error_for(
                err["message"],
                code if isinstance(code, str) else None,
                status if isinstance(status, int) else None,
            )
    text = stderr.strip() or f"depot {args[0] if args else ''} exited with status {returncode}"
    if returncode == _EX_USAGE:
        # The arguments were refused: the first line says which.
        return UsageError(text.splitlines()[0].removeprefix("Error: "), "USAGE", None)
    return DepotError(text.splitlines()[-1].removeprefix("error: "), None, None)
