"""`cxstack keys` and `serve --bootstrap-admin` as a person uses them, against a real store and server."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import httpx
from tests.processes import free_port
from typer.testing import CliRunner

from cxstack.api.app import api_server
from cxstack.api.keys import ApiKeys
from cxstack.app import Settings, build, build_engine, open_store
from cxstack.cli.main import app
from cxstack.workspace.loader import load_workspace

runner = CliRunner()


def test_keys_create_list_revoke(tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    created = runner.invoke(
        app, ["keys", "create", "--role", "integration", "--name", "crm sync", "--home", home]
    )
    assert created.exit_code == 0, created.output
    key = created.stdout.strip()
    assert re.fullmatch(r"cxk_[a-z0-9]{8}_[A-Za-z0-9_-]{43}", key)
    assert "shown once" in created.stderr

    store = open_store(Settings(home=Path(home)))
    verified = ApiKeys(store).verify(key)
    assert verified is not None and verified.role.value == "integration" and verified.name == "crm sync"

    listed = runner.invoke(app, ["keys", "list", "--home", home])
    assert listed.exit_code == 0 and f"cxk_{verified.id}" in listed.output and "crm sync" in listed.output
    assert key not in listed.output and "active" in listed.output

    revoked = runner.invoke(app, ["keys", "revoke", f"cxk_{verified.id}", "--home", home])
    assert revoked.exit_code == 0, revoked.output
    assert "within 30 s" in revoked.output
    assert ApiKeys(store).verify(key) is None
    assert runner.invoke(app, ["keys", "revoke", "cxk_00000000", "--home", home]).exit_code == 1


def test_keys_create_refuses_bad_input(tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    bad_role = runner.invoke(app, ["keys", "create", "--role", "root", "--name", "x", "--home", home])
    assert bad_role.exit_code == 2 and "admin, agent, integration, viewer" in bad_role.output
    bad_channel = runner.invoke(
        app, ["keys", "create", "--role", "viewer", "--name", "x", "--channel", "api", "--home", home]
    )
    assert bad_channel.exit_code == 2 and "integration" in bad_channel.output


def test_the_listening_hook_runs_once_the_socket_accepts(tmp_path: Path, shop_path: Path) -> None:
    engine = build_engine(load_workspace(shop_path), embedder_name="hashing")
    cx = build(Settings(home=tmp_path / "home", embedder="hashing"), engine=engine)
    port = free_port()
    seen: dict[str, object] = {}

    def listening() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            seen["accepted"] = True
        server.should_exit = True

    server = api_server(cx, port=port, log_level="warning", on_listening=listening)
    server.run()
    assert seen["accepted"] is True


def test_serve_bootstrap_admin_prints_a_working_key_and_desk_link_once_listening(
    tmp_path: Path, shop_path: Path
) -> None:
    home = tmp_path / "home"
    port = free_port()
    command = [
        sys.executable, "-m", "cxstack.cli.main", "serve", str(shop_path), "--port", str(port),
        "--no-backoffice", "--runtime", "process", "--home", str(home), "--embedder", "hashing",
        "--bootstrap-admin",
    ]  # fmt: skip
    keys = []
    for _ in range(2):  # a second start replaces the first key
        paths = [str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")]
        env = {**os.environ, "COLUMNS": "300", "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        try:
            lines = []
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                if "escalation desk" in line:
                    break
            output = "".join(lines)
            assert "web chat:" in output, output
            assert "Uvicorn running on" in output[: output.index("web chat:")]  # printed once listening
            desk = re.search(r"http://127\.0\.0\.1:\d+/escalations#key=(cxk_\S+)", output)
            assert desk is not None, output
            key = desk.group(1)
            me = httpx.get(
                f"http://127.0.0.1:{port}/v1/me", headers={"Authorization": f"Bearer {key}"}, timeout=10
            )
            assert (
                me.status_code == 200
                and me.json()["role"] == "admin"
                and me.json()["name"] == "make run demo"
            )
            keys.append(key)
        finally:
            proc.terminate()
            proc.wait(30)
    store = open_store(Settings(home=home))
    assert ApiKeys(store).verify(keys[0]) is None and ApiKeys(store).verify(keys[1]) is not None
