"""`check-config` checks the environment too (issue 17): the variables `*_env` keys name,
the database's directory, a missing config file, an empty registry, and with `--online` an
SMTP login against a real aiosmtpd with AUTH on loopback. Errors exit 1, warnings 0; a
secret's value is never printed. Run as the operator runs it: a real CLI process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword
from support import Server

from demo.smtp_sink import free_port
from monitor.store import Store

SECRET = "s3cret-Pa55-for-check-config"


def check(cwd: Path, *args: str, online: bool = False,
          **env: str | None) -> subprocess.CompletedProcess[str]:
    """`weightwatch ARGS check-config [--online]` with `env` over this process's (None
    unsets a variable)."""
    environ = {k: v for k, v in os.environ.items() if k != "WEIGHTWATCH_CONFIG"}
    for name, value in env.items():
        if value is None:
            environ.pop(name, None)
        else:
            environ[name] = value
    return subprocess.run([sys.executable, "-m", "monitor", *args, "check-config",
                           *(["--online"] if online else [])],
                          cwd=cwd, env=environ, capture_output=True, text=True, timeout=60)


def config(tmp_path: Path, body: str = "", db: str = "w.db") -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f'[database]\npath = "{db}"\n\n{body}', encoding="utf-8")
    return path


SMTP = """\
[smtp]
host = "127.0.0.1"
port = {port}
security = "none"
username = "alerts"
password_env = "WW_TEST_SMTP_PASSWORD"

[alerts]
to = ["security@example.org"]
"""


def lines(text: str, level: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(f"weightwatch: {level}: ")]


def test_no_config_file_is_stated_not_ok(tmp_path: Path) -> None:
    done = check(tmp_path)
    assert done.returncode == 1, done.stderr
    assert done.stdout.startswith("<defaults>: ok: 0 targets")
    (error,) = lines(done.stderr, "error")
    assert "no config file found" in error and "config.toml" in error


def test_unset_variables_named_by_env_keys_are_errors(tmp_path: Path) -> None:
    path = config(tmp_path, SMTP.format(port=9) +
                  '\n[alerts.webhook]\nurl = "http://127.0.0.1:9/hook"\n'
                  'token_env = "WW_TEST_HOOK_TOKEN"\n'
                  '\n[[alerts.channels]]\nname = "team-chat"\nurl_env = "WW_TEST_CHAT_URL"\n')
    done = check(tmp_path, "--config", str(path), WW_TEST_SMTP_PASSWORD=None,
                 WW_TEST_HOOK_TOKEN="", WW_TEST_CHAT_URL=None)
    assert done.returncode == 1
    assert lines(done.stderr, "error") == [
        "weightwatch: error: smtp.password_env: environment variable WW_TEST_SMTP_PASSWORD "
        "is not set",
        "weightwatch: error: alerts.webhook.token_env: environment variable "
        "WW_TEST_HOOK_TOKEN is empty",
        "weightwatch: error: alerts.channels[0] (team-chat).url_env: environment variable "
        "WW_TEST_CHAT_URL is not set"]
    done = check(tmp_path, "--config", str(path), WW_TEST_SMTP_PASSWORD=SECRET,
                 WW_TEST_HOOK_TOKEN=SECRET, WW_TEST_CHAT_URL="json://127.0.0.1:9/" + SECRET)
    assert done.returncode == 0, done.stderr
    assert lines(done.stderr, "error") == []
    assert SECRET not in done.stdout + done.stderr
    # Alerts switched off: the same variables only warn.
    off = config(tmp_path, SMTP.format(port=9).replace("[alerts]", "[alerts]\nenabled = false"))
    done = check(tmp_path, "--config", str(off), WW_TEST_SMTP_PASSWORD=None)
    assert done.returncode == 0
    assert "WW_TEST_SMTP_PASSWORD is not set" in "".join(lines(done.stderr, "warning"))


def test_a_credential_file_stands_for_its_variable(tmp_path: Path) -> None:
    """Under systemd's LoadCredential the secret is a file in $CREDENTIALS_DIRECTORY named
    as the variable: check-config finds it there, as the daemon would, and says where it
    looked when it is in neither place."""
    path = config(tmp_path, SMTP.format(port=9))
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    done = check(tmp_path, "--config", str(path), WW_TEST_SMTP_PASSWORD=None,
                 CREDENTIALS_DIRECTORY=str(credentials))
    assert done.returncode == 1
    assert lines(done.stderr, "error") == [
        "weightwatch: error: smtp.password_env: environment variable WW_TEST_SMTP_PASSWORD "
        "is not set (nor a file in $CREDENTIALS_DIRECTORY)"]
    (credentials / "WW_TEST_SMTP_PASSWORD").write_text(SECRET + "\n", encoding="utf-8")
    done = check(tmp_path, "--config", str(path), WW_TEST_SMTP_PASSWORD=None,
                 CREDENTIALS_DIRECTORY=str(credentials))
    assert done.returncode == 0, done.stderr
    assert lines(done.stderr, "error") == []
    assert SECRET not in done.stdout + done.stderr


def test_database_where_it_cannot_be_created_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    path = config(tmp_path, db=str(tmp_path / "a-file" / "w.db"))
    done = check(tmp_path, "--config", str(path))
    assert done.returncode == 1
    (error,) = lines(done.stderr, "error")
    assert error.endswith(f"database {tmp_path / 'a-file' / 'w.db'} cannot be created: "
                          f"{tmp_path / 'a-file'} is not a directory")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes where the mode forbids it")
def test_database_directory_not_writable_is_an_error(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    with Store(locked / "w.db") as store:
        store.add_model("heron-7b")
    locked.chmod(0o500)
    try:
        done = check(tmp_path, "--config", str(config(tmp_path, db=str(locked / "w.db"))))
    finally:
        locked.chmod(0o700)
    assert done.returncode == 1
    assert f"database directory {locked} is not writable" in done.stderr


def test_empty_registry_and_open_mode_are_warned_about(tmp_path: Path) -> None:
    path = config(tmp_path)
    db = tmp_path / "w.db"
    done = check(tmp_path, "--config", str(path))
    assert done.returncode == 0, done.stderr
    assert f"no database at {db} yet" in done.stderr and "registry is empty" in done.stderr
    assert not db.exists(), "checking never creates the database"
    with Store(db):
        pass
    db.chmod(0o644)
    done = check(tmp_path, "--config", str(path))
    assert done.returncode == 0
    warned = "\n".join(lines(done.stderr, "warning"))
    assert f"the registry in {db} is empty" in warned
    assert "readable by other users (mode 0644)" in warned
    with Store(db) as store:
        store.add_model("heron-7b")
    db.chmod(0o600)
    done = check(tmp_path, "--config", str(path))
    assert "registry" not in done.stderr and "readable" not in done.stderr


def test_online_logs_in_to_a_real_smtp_server_never_printing_the_password(
        tmp_path: Path) -> None:
    seen: list[bytes] = []

    def authenticator(server: object, session: object, envelope: object, mechanism: str,
                      auth_data: object) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        seen.append(auth_data.password)
        return AuthResult(success=auth_data.password == SECRET.encode(), handled=False)

    port = free_port()
    path = config(tmp_path, SMTP.format(port=port))
    with Server(port, authenticator=authenticator, auth_require_tls=False,
                auth_exclude_mechanism=["LOGIN"]) as server:
        good = check(tmp_path, online=True, WEIGHTWATCH_CONFIG=str(path),
                     WW_TEST_SMTP_PASSWORD=SECRET)
        bad = check(tmp_path, online=True, WEIGHTWATCH_CONFIG=str(path),
                    WW_TEST_SMTP_PASSWORD="wrong-" + SECRET)
    assert good.returncode == 0, good.stderr
    assert f"smtp 127.0.0.1:{port}: logged in as alerts" in good.stdout.splitlines()
    assert bad.returncode == 1
    (error,) = lines(bad.stderr, "error")
    assert error.startswith(f"weightwatch: error: smtp 127.0.0.1:{port}: authentication "
                            f"failed: 535")
    assert seen == [SECRET.encode(), ("wrong-" + SECRET).encode()]
    assert server.messages == [], "a check sends nothing"
    for done in (good, bad):
        assert SECRET not in done.stdout + done.stderr
    # Nothing listening: one line, exit 1.
    down = check(tmp_path, online=True, WEIGHTWATCH_CONFIG=str(path),
                 WW_TEST_SMTP_PASSWORD=SECRET)
    assert down.returncode == 1
    assert f"smtp 127.0.0.1:{port}: connection refused" in down.stderr
