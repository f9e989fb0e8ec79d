"""kvstash_build: the PEP 517 build backend of the kvstash Python package.

It needs nothing but the standard library, so pip has nothing to download,
with build isolation or without: it builds libkvstash with CMake from the
kvstash source tree and writes a wheel holding the Python package and the
library (kvstash/libkvstash.so.0), tagged for this platform
(py3-none-linux_x86_64: ctypes, no Python ABI).

Settings, from pip's --config-settings KEY=VALUE (or -C) or else the
environment variable KVSTASH_<KEY> (upper case):

  cuda=auto|on|off     auto (default): the CUDA kernels are built when CMake
                       finds a CUDA toolkit; on: they must be; off: never.
  build_dir=DIR        the CMake build directory, kept between builds so that
                       a rebuild compiles only what changed (default:
                       build/cmake-<platform> under this package's directory).
  cmake_args="..."     more arguments for CMake's configure step.
  source_dir=DIR       the kvstash source tree (default: native/ of an sdist,
                       else the parent of this package's directory).
  build_jobs=N         parallel compile jobs (default: the number of CPUs).
  build_type=TYPE      CMAKE_BUILD_TYPE (default Release).

Build requirements: cmake >= 3.20, a C compiler and the headers of libyaml,
OpenSSL and xxHash (Debian: cmake build-essential pkg-config libyaml-dev
libssl-dev libxxhash-dev); nvcc for the CUDA kernels.
"""

import base64
import csv
import hashlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
PKG_ROOT = os.path.dirname(HERE)           # python/: pyproject.toml, kvstash/
PACKAGE = "kvstash"
LIBRARY = "libkvstash.so.0"                 # the library's soname
# What an sdist carries of the source tree: enough for CMake to build the
# library (the tests and benchmarks other than the one CMake names are not).
SDIST_NATIVE = ("CMakeLists.txt", "kvstash.pc.in", "cmake", "include", "src", "cuda",
                "tools", "bench/scale_bench.c", "LICENSE")


class BuildError(RuntimeError):
    pass


# ---- metadata ------------------------------------------------------------------

def _project():
    """[project] of pyproject.toml: tomllib where there is one (3.11+), else
    the few plain `key = value` lines this file uses."""
    path = os.path.join(PKG_ROOT, "pyproject.toml")
    with open(path, "rb") as f:
        data = f.read()
    try:
        import tomllib
        return tomllib.loads(data.decode())["project"]
    except ImportError:
        pass
    proj, table, key = {}, None, None
    for line in data.decode().splitlines():
        line = line.split(" #")[0].strip()
        if line.startswith("["):
            table = line.strip("[]").strip()
            continue
        m = re.match(r'([A-Za-z0-9_.-]+)\s*=\s*(.*)$', line)
        if not m or table not in ("project", "project.optional-dependencies"):
            continue
        key, value = m.group(1), m.group(2)
        if value.startswith("{"):
            value = dict(re.findall(r'(\w+)\s*=\s*"([^"]*)"', value))
        elif value.startswith("["):
            value = re.findall(r'"([^"]*)"', value)
        else:
            value = value.strip('"')
        if table == "project":
            proj[key] = value
        else:
            proj.setdefault("optional-dependencies", {})[key] = value
    return proj


def _metadata_text():
    p = _project()
    lines = ["Metadata-Version: 2.1", "Name: " + p["name"], "Version: " + p["version"]]
    if p.get("description"):
        lines.append("Summary: " + p["description"])
    lic = p.get("license")
    if isinstance(lic, dict) and lic.get("text"):
        lines.append("License: " + lic["text"])
    if p.get("requires-python"):
        lines.append("Requires-Python: " + p["requires-python"])
    for dep in p.get("dependencies", []):
        lines.append("Requires-Dist: " + dep)
    for extra, deps in sorted(p.get("optional-dependencies", {}).items()):
        lines.append("Provides-Extra: " + extra)
        for dep in deps:
            lines.append('Requires-Dist: %s; extra == "%s"' % (dep, extra))
    body = ""
    readme = p.get("readme")
    if isinstance(readme, str) and os.path.exists(os.path.join(PKG_ROOT, readme)):
        lines.append("Description-Content-Type: text/markdown")
        with open(os.path.join(PKG_ROOT, readme), encoding="utf-8") as f:
            body = f.read()
    return "\n".join(lines) + "\n\n" + body


def _name_version():
    p = _project()
    return p["name"], p["version"]


def _platform_tag():
    plat = sysconfig.get_platform()
    return re.sub(r"[^A-Za-z0-9_]", "_", plat)


def wheel_tag():
    """py3-none-<platform>: the package is Python 3 code over a native
    library loaded with ctypes, so any CPython 3 of this platform runs it."""
    return "py3-none-" + _platform_tag()


# ---- settings ---------------------------------------------------------------------

_SETTINGS = ("cuda", "build_dir", "cmake_args", "source_dir", "build_jobs", "build_type")


def settings(config_settings=None, environ=None):
    """The build settings: --config-settings first, then KVSTASH_<KEY>."""
    environ = os.environ if environ is None else environ
    cs = dict(config_settings or {})
    unknown = sorted(k for k in cs if k.replace("-", "_") not in _SETTINGS)
    if unknown:
        raise BuildError("kvstash build: unknown setting %s; known: %s"
                         % (", ".join(unknown), ", ".join(_SETTINGS)))
    out = {}
    for key in _SETTINGS:
        v = cs.get(key, cs.get(key.replace("_", "-")))
        if v is None:
            v = environ.get("KVSTASH_" + key.upper())
        out[key] = v if v not in ("",) else None
    return out


def cmake_configure_args(s):
    """The arguments of the CMake configure step for settings s."""
    cuda = (s.get("cuda") or "auto").strip().lower()
    modes = {"auto": "AUTO", "on": "ON", "1": "ON", "yes": "ON", "true": "ON",
             "off": "OFF", "0": "OFF", "no": "OFF", "false": "OFF"}
    if cuda not in modes:
        raise BuildError("kvstash build: cuda=%r (KVSTASH_CUDA) is not one of auto, on, off"
                         % s.get("cuda"))
    args = ["-DCMAKE_BUILD_TYPE=" + (s.get("build_type") or "Release"),
            "-DKVS_WITH_CUDA=" + modes[cuda],
            "-DKVS_BUILD_TESTS=OFF"]
    # an sdist has no git history: the commit it was made from is in a file
    commit_file = os.path.join(PKG_ROOT, "native", "GIT_COMMIT")
    if os.path.exists(commit_file):
        with open(commit_file) as f:
            commit = f.read().strip()
        if re.fullmatch(r"[0-9a-f]{7,40}(-dirty)?", commit):
            args.append("-DKVS_GIT_COMMIT=" + commit)
    if s.get("cmake_args"):
        args += shlex.split(s["cmake_args"])
    return args


def source_dir(s):
    """The kvstash source tree the library is built from."""
    cands = [s.get("source_dir")] if s.get("source_dir") else [
        os.path.join(PKG_ROOT, "native"), os.path.dirname(PKG_ROOT)]
    for c in cands:
        if os.path.exists(os.path.join(c, "CMakeLists.txt")) and \
                os.path.exists(os.path.join(c, "include", "kvstash.h")):
            return os.path.abspath(c)
    raise BuildError("kvstash build: no kvstash source tree (CMakeLists.txt and "
                     "include/kvstash.h) in %s; build from a kvstash checkout "
                     "(pip install ./python) or set KVSTASH_SOURCE_DIR"
                     % " or ".join(cands))


# ---- building the library --------------------------------------------------------

def _run(cmd, **kw):
    print("kvstash build: " + " ".join(shlex.quote(c) for c in cmd), file=sys.stderr, flush=True)
    r = subprocess.run(cmd, **kw)
    if r.returncode != 0:
        raise BuildError("kvstash build: `%s` failed with exit status %d (its output is above)"
                         % (" ".join(cmd[:3]), r.returncode))


def build_library(s):
    """Configures and builds libkvstash; returns the path of the built
    library (the real file the soname points to)."""
    cmake = shutil.which("cmake")
    if not cmake:
        raise BuildError("kvstash build: cmake is not installed (Debian: apt-get install "
                         "cmake build-essential pkg-config libyaml-dev libssl-dev "
                         "libxxhash-dev)")
    src = source_dir(s)
    bdir = os.path.abspath(s.get("build_dir") or
                           os.path.join(PKG_ROOT, "build", "cmake-" + _platform_tag()))
    os.makedirs(bdir, exist_ok=True)
    # stdout of the build tools goes to pip's log (stderr): a PEP 517 hook's
    # stdout is not ours to fill.
    _run([cmake, "-S", src, "-B", bdir] + cmake_configure_args(s), stdout=sys.stderr)
    jobs = s.get("build_jobs") or str(os.cpu_count() or 2)
    _run([cmake, "--build", bdir, "--target", "kvstash", "-j", jobs], stdout=sys.stderr)
    lib = os.path.join(bdir, LIBRARY)
    if not os.path.exists(lib):
        raise BuildError("kvstash build: CMake built no %s in %s" % (LIBRARY, bdir))
    return os.path.realpath(lib)


# ---- wheels ----------------------------------------------------------------------

def _digest(data):
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


class _Wheel:
    def __init__(self, path):
        self.zip = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED)
        self.records = []

    def add(self, arcname, data, mode=0o644):
        if isinstance(data, str):
            data = data.encode("utf-8")
        info = zipfile.ZipInfo(arcname, date_time=(2020, 1, 1, 0, 0, 0))
        info.external_attr = (0o100000 | mode) << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        self.zip.writestr(info, data)
        self.records.append((arcname, _digest(data), str(len(data))))

    def close(self, record_name):
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        for r in self.records:
            w.writerow(r)
        w.writerow((record_name, "", ""))
        info = zipfile.ZipInfo(record_name, date_time=(2020, 1, 1, 0, 0, 0))
        info.external_attr = 0o100644 << 16
        self.zip.writestr(info, buf.getvalue())
        self.zip.close()


def _dist_info_files(tag):
    name, version = _name_version()
    wheel = ("Wheel-Version: 1.0\nGenerator: kvstash_build %s\nRoot-Is-Purelib: false\n"
             "Tag: %s\n" % (version, tag))
    return {"METADATA": _metadata_text(), "WHEEL": wheel, "top_level.txt": PACKAGE + "\n"}


def _dist_info_name():
    name, version = _name_version()
    return "%s-%s.dist-info" % (name.replace("-", "_"), version)


def _package_files():
    """(arcname, path) of the package's Python files, without caches or any
    library copied into the source tree."""
    root = os.path.join(PKG_ROOT, PACKAGE)
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for fn in sorted(filenames):
            if fn.endswith(".py") or fn == "py.typed":
                path = os.path.join(dirpath, fn)
                out.append((os.path.relpath(path, PKG_ROOT).replace(os.sep, "/"), path))
    return out


def _write_wheel(wheel_directory, contents):
    name, version = _name_version()
    tag = wheel_tag()
    fname = "%s-%s-%s.whl" % (name.replace("-", "_"), version, tag)
    w = _Wheel(os.path.join(wheel_directory, fname))
    for arcname, data, mode in contents:
        w.add(arcname, data, mode)
    di = _dist_info_name()
    for fn, text in _dist_info_files(tag).items():
        w.add(di + "/" + fn, text)
    w.close(di + "/RECORD")
    return fname


def _read(path):
    with open(path, "rb") as f:
        return f.read()


# ---- PEP 517 hooks -----------------------------------------------------------------

def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def get_requires_for_build_editable(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    di = os.path.join(metadata_directory, _dist_info_name())
    os.makedirs(di, exist_ok=True)
    for fn, text in _dist_info_files(wheel_tag()).items():
        with open(os.path.join(di, fn), "w", encoding="utf-8") as f:
            f.write(text)
    return os.path.basename(di)


prepare_metadata_for_build_editable = prepare_metadata_for_build_wheel


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    lib = build_library(settings(config_settings))
    contents = [(arc, _read(path), 0o644) for arc, path in _package_files()]
    contents.append((PACKAGE + "/" + LIBRARY, _read(lib), 0o755))
    return _write_wheel(wheel_directory, contents)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    """pip install -e ./python: the package is imported from this source
    directory (a .pth file), with the library built and copied next to it
    (python/kvstash/libkvstash.so.0, ignored by git)."""
    lib = build_library(settings(config_settings))
    shutil.copyfile(lib, os.path.join(PKG_ROOT, PACKAGE, LIBRARY + ".tmp"))
    os.replace(os.path.join(PKG_ROOT, PACKAGE, LIBRARY + ".tmp"),
               os.path.join(PKG_ROOT, PACKAGE, LIBRARY))
    return _write_wheel(wheel_directory, [("_kvstash_editable.pth", PKG_ROOT + "\n", 0o644)])


def _git_commit(src):
    """The commit of the checkout src as cmake/git_commit.cmake names it, or
    None outside git."""
    try:
        head = subprocess.run(["git", "-C", src, "rev-parse", "--short=12", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", src, "diff-index", "--quiet", "HEAD", "--"],
                               capture_output=True).returncode != 0
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("-dirty" if dirty else "") if head else None


def build_sdist(sdist_directory, config_settings=None):
    """A source archive that builds on its own: python/ at the top and the
    library's sources under native/."""
    name, version = _name_version()
    base = "%s-%s" % (name, version)
    src = source_dir(settings(config_settings))
    path = os.path.join(sdist_directory, base + ".tar.gz")

    def skip(ti):
        parts = ti.name.split("/")
        if "__pycache__" in parts or (len(parts) > 1 and parts[1] == "build") or \
                ti.name.endswith((".pyc", ".so", ".so.0")):
            return None
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = ""
        return ti

    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for entry in ("pyproject.toml", "README.md", "build_backend", PACKAGE):
            tar.add(os.path.join(PKG_ROOT, entry), base + "/" + entry, filter=skip)
        for entry in SDIST_NATIVE:
            p = os.path.join(src, entry)
            if os.path.exists(p):
                tar.add(p, base + "/native/" + entry, filter=skip)
        commit = _git_commit(src)
        if commit:
            data = (commit + "\n").encode()
            ti = tarfile.TarInfo(base + "/native/GIT_COMMIT")
            ti.size = len(data)
            ti.mode = 0o644
            tar.addfile(ti, io.BytesIO(data))
        pkg_info = _metadata_text().encode("utf-8")
        ti = tarfile.TarInfo(base + "/PKG-INFO")
        ti.size = len(pkg_info)
        ti.mode = 0o644
        tar.addfile(ti, io.BytesIO(pkg_info))
    return os.path.basename(path)


__all__ = ["build_wheel", "build_sdist", "build_editable", "get_requires_for_build_wheel",
           "get_requires_for_build_sdist", "get_requires_for_build_editable",
           "prepare_metadata_for_build_wheel", "prepare_metadata_for_build_editable"]
