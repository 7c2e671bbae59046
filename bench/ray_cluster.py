"""A real Ray cluster of several nodes on this machine, and Serve applications on it, for tests and benchmarks.

Every node is a ``ray start --block`` process in a process group of its own, with one temporary directory, fresh
ports and one cluster token (``RAY_AUTH_MODE=token``), so an in-process Ray instance elsewhere is untouched. A node
can be stopped (its whole group killed, as a machine going away) and another started in its place.
``serve run`` deploys a rendered Serve config; Ctrl-C to it deletes the application.

    with LocalCluster(head_cpus=2, head_resources={"head": 100}) as cluster:
        worker = cluster.add_node(num_cpus=1, resources={"worker": 100})
        serve = cluster.serve_run(config_path, log_path)
        ...
        cluster.stop_node(worker)
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(check: Callable[[], bool], what: str, seconds: float, process: subprocess.Popen | None = None) -> None:  # type: ignore[type-arg]
    """Poll ``check`` every half second; raise naming ``what`` after ``seconds``, or as soon as ``process`` exits."""
    deadline = time.monotonic() + seconds
    while not check():
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {seconds:.0f} s")
        time.sleep(0.5)


def stop_group(process: subprocess.Popen, first: int, grace_s: float) -> None:  # type: ignore[type-arg]
    """Signal ``process`` (a group leader we started), wait, then kill what is left of its group."""
    if process.poll() is None:
        process.send_signal(first)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # our own group only: that node's raylet, GCS and workers
    except ProcessLookupError:
        pass
    process.wait(timeout=10)


def healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


STATUS_SCRIPT = """
import json, sys, ray
from ray import serve
ray.init(address=sys.argv[1], log_to_driver=False)
status = serve.status()
print(json.dumps({name: {d: dict(s.replica_states) for d, s in app.deployments.items()}
                  for name, app in status.applications.items()}))
"""


class LocalCluster:
    """A head node (and worker nodes added on demand) on 127.0.0.1; a context manager that stops them all."""

    def __init__(
        self,
        head_cpus: int = 2,
        head_gpus: int = 0,
        head_resources: dict[str, float] | None = None,
        metrics_port: int | None = None,
    ) -> None:
        self.temp = Path(tempfile.mkdtemp(prefix="msr-", dir="/tmp"))  # short: Ray's socket paths stay < 108 bytes
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        self.env = env | {
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(32),
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        self.gcs_port = free_port()
        self.address = f"127.0.0.1:{self.gcs_port}"
        self.metrics_port = metrics_port or free_port()
        self.nodes: list[subprocess.Popen] = []  # type: ignore[type-arg]
        self.serve_runs: list[subprocess.Popen] = []  # type: ignore[type-arg]
        self._head_args = ["--head", "--port", str(self.gcs_port), "--num-gpus", str(head_gpus)]
        self._head_args += ["--num-cpus", str(head_cpus), "--include-dashboard", "false"]
        self._head_args += ["--dashboard-port", str(free_port()), "--ray-client-server-port", str(free_port())]
        self._head_args += ["--dashboard-agent-listen-port", str(free_port())]
        self._head_args += ["--metrics-export-port", str(self.metrics_port)]
        if head_resources:
            self._head_args += ["--resources", json.dumps(head_resources)]

    def __enter__(self) -> LocalCluster:
        self.head = self._start(self._head_args)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self, args: list[str]) -> subprocess.Popen:  # type: ignore[type-arg]
        node = subprocess.Popen(
            [str(BIN / "ray"), "start", "--block", "--node-ip-address", "127.0.0.1", "--temp-dir", str(self.temp)]
            + args,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.nodes.append(node)
        return node

    def add_node(self, num_cpus: int = 1, resources: dict[str, float] | None = None) -> subprocess.Popen:  # type: ignore[type-arg]
        """A worker node joining the head, with its CPUs and custom resources; waits until the cluster counts it."""
        before = self.alive_nodes()
        args = ["--address", self.address, "--num-cpus", str(num_cpus), "--dashboard-agent-listen-port"]
        args += [str(free_port()), "--metrics-export-port", str(free_port())]
        if resources:
            args += ["--resources", json.dumps(resources)]
        node = self._start(args)
        wait_until(lambda: bool(self.alive_nodes() - before), "the worker node joining the cluster", 120, node)
        return node

    def stop_node(self, node: subprocess.Popen) -> None:  # type: ignore[type-arg]
        """Stop a worker node at once, as a machine that goes away (its whole process group killed)."""
        stop_group(node, signal.SIGKILL, 5)
        self.nodes.remove(node)

    def alive_nodes(self) -> set[str]:
        """The ids of the nodes the cluster counts alive (a node killed a moment ago may still be among them)."""
        script = "import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); "
        script += "print(' '.join(n['NodeID'] for n in ray.nodes() if n['Alive']))"
        done = self.python(script)
        if done.returncode != 0 or not done.stdout.strip():
            return set()
        return set(done.stdout.strip().splitlines()[-1].split())

    def python(self, script: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        """Run ``script`` with the cluster's address as its first argument, in the cluster's environment."""
        return subprocess.run(
            [sys.executable, "-c", script, self.address],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )

    def serve_status(self) -> dict[str, dict[str, dict[str, int]]]:
        """Each application's deployments and their replicas by state (``serve.status()``)."""
        done = self.python(STATUS_SCRIPT)
        if done.returncode != 0:
            raise RuntimeError(f"serve.status() failed: {done.stderr[-2000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    def serve_run(self, config: Path, log: Path) -> subprocess.Popen:  # type: ignore[type-arg]
        """``serve run config`` against this cluster, its output in ``log``; stopped with the cluster."""
        process = subprocess.Popen(
            [str(BIN / "serve"), "run", str(config), "--address", self.address],
            env=self.env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.serve_runs.append(process)
        return process

    def render(self, pool: dict[str, Any], name: str, *flags: str) -> Path:
        """``moesaic deploy render`` of ``pool`` into the cluster's temporary directory; the Serve config's path.
        The nodes are this machine: its engine environment, where there is one, runs the experts on vLLM."""
        import yaml

        from experts.config import find_engine_environment

        engine_python = find_engine_environment().python
        if engine_python and "--engine-python" not in flags:
            flags = (*flags, "--engine-python", engine_python)

        (self.temp / f"{name}.yaml").write_text(yaml.safe_dump(pool), encoding="utf-8")
        command = [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "deploy",
            "render",
            "--pool",
            str(self.temp / f"{name}.yaml"),
        ]
        command += ["--out", str(self.temp / name), *flags]
        subprocess.run(command, env=self.env, check=True, capture_output=True, timeout=120)
        return self.temp / name / "serve.yaml"

    def serve_pool(self, pool: dict[str, Any], name: str, wait_s: float = 240, head_proxy_only: bool = False) -> str:
        """Render ``pool`` (its ``serve.http.port`` set), ``serve run`` it and wait until it answers; its URL. A
        start that fails raises with the tail of ``serve run``'s output.

        ``head_proxy_only``: Serve's HTTP proxy on the head alone. The rendered config puts one on every node, as a
        cluster of machines wants; nodes sharing this machine then share the port, and a client's connection may
        land on the proxy of a node that a test stops."""
        import yaml

        port = pool["serve"]["http"]["port"]
        log = self.temp / f"{name}-serve-run.log"
        config = self.render(pool, name)
        if head_proxy_only:
            rendered = yaml.safe_load(config.read_text(encoding="utf-8"))
            config.write_text(yaml.safe_dump({**rendered, "proxy_location": "HeadOnly"}), encoding="utf-8")
        process = self.serve_run(config, log)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until(lambda: healthy(url), f"pool {name} answering through Serve's proxy", wait_s, process)
        except RuntimeError as error:
            raise RuntimeError(f"{error}\n{log.read_text(errors='replace')[-3000:]}") from None
        return url

    def close(self) -> None:
        for process in self.serve_runs:
            stop_group(process, signal.SIGINT, 60)  # serve run's Ctrl-C: delete the app, stop its replicas
        for node in reversed(self.nodes):
            stop_group(node, signal.SIGTERM, 15)
        shutil.rmtree(self.temp, ignore_errors=True)
