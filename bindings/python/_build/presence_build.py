"""A PEP 517 build backend for the presence binding, standard library only.

Why not setuptools: building a wheel with setuptools older than 70.1 needs
the separate `wheel` package, which this machine's default Python (pyenv
3.11, setuptools 65) does not have, and `pip install --no-build-isolation`
cannot fetch it without a network. The package is pure Python, so its wheel
is a zip of the sources plus three metadata files; this backend writes that
zip, reading the metadata from pyproject.toml's [project] table.

Hooks: build_wheel, build_sdist, build_editable (pip install -e: a .pth file
pointing at this folder), and their get_requires_* (nothing).
"""
from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import tarfile
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "presence"


def _project() -> Dict[str, str]:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    try:
        import tomllib  # Python 3.11+
        data = tomllib.loads(text)["project"]
        return {k: v for k, v in data.items() if isinstance(v, str)}
    except ImportError:
        pass
    # Older Pythons: the [project] table's simple `key = "value"` lines.
    table = re.search(r"^\[project\]\s*$(.*?)(?=^\[|\Z)", text, re.S | re.M)
    if table is None:
        raise RuntimeError("pyproject.toml has no [project] table")
    return dict(re.findall(r'^([A-Za-z][\w-]*)\s*=\s*"([^"]*)"\s*$', table.group(1), re.M))


def _names() -> Tuple[Dict[str, str], str, str]:
    meta = _project()
    name, version = meta["name"], meta["version"]
    return meta, name, version


def _metadata(meta: Dict[str, str]) -> str:
    lines = ["Metadata-Version: 2.1", f"Name: {meta['name']}", f"Version: {meta['version']}"]
    if "description" in meta:
        lines.append(f"Summary: {meta['description']}")
    if "requires-python" in meta:
        lines.append(f"Requires-Python: {meta['requires-python']}")
    body = ""
    readme = ROOT / "README.md"
    if readme.is_file():
        lines.append("Description-Content-Type: text/markdown")
        body = "\n" + readme.read_text(encoding="utf-8")
    return "\n".join(lines) + "\n" + body


def _sources() -> List[Path]:
    out = []
    for path in sorted((ROOT / PACKAGE).rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix in (".py", ".typed"):
            out.append(path)
    return out


def _record_line(arcname: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{arcname},sha256={digest},{len(data)}"


def _write_wheel(directory: str, files: List[Tuple[str, bytes]]) -> str:
    meta, name, version = _names()
    dist = f"{name.replace('-', '_')}-{version}"
    info = f"{dist}.dist-info"
    files = files + [
        (f"{info}/METADATA", _metadata(meta).encode()),
        (f"{info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: presence_build\n"
                          b"Root-Is-Purelib: true\nTag: py3-none-any\n"),
        (f"{info}/top_level.txt", f"{PACKAGE}\n".encode()),
    ]
    record = [_record_line(a, d) for a, d in files] + [f"{info}/RECORD,,"]
    files.append((f"{info}/RECORD", ("\n".join(record) + "\n").encode()))
    filename = f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(directory, filename), "w", zipfile.ZIP_DEFLATED) as z:
        for arcname, data in files:
            zi = zipfile.ZipInfo(arcname, date_time=(2020, 1, 1, 0, 0, 0))
            zi.external_attr = 0o644 << 16
            zi.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(zi, data)
    return filename


def get_requires_for_build_wheel(config_settings: Optional[dict] = None) -> List[str]:
    return []


def get_requires_for_build_sdist(config_settings: Optional[dict] = None) -> List[str]:
    return []


def get_requires_for_build_editable(config_settings: Optional[dict] = None) -> List[str]:
    return []


def build_wheel(wheel_directory: str, config_settings: Optional[dict] = None,
                metadata_directory: Optional[str] = None) -> str:
    files = [(p.relative_to(ROOT).as_posix(), p.read_bytes()) for p in _sources()]
    return _write_wheel(wheel_directory, files)


def build_editable(wheel_directory: str, config_settings: Optional[dict] = None,
                   metadata_directory: Optional[str] = None) -> str:
    return _write_wheel(wheel_directory, [(f"_{PACKAGE}_editable.pth", f"{ROOT}\n".encode())])


def build_sdist(sdist_directory: str, config_settings: Optional[dict] = None) -> str:
    meta, name, version = _names()
    base = f"{name.replace('-', '_')}-{version}"
    paths = [ROOT / "pyproject.toml", ROOT / "_build" / "presence_build.py"] + _sources()
    paths += [p for p in (ROOT / "README.md", ROOT / "bench.py") if p.is_file()]
    paths += sorted(p for p in (ROOT / "tests").glob("*.py"))
    filename = f"{base}.tar.gz"
    with tarfile.open(os.path.join(sdist_directory, filename), "w:gz") as tar:
        pkg_info = _metadata(meta).encode()
        ti = tarfile.TarInfo(f"{base}/PKG-INFO")
        ti.size = len(pkg_info)
        tar.addfile(ti, io.BytesIO(pkg_info))
        for p in paths:
            tar.add(str(p), arcname=f"{base}/{p.relative_to(ROOT).as_posix()}")
    return filename
