"""Where the compose lab's images come from: a registry, or this machine alone.

With a registry, the Dockerfile starts from ``python:3.11-slim-bookworm`` and
pip reads PyPI; Redis and Prometheus are their own images.  Without one, two
things are made here from what the machine *can* reach (Debian's mirror, the
package index) and cached under ``~/.cache/rtclab/compose`` (``RTCLAB_CACHE``):

* a **base**: ``debootstrap --variant=minbase`` of bookworm with Python, the
  caller's network tools, redis-server and prometheus, tarred once and then
  ``docker import``-ed as ``rtclab-base:<key>`` -- the base of the rtclab
  image, and the Redis and Prometheus image;
* a **wheelhouse** of every dependency, resolved for the base's own Python
  (bookworm's 3.11.2: environment markers such as redis's ``async-timeout;
  python_full_version < "3.11.3"`` are evaluated for it, not for the host),
  imported as ``rtclab-wheels:<key>``, which the Dockerfile's pip reads with
  ``--no-index``.

Both routes build the same Dockerfile; only build arguments differ.  Nothing
of the host's configuration (pip or apt settings, CA bundles, proxies) goes
into an image: debootstrap writes a plain Debian tree, and the wheelhouse is
wheels only.  The keys hash what went in, so a changed package list or
dependency makes a new base or wheelhouse and the old ones stay until removed.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

log = logging.getLogger("rtclab.compose")

Progress = Callable[[str], None]  # one line for the person waiting

SUITE = "bookworm"
# What the images need from Debian: Python with venv; the caller's address moves, NAT
# and tc; Redis; Prometheus (its web assets make up half the base's size).
BASE_PACKAGES = (
    "python3",
    "python3-venv",
    "iproute2",
    "nftables",
    "conntrack",
    "redis-server",
    "prometheus",
)
DEFAULT_MIRROR = "http://deb.debian.org/debian"
REGISTRY_IMAGES = {
    "base": "python:3.11-slim-bookworm",
    "redis": "redis:7-bookworm",
    "prometheus": "prom/prometheus:v2.53.3",
}
# Cleaned out of the base before it is tarred: caches, not part of a system.
_BASE_LEFTOVERS = ("var/cache/apt/archives", "var/lib/apt/lists", "var/cache/apt")

# The base's own Python, asked for what pip must resolve for (stdlib only: it runs there).
_TARGET_PROBE = """
import json, os, platform, sys
impl = sys.implementation
print(json.dumps({
    "markers": {
        "implementation_name": impl.name,
        "implementation_version": platform.python_version(),
        "os_name": os.name,
        "platform_machine": platform.machine(),
        "platform_python_implementation": platform.python_implementation(),
        "platform_release": platform.release(),
        "platform_system": platform.system(),
        "platform_version": platform.version(),
        "python_full_version": platform.python_version(),
        "python_version": ".".join(platform.python_version_tuple()[:2]),
        "sys_platform": sys.platform,
    },
    "glibc": os.confstr("CS_GNU_LIBC_VERSION").split()[-1],
}))
"""


class ImageError(RuntimeError):
    pass


def cache_root() -> Path:
    explicit = os.environ.get("RTCLAB_CACHE")
    if explicit:
        return Path(explicit) / "compose"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rtclab" / "compose"


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


# --- pure: what to build ----------------------------------------------------------------


def debian_mirror(sources: Mapping[str, str]) -> str:
    """The first Debian archive URI in apt's sources (deb822 or one-line), else the default.

    ``sources`` maps a file name to its text.  Security and ``-updates`` suites live
    in other archives or suites; debootstrap wants the main archive.
    """
    for text in sources.values():
        for line in text.splitlines():
            words = line.split("#", 1)[0].split()
            uris = words[1:] if words[:1] == ["URIs:"] else []
            if words[:1] == ["deb"]:
                uris = [w for w in words[1:] if "://" in w][:1]
            for uri in uris:
                if uri.rstrip("/").endswith("/debian"):
                    return uri.rstrip("/")
    return DEFAULT_MIRROR


def debootstrap_argv(root: Path, mirror: str, packages: Sequence[str] = BASE_PACKAGES) -> list[str]:
    return [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(packages)}",
        SUITE,
        str(root),
        mirror,
    ]


def base_key(mirror: str, packages: Sequence[str] = BASE_PACKAGES) -> str:
    return _key(SUITE, sorted(packages), mirror, platform.machine())


def project_requirements(pyproject: Path) -> list[str]:
    """What the image's pip installs from the wheelhouse: dependencies and build backend."""
    data = tomllib.loads(pyproject.read_text())
    return [*data["project"]["dependencies"], *data["build-system"]["requires"]]


def manylinux_platforms(glibc: str, machine: str) -> list[str]:
    """Every manylinux tag a glibc ``glibc`` system runs, newest first (PEP 600 and aliases).

    pip's ``--platform`` takes exactly the tags it is given, so the older ones are
    spelled out: a wheel built for manylinux_2_28 runs on bookworm's glibc 2.36.
    """
    major, minor = (int(part) for part in glibc.split(".")[:2])
    if major != 2:
        raise ImageError(f"glibc {glibc}: only glibc 2.x is known")
    tags = [f"manylinux_2_{m}_{machine}" for m in range(minor, 4, -1)]
    aliases = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    tags += [f"{alias}_{machine}" for floor, alias in aliases.items() if minor >= floor]
    return tags


@dataclass(frozen=True, slots=True)
class Wheel:
    name: str  # canonical
    version: str
    requires: tuple[str, ...]  # Requires-Dist lines

    @classmethod
    def read(cls, path: Path) -> Wheel:
        name, version, _build, _tags = parse_wheel_filename(path.name)
        with zipfile.ZipFile(path) as archive:
            # The wheel's own dist-info sits at the top (some wheels vendor others inside).
            (metadata,) = [
                n
                for n in archive.namelist()
                if n.count("/") == 1 and n.endswith(".dist-info/METADATA")
            ]
            headers = HeaderParser().parsestr(archive.read(metadata).decode())
        return cls(str(name), str(version), tuple(headers.get_all("Requires-Dist") or ()))


def missing_requirements(
    roots: Iterable[str], wheels: Iterable[Wheel], markers: Mapping[str, str]
) -> list[str]:
    """Requirements of ``roots`` and of every wheel they pull in that no wheel satisfies.

    Markers are evaluated for the target (``markers``: the base's Python), which
    ``pip download --python-version`` does not do for ``python_full_version``.
    """
    have = {wheel.name: wheel for wheel in wheels}
    wanted: list[tuple[Requirement, str]] = [(Requirement(text), "") for text in roots]
    seen: set[tuple[str, str]] = set()
    missing: list[str] = []
    while wanted:
        requirement, extra = wanted.pop()
        if requirement.marker is not None and not requirement.marker.evaluate(
            {**markers, "extra": extra}
        ):
            continue
        name = canonicalize_name(requirement.name)
        wheel = have.get(name)
        if wheel is None or not requirement.specifier.contains(wheel.version, prereleases=True):
            missing.append(f"{requirement.name}{requirement.specifier}")
            continue
        for asked in ("", *sorted(requirement.extras)):
            if (name, asked) in seen:
                continue
            seen.add((name, asked))
            wanted += [(Requirement(text), asked) for text in wheel.requires]
    return sorted(set(missing))


# --- running: docker and the host's tools -----------------------------------------------


def docker(*args: str, stdin: bytes | None = None, check: bool = True) -> str:
    done = subprocess.run(["docker", *args], input=stdin, capture_output=True, check=False)
    if check and done.returncode != 0:
        raise ImageError(
            f"docker {' '.join(args[:3])} exited with {done.returncode}: "
            f"{done.stderr.decode(errors='replace').strip()[-800:]}"
        )
    return done.stdout.decode(errors="replace")


def image_exists(name: str) -> bool:
    return bool(docker("image", "inspect", "--format", "{{.Id}}", name, check=False).strip())


def can_pull(name: str) -> bool:
    """The image is here already or a registry hands it out (fails fast with no registry)."""
    if image_exists(name):
        return True
    done = subprocess.run(["docker", "pull", "-q", name], capture_output=True, check=False)
    return done.returncode == 0


@dataclass(frozen=True, slots=True)
class Images:
    """The images one compose lab builds from and runs, as docker-compose.yml's settings."""

    route: str  # "registry" or "local"
    base: str
    wheels: str | None  # None: pip reads the package index
    redis: str
    prometheus: str

    def environment(self) -> dict[str, str]:
        env = {
            "RTCLAB_BASE_IMAGE": self.base,
            "RTCLAB_REDIS_IMAGE": self.redis,
            "RTCLAB_PROMETHEUS_IMAGE": self.prometheus,
        }
        if self.wheels:
            env["RTCLAB_WHEELS_IMAGE"] = self.wheels
        return env


def registry_images() -> Images:
    return Images(
        "registry",
        REGISTRY_IMAGES["base"],
        None,
        REGISTRY_IMAGES["redis"],
        REGISTRY_IMAGES["prometheus"],
    )


def choose_images(route: str, root: Path, progress: Progress) -> Images:
    """``registry``, ``local``, or ``auto``: the registry's images when all can be pulled."""
    if route == "auto":
        pulled = all(can_pull(image) for image in REGISTRY_IMAGES.values())
        route = "registry" if pulled else "local"
        progress(f"images: {'from the registry' if pulled else 'built here (no registry)'}")
    if route == "registry":
        return registry_images()
    if route != "local":
        raise ImageError(f"images must come from auto, registry or local, not {route!r}")
    base = ensure_base(progress)
    wheels = ensure_wheels(base, project_requirements(root / "pyproject.toml"), progress)
    return Images("local", base, wheels, base, base)


def _apt_sources() -> dict[str, str]:
    found: dict[str, str] = {}
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt").glob("sources.list.d/*"))]:
        if path.suffix in ("", ".list", ".sources") and path.is_file():
            found[path.name] = path.read_text(errors="replace")
    return found


def ensure_base(progress: Progress) -> str:
    """``rtclab-base:<key>``: imported from the cached tar, debootstrapped first if need be."""
    mirror = os.environ.get("RTCLAB_DEBIAN_MIRROR") or debian_mirror(_apt_sources())
    key = base_key(mirror)
    name = f"rtclab-base:{key}"
    if image_exists(name):
        return name
    archive = cache_root() / f"base-{SUITE}-{key}.tar"
    if not archive.exists():
        progress(f"base: debootstrap {SUITE} from {mirror} (about a minute; cached in {archive})")
        _debootstrap(archive, mirror)
    progress(f"base: docker import {archive.name}")
    docker("import", str(archive), name)
    return name


def _debootstrap(archive: Path, mirror: str) -> None:
    if shutil.which("debootstrap") is None:
        raise ImageError(
            "no registry, and no debootstrap to build a base image "
            "(Debian: apt-get install debootstrap)"
        )
    if os.geteuid() != 0:
        raise ImageError("no registry, and building a base image with debootstrap needs root")
    archive.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="base-", dir=archive.parent))
    root = work / "root"
    try:
        done = subprocess.run(debootstrap_argv(root, mirror), capture_output=True, check=False)
        if done.returncode != 0:
            raise ImageError(
                f"debootstrap failed ({done.returncode}): "
                f"{done.stdout.decode(errors='replace')[-800:]}"
            )
        for leftover in _BASE_LEFTOVERS:
            target = root / leftover
            if target.is_dir():
                for child in target.iterdir():
                    if child.is_file():
                        child.unlink()
        partial = archive.with_suffix(".partial")
        subprocess.run(["tar", "-C", str(root), "-cf", str(partial), "."], check=True)
        partial.rename(archive)
    finally:
        _remove_tree(work)


def _remove_tree(path: Path) -> None:
    """Remove a debootstrap tree, unmounting first what a failed run may have left mounted."""
    prefix = str(path.resolve()) + "/"
    mounts = [
        line.split()[1] for line in Path("/proc/mounts").read_text().splitlines() if line.split()
    ]
    for mount in sorted((m for m in mounts if m.startswith(prefix)), reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True, check=False)
    shutil.rmtree(path, ignore_errors=True)


def target_python(base: str) -> dict[str, Any]:
    """The marker environment and glibc of ``base``'s python3 (one short container run)."""
    out = docker(
        "run", "--rm", "--network", "none", "--entrypoint", "python3", base, "-c", _TARGET_PROBE
    )
    found: dict[str, Any] = json.loads(out)
    return found


def ensure_wheels(base: str, requirements: Sequence[str], progress: Progress) -> str:
    """``rtclab-wheels:<key>``: every requirement as a wheel for ``base``'s Python."""
    target = target_python(base)
    markers: dict[str, str] = target["markers"]
    platforms = manylinux_platforms(str(target["glibc"]), markers["platform_machine"])
    key = _key(sorted(requirements), markers["python_full_version"], platforms)
    name = f"rtclab-wheels:{key}"
    if image_exists(name):
        return name
    house = cache_root() / f"wheels-{key}"
    if not house.is_dir():
        progress(f"wheels: pip download for Python {markers['python_full_version']} ({house})")
        _fill_wheelhouse(house, requirements, markers, platforms)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(house, arcname="wheels")
    progress(f"wheels: docker import {house.name}")
    docker("import", "-", name, stdin=buffer.getvalue())
    return name


def _fill_wheelhouse(
    house: Path, requirements: Sequence[str], markers: Mapping[str, str], platforms: list[str]
) -> None:
    house.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix="wheels-", dir=house.parent))
    try:
        wanted = list(requirements)
        for _round in range(10):
            _pip_download(partial, wanted, markers["python_full_version"], platforms)
            wheels = [Wheel.read(path) for path in partial.glob("*.whl")]
            wanted = missing_requirements(requirements, wheels, markers)
            if not wanted:
                break
            log.info("wheels the markers ask for", extra={"requirements": wanted})
        else:
            raise ImageError(f"the wheelhouse never closed; still missing {wanted}")
        partial.rename(house)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _pip_download(
    dest: Path, requirements: Sequence[str], python: str, platforms: list[str]
) -> None:
    argv = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--only-binary",
        ":all:",
        "--python-version",
        python,
        *(word for tag in platforms for word in ("--platform", tag)),
        "--dest",
        str(dest),
        *requirements,
    ]
    done = subprocess.run(argv, capture_output=True, check=False)
    if done.returncode != 0:
        raise ImageError(
            f"pip download failed: {done.stderr.decode(errors='replace').strip()[-800:]}"
        )
