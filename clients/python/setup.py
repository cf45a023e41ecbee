"""Builds the ``depot`` executable and bundles it into the package.

``pip install ./clients/python`` (from a checkout of the Depot repository, Swift toolchain on
PATH) runs ``swift build -c release --product depot`` at the repository root and copies the
binary to ``depot/_bin/depot`` inside the installed package: the SDK then needs nothing else.

Environment:
    DEPOT_SDK_BINARY=PATH           bundle this already-built executable instead of building one
    DEPOT_SDK_CONFIGURATION=debug   build (or reuse) the debug binary (the tests do: the suite
                                    has built it already); default release
    DEPOT_SDK_STATIC_STDLIB=1       link the Swift runtime statically (--static-swift-stdlib): the
                                    binary then needs only the system's zstd, SQLite, OpenSSL and
                                    libpq, which is what a wheel for other machines wants

Without a repository around it (an sdist unpacked elsewhere) and without DEPOT_SDK_BINARY, the
package installs without a binary and finds ``depot`` at run time ($DEPOT_CLI, then PATH).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

try:
    from wheel.bdist_wheel import bdist_wheel
except ImportError:  # pragma: no cover - wheel is in build-system.requires
    bdist_wheel = None

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


def _depot_binary() -> Path | None:
    given = os.environ.get("DEPOT_SDK_BINARY")
    if given:
        path = Path(given).resolve()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise SystemExit(f"DEPOT_SDK_BINARY={given} is not an executable file")
        return path
    if not (REPO / "Package.swift").is_file():
        print("depot-registry: no Depot repository around this package; the depot executable is not bundled")
        return None
    if shutil.which("swift") is None:
        raise SystemExit(
            "depot-registry: building the depot executable needs the Swift toolchain on PATH "
            "(or set DEPOT_SDK_BINARY to a built depot executable)"
        )
    configuration = os.environ.get("DEPOT_SDK_CONFIGURATION", "release")
    if configuration not in ("release", "debug"):
        raise SystemExit("DEPOT_SDK_CONFIGURATION must be release or debug")
    command = ["swift", "build", "-c", configuration, "--product", "depot"]
    if os.environ.get("DEPOT_SDK_STATIC_STDLIB") == "1":
        command.append("--static-swift-stdlib")
    print("depot-registry: " + " ".join(command))
    subprocess.run(command, cwd=REPO, check=True)
    out = subprocess.run(
        ["swift", "build", "-c", configuration, "--show-bin-path"], cwd=REPO, check=True, capture_output=True, text=True
    )
    return Path(out.stdout.strip()) / "depot"


class BuildWithDepot(build_py):
    """build_py that also places the depot executable in the package."""

    def run(self) -> None:
        super().run()
        binary = _depot_binary()
        if binary is None:
            return
        target = Path(self.build_lib) / "depot" / "_bin" / "depot"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(binary, target)
        target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


cmdclass: dict[str, type] = {"build_py": BuildWithDepot}

if bdist_wheel is not None:

    class PlatformWheel(bdist_wheel):  # type: ignore[misc, valid-type]
        """The wheel holds a native executable: tag it for this platform, not py3-none-any."""

        def finalize_options(self) -> None:
            super().finalize_options()
            self.root_is_pure = False

        def get_tag(self) -> tuple[str, str, str]:
            _, _, plat = super().get_tag()
            return "py3", "none", plat

    cmdclass["bdist_wheel"] = PlatformWheel

setup(cmdclass=cmdclass)
