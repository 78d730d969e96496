"""Signed bundles: deploy and bench run nothing from a bundle whose signature does not match, and
nothing unsigned or signed by an untrusted key unless --allow-unsigned says so."""

from __future__ import annotations

import json
import stat
import subprocess

import pytest
from bundle_tamper import archive, copy_bundle, edit_manifest, rehash, tamper_runner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from toolchain.boards.registry import open_target
from toolchain.bundle import signing
from toolchain.bundle.bench import bench
from toolchain.bundle.deploy import deploy
from toolchain.errors import BundleError, ConfigError


def one_error_line(res) -> str:
    """The CLI's one line (``error: ...``); no traceback."""
    assert res.exit_code not in (0, None), res.output
    assert "Traceback" not in res.output, res.output
    assert isinstance(res.exception, SystemExit), repr(res.exception)
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, res.output
    return lines[0]


def test_own_key_is_made_on_first_use_private_and_reused(codesign_home):
    assert not signing.own_key_path().exists()
    key = signing.own_key()
    path = signing.own_key_path()
    assert path == codesign_home / "keys" / "signing.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.with_suffix(".pub").is_file()
    assert signing.key_id(signing.own_key().public_key()) == signing.key_id(key.public_key())
    doc = signing.signature_document(b"manifest bytes", key)
    trust = signing.check_signature(b"manifest bytes", doc, "x")
    assert trust.status == "trusted" and "codesign's own key" in trust.source
    # Deterministic: the archive of a rebuilt bundle stays byte-identical.
    assert signing.signature_document(b"manifest bytes", key) == doc


def test_tampered_runner_with_a_rehashed_manifest_never_runs(bundle_run, host_board, tmp_path, cli):
    """The defect: runner.py changed, manifest re-hashed: it deployed, and ran on the host."""
    marker = tmp_path / "ran"
    bad = tamper_runner(copy_bundle(bundle_run.host, tmp_path / "t"), marker)
    bad_tar = archive(bad, tmp_path / "tampered.tar.gz")
    for path in (bad, bad_tar):
        for extra in ([], ["--allow-unsigned"]):  # a bad signature is refused whatever the flags
            line = one_error_line(cli(["deploy", "--target", "host", "--bundle", path, *extra]))
            assert "does not match manifest.json" in line and "rebuild" in line
        line = one_error_line(
            cli(["bench", "--target", "host", "--bundle", path, "--json", tmp_path / "b.json"])
        )
        assert "does not match manifest.json" in line
    assert not marker.exists()
    assert not host_board.exists()  # nothing reached the board, not even a partial upload
    assert not (tmp_path / "b.json").exists()
    with pytest.raises(BundleError, match="does not match"):
        bench(open_target("host"), bad, iterations=5)
    assert not marker.exists()


def test_unsigned_bundle_needs_the_flag(bundle_run, host_board, tmp_path, cli):
    bare = copy_bundle(bundle_run.host, tmp_path / "u")
    (bare / "manifest.sig").unlink()
    target = open_target("host")
    with pytest.raises(BundleError, match=r"is not signed .*--allow-unsigned"):
        deploy(target, bare)
    line = one_error_line(cli(["deploy", "--target", "host", "--bundle", archive(bare)]))
    assert "is not signed" in line
    assert not host_board.exists()
    res = cli(["deploy", "--target", "host", "--bundle", archive(bare), "--allow-unsigned"])
    assert res.exit_code == 0, res.output
    assert "unsigned: accepted because of --allow-unsigned" in res.output
    record = json.loads((host_board / "current" / ".deploy.json").read_text())
    assert record["signature"]["status"] == "unsigned"


def test_a_key_that_is_not_trusted_is_refused(bundle_run, host_board, tmp_path, cli, codesign_home):
    stranger = Ed25519PrivateKey.generate()
    other = copy_bundle(bundle_run.host, tmp_path / "k")
    signing.sign_folder(other, stranger)
    kid = signing.key_id(stranger.public_key())
    target = open_target("host")
    with pytest.raises(BundleError, match=f"signed by key {kid}, which is not trusted here"):
        deploy(target, other)
    with pytest.raises(BundleError, match="not trusted here"):
        bench(target, archive(other), iterations=5)
    assert not host_board.exists()
    res = cli(["deploy", "--target", "host", "--bundle", other, "--allow-unsigned"])
    assert res.exit_code == 0 and f"untrusted key {kid}" in res.output, res.output
    # Trusting the signer's public key (the trusted folder) makes it deploy without the flag.
    trusted = codesign_home / "keys" / "trusted"
    trusted.mkdir(parents=True)
    (trusted / "ci.pub").write_bytes(signing.public_pem(stranger.public_key()))
    result = deploy(target, other)
    assert result["signature"] == {
        "status": "trusted",
        "key_id": kid,
        "source": str(trusted / "ci.pub"),
    }


def test_the_normal_path_is_signed_and_trusted(bundle_run, host_board):
    result = deploy(open_target("host"), archive(bundle_run.host))
    assert result["signature"]["status"] == "trusted"
    assert result["self_check"]["passed"]
    sig = json.loads((bundle_run.host / "manifest.sig").read_text())
    assert sig["algorithm"] == "ed25519" and sig["signs"] == "manifest.json"


def test_a_junk_trusted_key_file_is_one_error(
    bundle_run, host_board, codesign_home, tmp_path, monkeypatch
):
    trusted = codesign_home / "keys" / "trusted"
    trusted.mkdir(parents=True)
    (trusted / "oops.pub").write_text("not a key\n")
    with pytest.raises(ConfigError, match="oops.pub is not an ed25519 public key"):
        deploy(open_target("host"), bundle_run.host)
    monkeypatch.setenv("CODESIGN_TRUSTED_KEYS", str(tmp_path / "missing.pub"))
    (trusted / "oops.pub").unlink()
    with pytest.raises(ConfigError, match="missing.pub, which does not exist"):
        deploy(open_target("host"), bundle_run.host)


def _openssh_key(path):
    key = Ed25519PrivateKey.generate()
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return key


def test_bundle_with_a_user_key(bundle_run, cli, tmp_path, monkeypatch, codesign_home):
    key_file = tmp_path / "ci_ed25519"
    key = _openssh_key(key_file)
    home = codesign_home
    monkeypatch.setenv("CODESIGN_HOME", str(bundle_run.home))  # the run's measurement store
    res = cli(
        [
            "bundle",
            "--target",
            "host",
            "--run-dir",
            bundle_run.run_dir,
            "--out",
            tmp_path / "dist",
            "--key",
            key_file,
        ]
    )
    assert res.exit_code == 0, res.output
    kid = signing.key_id(key.public_key())
    folder = tmp_path / "dist" / bundle_run.host.name
    assert json.loads((folder / "manifest.sig").read_text())["key_id"] == kid
    assert f"signed   key {kid}" in res.output
    monkeypatch.setenv("CODESIGN_HOME", str(home))
    monkeypatch.delenv("CODESIGN_TRUSTED_KEYS")
    with pytest.raises(BundleError, match=f"key {kid}, which is not trusted"):
        signing.check_folder(folder)
    # An OpenSSH public key line is a trusted key too.
    pub = tmp_path / "ci_ed25519.pub"
    pub.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
    )
    monkeypatch.setenv("CODESIGN_TRUSTED_KEYS", str(pub))
    assert signing.check_folder(folder).status == "trusted"


@pytest.mark.parametrize(
    "content, match",
    [
        (b"garbage\n", "is not a PEM or OpenSSH private key"),
        ("rsa", "bundles are signed with ed25519"),
        ("encrypted", "is encrypted"),
    ],
)
def test_unusable_signing_keys(bundle_run, cli, tmp_path, content, match):
    path = tmp_path / "key.pem"
    if content == "rsa":
        content = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    elif content == "encrypted":
        content = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=match):
        signing.load_private_key(path)
    out = tmp_path / "dist"
    res = cli(
        ["bundle", "--target", "host", "--run-dir", bundle_run.run_dir, "--out", out, "--key", path]
    )
    assert match in one_error_line(res) and res.exit_code == ConfigError.exit_code
    assert not out.exists()  # refused before the export


def test_the_signature_covers_the_mcu_blob(bundle_run, tmp_path):
    if bundle_run.mcu is None:
        pytest.skip("needs make and cc for the posix firmware")
    from toolchain.bundle.deploy_mcu import deploy_mcu

    bad = copy_bundle(bundle_run.mcu, tmp_path / "m")
    blob = bytearray((bad / "model.blob").read_bytes())
    blob[len(blob) // 2] ^= 0x01
    (bad / "model.blob").write_bytes(bytes(blob))
    rehash(bad)
    with pytest.raises(BundleError, match="does not match manifest.json"):
        deploy_mcu(open_target("mcu-pty"), archive(bad))  # refused before connecting


def test_a_changed_manifest_breaks_the_signature(bundle_run, tmp_path):
    """Any change to the manifest (here: a claimed accuracy) is caught, not only file hashes."""
    copy = edit_manifest(
        copy_bundle(bundle_run.host, tmp_path / "v"), lambda m: m.update(val_acc=0.99)
    )
    with pytest.raises(BundleError, match="does not match"):
        signing.check_folder(copy, allow_unsigned=True)
    (copy / "manifest.sig").write_text('{"algorithm": "ed25519", "public_key": "!!"}')
    with pytest.raises(BundleError, match="manifest.sig is malformed"):
        signing.check_folder(copy, allow_unsigned=True)


def test_the_board_runner_accepts_the_signature_file(bundle_run, tmp_path):
    """runner.py --verify (run on boards without sha256sum) ignores manifest.sig."""
    import sys

    folder = copy_bundle(bundle_run.host, tmp_path / "r")
    assert (folder / "manifest.sig").is_file()
    proc = subprocess.run(
        [sys.executable, "-I", "runner.py", "--verify"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
