"""The deployment kit: the systemd units verified by systemd itself, their commands run for
real, and the Dockerfile and compose file checked as far as this machine can.

Where systemd-analyze is missing, the unit checks are skipped (saying so). A Docker engine
is needed to build the image: where none runs (`docker info` fails) the build is skipped
and the Dockerfile is linted by parsing it; the compose file is parsed as YAML (PyYAML,
which the `ui` extra brings) and checked by `docker compose config` where the compose
plugin exists.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from support import hit, save

from monitor.store import Store

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
UNITS = sorted(p for p in DEPLOY.iterdir() if p.suffix in (".service", ".timer"))
INSTALLED = "/opt/weightwatch/.venv/bin/weightwatch"
STATE = "/var/lib/weightwatch"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
# Secrets go by name in the config (`*_env`); a value is never in a unit or an image.
SECRETISH = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|PRIVATE", re.I)


def unit_settings(path: Path) -> dict[str, list[str]]:
    """Each `Key=value` of a unit file (comments dropped), every value of repeated keys."""
    found: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def weightwatch_binary() -> str:
    found = Path(sys.executable).with_name("weightwatch")
    assert found.exists(), f"the console script is not installed beside {sys.executable}"
    return str(found)


def units_here(tmp_path: Path) -> list[Path]:
    """The units as installed here: systemd-analyze verify needs each ExecStart binary to
    exist, so the installed path is replaced by this environment's console script."""
    copies = []
    for unit in UNITS:
        copy = tmp_path / unit.name
        copy.write_text(unit.read_text(encoding="utf-8").replace(INSTALLED, weightwatch_binary()),
                        encoding="utf-8")
        copies.append(copy)
    return copies


# --- systemd ---------------------------------------------------------------------------


def test_the_service_unit_holds_what_the_guide_promises():
    unit = unit_settings(DEPLOY / "weightwatch.service")
    assert unit["UMask"] == ["0077"]
    assert unit["StateDirectory"] == ["weightwatch"] and unit["StateDirectoryMode"] == ["0700"]
    assert unit["Restart"] == ["on-failure"] and unit["RestartPreventExitStatus"] == ["2"]
    assert unit["NoNewPrivileges"] == ["yes"] and unit["ProtectSystem"] == ["strict"]
    assert unit["User"] == ["weightwatch"]
    [command] = unit["ExecStart"]
    argv = shlex.split(command)
    assert argv[0] == INSTALLED and argv[-1] == "run"
    assert argv[argv.index("--db") + 1] == f"{STATE}/weightwatch.db"
    # The credential is named as the shipped config's password_env names it.
    config = tomllib.loads((ROOT / "config.toml").read_text(encoding="utf-8"))
    [credential] = unit["LoadCredential"]
    name, _, source = credential.partition(":")
    assert name == config["smtp"]["password_env"] == Path(source).name
    assert unit["EnvironmentFile"] == ["-/etc/weightwatch/environment"]
    assert not any(SECRETISH.search(value) for value in unit.get("Environment", []))


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed here")
def test_systemd_verifies_the_units_without_a_warning(tmp_path):
    copies = units_here(tmp_path)
    result = subprocess.run([SYSTEMD_ANALYZE, "verify", *map(str, copies)],
                            capture_output=True, text=True, timeout=60)
    # verify exits 0 on an unknown key or a bad value, saying so on stderr: any line
    # about these files is a fault.
    ours = [line for line in (result.stdout + result.stderr).splitlines()
            if str(tmp_path) in line or any(c.name in line for c in copies)]
    assert result.returncode == 0 and ours == [], result.stdout + result.stderr


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed here")
def test_the_service_is_hardened_by_systemds_own_measure(tmp_path):
    units_here(tmp_path)
    help_text = subprocess.run([SYSTEMD_ANALYZE, "security", "--help"], capture_output=True,
                               text=True, timeout=30).stdout
    if "--offline" not in help_text:
        pytest.skip("this systemd-analyze cannot assess a unit file offline (systemd < 250)")
    # An exposure of 2.0 or less ("OK"; an unhardened service scores 9.6).
    result = subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=true", "--threshold=20",
                             str(tmp_path / "weightwatch.service")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    score = re.search(r"Overall exposure level for weightwatch.service: ([\d.]+)",
                      result.stdout)
    assert score and float(score.group(1)) <= 2.0


def test_the_maintenance_units_commands_back_up_and_prune(tmp_path):
    """The backup timer's commands, run as written with its paths moved into tmp_path."""
    state, backups, etc = tmp_path / "state", tmp_path / "backups", tmp_path / "etc"
    for folder in (state, backups, etc):
        folder.mkdir()
    (etc / "config.toml").write_text("", encoding="utf-8")
    with Store(state / "weightwatch.db") as store:
        save(store, [hit()])
    moved = {INSTALLED: weightwatch_binary(), "/etc/weightwatch": str(etc),
             STATE: str(state), "/var/backups/weightwatch": str(backups)}
    unit = unit_settings(DEPLOY / "weightwatch-maintenance.service")
    assert unit["ReadWritePaths"] == ["/var/backups/weightwatch"]
    ran = []
    for command in unit["ExecStart"]:
        for old, new in moved.items():
            command = command.replace(old, new)
        argv = shlex.split(command)
        if argv[0] != weightwatch_binary():
            continue  # the rotation (find) is the operator's tool, not ours
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                                cwd=tmp_path)
        assert result.returncode == 0, (command, result.stderr)
        ran.append(argv[argv.index("--db") + 2])
    assert ran == ["backup", "prune"]
    [copy] = backups.iterdir()
    assert copy.name.startswith("weightwatch-") and copy.suffix == ".db"
    # The rotation only ever deletes what the backups are named.
    [rotation] = [c for c in unit["ExecStart"] if c.startswith("/usr/bin/find")]
    assert "-name weightwatch-*.db" in rotation and "-maxdepth 1" in rotation


def test_the_timer_starts_the_maintenance_service():
    timer = unit_settings(DEPLOY / "weightwatch-maintenance.timer")
    assert timer["OnCalendar"] and timer["Persistent"] == ["true"]
    assert (DEPLOY / "weightwatch-maintenance.service").exists()  # the timer's default


# --- the container ---------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    lines, current = [], ""
    for raw in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines():
        if raw.lstrip().startswith("#") and not current:
            continue
        if raw.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        current += raw.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        if current.strip():
            instruction, _, args = current.strip().partition(" ")
            lines.append((instruction.upper(), args.strip()))
        current = ""
    return lines


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def readme_install() -> str:
    """The README's install, as a new user types it (the demo command without the demo)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    [line] = [ln for ln in text.splitlines() if ln.startswith("python3 -m venv .venv")
              and ln.endswith("weightwatch demo")]
    return line.rsplit(" && ", 1)[0]


def test_the_dockerfile_is_pinned_unprivileged_and_keeps_no_secret():
    steps = dockerfile()
    [base] = [args for name, args in steps if name == "FROM"]
    image, _, pin = base.partition("@") if "@" in base else base.partition(":")
    assert image in ("python", "python:3.11-slim-bookworm", "python:3.11-slim")
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", pin) or re.fullmatch(r"3\.11[\w.-]*-slim[\w.-]*",
                                                                      pin), base
    users = [args for name, args in steps if name == "USER"]
    assert users and users[-1] not in ("root", "0") and not users[-1].startswith("0:")
    user_at = max(i for i, (name, _) in enumerate(steps) if name == "USER")
    assert all(i > user_at for i, (name, _) in enumerate(steps)
               if name in ("ENTRYPOINT", "CMD", "HEALTHCHECK"))
    # Anything set by ENV or ARG stays readable in the image (`docker inspect`, history).
    for name, args in steps:
        if name in ("ENV", "ARG"):
            for pair in shlex.split(args):
                assert not SECRETISH.search(pair.partition("=")[0]), f"{name} {pair}: a secret"
    runs = " ".join(args for name, args in steps if name == "RUN")
    assert readme_install() in runs


def test_the_image_runs_the_daemon_on_its_volume_and_checks_its_health():
    steps = dict(reversed(dockerfile()))  # the first of each instruction
    every = dockerfile()
    [volume] = [exec_form(args) for name, args in every if name == "VOLUME"]
    entrypoint = exec_form(steps["ENTRYPOINT"])
    assert entrypoint[0] == "weightwatch" and exec_form(steps["CMD"]) == ["run"]
    database = Path(entrypoint[entrypoint.index("--db") + 1])
    assert [str(database.parent)] == volume == [STATE]
    health = steps["HEALTHCHECK"]
    assert "--interval=" in health
    argv = exec_form(health[health.index("CMD") + 3:].strip())
    # `weightwatch health`, on the same database as the daemon.
    assert argv[0] == "weightwatch" and argv[-1] == "health"
    assert argv[argv.index("--db") + 1] == str(database)
    # What it copies is what the package is made of (pyproject's packages and readme).
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    copied = {source for name, args in every if name == "COPY"
              for source in shlex.split(args)[:-1]}
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages | {"pyproject.toml", project["project"]["readme"]} <= copied
    assert all((ROOT / entry).exists() for entry in copied)
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert {".venv", ".git", "*.db", "*.db-wal"} <= set(ignored)


def docker_engine() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    return subprocess.run([docker, "info"], capture_output=True, timeout=30).returncode == 0


@pytest.mark.slow
def test_the_image_builds(tmp_path):
    if not docker_engine():
        pytest.skip("no Docker engine runs here (`docker info` fails): the Dockerfile is "
                    "linted by the tests above instead")
    result = subprocess.run(["docker", "build", "-q", "-t", "weightwatch:test", str(ROOT)],
                            capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    version = subprocess.run(["docker", "run", "--rm", "--network", "none", "weightwatch:test",
                              "--version"], capture_output=True, text=True, timeout=120)
    assert version.returncode == 0 and "weightwatch" in version.stdout


def compose() -> dict:
    text = (DEPLOY / "compose.yaml").read_text(encoding="utf-8")
    try:
        import yaml
    except ImportError:  # a structural check where no YAML parser is installed
        assert "\t" not in text
        tops = {ln.split(":")[0] for ln in text.splitlines() if re.match(r"[a-z]\w*:", ln)}
        assert {"services", "volumes", "secrets"} <= tops
        pytest.skip("no YAML parser installed: checked the top-level keys only")
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


def test_the_compose_file_builds_this_image_and_passes_secrets_as_files():
    data = compose()
    service = data["services"]["weightwatch"]
    build = service["build"]
    assert (DEPLOY / build["context"]).resolve() == ROOT
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == ROOT / "Dockerfile"
    assert service["user"] != "root" and not str(service["user"]).startswith("0")
    assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
    mounts = [m.split(":") for m in service["volumes"]]
    assert ["state", STATE] in [m[:2] for m in mounts]
    assert "state" in data["volumes"]
    config_mount = [m for m in mounts if m[1] == "/etc/weightwatch/config.toml"]
    assert config_mount and config_mount[0][2] == "ro"
    assert (DEPLOY / config_mount[0][0]).resolve() == ROOT / "config.toml"
    # Secrets as files named as the config names them, never in the environment.
    config = tomllib.loads((ROOT / "config.toml").read_text(encoding="utf-8"))
    targets = {s["target"] for s in service["secrets"]}
    assert config["smtp"]["password_env"] in targets
    assert not any(SECRETISH.search(f"{k}={v}") for k, v in service.get("environment", {}).items())
    for name, secret in data["secrets"].items():
        assert Path(secret["file"]).parts[:2] == (".", "secrets") or \
            Path(secret["file"]).parts[0] == "secrets", name
    assert "secrets/" in (DEPLOY / ".gitignore").read_text(encoding="utf-8").split()
    backup = data["services"]["backup"]
    assert backup["command"][0] == "backup" and backup["network_mode"] == "none"


def test_docker_compose_accepts_the_file(tmp_path):
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True,
                                        timeout=30).returncode != 0:
        pytest.skip("the docker compose plugin is not installed here: the file is parsed "
                    "and checked by the test above instead")
    copy = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copy)
    (copy / "secrets").mkdir(exist_ok=True)
    (copy / "secrets" / "smtp-password").write_text("x", encoding="utf-8")
    shutil.copy(ROOT / "config.toml", tmp_path / "config.toml")
    shutil.copy(ROOT / "Dockerfile", tmp_path / "Dockerfile")
    result = subprocess.run([docker, "compose", "-f", str(copy / "compose.yaml"), "config",
                             "-q"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
