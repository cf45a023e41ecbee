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
    from setuptools.command.bdist_wheel import bdist_wheel  # setuptools >= 70.1
except ImportError:  # pragma: no cover - older setuptools: the wheel package's
    from wheel.bdist_wheel import bdist_wheel

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


def bundled(build_lib: str) -> Path:
    return Path(build_lib) / "depot" / "_bin" / "depot"


class BuildWithDepot(build_py):
    """build_py that also places the depot executable in the package."""

    def run(self) -> None:
        super().run()
        binary = _depot_binary()
        if binary is None:
            return
        target = bundled(self.build_lib)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(binary, target)
        target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def _will_bundle() -> bool:
    """Whether build_py will place an executable in the package (decided before it runs, so the
    wheel's purity and tag are settled from the start)."""
    return bool(os.environ.get("DEPOT_SDK_BINARY")) or (REPO / "Package.swift").is_file()


class PlatformWheel(bdist_wheel):  # type: ignore[misc, valid-type]
    """A wheel holding the native executable is tagged for this platform (py3-none-<platform>);
    one without it (built where no repository is, e.g. from an unpacked sdist) stays
    py3-none-any and finds ``depot`` at run time ($DEPOT_CLI, PATH)."""

    def finalize_options(self) -> None:
        super().finalize_options()
        if _will_bundle():
            self.root_is_pure = False

    def get_tag(self) -> tuple[str, str, str]:
        python, abi, plat = super().get_tag()
        return ("py3", "none", plat) if not self.root_is_pure else (python, abi, plat)


setup(cmdclass={"build_py": BuildWithDepot, "bdist_wheel": PlatformWheel})
