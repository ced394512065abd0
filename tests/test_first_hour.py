"""The first hour of a new user (issue 25): each mistake is caught before Prefect starts, answered with exit
code 1 and one line (a data file: one `path:line: field: problem` block, the summary last), a "did you mean"
where a close name exists, and nothing left in the folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sftflow.cli.main import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fresh_folder(tmp_path, monkeypatch):
    """A new user's empty folder as the working folder, with no sftflow settings in the environment."""
    for name in list(os.environ):
        if name.startswith("SFTFLOW_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def one_line(capsys, argv: list[str]) -> str:
    """Run `sftflow ARGV`: exit code 1, nothing on stdout, one line on stderr (returned)."""
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("sftflow: error: ")
    return lines[0]


@pytest.mark.parametrize("argv, expected", [
    (["pipeline", "--sampels", "5"],
     "sftflow: error: pipeline: unknown flag --sampels; did you mean --samples? (see 'sftflow pipeline --help')"),
    (["sweep", "--adapter-sise", "2,4"], "unknown flag --adapter-sise; did you mean --adapter-size?"),
    (["pipline"], "invalid choice: 'pipline' (choose from"),
    (["pipline"], "; did you mean pipeline?"),
    (["pipeline", "--adapter-size", "3"],
     "sftflow: error: pipeline: argument --adapter-size: invalid choice: 3 (choose from 1, 2, 4, 8, 16)"),
    (["pipeline", "--backend", "vertx"], "; did you mean vertex?"),
    (["pipeline", "--samples"], "pipeline: argument --samples: expected one argument"),
    (["pipeline", "--set", "local_train_budget=20"],
     "sftflow: error: --set local_train_budget: unknown setting; did you mean local_train_budget_s?"),
    (["pipeline", "--run-name", "MyRun"],
     "sftflow: error: invalid configuration: --run-name: must be 1-63 lowercase letters, digits, '-' or '_', "
     "starting with a letter or digit, got 'MyRun'"),
    (["pipeline", "--samples", "0"], "sftflow: error: invalid configuration: --samples: "),
    (["pipeline", "--set", "samples=0"], "sftflow: error: invalid configuration: --set samples: "),
])
def test_each_argument_mistake_is_one_line_rc_1_naming_the_flag(fresh_folder, capsys, argv, expected):
    line = one_line(capsys, argv)
    assert expected in line
    assert "SFTFLOW_" not in line and "^[a-z" not in line  # the flag, not the variable; words, not a regex
    assert not (fresh_folder / ".sftflow").exists()


def test_a_setting_from_the_environment_is_still_named_by_its_variable(fresh_folder, capsys, monkeypatch):
    monkeypatch.setenv("SFTFLOW_SAMPLES", "0")
    assert "samples (SFTFLOW_SAMPLES): " in one_line(capsys, ["pipeline"])


def test_an_unknown_recipe_key_suggests_the_close_one(fresh_folder, capsys):
    (fresh_folder / "r.yaml").write_text("epochs: 1\nsampels: 5\n")
    line = one_line(capsys, ["pipeline", "--recipe", "r.yaml"])
    assert line.startswith("sftflow: error: r.yaml:2: sampels: unknown field"), line
    assert "did you mean samples" in line


@pytest.mark.parametrize("cmd", ["pipeline", "prepare", "tune", "sweep"])
def test_bad_local_input_files_are_one_block_before_anything_starts(fresh_folder, capsys, cmd):
    (fresh_folder / "train.txt").write_text("hello\n")
    (fresh_folder / "val.jsonl").write_text(json.dumps({"messages": [{"role": "robot", "content": "q"}]}) + "\n")
    assert main([cmd, "--train", "train.txt", "--val", "val.jsonl"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert lines[:2] == [
        "train.txt:1: format: not JSONL (chat or contents) nor a test CSV",
        "val.jsonl:1: messages[0].role: unknown role 'robot' (allowed: system, user, assistant, model)",
    ], err
    assert lines[-1] == ("sftflow: error: 2 problem(s) in --train train.txt, --val val.jsonl (the rules of "
                         "'sftflow validate'); nothing was started")
    assert len(lines) == 3
    assert sorted(p.name for p in fresh_folder.iterdir()) == ["train.txt", "val.jsonl"]  # no .sftflow


def test_a_missing_local_test_file_is_named_with_its_flag(fresh_folder, capsys):
    assert main(["pipeline", "--test", "nope.csv"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "nope.csv:0: file: no such file",
        "sftflow: error: 1 problem(s) in --test nope.csv (the rules of 'sftflow validate'); nothing was started",
    ]


def test_a_bad_training_file_stops_the_real_command_before_prefect_is_imported(tmp_path):
    """The command a user types, in a subprocess: rc 1, the problem and the summary, Prefect never imported
    (so no server start-up, no .sftflow/work, no .sftflow/prefect-results)."""
    (tmp_path / "train.txt").write_text("hello\n")
    code = ("import sys; from sftflow.cli.main import main; rc = main(sys.argv[1:]); "
            "print('prefect imported' if 'prefect' in sys.modules else 'no prefect'); sys.exit(rc)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFTFLOW_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", code, "pipeline", "--train", "train.txt"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == "no prefect\n"
    assert proc.stderr.splitlines() == [
        "train.txt:1: format: not JSONL (chat or contents) nor a test CSV",
        "sftflow: error: 1 problem(s) in --train train.txt (the rules of 'sftflow validate'); nothing was started",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["train.txt"]


def test_the_interrupt_line_says_what_happened_to_the_job(fresh_folder, capsys, monkeypatch):
    import sftflow.cli.main as cli
    from sftflow.tuning import polling

    class Jobs:
        def cancel(self, name):
            pass

    def interrupted_while_tuning(args):
        polling.cancel_on_interrupt(Jobs(), "job-7", enabled=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(polling, "INTERRUPTED", [])
    monkeypatch.setattr(cli, "_run", interrupted_while_tuning)
    assert main(["pipeline"]) == 130
    assert capsys.readouterr().err.splitlines()[-1] == (
        "sftflow: interrupted: tuning job job-7 cancelled: Ctrl-C with cancel_job_on_interrupt=true; "
        "rerun with --resubmit-failed to start again")


@pytest.mark.parametrize("cmd", ["pipeline", "tune", "sweep"])
def test_resubmit_failed_is_a_flag_of_each_tuning_command(cmd):
    from sftflow.cli.config import overrides
    from sftflow.cli.main import build_parser

    assert overrides(build_parser().parse_args([cmd, "--resubmit-failed"]))["resubmit_failed"] is True


@pytest.mark.parametrize("yes, folders, last", [
    (True, 0, "2 item(s) deleted, 1 left"),
    (False, 0, "2 item(s); rerun with --yes to delete them"),
    (True, 1, "2 item(s) (1 local job folder(s)) deleted, 1 left"),
])
def test_cleanup_ends_with_a_count(fresh_folder, capsys, monkeypatch, yes, folders, last):
    import types

    import sftflow.cli.main as cli

    fake = types.ModuleType("flows.cleanup")
    plan = [{"uri": "a", "kind": "run object"}, {"uri": "b", "kind": "local job folder" if folders else "run object"}]
    fake.cleanup = lambda **kw: {"items": ["a", "b"], "plan": plan, "skipped": [{"uri": "c", "reason": "not ours"}]}
    monkeypatch.setitem(sys.modules, "flows.cleanup", fake)
    monkeypatch.setattr(cli, "_watched", lambda flow, watch: flow)
    monkeypatch.setattr(cli, "_use_prefect_api", lambda settings, temporary=True: False)
    monkeypatch.setattr(cli, "_quiet_user_errors", lambda: (lambda: None))
    monkeypatch.setattr(cli, "_prefect_env", lambda root: None)
    assert main(["cleanup", *(["--yes"] if yes else [])]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == last


def test_a_missing_recipe_says_where_it_looked_and_a_packaged_one_is_found_by_name(fresh_folder, capsys):
    line = one_line(capsys, ["pipeline", "--recipe", "recipes/local-quick.yaml"])
    assert line.startswith("sftflow: error: recipe: recipes/local-quick.yaml: no such file (looked in "
                           f"{(fresh_folder / 'recipes').resolve()}; recipes by name: "), line
    assert "local-quick" in line
    from sftflow.params import RunParams, settings_values

    assert settings_values(RunParams(recipe="local-quick")) == settings_values(
        RunParams(recipe=str(ROOT / "recipes" / "local-quick.yaml")))
    assert settings_values(RunParams(recipe="local-quick"))  # it sets something


def test_cleanup_lists_and_removes_the_runs_local_job_folders(fresh_folder):
    """The run's job folders (checkpoint.pt, runner.log, ...) are found by its tuning records' key, or by the run
    named in spec.json (a job cancelled before anything recorded it); another run's, and one whose runner is
    alive, are left."""
    from sftflow.backends.local import LocalTuner, jobs
    from sftflow.cleanup.plan import JOB_FOLDER, execute, plan_cleanup
    from sftflow.config import Settings
    from sftflow.infra import storage

    s = Settings(_env_file=None, local_root=fresh_folder / ".sftflow", run_name="exp")
    key = "k" + "a" * 20

    def job(name, job_key, run_name=None, state="CANCELLED", **status):
        d = s.work_dir / "jobs" / name
        d.mkdir(parents=True)
        jobs.write_json(d / "spec.json", {"job_id": name, "spec": {"key": job_key},
                                          **({"run_name": run_name} if run_name else {})})
        jobs.write_json(d / "status.json", {"state": state, **status})
        (d / "checkpoint.pt").write_bytes(b"weights")
        return d

    recorded = job("job-20260101-000000-aaaaaa", key, state="SUCCEEDED")
    resumed_from = job("job-20260101-000000-bbbbbb", key)  # the same intent's cancelled job, by an older version
    never_recorded = job("job-20260101-000000-cccccc", "k" + "c" * 20, run_name="exp")
    running = job("job-20260101-000000-dddddd", "k" + "d" * 20, run_name="exp", state="RUNNING", pid=os.getpid(),
                  pid_start=jobs.proc_start_time(os.getpid()))
    other_run = job("job-20260101-000000-eeeeee", "k" + "e" * 20, run_name="exp2")
    storage.write_text(storage.join(s.storage_root, "tuning", f"{key}.json"), json.dumps(
        {"name": recorded.name, "key": key, "state": "SUCCEEDED", "tuned_model": f"local:{recorded.name}",
         "endpoint": storage.join(s.storage_root, "models", recorded.name), "run_name": "exp", "spec": {}}))

    plan = plan_cleanup(s, lambda: LocalTuner(s))
    folders = sorted(i.uri for i in plan.delete if i.kind == JOB_FOLDER)
    assert folders == [str(recorded), str(resumed_from), str(never_recorded)]
    reasons = {i.uri: i.reason for i in plan.delete}
    assert reasons[str(resumed_from)] == f"folder of local tuning job {resumed_from.name} (CANCELLED) of run exp"
    left = {i.uri: i.reason for i in plan.skipped}
    assert left[str(running)].startswith(f"left: tuning job {running.name} is RUNNING (its runner, pid {os.getpid()}")
    assert str(other_run) not in left

    execute(plan, lambda: LocalTuner(s), run_root=s.run_root)
    assert sorted(p.name for p in (s.work_dir / "jobs").iterdir()) == [running.name, other_run.name]
    assert [i.uri for i in plan_cleanup(s, lambda: LocalTuner(s)).delete] == []


def test_the_recipes_are_package_data_and_the_checkouts_are_links_to_them():
    import importlib.resources

    from sftflow.params import RECIPES

    packaged = importlib.resources.files("sftflow") / "recipes"
    assert sorted(p.name for p in packaged.iterdir() if p.name.endswith(".yaml")) == ["codelab.yaml",
                                                                                      "local-quick.yaml"]
    assert RECIPES == Path(str(packaged))
    for name in ("codelab.yaml", "local-quick.yaml"):  # `--recipe recipes/local-quick.yaml` in a checkout
        assert (ROOT / "recipes" / name).resolve() == (ROOT / "sftflow" / "recipes" / name).resolve()


@pytest.mark.slow  # builds a wheel (~5 s)
def test_an_installed_wheel_has_the_recipes_by_name(tmp_path):
    """`pip wheel` of the project (offline, as the venv's setuptools builds it) carries sftflow/recipes/*.yaml, and
    `--recipe local-quick` resolves from that copy of the package in a folder with no recipes/."""
    import shutil
    import zipfile

    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("sftflow", "tasks", "flows"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", ".sftflow"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "--no-cache-dir", "-q", "-w", str(tmp_path / "dist"), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("sftflow-*.whl")
    with zipfile.ZipFile(wheel) as z:
        assert {"sftflow/recipes/codelab.yaml", "sftflow/recipes/local-quick.yaml"} <= set(z.namelist())
        z.extractall(tmp_path / "installed")
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    code = ("import sftflow, sys; from sftflow.params import load_recipe; print(sftflow.__file__); "
            "print(load_recipe('local-quick')['backend'])")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFTFLOW_")}
    env["PYTHONPATH"] = str(tmp_path / "installed")
    proc = subprocess.run([sys.executable, "-c", code], cwd=empty, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    where, backend = proc.stdout.splitlines()
    assert where.startswith(str(tmp_path / "installed")) and backend == "local"


def test_sigterm_takes_the_ctrl_c_path_and_says_so(capsys, monkeypatch):
    """A real SIGTERM to this process raises Terminated (a KeyboardInterrupt): a job awaited is cancelled as on
    Ctrl-C, the line names SIGTERM, the exit code is 143; the previous handler comes back afterwards."""
    import signal

    from sftflow.cli import interrupts
    from sftflow.tuning import polling

    class Jobs:
        def cancel(self, name):
            pass

    monkeypatch.setattr(polling, "INTERRUPTED", [])
    before = signal.getsignal(signal.SIGTERM)
    restore = interrupts.take_sigterm()
    assert signal.getsignal(signal.SIGTERM) is interrupts._on_sigterm  # else the SIGTERM below would end pytest
    try:
        with pytest.raises(KeyboardInterrupt):
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(1000):  # the handler runs at the next bytecode boundary
                    pass
            except interrupts.Terminated:
                polling.cancel_on_interrupt(Jobs(), "job-7", enabled=True)
                raise
        assert interrupts.line_and_code("tune") == 143
    finally:
        restore()
    assert signal.getsignal(signal.SIGTERM) == before
    assert capsys.readouterr().err.splitlines()[-1] == (
        "sftflow: interrupted by SIGTERM: tuning job job-7 cancelled: SIGTERM with cancel_job_on_interrupt=true; "
        "rerun with --resubmit-failed to start again")
    polling.INTERRUPTED.clear()
    restore = interrupts.take_sigterm()  # a new command: Ctrl-C again, until a SIGTERM comes
    restore()
    assert interrupts.line_and_code("tune") == 130 and polling.INTERRUPT_CAUSE == ["Ctrl-C"]


@pytest.mark.slow  # a temporary Prefect server starts (~15 s)
def test_sigterm_to_the_process_group_during_a_retry_ends_in_seconds_with_one_line(tmp_path):
    """Issue 25: SIGTERM to the command's process group while a task waits between retries took minutes and ended
    in `ConnectError ... Connection refused` (the temporary server had died with the group). Now the temporary
    server has its own session: the run records its end, the command says what it stopped and exits 143 within
    seconds, and its temporary server is gone."""
    import signal
    import socket
    import time

    import psutil

    with socket.socket() as s:  # a port nothing listens on: every download attempt is refused (transient)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PREFECT_LOGGING_LEVEL="INFO")  # the retries' lines (conftest: WARNING)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    log = tmp_path / "out.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "sftflow.cli.main", "prepare", "--train",
                                 f"http://127.0.0.1:{port}/train.jsonl", "--set", "prefect_server=ephemeral"],
                                cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while "Retry 1/4" not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "Retry 1/4" in log.read_text(), log.read_text()[-3000:]
        servers = [p for p in psutil.Process(proc.pid).children() if "prefect.server.api.server:create_app"
                   in " ".join(p.cmdline())]
        assert len(servers) == 1
        sent = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=60) == 143, log.read_text()[-3000:]
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = log.read_text()
    assert "sftflow: interrupted by SIGTERM: sftflow prepare stopped" in text.splitlines()
    assert "ConnectError" not in text and "Traceback" not in text
    assert "Finished in state Crashed('Execution was aborted by a termination signal.')" in text  # recorded
    assert took < 30, took
    psutil.wait_procs(servers, timeout=10)
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in servers)
