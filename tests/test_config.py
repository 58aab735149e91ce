"""Config validation: every problem is one line naming file, key path and what is wrong."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from monitor.config import ConfigError, load_config, parse_duration

ROOT = Path(__file__).resolve().parents[1]

GOOD_TARGET = """
[[targets]]
name = "board"
kind = "imageboard"
url = "https://a.4cdn.org/g/"
interval = "15m"
"""


def problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.problems


def test_shipped_config_is_valid_and_points_at_real_places():
    from monitor.sources import ADAPTERS

    config = load_config(ROOT / "config.toml")
    enabled = [t for t in config.targets if t.enabled]
    assert {"imageboard", "forum", "torrent_index"} <= {t.kind for t in enabled}
    assert {t.kind for t in config.targets} == set(ADAPTERS), "every kind has an example"
    assert all(t.url.startswith("https://") and not t.allow_private for t in enabled)
    assert all(t.interval >= 600 for t in config.targets), "real sites get sane intervals"
    assert config.smtp is not None and config.smtp.password_env
    assert "password" not in (ROOT / "config.toml").read_text().replace("password_env", "")
    assert config.rules


def test_misspelt_key_is_named_with_a_suggestion(tmp_path):
    found = problems(tmp_path, GOOD_TARGET.replace('interval = "15m"', 'intervall = "15m"'))
    assert found == [f"{tmp_path / 'config.toml'}: targets[0] (board).intervall: "
                     f"unknown key 'intervall' (did you mean 'interval'?)"]


@pytest.mark.parametrize("snippet, key, words", [
    ('max_items = "3"', "targets[0] (board).max_items", "must be an integer"),
    ('interval = "often"', "targets[0] (board).interval", "expected a duration"),
    ('interval = "5s"', "targets[0] (board).interval", "at least 10s"),
    ('allow_private = "yes"', "targets[0] (board).allow_private", "must be a boolean"),
])
def test_wrong_types_and_values(tmp_path, snippet, key, words):
    text = GOOD_TARGET.replace('interval = "15m"', snippet) if "interval" in snippet \
        else GOOD_TARGET + snippet + "\n"
    found = problems(tmp_path, text)
    assert len(found) == 1 and f": {key}: " in found[0] and words in found[0], found


def test_bad_url_duplicate_name_unknown_kind_and_bad_selector(tmp_path):
    text = GOOD_TARGET + GOOD_TARGET.replace("https://a.4cdn.org/g/", "file:///etc/passwd") + """
[[targets]]
name = "f"
kind = "forun"
url = "https://forum.example.org/"

[[targets]]
name = "g"
kind = "forum"
url = "https://forum.example.org/"
selectors = { post = "div..post", bdy = "p" }
"""
    found = problems(tmp_path, text)
    joined = "\n".join(found)
    assert "targets[1] (board).url: URL must start with http:// or https://" in joined
    assert "targets[1] (board).name: duplicate target name 'board'" in joined
    assert "targets[2] (f).kind: unknown kind 'forun' (did you mean 'forum'?)" in joined
    assert "targets[3] (g).selectors.bdy: unknown selector 'bdy' (did you mean 'body'?)" in joined
    assert "targets[3] (g).selectors.post: invalid CSS selector 'div..post'" in joined
    assert all("\n" not in line for line in found)


def test_rules_need_one_valid_pattern_and_known_targets(tmp_path):
    found = problems(tmp_path, GOOD_TARGET + """
[[rules]]
name = "r1"
pattern = "(unclosed"

[[rules]]
name = "r2"
keywords = ["x"]
pattern = "x"

[[rules]]
name = "r3"
keywords = ["x"]
targets = ["nope"]
severity = "urgent"
""")
    joined = "\n".join(found)
    assert "rules[0] (r1).pattern: invalid regular expression" in joined
    assert "rules[1] (r2): needs exactly one of 'pattern' or 'keywords'" in joined
    assert "rules[2] (r3).targets: no target named 'nope'" in joined
    assert "rules[2] (r3).severity: must be one of critical, high, medium, low" in joined


def test_syntax_error_and_missing_file(tmp_path):
    assert "TOML syntax error" in problems(tmp_path, "[[targets]\n")[0]
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "absent.toml")


def test_keywords_match_whole_words_only(tmp_path):
    import re

    path = tmp_path / "c.toml"
    path.write_text(GOOD_TARGET + '[[rules]]\nname = "k"\nkeywords = ["heron"]\n')
    pattern = re.compile(load_config(path).rules[0].pattern)
    assert pattern.search("a HERON weights dump")
    assert not pattern.search("herons are birds")


def test_durations():
    assert parse_duration("90s") == 90 and parse_duration("15m") == 900
    assert parse_duration("1h") == 3600 and parse_duration(45) == 45
    for bad in ("", "5 parsecs", -1, True, "0s"):
        with pytest.raises(ValueError):
            parse_duration(bad)


@pytest.mark.slow
def test_check_config_cli_exits_2_with_one_line_per_problem(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(GOOD_TARGET.replace("interval", "intervall"))
    proc = subprocess.run([sys.executable, "-m", "monitor", "--config", str(path), "check-config"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"{path}: targets[0] (board).intervall: unknown key 'intervall' (did you mean 'interval'?)"]
    assert "Traceback" not in proc.stderr


def test_every_command_validates_config_first(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[databse]\n")
    proc = subprocess.run([sys.executable, "-m", "monitor", "--config", str(path), "hits"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and "unknown key 'databse' (did you mean 'database'?)" in proc.stderr


def test_kind_specific_keys_only_where_they_apply(tmp_path):
    found = problems(tmp_path, GOOD_TARGET + 'preset = "phpbb"\nquery = "heron"\n')
    assert [p.split(": ", 1)[1] for p in found] == [
        "targets[0] (board).preset: does not apply to kind 'imageboard'",
        "targets[0] (board).query: does not apply to kind 'imageboard'"]


def test_proxy_and_crawl_limits_are_checked(tmp_path):
    found = problems(tmp_path, "[crawl]\nretries = -1\n" + GOOD_TARGET + 'proxy = "ftp://x"\n')
    joined = "\n".join(found)
    assert "crawl.retries: must be at least 0, got -1" in joined
    assert "targets[0] (board).proxy: proxy must be an http://, https://, socks5:// or socks5h://" in joined


def test_onion_needs_socks_and_cookies_are_tokens(tmp_path):
    onion = GOOD_TARGET.replace("https://a.4cdn.org/g/", "http://abcdefghijklmnop.onion/g/")
    found = problems(tmp_path, onion + 'cookies = { "bad name" = "x", ok = "a;b" }\n')
    joined = "\n".join(found)
    assert "targets[0] (board).proxy: a .onion target needs a socks5://" in joined
    assert "targets[0] (board).cookies.bad name: a cookie name must be a token" in joined
    assert "targets[0] (board).cookies.ok: a cookie name must be a token" in joined
    path = tmp_path / "ok.toml"
    path.write_text(onion + 'proxy = "socks5h://127.0.0.1:9050"\ncookies = { session = "abc" }\n')
    assert load_config(path).targets[0].cookies == {"session": "abc"}
