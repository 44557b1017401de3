"""Applies a rendered Ignition config to a node's root before it boots, the
way Ignition's files stage does on a first boot.

Debian's `ignition` package only knows spec <= 3.3, and nodeboot renders
3.4.0, so the lab has this small applier instead. It does what the files
stage does for the parts of the spec listed below and REFUSES everything
else (an unknown key, a remote source, a disk, a compression it does not
know) with an error that names the field: a config it cannot apply
faithfully must not boot a node that looks right.

Handled (Ignition spec 3.4.0 / 3.x semantics):
- ignition.version 3.0.0 to 3.4.0; ignition.config.replace (a pointer
  config): its source is fetched by the caller's `fetch(url)`, checked
  against its sha512/sha256 verification, and applied instead. `merge` is
  refused.
- storage.files: data URLs (base64 or percent-encoded), compression gzip,
  verification, mode (default 0644), user/group by id or name (resolved in
  the node's /etc/passwd and /etc/group), overwrite (default false: an
  existing file is an error). Parent directories are made 0755 root.
- storage.directories (mode default 0755), storage.links (symbolic, or
  hard), with the same owner and overwrite rules.
- systemd.units: contents into /etc/systemd/system, dropins into NAME.d/,
  mask (a link to /dev/null), enabled true or false as Ignition does it:
  a line `enable NAME` or `disable NAME` appended to
  /etc/systemd/system-preset/20-ignition.preset (Ignition's
  internal/exec/util/unit.go). Ignition makes no symlink: systemd applies
  the presets itself on the machine's first boot (no /etc/machine-id:
  machine-id(5), "First Boot Semantics"), which is how a Flatcar node's
  units get enabled; the lab boots its machines that way (lab_nspawn.py).
  As a lint the applier also refuses an enabled unit it cannot find or
  whose [Install] has no WantedBy=/RequiredBy=: systemd would leave it
  disabled without a word.
- passwd.users: name, uid, gecos, homeDir, shell, groups, sshAuthorizedKeys
  (into ~/.ssh/authorized_keys.d/ignition and ~/.ssh/authorized_keys, 0600,
  as Flatcar's update-ssh-keys leaves them). A missing user is made with
  `useradd --root`.
"""

import base64
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import urllib.parse
from pathlib import Path, PurePosixPath

SPEC_VERSIONS = {"3.0.0", "3.1.0", "3.2.0", "3.3.0", "3.4.0"}
UNIT_DIR = "/etc/systemd/system"
# Where Ignition writes `enable`/`disable` lines (its util.PresetPath).
PRESET_FILE = "/etc/systemd/system-preset/20-ignition.preset"
UNIT_SEARCH = ["/etc/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system"]


class IgnitionError(Exception):
    """The config cannot be applied; the message names the field."""


def _keys(obj, where, allowed, empty_ok=()):
    """Refuses keys outside `allowed`; keys in `empty_ok` pass when null/empty."""
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise IgnitionError(f"{where}: expected an object, got {type(obj).__name__}")
    for k, v in obj.items():
        if k in allowed:
            continue
        if k in empty_ok and v in (None, [], {}, ""):
            continue
        raise IgnitionError(f"{where}.{k}: not supported by the lab's Ignition applier")
    return obj


def _list(obj, where):
    if obj is None:
        return []
    if not isinstance(obj, list):
        raise IgnitionError(f"{where}: expected a list")
    return obj


def decode_data_url(url, where):
    """The bytes of an RFC 2397 data URL."""
    if not isinstance(url, str) or not url.startswith("data:"):
        raise IgnitionError(
            f"{where}: source {str(url)[:60]!r}: only data URLs are supported "
            "(a remote source needs the network Ignition has and the lab does not)"
        )
    header, sep, payload = url[5:].partition(",")
    if not sep:
        raise IgnitionError(f"{where}: malformed data URL (no comma)")
    if header.endswith(";base64"):
        try:
            return base64.b64decode(payload, validate=True)
        except ValueError as err:
            raise IgnitionError(f"{where}: bad base64 in data URL: {err}") from None
    return urllib.parse.unquote_to_bytes(payload)


def verify(data, verification, where):
    verification = _keys(verification, f"{where}.verification", {"hash"})
    wanted = verification.get("hash")
    if wanted is None:
        return
    algo, _, digest = wanted.partition("-")
    if algo not in ("sha512", "sha256"):
        raise IgnitionError(f"{where}.verification.hash: unsupported function {algo!r}")
    got = hashlib.new(algo, data).hexdigest()
    if got != digest.lower():
        raise IgnitionError(f"{where}.verification.hash: {algo} is {got}, config says {digest}")


def resource(res, where, fetch=None):
    """The bytes of a resource (contents of a file, or a config reference)."""
    res = _keys(
        res,
        where,
        {"source", "compression", "verification"},
        empty_ok={"httpHeaders"},
    )
    source = res.get("source")
    if source is None:
        return None
    if source.startswith("data:"):
        data = decode_data_url(source, where)
    elif fetch is not None:
        data = fetch(source)
    else:
        decode_data_url(source, where)  # raises: remote sources are refused here
    compression = res.get("compression") or ""
    verify(data, res.get("verification"), where)  # of the stored (compressed) bytes
    if compression == "gzip":
        try:
            data = gzip.decompress(data)
        except OSError as err:
            raise IgnitionError(f"{where}.compression: gzip: {err}") from None
    elif compression != "":
        raise IgnitionError(f"{where}.compression: {compression!r} is not supported (gzip is)")
    return data


class Applier:
    def __init__(self, root, fetch=None):
        self.root = Path(root)
        self.fetch = fetch
        self.done = []  # what was applied, one line each (for the node's log)

    # --- paths and owners -----------------------------------------------------

    def host_path(self, path, where):
        if not isinstance(path, str) or not path.startswith("/"):
            raise IgnitionError(f"{where}.path: {path!r} is not absolute")
        parts = PurePosixPath(path).parts[1:]
        if ".." in parts:
            raise IgnitionError(f"{where}.path: {path!r} contains '..'")
        return self.root.joinpath(*parts)

    def _db(self, file):
        entries = {}
        f = self.root / "etc" / file
        if f.exists():
            for line in f.read_text().splitlines():
                fields = line.split(":")
                if len(fields) >= 3:
                    entries[fields[0]] = fields
        return entries

    def _owner(self, node, where):
        uid = gid = 0
        user = _keys(node.get("user"), f"{where}.user", {"id", "name"})
        group = _keys(node.get("group"), f"{where}.group", {"id", "name"})
        if user.get("id") is not None:
            uid = int(user["id"])
        elif user.get("name"):
            found = self._db("passwd").get(user["name"])
            if found is None:
                raise IgnitionError(f"{where}.user.name: no user {user['name']!r} in the root")
            uid = int(found[2])
        if group.get("id") is not None:
            gid = int(group["id"])
        elif group.get("name"):
            found = self._db("group").get(group["name"])
            if found is None:
                raise IgnitionError(f"{where}.group.name: no group {group['name']!r} in the root")
            gid = int(found[2])
        return uid, gid

    def _parents(self, target):
        """Leading directories, made as Ignition makes them: 0755, root."""
        missing = []
        p = target.parent
        while not p.exists() and p != self.root:
            missing.append(p)
            p = p.parent
        for d in reversed(missing):
            d.mkdir(mode=0o755)
            os.chown(d, 0, 0)
            d.chmod(0o755)

    def _clear(self, target, overwrite, where, keep_dir=False):
        """Ignition's overwrite rule: an existing node is replaced only with
        overwrite true."""
        if not (target.exists() or target.is_symlink()):
            return
        if keep_dir and target.is_dir() and not target.is_symlink():
            return
        if not overwrite:
            raise IgnitionError(f"{where}: {target} exists and overwrite is false")
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()

    # --- the config -------------------------------------------------------------

    def apply(self, config, where="config"):
        config = _keys(
            config,
            where,
            {"ignition", "storage", "systemd", "passwd"},
            empty_ok={"kernelArguments"},
        )
        ign = _keys(
            config.get("ignition"),
            f"{where}.ignition",
            {"version", "config"},
            empty_ok={"timeouts", "security", "proxy"},
        )
        version = ign.get("version")
        if version not in SPEC_VERSIONS:
            raise IgnitionError(
                f"{where}.ignition.version: {version!r} (the applier knows "
                f"{', '.join(sorted(SPEC_VERSIONS))})"
            )
        refs = _keys(ign.get("config"), f"{where}.ignition.config", {"replace"}, empty_ok={"merge"})
        replace = refs.get("replace")
        if replace and replace.get("source"):
            if not (replace.get("verification") or {}).get("hash"):
                raise IgnitionError(
                    f"{where}.ignition.config.replace: a remote config without verification"
                )
            if self.fetch is None:
                raise IgnitionError(f"{where}.ignition.config.replace: no way to fetch it")
            data = resource(replace, f"{where}.ignition.config.replace", fetch=self.fetch)
            self.done.append(f"replaced by {replace['source']}")
            other = {k: v for k, v in config.items() if k != "ignition"}
            if any(other.values()):
                keys = ", ".join(k for k, v in other.items() if v)
                raise IgnitionError(f"{where}: a replace config must hold nothing else ({keys})")
            return self.apply(json.loads(data), where=replace["source"])
        self.storage(config.get("storage"), f"{where}.storage")
        self.systemd(config.get("systemd"), f"{where}.systemd")
        self.passwd(config.get("passwd"), f"{where}.passwd")
        return self.done

    def storage(self, storage, where):
        storage = _keys(
            storage,
            where,
            {"files", "directories", "links"},
            empty_ok={"disks", "raid", "filesystems", "luks"},
        )
        for i, d in enumerate(_list(storage.get("directories"), f"{where}.directories")):
            self.directory(d, f"{where}.directories[{i}]")
        for i, f in enumerate(_list(storage.get("files"), f"{where}.files")):
            self.file(f, f"{where}.files[{i}]")
        for i, link in enumerate(_list(storage.get("links"), f"{where}.links")):
            self.link(link, f"{where}.links[{i}]")

    def directory(self, d, where):
        d = _keys(d, where, {"path", "overwrite", "mode", "user", "group"})
        target = self.host_path(d.get("path"), where)
        self._clear(target, d.get("overwrite", False), where, keep_dir=True)
        self._parents(target)
        target.mkdir(exist_ok=True)
        mode = d.get("mode") if d.get("mode") is not None else 0o755
        os.chown(target, *self._owner(d, where))
        target.chmod(mode)
        self.done.append(f"directory {d['path']} {mode:o}")

    def file(self, f, where):
        f = _keys(f, where, {"path", "overwrite", "contents", "mode", "user", "group"}, {"append"})
        target = self.host_path(f.get("path"), where)
        data = resource(f.get("contents"), f"{where}.contents")
        if data is None:
            if f.get("overwrite"):
                raise IgnitionError(f"{where}: overwrite needs contents.source")
            if not target.exists():
                data = b""  # Ignition makes an empty file
        else:
            self._clear(target, f.get("overwrite", False), where)
        self._parents(target)
        if data is not None:
            tmp = target.with_name(f".{target.name}.ign-tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)
        mode = f.get("mode") if f.get("mode") is not None else 0o644
        os.chown(target, *self._owner(f, where))
        target.chmod(mode)
        self.done.append(f"file {f['path']} {mode:o}")

    def link(self, link, where):
        link = _keys(link, where, {"path", "overwrite", "target", "hard", "user", "group"})
        target = self.host_path(link.get("path"), where)
        if not link.get("target"):
            raise IgnitionError(f"{where}.target: missing")
        self._clear(target, link.get("overwrite", False), where)
        self._parents(target)
        if link.get("hard"):
            os.link(self.host_path(link["target"], f"{where}.target"), target)
        else:
            target.symlink_to(link["target"])
            os.lchown(target, *self._owner(link, where))
        self.done.append(f"link {link['path']} -> {link['target']}")

    # --- systemd -------------------------------------------------------------------

    def systemd(self, systemd, where):
        systemd = _keys(systemd, where, {"units"})
        for i, unit in enumerate(_list(systemd.get("units"), f"{where}.units")):
            self.unit(unit, f"{where}.units[{i}]")

    def unit(self, unit, where):
        unit = _keys(unit, where, {"name", "contents", "enabled", "mask", "dropins"})
        name = unit.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9:_.@\\-]+\.[a-z]+", name):
            raise IgnitionError(f"{where}.name: {name!r} is not a unit name")
        unit_dir = self.root / UNIT_DIR.lstrip("/")
        unit_dir.mkdir(parents=True, exist_ok=True)
        path = unit_dir / name
        if unit.get("contents") is not None:
            if path.is_symlink():
                path.unlink()
            path.write_text(unit["contents"])
            path.chmod(0o644)
            self.done.append(f"unit {name}")
        for j, dropin in enumerate(_list(unit.get("dropins"), f"{where}.dropins")):
            dropin = _keys(dropin, f"{where}.dropins[{j}]", {"name", "contents"})
            d = unit_dir / f"{name}.d"
            d.mkdir(exist_ok=True)
            if not re.fullmatch(r"[^/]+\.conf", dropin.get("name") or ""):
                raise IgnitionError(f"{where}.dropins[{j}].name: {dropin.get('name')!r}")
            (d / dropin["name"]).write_text(dropin.get("contents") or "")
            self.done.append(f"drop-in {name}.d/{dropin['name']}")
        if unit.get("mask"):
            if path.exists() and not path.is_symlink():
                path.unlink()
            if path.is_symlink():
                path.unlink()
            path.symlink_to("/dev/null")
            self.done.append(f"masked {name}")
        if unit.get("enabled") is not None:
            self.enable(name, bool(unit["enabled"]), where)

    def unit_text(self, name, where):
        for d in UNIT_SEARCH:
            p = self.root / d.lstrip("/") / name
            if p.exists() and not (p.is_symlink() and os.readlink(p) == "/dev/null"):
                return p.read_text(), d
        raise IgnitionError(f"{where}: unit {name} has no contents and is not in the root")

    def enable(self, name, enabled, where):
        """Ignition's EnableUnit / DisableUnit: a line in its preset file,
        which systemd applies on the first boot."""
        text, _ = self.unit_text(name, where)
        install = install_section(text)
        for key in install:
            if key not in ("WantedBy", "RequiredBy"):
                raise IgnitionError(f"{where}: [Install] {key}= is not supported by the applier")
        targets = [t for key, ts in install.items() for t in ts]
        if enabled and not targets:
            raise IgnitionError(f"{where}: enabled, but {name} has no WantedBy=/RequiredBy=")
        preset = self.root / PRESET_FILE.lstrip("/")
        preset.parent.mkdir(parents=True, exist_ok=True)
        with preset.open("a") as f:
            f.write(f"{'enable' if enabled else 'disable'} {name}\n")
        preset.chmod(0o644)
        state = "enabled" if enabled else "disabled"
        self.done.append(f"{state} {name} (preset; [Install] {', '.join(targets) or 'none'})")

    # --- passwd ----------------------------------------------------------------------

    def passwd(self, passwd, where):
        passwd = _keys(passwd, where, {"users"}, empty_ok={"groups"})
        for i, user in enumerate(_list(passwd.get("users"), f"{where}.users")):
            self.user(user, f"{where}.users[{i}]")

    def user(self, user, where):
        user = _keys(
            user,
            where,
            {"name", "uid", "gecos", "homeDir", "shell", "groups", "sshAuthorizedKeys"},
        )
        name = user.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[a-z_][a-z0-9_-]*", name):
            raise IgnitionError(f"{where}.name: {name!r}")
        if name not in self._db("passwd"):
            cmd = ["useradd", "--root", str(self.root), "--create-home", "--user-group"]
            if user.get("uid") is not None:
                cmd += ["--uid", str(user["uid"])]
            if user.get("gecos"):
                cmd += ["--comment", user["gecos"]]
            if user.get("homeDir"):
                cmd += ["--home-dir", user["homeDir"]]
            cmd += ["--shell", user.get("shell") or "/bin/bash"]
            if user.get("groups"):
                cmd += ["--groups", ",".join(user["groups"])]
            out = subprocess.run(cmd + [name], capture_output=True, text=True)
            if out.returncode != 0:
                raise IgnitionError(f"{where}: useradd {name}: {out.stderr.strip()}")
            self.done.append(f"user {name}")
        fields = self._db("passwd")[name]
        uid, gid, home = int(fields[2]), int(fields[3]), fields[5]
        keys = _list(user.get("sshAuthorizedKeys"), f"{where}.sshAuthorizedKeys")
        if keys:
            ssh = self.host_path(home, where) / ".ssh"
            d = ssh / "authorized_keys.d"
            d.mkdir(parents=True, exist_ok=True)
            text = "".join(k.strip() + "\n" for k in keys)
            for f in (d / "ignition", ssh / "authorized_keys"):
                f.write_text(text)
                f.chmod(0o600)
                os.chown(f, uid, gid)
            for p in (ssh, d):
                p.chmod(0o700)
                os.chown(p, uid, gid)
            self.done.append(f"{len(keys)} ssh key(s) for {name}")


def install_section(text):
    """{key: [values]} of a unit's [Install] section."""
    out, section = {}, None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Install]":
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).extend(value.split())
    return out


def apply(root, config, fetch=None):
    """Applies `config` (a dict, or a path to a .ign file) to `root`; returns
    what it did, one line each. IgnitionError on anything it does not know."""
    if isinstance(config, (str, os.PathLike)):
        config = json.loads(Path(config).read_text())
    return Applier(root, fetch=fetch).apply(config)
