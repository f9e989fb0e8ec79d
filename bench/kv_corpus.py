"""English text from Debian packages, for training a small byte-level model
(bench/train_kv_model.py).  Nothing is downloaded: the .deb files are fetched
beforehand with `apt-get download` on a machine with apt (see DEBS) and
travel in .deps/text/; here they are unpacked with dpkg-deb -x.

Documents are whole files (Python's reStructuredText sources, Perl's pod
pages, the fortune files, the Jargon File, the GNU coding standards, the
Debian Reference with its HTML tags removed).  A document goes to the
held-out split when crc32(its path) % 20 == 0, so the split does not depend
on the order files are found in.  Standard library only.
"""
import gzip
import html
import os
import re
import subprocess
import sys
import zlib

# Debian 12 packages (apt-get download NAME); about 25 MB of .deb files that
# give about 27 MB of text.
DEBS = ["python3.11-doc", "perl-doc", "fortunes", "jargon-text", "gnu-standards",
        "debian-reference-en"]

_TAG = re.compile(rb"<[^>]*>")
_SPACE = re.compile(rb"[ \t]*\n[ \t\n]*\n")


def _read(path):
    with open(path, "rb") as f:
        data = f.read()
    return gzip.decompress(data) if path.endswith(".gz") else data


def _strip_html(data):
    data = re.sub(rb"(?is)<(script|style)\b.*?</\1>", b"", data)
    data = _TAG.sub(b"", data)
    data = html.unescape(data.decode("utf-8", "replace")).encode("utf-8")
    return _SPACE.sub(b"\n\n", data)


def _wanted(rel):
    """How a file under the unpacked tree is read, or None to skip it."""
    if "/html/_sources/" in rel and rel.endswith(".rst.txt"):
        return "text"
    if rel.startswith("usr/share/perl/") and rel.endswith(".pod"):
        return "text"
    if rel.startswith("usr/share/games/fortunes/") and "." not in os.path.basename(rel):
        return "text"
    if rel.endswith("jargon-text/jargon.txt.gz"):
        return "text"
    if rel.startswith("usr/share/info/") and os.path.basename(rel).split(".")[0] in (
            "standards", "maintain"):
        return "text"
    if rel.startswith("usr/share/debian-reference/") and rel.endswith(".en.html"):
        return "html"
    return None


def unpack(deb_dir, dest):
    debs = sorted(f for f in os.listdir(deb_dir) if f.endswith(".deb"))
    if not debs:
        raise SystemExit("no .deb files in %s (apt-get download %s)" % (deb_dir, " ".join(DEBS)))
    os.makedirs(dest, exist_ok=True)
    for f in debs:
        subprocess.run(["dpkg-deb", "-x", os.path.join(deb_dir, f), dest], check=True)
    return debs


def documents(root):
    """(relative path, bytes) of every document under root, sorted by path."""
    out = []
    for dirpath, _, files in os.walk(root):
        for name in files:
            full = os.path.join(dirpath, name)
            if os.path.islink(full):
                continue
            rel = os.path.relpath(full, root)
            how = _wanted(rel)
            if how is None:
                continue
            data = _read(full)
            if how == "html":
                data = _strip_html(data)
            if len(data) >= 256:
                out.append((rel, data))
    out.sort()
    return out


def build(deb_dir, work):
    """Unpacks the .debs of deb_dir under work and returns (train, val, info):
    two bytes objects (documents joined by a blank line) and a description."""
    root = os.path.join(work, "unpacked")
    debs = unpack(deb_dir, root)
    docs = documents(root)
    train, val = [], []
    for rel, data in docs:
        (val if zlib.crc32(rel.encode()) % 20 == 0 else train).append(data)
    sep = b"\n\n"
    info = {"debs": debs, "documents": len(docs), "train_documents": len(train),
            "val_documents": len(val)}
    return sep.join(train), sep.join(val), info


if __name__ == "__main__":
    import tempfile
    d = sys.argv[1] if len(sys.argv) > 1 else ".deps/text"
    with tempfile.TemporaryDirectory() as w:
        tr, va, info = build(d, w)
    info.update(train_bytes=len(tr), val_bytes=len(va))
    print(info)
