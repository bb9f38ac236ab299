"""The user-level persistent compilation cache (ftcjax.sweep.compile_cache).

A second sweep into a NEW run directory with the same shapes must compile nothing (counted with
jax's own monitoring events in the child process: every backend compilation request, and the
persistent-cache hits among them); the cache location follows XDG and the overrides, is keyed by
the jax/jaxlib version, is created 0700, and is refused when someone else could change it.
"""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ftcjax._src.errors import FTCInputError
from ftcjax.sweep import compile_cache as cc

REPO = Path(__file__).resolve().parents[1]

SPEC = """\
name = "cachetest"
seed = 3
replicates = 2

[grid]
depth = 2
N = [1, 2]
K = 6
d = 2
criterion = "relative"

[train]
steps = 40
segment = 20
restarts = 1
learning_rate = 0.05
rel_eps = 0.05
unroll = 1

[width]
lower = 1
upper = 4

[batch]
chunk_size = 2
"""

# Runs the real CLI in a fresh interpreter and counts compilations with jax's monitoring events:
# the backend-compile event fires for every compilation request, a persistent-cache hit fires
# cache_hits as well, so real compilations = requests - hits.
DRIVER = textwrap.dedent("""
    import json, sys
    import jax
    counts = {"requests": 0, "hits": 0}
    def on_duration(event, duration, **kw):
        if event == "/jax/core/compile/backend_compile_duration":
            counts["requests"] += 1
    def on_event(event, **kw):
        if event == "/jax/compilation_cache/cache_hits":
            counts["hits"] += 1
    jax.monitoring.register_event_duration_secs_listener(on_duration)
    jax.monitoring.register_event_listener(on_event)
    from ftcjax.cli import main
    rc = main(sys.argv[1:])
    print("COUNTS " + json.dumps(dict(counts, rc=rc)))
""")


def _run(args, env):
    full_env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
    full_env.update(PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    for k, v in env.items():
        if v is None:
            full_env.pop(k, None)
        else:
            full_env[k] = v
    proc = subprocess.run([sys.executable, "-c", DRIVER, *args], env=full_env, cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("COUNTS ")]
    assert line, proc.stdout + proc.stderr
    return json.loads(line[-1][len("COUNTS "):]), proc


def test_second_sweep_in_a_new_directory_compiles_nothing(tmp_path):
    spec = tmp_path / "cachetest.toml"
    spec.write_text(SPEC)
    # the conftest points FTCJAX_COMPILATION_CACHE at a session directory: unset it for the
    # children, so they use the XDG default under this test's own directory
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg"), "HOME": str(tmp_path / "home"), cc.ENV_VAR: None}
    args = ["run", str(spec), "--no-report", "--progress", "none", "--cpu-devices", "2"]
    first, p1 = _run([*args, "--out", str(tmp_path / "run1")], env)
    assert first["rc"] == 0, p1.stderr
    assert first["requests"] > first["hits"]        # the cache was empty: real compilations
    second, p2 = _run([*args, "--out", str(tmp_path / "run2")], env)
    assert second["rc"] == 0, p2.stderr
    assert second["requests"] > 0
    assert second["hits"] == second["requests"], second    # every program came from the cache
    want = tmp_path / "xdg" / "ftcjax" / cc.version_key()
    assert stat.S_IMODE(os.stat(want).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(want.parent).st_mode) == 0o700
    for run in ("run1", "run2"):    # each run directory records which cache it used
        manifest = json.loads((tmp_path / run / "manifest.json").read_text())
        assert json.dumps(manifest).count(str(want)) >= 1, run
        assert not (tmp_path / run / "cache").exists()


def test_cache_location_follows_overrides_and_xdg(tmp_path):
    key = cc.version_key()
    assert key.startswith("jax-") and "-jaxlib-" in key
    home = {"HOME": "/home/u"}
    assert cc.versioned_cache_dir(environ=home) == Path("/home/u/.cache/ftcjax") / key
    assert cc.versioned_cache_dir(environ={**home, "XDG_CACHE_HOME": "/x"}) == Path("/x/ftcjax") / key
    # a relative XDG_CACHE_HOME is invalid (XDG spec) and ignored
    assert cc.versioned_cache_dir(environ={**home, "XDG_CACHE_HOME": "rel"}) == \
        Path("/home/u/.cache/ftcjax") / key
    assert cc.versioned_cache_dir(environ={**home, cc.ENV_VAR: "/c"}) == Path("/c") / key
    assert cc.versioned_cache_dir("/cli", environ={**home, cc.ENV_VAR: "/c"}) == Path("/cli") / key
    for off in ("off", "OFF", "none", ""):
        assert cc.versioned_cache_dir(off, environ=home) is None
        assert cc.versioned_cache_dir(environ={**home, cc.ENV_VAR: off}) is None


def test_created_private_even_with_a_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        path = cc.ensure_private_dir(tmp_path / "a" / "b" / "c")
    finally:
        os.umask(old)
    for p in (tmp_path / "a", tmp_path / "a" / "b", path):
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o700, p


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o777, 0o720])
def test_group_or_world_writable_cache_is_refused(tmp_path, mode):
    d = tmp_path / "cache"
    d.mkdir()
    d.chmod(mode)
    with pytest.raises(FTCInputError, match=r"writable by group/others.*chmod go-w") as e:
        cc.ensure_private_dir(d)
    assert str(d) in str(e.value) and "\n" not in str(e.value)


def test_cache_owned_by_someone_else_is_refused(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    d.mkdir(mode=0o700)
    real = os.geteuid()
    monkeypatch.setattr(os, "geteuid", lambda: real + 1)     # we are now someone else
    with pytest.raises(FTCInputError, match="owned by someone else") as e:
        cc.check_private_dir(d)
    assert str(d) in str(e.value)


def test_parent_writable_by_others_is_refused_unless_sticky(tmp_path):
    top = tmp_path / "shared"
    top.mkdir()
    top.chmod(0o777)
    with pytest.raises(FTCInputError, match="directory above it.*can be changed by others"):
        cc.ensure_private_dir(top / "mine")
    top.chmod(0o1777)                                  # sticky, like /tmp: others cannot swap ours
    assert cc.ensure_private_dir(top / "mine2") == (top / "mine2").resolve()


def test_not_a_directory_and_cli_error_is_one_line(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(FTCInputError, match="not a directory"):
        cc.check_private_dir(f)
    bad = tmp_path / "open"
    bad.mkdir()
    bad.chmod(0o777)
    spec = tmp_path / "cachetest.toml"
    spec.write_text(SPEC)
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
    env.update(PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-m", "ftcjax.cli", "run", str(spec), "--out",
                           str(tmp_path / "run"), "--compilation-cache", str(bad), "--no-report"],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "directory above it" in err[0] and str(bad) in err[0], proc.stderr
    assert "Traceback" not in proc.stderr


def _fake_cache(root: Path) -> dict:
    """A cache root with this jax's directory, an older version's, and a folder that is not ftcjax's."""
    from ftcjax._src.executables import STORE_DIRNAME

    root.mkdir(mode=0o700)
    now = root / cc.version_key()
    old = root / "jax-0.0.1-jaxlib-0.0.1"
    for d, n_jax, n_exe in ((now, 3, 2), (old, 1, 0)):
        (d / STORE_DIRNAME).mkdir(mode=0o700, parents=True)
        for i in range(n_jax):
            (d / f"jit_k{i}-cache").write_bytes(b"j" * (100 + i))
        for i in range(n_exe):
            (d / STORE_DIRNAME / f"{i:064x}.exe").write_bytes(b"e" * 1000)
    (root / "notes").mkdir()
    (root / "notes" / "keep.txt").write_text("mine")
    return {"now": now, "old": old}


def test_cache_usage_counts_jax_entries_and_executables_per_version(tmp_path):
    dirs = _fake_cache(tmp_path / "c")
    usage = cc.cache_usage(tmp_path / "c")
    assert [u["version"] for u in usage] == sorted([dirs["now"].name, dirs["old"].name])  # not "notes"
    now = next(u for u in usage if u["current"])
    assert (now["jax_entries"], now["jax_bytes"], now["executables"], now["executables_bytes"]) == (3, 303, 2, 2000)
    old = next(u for u in usage if not u["current"])
    assert (old["jax_entries"], old["jax_bytes"], old["executables"]) == (1, 100, 0)
    assert cc.cache_usage(tmp_path / "absent") == []


def test_clear_removes_only_version_directories_of_a_private_root(tmp_path):
    root = tmp_path / "c"
    dirs = _fake_cache(root)
    (removed,) = cc.clear_cache(root)
    assert removed["current"] and not dirs["now"].exists() and dirs["old"].exists()
    assert [r["version"] for r in cc.clear_cache(root, all_versions=True)] == [dirs["old"].name]
    assert (root / "notes" / "keep.txt").read_text() == "mine" and cc.cache_usage(root) == []
    root.chmod(0o777)
    with pytest.raises(FTCInputError, match="writable by group/others"):
        cc.clear_cache(root)


def test_cache_command_lists_clears_and_reports_off(tmp_path):
    root = tmp_path / "c"
    _fake_cache(root)
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES", cc.ENV_VAR)}
    env.update(PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu", XDG_CACHE_HOME=str(tmp_path))  # default root = tmp/ftcjax

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "ftcjax.cli", "cache", *args], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=120)

    shown = cli("--compilation-cache", str(root))
    assert shown.returncode == 0, shown.stderr
    assert f"compilation cache: {root} (--compilation-cache)" in shown.stdout
    assert "jax entries 3, 303 B; ftcjax executables 2, 1.95 KiB)  <- this jax" in shown.stdout
    listed = json.loads(cli("--compilation-cache", str(root), "--json").stdout)
    assert listed["root"] == str(root) and len(listed["versions"]) == 2
    default = cli()
    assert f"compilation cache: {tmp_path / 'ftcjax'} (the default location)" in default.stdout
    assert "empty" in default.stdout
    cleared = cli("--compilation-cache", str(root), "--clear")
    assert cleared.returncode == 0 and cleared.stdout.startswith(f"removed {cc.version_key()} from {root}: ")
    assert cli("--compilation-cache", "off").stdout.strip() == "compilation cache: off (--compilation-cache)"
    bad = cli("--all-versions")
    assert bad.returncode == 2 and bad.stderr.strip() == "ftcjax: error: --all-versions: only with --clear"
