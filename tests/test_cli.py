"""The CLI end to end: help texts, run -> status -> export, --shard, and 2 processes vs 1."""
import csv
import io
import socket
import subprocess
import sys

import pytest

from ftcjax.cli import main
from sweep_helpers import (DEVICES, TINY_SPEC, cli_args, cli_env, raw_lines, reference_run,
                                   results_without_timing, run_cli, shared_cache)


def _every_command():
    """Every (sub)command path of the one parser, read from the parser itself (none can be forgotten)."""
    import argparse

    from ftcjax.cli import _parser

    out = []

    def walk(parser, path):
        out.append(path)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, [*path, name])

    walk(_parser(), [])
    return out


def test_every_command_is_listed():
    paths = {" ".join(p) for p in _every_command()}
    assert {"run", "validate", "status", "export", "report", "figures", "convergence"} <= paths
    # the convergence actions are subcommands of the same parser (no second parser behind it)
    assert {f"convergence {a}" for a in ("double", "reseed", "budget", "verdict", "until", "compare")} <= paths


@pytest.mark.parametrize("cmd", _every_command(), ids=lambda c: " ".join(c) or "ftcjax")
def test_help_has_examples(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([*cmd, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "ftcjax" in out
    assert "example" in out


def test_help_and_version_import_no_jax():
    # The package face is lazy: `ftcjax --help` / `--version` must not pay for importing jax.
    code = ("import sys, time, contextlib, io\n"
            "t = time.perf_counter()\n"
            "from ftcjax.cli import main\n"
            "for argv in (['--help'], ['--version'], ['run', '--help']):\n"
            "    with contextlib.redirect_stdout(io.StringIO()) as buf:\n"
            "        try:\n"
            "            main(argv)\n"
            "        except SystemExit as e:\n"
            "            assert e.code == 0, (argv, e.code)\n"
            "    assert buf.getvalue(), argv\n"
            "print(sorted(m for m in sys.modules if m == 'jax' or m.startswith(('jax.', 'matplotlib', 'numpy'))))\n"
            "print(time.perf_counter() - t)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(),
                         check=True).stdout.split("\n")
    assert out[0] == "[]"  # neither jax nor numpy nor matplotlib
    assert float(out[1]) < 1.0


def test_module_entry_points(tmp_path):
    for mod, needle in (("ftcjax", "COMMAND"), ("ftcjax.analysis", "double")):
        res = subprocess.run([sys.executable, "-m", mod, "--help"], capture_output=True, text=True, env=cli_env())
        assert res.returncode == 0 and needle in res.stdout, res.stderr
    res = subprocess.run([sys.executable, "-m", "ftcjax", "--version"], capture_output=True, text=True,
                         env=cli_env())
    assert res.returncode == 0 and res.stdout.startswith("ftcjax 0.")


def test_errors_have_one_prefix(tmp_path, capsys):
    assert main(["report", str(tmp_path / "none")]) == 2
    assert main(["figures", str(tmp_path / "none")]) == 2
    assert main(["validate", str(tmp_path / "none.toml")]) == 2
    errs = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ftcjax: ")]
    assert len(errs) >= 3 and all(line.startswith("ftcjax: error: ") for line in errs), errs


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_bad_shard_and_missing_dir(tmp_path, capsys):
    spec = tmp_path / "tiny.toml"
    spec.write_text(TINY_SPEC)
    assert main(["run", str(spec), "--shard", "2/2", "--out", str(tmp_path / "x")]) == 2
    assert "--shard" in capsys.readouterr().err
    assert main(["status", str(tmp_path / "nope")]) == 2
    assert "not a ftcjax run directory" in capsys.readouterr().err


def test_status_and_export_of_a_finished_run(tmp_path_factory, capsys):
    ref = reference_run(tmp_path_factory.getbasetemp() / "sweep-reference")
    assert main(["status", str(ref)]) == 0
    out = capsys.readouterr().out
    assert "12/12 done, 0 pending" in out and "6/6 done" in out
    assert main(["export", str(ref), "--csv", "-"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    recs = results_without_timing(ref)
    assert len(rows) == len(recs) == 12
    for row in rows:
        rec = recs[row["instance_id"]]
        assert row["min_width"] == ("" if rec["min_width"] is None else str(rec["min_width"]))
        assert row["probe_widths"] == ";".join(str(p["width"]) for p in rec["probes"])
        assert int(row["N"]) == rec["cell"]["N"] and int(row["K"]) == rec["cell"]["K"]


def test_load_run_matches_the_csv_export(tmp_path_factory, capsys):
    import ftcjax
    from ftcjax.sweep.results import _fmt

    ref = reference_run(tmp_path_factory.getbasetemp() / "sweep-reference")
    assert main(["export", str(ref), "--csv", "-"]) == 0
    text = capsys.readouterr().out
    header = text.splitlines()[0].split(",")
    rows = list(csv.DictReader(io.StringIO(text)))
    table = ftcjax.load_run(str(ref), frame=False)
    assert list(table) == header and all(len(v) == len(rows) for v in table.values())
    assert isinstance(table["probe_widths"][0], list) and isinstance(table["min_width"][0], (int, type(None)))
    for i, row in enumerate(rows):
        assert {c: _fmt(table[c][i]) for c in header} == row
    try:
        import pandas  # noqa: F401
    except ImportError:
        return
    df = ftcjax.load_run(ref)
    assert list(df.columns) == header and len(df) == len(rows)
    assert df["probe_widths"].iloc[0] == table["probe_widths"][0]


@pytest.mark.slow  # fresh-process CLI runs (~1 min): in the slow CI step, not the default suite
def test_shards_cover_the_grid_once_and_match(tmp_path_factory, tmp_path):
    base = tmp_path_factory.getbasetemp() / "sweep-reference"
    ref = reference_run(base)
    spec = tmp_path / "tiny.toml"
    spec.write_text(TINY_SPEC)
    out = tmp_path / "sharded"
    for i in range(3):  # 6 chunks over 3 shards, run one after another like array tasks
        res = run_cli("run", str(spec), "--out", str(out), "--shard", f"{i}/3", "--no-report",
                      "--progress", "none", *DEVICES, "--compilation-cache", shared_cache(base))
        assert res.returncode == 0, res.stderr
    files = sorted(p.name for p in (out / "results").glob("*.jsonl"))
    assert files == [f"shard-000{i}-of-0003.jsonl" for i in range(3)]
    ids = [r["instance_id"] for r in raw_lines(out)]
    assert len(ids) == len(set(ids)) == 12  # exactly once
    assert results_without_timing(out) == results_without_timing(ref)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # fresh-process CLI runs (~1 min): in the slow CI step, not the default suite
def test_two_processes_match_one(tmp_path_factory, tmp_path):
    base = tmp_path_factory.getbasetemp() / "sweep-reference"
    ref = reference_run(base)
    spec = tmp_path / "tiny.toml"
    spec.write_text(TINY_SPEC)
    out = tmp_path / "twoproc"
    port = _free_port()
    procs = [subprocess.Popen(cli_args("run", str(spec), "--out", str(out), "--no-report", "--progress", "none",
                                       *DEVICES, "--compilation-cache", shared_cache(base),
                                       "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                                       "--process-id", str(i)),
                              env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (o, e) in zip(procs, outs):
        assert p.returncode == 0, e
    assert any("as writer 2 of 2" in e for _, e in outs)
    files = sorted(p.name for p in (out / "results").glob("*.jsonl"))
    assert files == ["shard-0000-of-0002.jsonl", "shard-0001-of-0002.jsonl"]
    per_file = {f: sum(1 for _ in open(out / "results" / f)) for f in files}
    assert all(n > 0 for n in per_file.values())  # both processes did work
    ids = [r["instance_id"] for r in raw_lines(out)]
    assert len(ids) == len(set(ids)) == 12
    assert results_without_timing(out) == results_without_timing(ref)


def test_default_spec_resolves_from_any_directory(tmp_path, monkeypatch, capsys):
    from ftcjax.cli import default_spec_path
    from sweep_helpers import REPO

    # the packaged copy (what `pip install` ships) is the repo's sweeps/default.toml
    assert default_spec_path().read_text() == (REPO / "sweeps" / "default.toml").read_text()
    monkeypatch.chdir(tmp_path)
    assert main(["validate"]) == 0
    assert "spec 'default' is valid" in capsys.readouterr().out


def test_progress_bar_and_log_lines():
    from ftcjax.sweep.progress import Progress

    bar, log = io.StringIO(), io.StringIO()
    for stream, tty in ((bar, True), (log, False)):
        p = Progress(stream, tty=tty, interval=3600)
        p.start(4, 40, 1, 10)
        for _ in range(3):
            p.update(10, 0.1)
        p.finish()
    assert "\r" in bar.getvalue() and "4/4 chunks" in bar.getvalue() and "ETA" in bar.getvalue()
    lines = log.getvalue().splitlines()
    # no carriage returns in logs; with a long interval only the start, the last chunk and the end
    assert "\r" not in log.getvalue() and len(lines) == 3
    assert "resuming with 1 done" in lines[0] and "chunks 4/4 (100%)" in lines[1] and "inst/s" in lines[1]


def test_progress_fits_narrow_terminals_says_compiling_and_ticks():
    import time

    from ftcjax.sweep.progress import Progress

    for cols in (30, 50, 75, 120):
        out = io.StringIO()
        p = Progress(out, tty=True, interval=3600)
        p.columns = lambda cols=cols: cols
        p.tick = 0.02
        p.start(3, 30, 0, 0)
        p.begin_chunk(compiling=True, group="depth=3")
        time.sleep(0.15)  # no chunk finishes: the elapsed time must still be redrawn
        p.update(10, 0.1)
        p.begin_chunk(compiling=False)
        p.update(10, 0.1)
        p.finish()
        frames = [f.replace("\033[K", "") for f in out.getvalue().replace("\n", "\r").split("\r") if f]
        assert all(len(f) < cols for f in frames), (cols, max(frames, key=len))
        assert any("compiling" in f for f in frames) or cols < 60  # narrow: the tail is cut, not wrapped
        assert sum("elapsed" in f for f in frames) >= 4 or cols < 50  # ticked while the chunk ran
    log = io.StringIO()
    p = Progress(log, tty=False, interval=3600)
    p.start(2, 4, 0, 0)
    p.begin_chunk(compiling=True, group="depth=2")
    assert "compiling kernels for depth=2" in log.getvalue()


def test_shard_and_distributed_options():
    from ftcjax._src.errors import FTCInputError
    from ftcjax.sweep.distributed import DistributedConfig, maybe_initialize, parse_shard, writer_share

    assert parse_shard("3/16") == (3, 16)
    for bad in ("16/16", "-1/4", "1", "a/b", "1/0"):
        with pytest.raises(FTCInputError, match="--shard"):
            parse_shard(bad)
    # --shard i/n under P processes: writers i*P + p of n*P, all distinct
    shares = {writer_share((i, 3), (p, 2)) for i in range(3) for p in range(2)}
    assert shares == {(k, 6) for k in range(6)}
    with pytest.raises(FTCInputError, match="--num-processes, --process-id"):
        maybe_initialize(DistributedConfig("auto", coordinator="127.0.0.1:1"))
    assert maybe_initialize(DistributedConfig("off")) == (0, 1)


def test_convergence_actions_run_through_the_one_parser(tmp_path, capsys):
    from ftcjax.sweep.spec import load_spec

    spec = tmp_path / "tiny.toml"
    spec.write_text(TINY_SPEC)
    reseed, budget = tmp_path / "tiny-reseed1.toml", tmp_path / "tiny-steps2.toml"
    assert main(["convergence", "reseed", str(spec), str(reseed)]) == 0
    assert main(["convergence", "budget", str(spec), str(budget), "--axis", "steps"]) == 0
    assert load_spec(reseed).axis_dict["train_seed"] == (1,)
    assert load_spec(budget).axis_dict["steps"] == (120,) and load_spec(budget).axis_dict["restarts"] == (2,)
    capsys.readouterr()
    assert main(["convergence", "reseed", str(tmp_path / "missing.toml"), str(reseed)]) == 2
    assert capsys.readouterr().err.startswith("ftcjax: error: SPEC:")
    with pytest.raises(SystemExit) as e:  # argparse: a required option of an action
        main(["convergence", "budget", str(spec), str(budget)])
    assert e.value.code == 2
    # python -m ftcjax.analysis is an alias of `ftcjax convergence`
    res = subprocess.run([sys.executable, "-m", "ftcjax.analysis", "reseed", "--help"], capture_output=True,
                         text=True, env=cli_env())
    assert res.returncode == 0 and "ftcjax convergence reseed" in res.stdout, res.stderr
