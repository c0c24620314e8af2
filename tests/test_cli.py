"""The command line as a user runs it: a separate process, real exit codes and output."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("M365_", "SNAPSHOT_", "KEY_VAULT", "IDENTITY_", "AZURE_"))}


def test_demo_collects_a_simulated_tenant(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "connector", "demo", "--users", "300", "--out", str(out)],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "run " in proc.stdout and ": succeeded" in proc.stdout and "manifest:" in proc.stdout
    latest = next(out.glob("tenants/*/latest.json"))
    manifest = json.loads((out / json.loads(latest.read_text())["manifest"]).read_text())
    assert manifest["status"] == "succeeded" and manifest["trigger"] == "demo"
    users = gzip.decompress(next(out.glob("tenants/*/runs/*/users.jsonl.gz")).read_bytes()).splitlines()
    assert len(users) == 300


def test_run_without_settings_exits_2_and_names_them(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "connector", "run", "--out", str(tmp_path)], cwd=ROOT,
                          env=_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "M365_TENANT_ID" in proc.stderr and "M365_CLIENT_ID" in proc.stderr


def test_unknown_dataset_on_the_command_line_is_refused(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "connector", "run", "--datasets", "mailboxes"], cwd=ROOT,
                          env=_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "mailboxes" in proc.stderr


def test_unreachable_snapshot_storage_is_a_clear_error(tmp_path):
    """Blob Storage that cannot be reached: exit 1 with a one-line reason, no traceback."""
    from simulator import Simulator, TenantSpec

    with Simulator(TenantSpec(seed=3, users=50)) as sim:
        env = {**_env(), **sim.env(), "M365_DATASETS": "organization",
               "SNAPSHOT_CONNECTION_STRING": "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
               "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
               "BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;"}
        proc = subprocess.run([sys.executable, "-m", "connector", "run"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "SNAPSHOT_CONNECTION_STRING" in proc.stderr


# -- conventions ---------------------------------------------------------------------------------------------------

def _cli(*args: str, env: dict[str, str] | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "connector", *args], cwd=ROOT, env=env or _env(),
                          capture_output=True, text=True, timeout=timeout)


def test_global_options_go_before_or_after_the_command():
    from connector import __version__

    for args in (["--version"], ["check", "--version"], ["run", "--version"]):
        proc = _cli(*args)
        assert (proc.returncode, proc.stdout.strip()) == (0, f"m365-connector {__version__}"), args
    # -v and -q are accepted on either side (the missing settings then exit 2, named).
    for args in (["-v", "check"], ["check", "-v"], ["-q", "run"], ["run", "-q"], ["-v", "run", "-q"]):
        proc = _cli(*args)
        assert proc.returncode == 2 and "M365_TENANT_ID" in proc.stderr, (args, proc.stderr)


def test_global_option_before_the_command_is_not_reset_by_it():
    from connector.cli.main import build_parser

    parser = build_parser()
    assert parser.parse_args(["-v", "run"]).verbose is True
    assert parser.parse_args(["run", "-v"]).verbose is True
    assert parser.parse_args(["run"]).verbose is False
    assert parser.parse_args(["-q", "check", "--json"]).quiet is True


def test_datasets_take_commas_and_spaces(capsys):
    from connector.cli.main import build_parser

    parser = build_parser()
    args = parser.parse_args(["run", "--datasets", "users,groups", "devices", "--datasets", "users"])
    assert args.datasets == ["users", "groups", "devices"]
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["run", "--datasets", "users,mailboxes"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "mailboxes" in err and "subscribed_skus" in err  # names the valid ones


def _actions(parser):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from ((f"{name} {a}", h) for a, h in _actions(sub))
        else:
            yield "/".join(action.option_strings) or action.dest, action.help


def test_every_command_documents_its_exit_codes():
    import argparse

    from connector.cli.main import COMMANDS, EXIT_CODES, build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == set(COMMANDS)
    missing = sorted(set(COMMANDS) - set(EXIT_CODES))
    assert missing == [], (f"add the exit codes of {missing} to connector.cli.main.EXIT_CODES "
                            "(shown in --help and README)")
    for name, parser in sub.choices.items():
        assert "exit codes:" in (parser.epilog or ""), name


def test_every_option_has_help():
    from connector.cli.main import build_parser

    actions = list(_actions(build_parser()))
    assert len(actions) > 20
    missing = [name for name, text in actions if not text or len(text) < 10]
    assert missing == []


def test_run_json_prints_the_manifest_and_no_progress(tmp_path):
    proc = _cli("demo", "--json", "--users", "150", "--out", str(tmp_path), "--datasets", "organization,users",
                "--progress-every", "0.05")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(proc.stdout)
    assert manifest["status"] == "succeeded" and set(manifest["datasets"]) == {"organization", "users"}
    assert Path(manifest["manifestLocation"]).is_file()
    assert "collection progress" not in proc.stderr and "Starting" not in proc.stdout


def test_quiet_prints_nothing_and_keeps_the_exit_code(tmp_path):
    proc = _cli("-q", "demo", "--users", "150", "--out", str(tmp_path), "--datasets", "organization")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


def test_progress_lines_when_stderr_is_not_a_terminal(tmp_path):
    from simulator import Simulator, TenantSpec

    with Simulator(TenantSpec(seed=5, users=600, latency=0.15)) as sim:
        env = {**_env(), **sim.env(), "SNAPSHOT_DIR": str(tmp_path)}
        args = ("run", "--datasets", "users,user_sign_in_activity", "--progress-every", "0.3")
        proc = _cli(*args, env=env)
        as_json = _cli(*args, "--json", env=env)
        quiet = _cli("-q", *args, env=env)
    # The same slow run: progress lines, except with --json or -q.
    assert (as_json.returncode, quiet.returncode) == (0, 0)
    assert "collection progress" not in as_json.stderr and json.loads(as_json.stdout)["status"] == "succeeded"
    assert (quiet.stdout, quiet.stderr) == ("", "")
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "collection progress" in line]
    assert lines, proc.stderr
    assert "user_sign_in_activity=running/" in "".join(lines) and " requests/" in lines[-1]
    assert "run " in proc.stdout and ": succeeded" in proc.stdout  # the summary still follows


def test_live_table_on_a_terminal(tmp_path):
    import os
    import pty
    import select

    from simulator import Simulator, TenantSpec

    master, slave = pty.openpty()
    with Simulator(TenantSpec(seed=5, users=600, latency=0.15)) as sim:  # slow enough for several frames
        env = {**_env(), **sim.env(), "SNAPSHOT_DIR": str(tmp_path)}
        proc = subprocess.Popen([sys.executable, "-m", "connector", "run", "--datasets", "users,user_sign_in_activity"],
                                cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
        os.close(slave)
        screen = b""
        while True:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                screen += chunk
            elif proc.poll() is not None:
                break
        os.close(master)
        out = proc.stdout.read().decode()
        assert proc.wait(timeout=60) == 0
    text = screen.decode(errors="replace")
    assert "records/s" in text and "429s" in text and "running" in text and "users" in text
    assert "collection progress" not in text  # the table replaces the log lines
    assert ": succeeded" in out


def test_partial_run_prints_one_grant_line_for_every_missing_permission(tmp_path):
    from simulator import Simulator, TenantSpec
    from simulator.tenant import DEFAULT_ROLES

    roles = frozenset(DEFAULT_ROLES) - {"AuditLog.Read.All", "Reports.Read.All"}
    with Simulator(TenantSpec(seed=6, users=100, roles=roles)) as sim:
        env = {**_env(), **sim.env(), "SNAPSHOT_DIR": str(tmp_path),
               "M365_DATASETS": "users,user_sign_in_activity,mfa_registration,report_mailbox_usage_detail,"
                                "report_teams_user_activity_user_detail"}
        run = _cli("run", env=env)
        check = _cli("check", env=env)
    assert run.returncode == 3, run.stdout + run.stderr
    grant = [line for line in run.stdout.splitlines() if line.startswith("grant these permissions")]
    assert len(grant) == 1 and "AuditLog.Read.All, Reports.Read.All" in grant[0], run.stdout
    assert run.stdout.count("Grant admin consent") == 1 and "In the Entra admin center" not in run.stdout
    assert "warning [missing_permission] (user_sign_in_activity, mfa_registration)" in run.stdout
    assert check.returncode == 3, check.stdout
    assert [line for line in check.stdout.splitlines() if line.startswith("grant these")] == grant[:1]
    assert "fix: Grant" not in check.stdout


def test_pip_install_gives_a_working_m365_connector_command(tmp_path):
    """Builds the package from a copy of the tree (no build/ left in the repository) without its
    dependencies, which this interpreter already has, and runs the installed console command."""
    import shutil

    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "requirements.txt", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "connector", src / "connector", ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--disable-pip-version-check", "--target", str(target), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    meta = next(target.glob("m365_inventory_connector-*.dist-info")) / "METADATA"
    requires = sorted(line.split(":", 1)[1].strip().split("<")[0].split(">")[0]
                      for line in meta.read_text().splitlines() if line.startswith("Requires-Dist:"))
    wanted = sorted(line.split("<")[0].split(">")[0].split("=")[0].strip()
                    for line in (ROOT / "requirements.txt").read_text().splitlines()
                    if line.strip() and not line.startswith("#"))
    assert requires == wanted
    env = {**_env(), "PYTHONPATH": str(target)}
    command = target / "bin" / "m365-connector"
    version = subprocess.run([str(command), "--version"], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("m365-connector "), version.stderr
    run = subprocess.run([str(command), "run", "--out", str(tmp_path / "out")], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "M365_TENANT_ID" in run.stderr  # the real CLI, from the installed package


# -- the tenant lock, connectivity errors, check --json (issues 11.9, 11.11) -----------------------------------

@pytest.fixture(scope="module")
def cli_sim():
    from simulator import Simulator, TenantSpec

    with Simulator(TenantSpec(seed=3, users=50)) as sim:
        yield sim


def _sim_run(env: dict[str, str], args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "connector", *args], cwd=ROOT, env={**_env(), **env},
                          capture_output=True, text=True, timeout=timeout)


def test_cli_takes_the_tenant_lock(tmp_path):
    """A second run into the same folder while one holds the tenant's lock exits 4 and names the holder;
    the Function's worker takes the same lock."""
    from connector.store.local import LocalStore
    from connector.store.locks import TenantLock
    from simulator import Simulator, TenantSpec

    out = tmp_path / "out"
    with Simulator(TenantSpec(seed=3, users=50)) as sim:
        env = {**sim.env(), "M365_DATASETS": "organization"}
        lock = TenantLock(LocalStore(out), sim.tenant_id.lower())
        assert lock.acquire("20260101T000000Z-abcdef", "timer")
        try:
            before = sim.request_count(service="graph")
            proc = _sim_run(env, ["run", "--out", str(out)])
            assert proc.returncode == 4, proc.stdout + proc.stderr
            assert "20260101T000000Z-abcdef" in proc.stderr and "run.lock" in proc.stderr
            assert sim.request_count(service="graph") == before
        finally:
            lock.release()
        proc = _sim_run(env, ["run", "--out", str(out)])
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_concurrent_cli_runs_into_one_folder_are_serialised(tmp_path):
    from simulator import Simulator, TenantSpec

    out = tmp_path / "out"
    with Simulator(TenantSpec(seed=3, users=300)) as sim:
        sim.spec.latency = 0.3  # the first run is still collecting when the second starts
        env = {**_env(), **sim.env(), "M365_DATASETS": "organization,users"}
        procs = [subprocess.Popen([sys.executable, "-m", "connector", "run", "--out", str(out)], cwd=ROOT, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 4], results  # one collected, the other was refused instead of racing it
    manifests = list(out.glob("tenants/*/runs/*/manifest.json"))
    assert len(manifests) == 1
    latest = json.loads(next(out.glob("tenants/*/latest.json")).read_text())
    assert manifests[0].parent.name == latest["runId"]


@pytest.mark.parametrize(("over", "setting", "code"), [
    ({"M365_GRAPH_ENDPOINT": "https://127.0.0.1:9"}, "M365_GRAPH_ENDPOINT", "graph_unreachable"),
    ({"SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt"}, "SSL_CERT_FILE", "graph_tls"),
    ({"M365_AUTHORITY_HOST": "https://127.0.0.1:9"}, "M365_AUTHORITY_HOST", "authority_unreachable"),
    ({"REQUESTS_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt"}, "REQUESTS_CA_BUNDLE", "authority_tls"),
], ids=["graph-down", "graph-tls", "authority-down", "authority-tls"])
def test_unreachable_graph_and_untrusted_certificates_are_one_line(cli_sim, tmp_path, monkeypatch, capsys, over,
                                                                     setting, code):
    from connector.cli.main import main
    from tests.conftest import apply_env

    # No retries: a refused connection is otherwise retried with backoff for about 45 s (progress lines meanwhile).
    apply_env(monkeypatch, {**cli_sim.env(), "M365_DATASETS": "organization,users", "M365_MAX_RETRIES": "0", **over})
    assert main(["run", "--out", str(tmp_path / "out")]) == 1
    out = capsys.readouterr()
    assert out.err.startswith(f"error: {setting}: ") and len(out.err.strip().splitlines()) == 1, out.err
    assert "Traceback" not in out.err and "SNAPSHOT_" not in out.err
    if code.startswith("graph"):  # (token requests retry for about 5 s: the text form is tested once)
        assert main(["check"]) == 1
        out = capsys.readouterr()
        assert setting in out.out and "Traceback" not in out.out + out.err
    assert main(["check", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    error = report["token"].get("error") or report["graph"]["error"]
    assert report["ok"] is False and error["code"] == code and setting in json.dumps(error)


def test_unreachable_graph_in_a_real_process_with_and_without_v(cli_sim, tmp_path):
    env = {**cli_sim.env(), "M365_DATASETS": "organization,users", "M365_GRAPH_ENDPOINT": "https://127.0.0.1:9",
           "M365_MAX_RETRIES": "0"}
    run = _sim_run(env, ["run", "--out", str(tmp_path / "out")])
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.strip().splitlines() == [
        "error: M365_GRAPH_ENDPOINT: https://127.0.0.1:9 cannot be reached (connection refused). Check the setting "
        "(unset it to use the cloud's default endpoint), DNS, proxy and firewall. (-v shows details)"]
    verbose = _sim_run(env, ["-v", "run", "--out", str(tmp_path / "out")])
    assert "Traceback" in verbose.stderr and "ConnectError" in verbose.stderr


def test_check_json_stays_json_on_failure(tmp_path):
    proc = _sim_run({"M365_TENANT_ID": "not a tenant"}, ["check", "--json"])
    report = json.loads(proc.stdout)
    assert proc.returncode == 2 and report["ok"] is False and report["error"]["code"] == "configuration"
    assert {p["setting"] for p in report["error"]["problems"]} >= {"M365_TENANT_ID", "M365_CLIENT_ID"}


def test_run_full_reads_delta_datasets_in_full(cli_sim, tmp_path, monkeypatch, capsys):
    from connector.cli.main import main
    from tests.conftest import apply_env

    apply_env(monkeypatch, {**cli_sim.env(), "M365_DATASETS": "groups"})
    out = str(tmp_path / "out")
    modes = []
    for args in (["run", "--out", out], ["run", "--out", out], ["run", "--full", "--out", out, "--json"]):
        assert main(args) == 0
        manifest = json.loads(Path(out, "tenants", cli_sim.tenant_id, "latest.json").read_text())
        entry = json.loads(Path(manifest["manifest"] if Path(manifest["manifest"]).is_absolute()
                                else Path(out, manifest["manifest"])).read_text())["datasets"]["groups"]["delta"]
        modes.append((entry["mode"], entry.get("reason", "").split(":")[0]))
    assert modes == [("full", "no_delta_link"), ("delta", ""), ("full", "full_requested")]
