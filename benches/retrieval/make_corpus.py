#!/usr/bin/env python3
"""Builds the retrieval-benchmark corpus: docstrings of a fixed list of CPython 3.11 standard
library modules, one JSON document per line, sorted by id.

    python3 benches/retrieval/make_corpus.py [OUT.jsonl]      (stdout when OUT is omitted)

Each document is {"id": <qualified name>, "text": <qualified name + signature + docstring>}.
Documents come from module docstrings, public functions, classes, methods, properties and
documented objects, plus documents for constants: per-constant documents where CPython gives a
description (errno via os.strerror, signal via signal.strsignal, inline source comments as in
stat.py), and one document per name prefix (socket.SO_*, os.O_*, ...) for the other ones.

Stdlib only, no network, deterministic: the script re-executes itself with PYTHONHASHSEED=0 and
strips memory addresses from signatures.  Relevance judgments in queries.jsonl were made against
the output of Python 3.11.7 (and checked with 3.11.2), so any major.minor other than 3.11 is
refused.
"""
from __future__ import print_function  # so that Python 2 reaches the version check

import errno as errno_mod
import functools
import importlib
import inspect
import io
import json
import os
import re
import signal as signal_mod
import sys
import tokenize
import types
import warnings

# The relevance judgments in queries.jsonl were made with 3.11.7 and checked with 3.11.2.
CHECKED_WITH = ("3.11.2", "3.11.7")

if sys.version_info[:2] != (3, 11):
    sys.exit(
        "make_corpus.py: this corpus must be generated with Python 3.11 (found %d.%d at %s); "
        "the relevance judgments in queries.jsonl were made against 3.11's docstrings."
        % (sys.version_info[0], sys.version_info[1], sys.executable)
    )

if os.environ.get("PYTHONHASHSEED") != "0":
    env = dict(os.environ, PYTHONHASHSEED="0")
    os.execve(sys.executable, [sys.executable, os.path.abspath(__file__)] + sys.argv[1:], env)

MODULES = sorted(
    """abc argparse array asyncio base64 binascii bisect builtins bz2 cProfile calendar cmath
    codecs collections collections.abc concurrent.futures configparser contextlib
    contextvars copy csv dataclasses datetime decimal difflib doctest email email.message
    email.utils enum errno fcntl filecmp fnmatch fractions functools getpass gettext glob
    gzip hashlib heapq hmac html html.parser http http.client http.cookies http.server
    importlib importlib.resources inspect io ipaddress itertools json locale logging
    logging.handlers lzma math mimetypes mmap multiprocessing operator os os.path pathlib
    pickle platform pprint pty queue random re resource secrets select selectors shlex
    shutil signal smtplib socket socketserver sqlite3 ssl stat statistics string struct
    subprocess sys sysconfig tarfile tempfile termios textwrap threading time timeit tomllib
    traceback tty typing unicodedata unittest unittest.mock urllib.error urllib.parse
    urllib.request uuid warnings weakref xml.etree.ElementTree zipfile zlib zoneinfo""".split()
)

# Modules whose upper-case module-level constants are turned into documents.
CONSTANT_MODULES = sorted(
    """csv errno fcntl locale logging mmap os resource select signal socket sqlite3 ssl stat
    subprocess tarfile termios time zipfile zlib""".split()
)

# Private implementation modules whose objects count as belonging to the public module.
IMPL_MODULES = {
    "os": {"posix"},
    "os.path": {"posixpath", "genericpath"},
    "hashlib": {"_hashlib", "_blake2", "_sha3"},
    "threading": {"_thread"},
    "decimal": {"_decimal", "_pydecimal"},
    "collections.abc": {"_collections_abc"},
    "select": {"select"},
    "xml.etree.ElementTree": {"_elementtree"},
    "sqlite3": {"sqlite3.dbapi2", "_sqlite3"},
}

MIN_DOC = 40
MAX_TEXT = 4000

# Short headers for constant-group documents (written for this benchmark, not CPython text).
GROUP_HEADERS = {
    ("fcntl", "F_"): "Commands for fcntl.fcntl() (file descriptor and file status flags, locks, leases, pipe size).",
    ("fcntl", "LOCK_"): "Operations for fcntl.flock() and fcntl.lockf(): shared, exclusive, non-blocking and unlock.",
    ("locale", "LC_"): "Locale categories for locale.setlocale() and locale.getlocale().",
    ("mmap", "MAP_"): "Flags for the mmap.mmap() constructor (shared or private mapping, anonymous memory).",
    ("mmap", "MADV_"): "Advice values for mmap.mmap.madvise().",
    ("mmap", "PROT_"): "Memory protection values for the mmap.mmap() constructor.",
    ("os", "O_"): "Flags for os.open(), combined with bitwise OR (access mode, creation, non-blocking and synchronous I/O flags).",
    ("os", "SEEK_"): "Whence values for os.lseek() and file seek(): start, current position, end, data, hole.",
    ("os", "W"): "Options and status helpers for os.waitpid() and os.wait3()/wait4().",
    ("os", "EX_"): "Exit codes for os._exit() and sys.exit() (sysexits.h).",
    ("os", "access"): "Mode values for os.access(): test existence (F_OK), readability (R_OK), writability (W_OK) and executability (X_OK).",
    ("os", "F_"): "Commands for os.lockf().",
    ("os", "P_"): "Modes for os.spawn*() and os.waitid() identifiers.",
    ("os", "SCHED_"): "Scheduling policies for os.sched_setscheduler().",
    ("os", "RTLD_"): "Flags for sys.setdlopenflags() and os dynamic loading.",
    ("os", "ST_"): "Flags of the f_flag field returned by os.statvfs().",
    ("os", "XATTR_"): "Flags for os.setxattr().",
    ("os", "GRND_"): "Flags for os.getrandom().",
    ("os", "PRIO_"): "Targets for os.getpriority() and os.setpriority().",
    ("os", "CLD_"): "si_code values of os.waitid() results.",
    ("os", "POSIX_FADV_"): "Advice values for os.posix_fadvise().",
    ("os", "MFD_"): "Flags for os.memfd_create().",
    ("os", "EFD_"): "Flags for os.eventfd().",
    ("os", "SPLICE_"): "Flags for os.splice().",
    ("os", "RWF_"): "Flags for os.preadv() and os.pwritev().",
    ("resource", "RLIMIT_"): "Resource limits for resource.getrlimit() and resource.setrlimit().",
    ("resource", "RUSAGE_"): "Targets for resource.getrusage().",
    ("select", "EPOLL"): "Event masks for select.epoll objects.",
    ("select", "POLL"): "Event masks for select.poll objects.",
    ("signal", "SIG_"): "Signal handlers (SIG_DFL, SIG_IGN) and pthread_sigmask() operations.",
    ("socket", "AF_"): "Address families for socket.socket() (IPv4, IPv6, Unix domain, ...).",
    ("socket", "SOCK_"): "Socket types for socket.socket() (stream, datagram, raw, ...) and socket flags.",
    ("socket", "SO_"): "Socket-level options for socket.setsockopt() and socket.getsockopt() at level SOL_SOCKET.",
    ("socket", "SOL_"): "Option levels for socket.setsockopt() and socket.getsockopt().",
    ("socket", "IPPROTO_"): "IP protocol numbers, used as socket protocol and as setsockopt() levels.",
    ("socket", "IP_"): "IPv4 options for socket.setsockopt() at level IPPROTO_IP (multicast, TTL, ...).",
    ("socket", "IPV6_"): "IPv6 options for socket.setsockopt() at level IPPROTO_IPV6.",
    ("socket", "TCP_"): "TCP options for socket.setsockopt() at level IPPROTO_TCP (Nagle, keepalive, ...).",
    ("socket", "MSG_"): "Flags for socket send() and recv() calls.",
    ("socket", "AI_"): "Flags for socket.getaddrinfo().",
    ("socket", "NI_"): "Flags for socket.getnameinfo().",
    ("socket", "EAI_"): "Error codes of socket.getaddrinfo() and socket.getnameinfo() (socket.gaierror).",
    ("socket", "SHUT_"): "Values for socket.shutdown(): stop reading, writing or both.",
    ("socket", "INADDR_"): "Special IPv4 addresses.",
    ("ssl", "OP_"): "Options for SSLContext.options.",
    ("ssl", "PROTOCOL_"): "Protocol versions for ssl.SSLContext().",
    ("ssl", "CERT_"): "Values for SSLContext.verify_mode: certificate verification requirements.",
    ("ssl", "VERIFY_"): "Values for SSLContext.verify_flags.",
    ("ssl", "ALERT_"): "TLS alert descriptions.",
    ("ssl", "SSL_"): "Error codes of ssl.SSLError.",
    ("subprocess", "misc"): "Special values for subprocess stdin, stdout and stderr arguments.",
    ("termios", "TC"): "termios actions and queue selectors for tcsetattr(), tcflush() and tcflow().",
    ("time", "CLOCK_"): "Clock identifiers for time.clock_gettime() and time.clock_getres().",
    ("zlib", "Z_"): "Compression levels, strategies and flush modes for zlib.",
    ("zipfile", "ZIP_"): "Compression methods for zipfile.ZipFile.",
    ("csv", "QUOTE_"): "Quoting modes for csv.writer() and csv.reader().",
    ("logging", "misc"): "Logging levels.",
    ("sqlite3", "SQLITE_"): "SQLite authorizer action codes and return values for Connection.set_authorizer().",
    ("sqlite3", "PARSE_"): "Values for the detect_types parameter of sqlite3.connect().",
}

# Constant groups defined by explicit membership rather than by name prefix.
GROUP_MEMBERS = {
    ("os", "access"): {"F_OK", "R_OK", "W_OK", "X_OK"},
    ("os", "W"): {"WCONTINUED", "WEXITED", "WNOHANG", "WNOWAIT", "WSTOPPED", "WUNTRACED"},
}

ADDR_RE = re.compile(r" at 0x[0-9a-fA-F]+")
DECOR_RE = re.compile(r"[-=*#~]{3,}")
SELF_RE = re.compile(r"^\((?:self|cls)(?:, /)?(?:, |\))")
CONST_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")


def clean(doc):
    return inspect.cleandoc(doc).strip() if isinstance(doc, str) else ""


def signature(obj):
    try:
        sig = str(inspect.signature(obj))
    except (TypeError, ValueError):
        return ""
    sig = SELF_RE.sub(lambda m: "(" if m.group(0).endswith(" ") else "()", sig)
    sig = sig.replace(repr(sys.executable), "sys.executable")  # platform.architecture()
    return ADDR_RE.sub("", sig)


def cap(text):
    if len(text) <= MAX_TEXT:
        return text
    cut = text.rfind(" ", 0, MAX_TEXT - 4)
    return text[: cut if cut > MAX_TEXT // 2 else MAX_TEXT - 4].rstrip() + " ..."


def belongs(modname, mod, obj):
    """Whether a module attribute is defined by this module (not imported from another one)."""
    owner = getattr(obj, "__module__", None)
    if isinstance(obj, types.ModuleType) or not isinstance(owner, str):
        return False
    last = modname.rsplit(".", 1)[-1]
    return (
        owner == modname
        or owner.startswith(modname + ".")
        or owner.lstrip("_") == last
        or owner in IMPL_MODULES.get(modname, ())
    )


def public_names(modname, mod):
    if hasattr(mod, "__all__"):
        return sorted(n for n in mod.__all__ if hasattr(mod, n))
    return sorted(n for n in dir(mod) if not n.startswith("_"))


class Collector:
    def __init__(self):
        # (id, text, body, identity, preference, depth); among duplicates the smallest
        # (preference, depth, len(id), id) wins, depth being the length of the owner class's MRO.
        self.docs = []
        self.module = None  # identical docstrings are merged within a module, objects globally

    def add(self, doc_id, obj, doc, sig="", identity=None, extra="", pref=0, owner=None):
        doc = clean(doc)
        if len(doc) < MIN_DOC:
            return
        body = (self.module, (sig + "\n" + doc + extra).strip())
        head = doc_id + sig
        text = cap(head + "\n\n" + doc + extra)
        name = getattr(obj, "__name__", None)
        if name is not None and doc_id.rsplit(".", 1)[-1] != name:
            pref += 2
        depth = len(owner.__mro__) if owner is not None else 0
        self.docs.append((doc_id, text, body, identity, pref, depth))

    def add_text(self, doc_id, text):
        self.docs.append((doc_id, cap(text), (self.module, text), None, 0, 0))

    def result(self):
        order = sorted(self.docs, key=lambda d: (d[4], d[5], len(d[0]), d[0]))
        out, seen_ident, seen_body, seen_id = [], set(), set(), set()
        for d in order:
            if d[0] in seen_id or d[2] in seen_body:
                continue
            if d[3] is not None and d[3] in seen_ident:
                continue
            seen_id.add(d[0])
            seen_body.add(d[2])
            if d[3] is not None:
                seen_ident.add(d[3])
            out.append(d)
        return sorted(out, key=lambda d: d[0])


def class_members(cls):
    """name -> (member, own) for the members of cls and of its private (underscore) bases."""
    members = {}
    for base in cls.__mro__:
        if base is not cls:
            bmod = getattr(base, "__module__", "") or ""
            if not (base.__name__.startswith("_") or bmod.startswith("_")):
                continue
        # A member inherited from a private base counts as the class's own when the class is
        # that base's public face (io.IOBase over _io._IOBase, socket.socket over _socket.socket).
        own = base is cls or base.__name__.lstrip("_") == cls.__name__
        for k, v in base.__dict__.items():
            if k.startswith("_") or k in members:
                continue
            members[k] = (v, own)
    return members


def add_class(col, qual, cls):
    doc = cls.__dict__.get("__doc__")
    init = cls.__dict__.get("__init__")
    extra = ""
    if init is not None and inspect.isfunction(init):
        idoc = clean(init.__doc__)
        if idoc and idoc != clean(doc):
            extra = "\n\n" + idoc
    sig = signature(cls) if callable(cls) else ""
    if not clean(doc) and extra:
        doc, extra = extra.strip(), ""
    alias = 0 if qual.rsplit(".", 1)[-1] == cls.__name__ else 1
    col.add(qual, cls, doc, sig, ("obj", id(cls)), extra)
    for name, (member, own) in sorted(class_members(cls).items()):
        mqual = qual + "." + name
        pref = 2 * alias + (0 if own else 1)
        raw = member
        if isinstance(member, (classmethod, staticmethod)):
            raw = member.__func__
        if isinstance(member, property):
            col.add(mqual, None, member.__doc__, "", ("obj", id(member)), pref=pref, owner=cls)
        elif inspect.isclass(member):
            continue
        elif inspect.isroutine(raw):
            col.add(mqual, raw, raw.__doc__, signature(raw), ("obj", id(raw)), pref=pref, owner=cls)
        elif inspect.isdatadescriptor(member) or inspect.ismethoddescriptor(member):
            doc = getattr(member, "__doc__", None)
            col.add(mqual, None, doc, "", ("obj", id(member)), pref=pref, owner=cls)


def source_comments(mod):
    """NAME -> (inline comment, section comment) for module-level constants in Python source."""
    try:
        src = inspect.getsource(mod)
    except (OSError, TypeError):
        return {}
    inline, full = {}, {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(src).readline):
            if tok.type == tokenize.COMMENT:
                row, col = tok.start
                text = tok.string.lstrip("#").strip()
                if tok.line[:col].strip():
                    inline[row] = text
                elif col == 0:
                    full[row] = text
    except (tokenize.TokenError, SyntaxError):
        return {}
    found, section, block = {}, "", []
    assign = re.compile(r"^([A-Z][A-Z0-9_]*)\s*=[^=]")
    for row, line in enumerate(src.splitlines(), 1):
        if row in full:
            block.append(full[row])
            continue
        if block:
            section = " ".join(DECOR_RE.sub(" ", b).strip() for b in block)
            section = " ".join(section.split())
            block = []
        m = assign.match(line)
        if not m:
            if line[:1].strip():
                section = ""
            continue
        found.setdefault(m.group(1), (inline.get(row, ""), section))
    return found


def fmt_value(v, octal=False):
    if isinstance(v, bool):
        return repr(v)
    if isinstance(v, int) and octal:
        return "0o%o (%d)" % (int(v), int(v))
    if isinstance(v, int):
        iv = int(v)
        return "%d (0x%x)" % (iv, iv) if iv > 9 else str(iv)
    if isinstance(v, (str, bytes, float)):
        return repr(v)
    return None


def group_prefix(modname, name, prefixes):
    for (m, key), members in GROUP_MEMBERS.items():
        if m == modname and name in members:
            return key
    best = ""
    for p in prefixes:
        if name.startswith(p) and len(p) > len(best):
            best = p
    if best:
        return best
    if "_" in name.strip("_"):
        return name.split("_", 1)[0] + "_"
    return "misc"


def add_constants(col, modname, mod, names):
    consts = {}
    for n in names:
        if not CONST_RE.match(n):
            continue
        v = getattr(mod, n)
        if fmt_value(v) is None:
            continue
        consts[n] = v
    if not consts:
        return
    comments = source_comments(mod)
    grouped = {}
    prefixes = [p for (m, p) in GROUP_HEADERS if m == modname and p != "misc"]
    for n in sorted(consts):
        v = consts[n]
        value = fmt_value(v, octal=modname == "stat" and n.startswith("S_"))
        enum_note = ""
        if type(v).__module__ != "builtins" and hasattr(type(v), "__members__"):
            enum_note = " (%s.%s)" % (type(v).__name__, n)
        if modname == "errno":
            msg = os.strerror(v)
            canon = errno_mod.errorcode.get(v)
            alias = " Same value as %s." % canon if canon and canon != n else ""
            exc = type(OSError(v, msg)).__name__
            raised = (
                " Raised in Python as %s, a subclass of OSError." % exc if exc != "OSError" else ""
            )
            col.add_text(
                "errno." + n,
                "errno.%s\n\nError code constant %s = %d of the errno module (POSIX errno): "
                "%s (os.strerror(%d)).%s%s" % (n, n, v, msg, v, alias, raised),
            )
            continue
        if modname == "signal" and isinstance(v, signal_mod.Signals):
            desc = signal_mod.strsignal(v) or ""
            col.add_text(
                "signal." + n,
                "signal.%s\n\nSignal number constant %s = %d%s of the signal module: %s "
                "(signal.strsignal(%s))." % (n, n, int(v), enum_note, desc, n),
            )
            continue
        comment, section = comments.get(n, ("", ""))
        if comment:
            text = "%s.%s\n\n%s = %s: %s." % (modname, n, n, value, comment.rstrip("."))
            if section:
                text += " Constant of the %s module; %s." % (modname, section.rstrip("."))
            else:
                text += " Constant of the %s module." % modname
            col.add_text(modname + "." + n, text)
            continue
        grouped.setdefault(group_prefix(modname, n, prefixes), []).append((n, value + enum_note, section))
    for prefix, items in sorted(grouped.items()):
        if prefix != "misc" and len(items) == 1:
            grouped.setdefault("misc", []).extend(items)
            del grouped[prefix]
    for prefix, items in sorted(grouped.items()):
        header = GROUP_HEADERS.get((modname, prefix), "")
        sections = sorted({s for _, _, s in items if s})
        if not header and len(sections) == 1:
            header = sections[0]
        if prefix == "misc":
            doc_id, title = modname + ".constants", "Other constants of the %s module" % modname
        elif prefix.isupper():
            doc_id = "%s.%s*" % (modname, prefix)
            title = "Constants of the %s module with the prefix %s" % (modname, prefix)
        else:
            doc_id = "%s.%s_constants" % (modname, prefix)
            title = "Constants of the %s module" % modname
        lines = ["%s = %s" % (n, v) for n, v, _ in items]
        intro = "%s.%s" % (title, (" " + header) if header else "")
        chunks, cur = [], []
        for line in lines:  # split long groups into parts that fit MAX_TEXT
            if cur and len(intro) + sum(len(x) + 1 for x in cur) + len(line) + 40 > MAX_TEXT:
                chunks.append(cur)
                cur = []
            cur.append(line)
        chunks.append(cur)
        for i, chunk in enumerate(chunks, 1):
            part_id = doc_id if len(chunks) == 1 else "%s/%d" % (doc_id, i)
            part = "" if len(chunks) == 1 else " (part %d of %d)" % (i, len(chunks))
            col.add_text(part_id, "%s\n\n%s%s\n\n%s" % (part_id, intro, part, "\n".join(chunk)))


def collect():
    col = Collector()
    failed = []
    warnings.simplefilter("ignore")
    for modname in MODULES:
        try:
            mod = importlib.import_module(modname)
        except Exception as exc:  # pragma: no cover - depends on the local build
            failed.append("%s (%s: %s)" % (modname, type(exc).__name__, exc))
            continue
        col.module = modname
        col.add(modname, mod, mod.__doc__, "", ("mod", modname))
        names = public_names(modname, mod)
        has_all = hasattr(mod, "__all__")
        for name in names:
            obj = getattr(mod, name)
            qual = modname + "." + name
            if inspect.isclass(obj):
                if has_all or belongs(modname, mod, obj):
                    add_class(col, qual, obj)
            elif inspect.isroutine(obj) or isinstance(obj, functools.partial):
                if has_all or belongs(modname, mod, obj):
                    ident = obj if not inspect.ismethod(obj) else obj.__func__
                    col.add(qual, obj, obj.__doc__, signature(obj), ("obj", id(ident)))
            elif not isinstance(obj, types.ModuleType):
                doc = getattr(obj, "__doc__", None)
                if isinstance(doc, str) and doc != getattr(type(obj), "__doc__", None):
                    col.add(qual, None, doc, "", ("obj", id(obj)))
        if modname in CONSTANT_MODULES:
            add_constants(col, modname, mod, sorted(n for n in dir(mod) if not n.startswith("_")))
    return col.result(), failed


def main():
    docs, failed = collect()
    data = "".join(
        json.dumps({"id": doc_id, "text": text}, ensure_ascii=False) + "\n"
        for doc_id, text in (d[:2] for d in docs)
    ).encode("utf-8")
    if len(sys.argv) > 1:
        with open(sys.argv[1], "wb") as out:
            out.write(data)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    version = sys.version.split()[0]
    print("python %s (%s)" % (version, sys.executable), file=sys.stderr)
    if version not in CHECKED_WITH:
        print(
            "note: queries.jsonl was checked against the corpora of Python %s; other 3.11.x "
            "releases change a few docstrings, so run check.py" % " and ".join(CHECKED_WITH),
            file=sys.stderr,
        )
    for f in failed:
        print("module failed to import: " + f, file=sys.stderr)
    print(
        "%d documents from %d modules, %d bytes" % (len(docs), len(MODULES) - len(failed), len(data)),
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
