"""A real Dovecot (IMAP, IMAPS, POP3, POP3S on loopback) for the whole test session.

Fixtures: `dovecot` (session) and `mail_user` (a fresh user per test); `oauth_dovecot` (session)
also takes OAuth2 access tokens, checked at the test authorisation server (tests/oauth_server.py). Import them with
`from tests.dovecot import *`. Mail is written straight into the users' Maildirs, so loading
thousands of messages takes well under a second.

`DroppingProxy` forwards TCP to Dovecot and cuts (or stalls) the connection after a number of
bytes from the server: "the server went away in the middle of a fetch".
"""

from __future__ import annotations

import datetime as dt
import grp
import ipaddress
import itertools
import os
import pwd
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from portal.transport.base import ServerSettings

__all__ = ["DovecotServer", "DroppingProxy", "MailUser", "children_of", "dovecot", "dovecot_without_idle", "mail_user",
           "oauth_dovecot"]

DOVECOT = os.environ.get("TIDEMARK_DOVECOT", "/usr/sbin/dovecot")
# Dovecot's auth worker runs the delegation checker; it may not reach a virtualenv's Python.
SYSTEM_PYTHON = "/usr/bin/python3"
# Mail processes never run as root; as root we map every virtual user to this numeric uid/gid,
# which needs no /etc/passwd entry.
MAIL_UID = MAIL_GID = 30000
MAILDIR_FLAGS = {"\\Seen": "S", "\\Answered": "R", "\\Flagged": "F", "\\Deleted": "T", "\\Draft": "D"}

_CONFIG = """\
# Private Dovecot for the Tidemark tests; written by tests/dovecot.py. Loopback only.
instance_name = {instance}
base_dir = {root}/run
state_dir = {root}/state
protocols = imap pop3
listen = 127.0.0.1
log_path = {root}/dovecot.log
{user_settings}
ssl = yes
ssl_cert = <{root}/tls/server.pem
ssl_key = <{root}/tls/server.key
# Loopback only: plaintext logins are fine, and the tests need them.
disable_plaintext_auth = no
auth_mechanisms = plain login{oauth_mechanisms}
auth_verbose = yes
# Tests log in with wrong passwords on purpose; the default 2 s penalty would only slow them.
auth_failure_delay = 0
# After a failed login Dovecot delays the next login from the same IP by seconds (anvil's auth
# penalty). The auth process cannot open a socket with mode 0, so it skips the penalty.
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
{login_chroot}
}}

{oauth_passdb}
# Master logins: SASL PLAIN with authcid = a master user and authzid = the mailbox to open.
# "pass = yes" still requires the target to exist in the ordinary passdb below.
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/master-users/%u
  master = yes
  pass = yes
}}
# One file per user: Dovecot re-reads a changed passwd-file at most once a second, but a new
# file is read at once, so a user added right before logging in is always known.
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users/%u
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/mail/%u
}}
first_valid_uid = {uid}
first_valid_gid = {gid}
mail_location = maildir:~/Maildir
namespace inbox {{
  inbox = yes
}}

service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps_port}
    ssl = yes
  }}
{login_chroot}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {pop3_port}
  }}
  inet_listener pop3s {{
    address = 127.0.0.1
    port = {pop3s_port}
    ssl = yes
  }}
{login_chroot}
}}
# One imap process per connection: room for a watcher's hundreds of IDLE connections.
service imap {{
  process_limit = 1024
}}
# IDLE learns of new mail by inotify; past the kernel's inotify instances per user (128 by
# default, shared by every Dovecot of the machine) it looks every this often instead (30 s).
mailbox_idle_check_interval = 1 secs
protocol imap {{
  mail_max_userip_connections = 200
{imap_extra}
}}
protocol pop3 {{
  mail_max_userip_connections = 200
}}
"""


# With an introspection URL: XOAUTH2 and OAUTHBEARER logins, each token checked by an RFC 7662
# introspection of the authorisation server (POST token=...). Dovecot then requires the token's
# `username` to be the login name (user=), and `active` to be true.
# A token for another mailbox (a shared one) goes on to tests/dovecot_delegation.py, which lets
# it in when the token's owner was granted that mailbox (grant_mailbox), as Exchange does.
_OAUTH_PASSDB = """\
passdb {{
  driver = oauth2
  mechanisms = {mechanisms}
  args = {root}/dovecot-oauth2.conf.ext
}}
passdb {{
  driver = checkpassword
  mechanisms = {mechanisms}
  args = {root}/delegation.sh
}}
"""
_DELEGATION_SH = """\
#!/bin/sh
exec {python} {program} {url} {root}/grants "$@"
"""
_OAUTH_CONFIG = """\
introspection_mode = post
introspection_url = {url}
force_introspection = yes
username_attribute = username
username_format = %u
active_attribute = active
active_value = true
timeout_msecs = 5000
"""


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _make_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A private CA and a server certificate for 127.0.0.1 and localhost signed by it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Tidemark test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    server_pem = directory / "server.pem"
    server_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    server_key = directory / "server.key"
    server_key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.TraditionalOpenSSL,
                                             serialization.NoEncryption()))
    return ca_file, server_pem, server_key


@dataclass(frozen=True)
class MailUser:
    name: str
    password: str
    home: Path

    @property
    def maildir(self) -> Path:
        return self.home / "Maildir"


class DovecotServer:
    """One private Dovecot. Start with start(), stop with stop(); see the module docstring."""

    def __init__(self, root: Path, introspection_url: str | None = None,
                 token_mechanisms: str = "xoauth2 oauthbearer", imap_capability: str | None = None):
        self.root = root
        # The capabilities Dovecot announces after login (None: its own, IDLE among them).
        self.imap_capability = imap_capability
        # Where Dovecot's oauth2 passdb checks access tokens; None: passwords only.
        self.introspection_url = introspection_url
        self.token_mechanisms = token_mechanisms
        self.imap_port = self.imaps_port = self.pop3_port = self.pop3s_port = 0
        self.ca_file = ""
        self.host = "127.0.0.1"
        self.users: dict[str, MailUser] = {}
        self._proc: subprocess.Popen | None = None
        self._counter = itertools.count()
        self._made_dirs: set[Path] = set()
        self._as_root = os.geteuid() == 0
        self.uid, self.gid = (MAIL_UID, MAIL_GID) if self._as_root else (os.getuid(), os.getgid())

    # --- life cycle ------------------------------------------------------------------------------

    def start(self) -> "DovecotServer":
        root = self.root
        for sub in ("run", "state", "mail"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        self._own(root / "mail")
        ca_file, _, _ = _make_tls(root / "tls")
        self.ca_file = str(ca_file)
        for name in ("users", "master-users"):
            (root / name).mkdir()
            (root / name).chmod(0o755)  # the auth process runs as the dovecot user
        self.imap_port, self.imaps_port, self.pop3_port, self.pop3s_port = (unused_port() for _ in range(4))
        if self._as_root:
            user_settings = ""
            login_chroot = ""
        else:
            # Without root Dovecot runs every process as us and cannot chroot.
            me = pwd.getpwuid(os.getuid()).pw_name
            group = grp.getgrgid(os.getgid()).gr_name
            user_settings = (f"default_internal_user = {me}\ndefault_login_user = {me}\n"
                             f"default_internal_group = {group}\n")
            login_chroot = "  chroot ="
        oauth_mechanisms = oauth_passdb = ""
        if self.introspection_url:
            (root / "dovecot-oauth2.conf.ext").write_text(_OAUTH_CONFIG.format(url=self.introspection_url))
            oauth_mechanisms = " " + self.token_mechanisms
            (root / "grants").mkdir()
            (root / "grants").chmod(0o755)
            script = root / "delegation.sh"
            script.write_text(_DELEGATION_SH.format(
                python=SYSTEM_PYTHON if os.path.exists(SYSTEM_PYTHON) else sys.executable,
                program=Path(__file__).with_name("dovecot_delegation.py"), url=self.introspection_url, root=root))
            script.chmod(0o755)
            oauth_passdb = _OAUTH_PASSDB.format(root=root, mechanisms=self.token_mechanisms)
        config = root / "dovecot.conf"
        config.write_text(_CONFIG.format(
            oauth_mechanisms=oauth_mechanisms, oauth_passdb=oauth_passdb,
            instance=f"tidemark-test-{uuid.uuid4().hex[:8]}", root=root, uid=self.uid, gid=self.gid,
            imap_port=self.imap_port, imaps_port=self.imaps_port,
            pop3_port=self.pop3_port, pop3s_port=self.pop3s_port,
            user_settings=user_settings, login_chroot=login_chroot,
            imap_extra=f"  imap_capability = {self.imap_capability}" if self.imap_capability else "",
        ))
        self._launch()
        return self

    def _launch(self) -> None:
        root = self.root
        stderr = open(root / "dovecot.stderr", "ab")  # noqa: SIM115 - kept open for the child
        # -F: stay in the foreground, so this Popen is the master and we stop exactly it.
        self._proc = subprocess.Popen([DOVECOT, "-F", "-c", str(root / "dovecot.conf")], stdout=stderr,
                                      stderr=stderr, stdin=subprocess.DEVNULL)
        stderr.close()
        deadline = time.monotonic() + 15
        pending = {self.imap_port, self.imaps_port, self.pop3_port, self.pop3s_port}
        while pending:
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"dovecot did not start:\n{self.log_tail()}")
            for port in list(pending):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    pending.discard(port)
                except OSError:
                    pass
            if pending:
                time.sleep(0.05)

    def kill(self) -> None:
        """Every Dovecot process dies at once (SIGKILL), as in a crash: open connections break."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        family = [proc.pid]
        for pid in family:  # grows while it is walked: children, then theirs
            family += children_of(pid)
        for pid in family:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=10)

    def restart(self) -> None:
        """Start again on the same ports, with the same users and mail (after kill() or stop())."""
        if self._proc is None:
            self._launch()

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def kick(self, user: MailUser | str) -> None:
        """The server ends every connection of this user (`doveadm kick`): as a server that drops
        an idling client, or restarts, does."""
        subprocess.run(["doveadm", "-c", str(self.root / "dovecot.conf"), "kick", self._user(user).name],
                       check=True, capture_output=True, timeout=30)

    def log_tail(self, lines: int = 40) -> str:
        out = []
        for name in ("dovecot.stderr", "dovecot.log"):
            path = self.root / name
            if path.exists():
                out.append(f"--- {name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(out)

    # --- users -----------------------------------------------------------------------------------

    def add_user(self, name: str, password: str) -> MailUser:
        """An ordinary login with its own Maildir (created on first delivery or login)."""
        self._check_credentials(name, password)
        user = MailUser(name, password, self.root / "mail" / name)
        self._write_passwd("users", name, password)
        self.users[name] = user
        return user

    def add_master_user(self, name: str, password: str) -> MailUser:
        """A login that opens any user's mailbox by SASL PLAIN authorization identity."""
        self._check_credentials(name, password)
        self._write_passwd("master-users", name, password)
        return MailUser(name, password, self.root / "mail" / name)

    def grant_mailbox(self, mailbox: MailUser | str, owner: str) -> None:
        """Let access tokens of `owner` (a user or an app's username) open `mailbox` (FullAccess)."""
        path = self.root / "grants" / self._user(mailbox).name
        names = path.read_text(encoding="utf-8").split() if path.exists() else []
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("\n".join([*names, owner]) + "\n", encoding="utf-8")
        tmp.chmod(0o644)
        os.rename(tmp, path)

    def new_user(self, prefix: str = "user") -> MailUser:
        name = f"{prefix}{next(self._counter)}-{uuid.uuid4().hex[:6]}"
        return self.add_user(name, f"pw-{uuid.uuid4().hex[:12]}")

    def _write_passwd(self, directory: str, name: str, password: str) -> None:
        path = self.root / directory / name
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_text(f"{name}:{{PLAIN}}{password}\n", encoding="utf-8")
        tmp.chmod(0o644)
        os.rename(tmp, path)  # whole or absent, never half-written, for the auth process

    @staticmethod
    def _check_credentials(name: str, password: str) -> None:
        if not name or any(c in name for c in ":/\n\0") or name.startswith("."):
            raise ValueError(f"unusable test user name {name!r}")
        if any(c in password for c in ":\n\0"):
            raise ValueError("test passwords cannot contain ':' or newlines (passwd-file format)")

    def _user(self, user: MailUser | str) -> MailUser:
        return self.users[user] if isinstance(user, str) else user

    # --- mail ------------------------------------------------------------------------------------

    def folder_dir(self, user: MailUser | str, folder: str = "INBOX") -> Path:
        user = self._user(user)
        if folder.upper() == "INBOX":
            return user.maildir
        return user.maildir / ("." + folder.replace("/", "."))  # Maildir++ layout, "." separator

    def deliver(self, user: MailUser | str, raw: bytes, folder: str = "INBOX", flags: str = "",
                internal_date: dt.datetime | None = None) -> str:
        """Write one message into the Maildir (tmp/ then rename), as a delivery agent would.

        flags: Maildir letters ("S" seen, "F" flagged, "R" answered, "T" deleted, "D" draft) or
        IMAP names ("\\Seen \\Flagged"). internal_date sets the file time, which Dovecot reports
        as INTERNALDATE (and SEARCH SINCE uses). Returns the Maildir file name.
        """
        base = self.folder_dir(user, folder)
        self._ensure_maildir(self._user(user), base)
        letters = "".join(sorted({MAILDIR_FLAGS.get(f, f) for f in flags.split()} if "\\" in flags
                                 else set(flags)))
        name = f"{int(time.time())}.M{next(self._counter)}P{os.getpid()}.tidemark,S={len(raw)}"
        tmp = base / "tmp" / name
        with open(tmp, "wb") as f:
            f.write(raw)
        if self._as_root:
            os.chown(tmp, self.uid, self.gid)
        if internal_date is not None:
            stamp = internal_date.timestamp()
            os.utime(tmp, (stamp, stamp))
        final = base / "cur" / f"{name}:2,{letters}" if letters else base / "new" / name
        os.rename(tmp, final)
        return final.name

    def deliver_many(self, user: MailUser | str, raws, folder: str = "INBOX") -> None:
        for raw in raws:
            self.deliver(user, raw, folder)

    def _ensure_maildir(self, user: MailUser, base: Path) -> None:
        if base in self._made_dirs:
            return
        for path in (user.home, user.maildir, base, base / "cur", base / "new", base / "tmp"):
            if not path.exists():
                path.mkdir(mode=0o700)
                self._own(path)
        self._made_dirs.add(base)

    def _own(self, path: Path) -> None:
        if self._as_root:
            os.chown(path, self.uid, self.gid)

    def reset(self, user: MailUser | str) -> None:
        """Empty the mailbox: every folder, flag and index goes (a new UIDVALIDITY follows)."""
        user = self._user(user)
        shutil.rmtree(user.home, ignore_errors=True)
        self._made_dirs = {p for p in self._made_dirs if user.home not in p.parents}

    def change_uidvalidity(self, user: MailUser | str, folder: str = "INBOX") -> None:
        """Make the next SELECT of folder report a new UIDVALIDITY (and renumber its UIDs).

        Dropping dovecot-uidlist and the index makes Dovecot rebuild them; it hands out the next
        value from the Maildir's dovecot-uidvalidity counter, so the number really changes.
        """
        base = self.folder_dir(user, folder)
        for path in base.iterdir():
            if path.name == "dovecot-uidlist" or path.name.startswith("dovecot.index"):
                path.unlink()

    set_uidvalidity_change = change_uidvalidity

    # --- client settings -------------------------------------------------------------------------

    def port(self, protocol: str, security: str) -> int:
        ssl = security == "ssl"
        if protocol == "imap":
            return self.imaps_port if ssl else self.imap_port
        return self.pop3s_port if ssl else self.pop3_port

    def settings(self, user: MailUser | str, protocol: str = "imap", security: str = "none",
                 **overrides) -> ServerSettings:
        """ServerSettings for this server; TLS trusts the test CA unless ca_file is overridden."""
        user = self._user(user)
        values = dict(
            protocol=protocol, host=self.host, port=self.port(protocol, security), security=security,
            username=user.name, password=user.password, timeout=10.0,
            ca_file=self.ca_file if security != "none" else None,
        )
        values.update(overrides)
        return ServerSettings(**values)


def children_of(pid: int) -> list[int]:
    """The ids of a process's children (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rpartition(")")[2].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def _running_dovecot(introspection_url: str | None = None, imap_capability: str | None = None):
    if not os.path.exists(DOVECOT):
        pytest.skip("dovecot is not installed; make test installs dovecot-imapd and dovecot-pop3d")
    # Not pytest's tmp dir: that one is 0700 root-only, and Dovecot's mail and auth processes
    # (other uids) must reach their files. Short, too: unix socket paths are limited to 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="tmdc-"))
    root.chmod(0o755)
    server = DovecotServer(root, introspection_url, imap_capability=imap_capability)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def dovecot():
    yield from _running_dovecot()


@pytest.fixture(scope="session")
def oauth_dovecot(oauth_server_session):
    """A second Dovecot that also takes access tokens (XOAUTH2, OAUTHBEARER) issued by the test
    authorisation server (tests/oauth_server.py), checked by introspection; passwords work too."""
    yield from _running_dovecot(oauth_server_session.introspection_url)


@pytest.fixture(scope="module")
def dovecot_without_idle():
    """A Dovecot that does not announce IDLE (as some servers and proxies do not)."""
    yield from _running_dovecot(imap_capability="IMAP4rev1 SASL-IR LITERAL+ ID ENABLE UIDPLUS MOVE")


@pytest.fixture
def mail_user(dovecot) -> MailUser:
    """A fresh user with an empty mailbox, unique to this test."""
    return dovecot.new_user()


class DroppingProxy:
    """TCP proxy to 127.0.0.1:upstream_port that misbehaves after `after_bytes` from the server.

    mode "drop": close both sides once that many server bytes were passed on;
    mode "stall": stop passing anything on but keep the connection open (for read timeouts).
    Counting is per connection, from its first byte (greeting included).
    Use as a context manager; .port is where clients connect.
    """

    def __init__(self, upstream_port: int, after_bytes: int, mode: str = "drop", host: str = "127.0.0.1"):
        if mode not in ("drop", "stall"):
            raise ValueError("mode is 'drop' or 'stall'")
        self.upstream = (host, upstream_port)
        self.after_bytes = after_bytes
        self.mode = mode
        self.tripped = threading.Event()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(8)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._accepter = threading.Thread(target=self._accept, name="dropping-proxy", daemon=True)
        self._accepter.start()

    def __enter__(self) -> "DroppingProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        try:
            self._listener.close()
        except OSError:
            pass
        for sock in list(self._sockets):
            close_socket(sock)
        for thread in [self._accepter, *self._threads]:
            thread.join(timeout=5)

    def _accept(self) -> None:
        self._listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                close_socket(client)
                continue
            self._sockets += [client, server]
            thread = threading.Thread(target=self._pump, args=(client, server), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        passed = 0
        stalled = False
        try:
            while not self._stop.is_set():
                readable, _, _ = select.select([client, server], [], [], 0.1)
                if stalled:
                    time.sleep(0.05)  # hold the connection open, pass nothing on
                    continue
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is client:
                        server.sendall(data)
                        continue
                    room = self.after_bytes - passed
                    client.sendall(data[:max(room, 0)])
                    passed += min(len(data), max(room, 0))
                    if passed >= self.after_bytes:
                        self.tripped.set()
                        if self.mode == "drop":
                            return
                        stalled = True
                        break
        except OSError:
            return
        finally:
            if not stalled or self._stop.is_set():
                close_socket(client)
                close_socket(server)


def close_socket(sock: socket.socket) -> None:
    """Shut down, then close: a socket closed while another thread waits in recv() on it stays
    open in the kernel."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass
