"""``envd up`` (build, then run) and ``envd run`` (run an existing image), and attaching."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from envd_core.cli._envs_common import runner_of, ssh_config
from envd_core.cli.render import info


def _launch_options(func: Any) -> Any:
    """The flags ``up`` and ``run`` share (upstream's names and defaults)."""
    options = [
        click.option("--name", default=None, help="Environment name (default: from --path)."),
        click.option("--path", "-p", default=".", show_default=True, type=click.Path(),
                     help="Project directory (mounted at /home/envd/<dir>)."),
        click.option("--volume", "-v", "volumes", multiple=True, metavar="HOST:CONTAINER",
                     help="Mount a host directory into the environment."),
        click.option("--detach", is_flag=True, help="Do not attach after starting."),
        click.option("--host", default="127.0.0.1", show_default=True,
                     help="Host address the environment's SSH port listens on."),
        click.option("--shm-size", "shm_size", default=2048, show_default=True, type=int,
                     help="Shared memory size (megabytes)."),
        click.option("--cpus", default=None, type=float, help="CPUs, such as 0.5, 1, 2."),
        click.option("--cpu-set", "cpu_set", default=None, metavar="0-3",
                     help="CPUs the environment may use, such as 0-3 or 1,3."),
        click.option("--memory", default=None, help="Memory limit, such as 512M or 2G."),
        click.option("--gpus", default=0, show_default=True, type=int,
                     help="Number of GPUs (overrides config.gpu())."),
        click.option("--gpu-set", "gpu_set", default=None, metavar="all",
                     help="GPU devices: all, count=N or device=1,3 (overrides --gpus)."),
        click.option("--no-gpu", "no_gpu", is_flag=True,
                     help="Start without GPUs even if the image asks for them."),
        click.option("--cap", "caps", multiple=True, metavar="SYS_PTRACE",
                     help="Add a Linux capability."),
        click.option("--force", is_flag=True,
                     help="Replace the environment even if it is running."),
        click.option("--sync", is_flag=True,
                     help="Copy the project into the environment over SSH after it starts "
                          "(for runners without mounts, e.g. envd-server; then `envd sync`)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _options(image: str, params: dict[str, Any]) -> Any:
    from envd_core.environments.names import environment_name
    from envd_core.environments.spec import LaunchOptions

    project = Path(params["path"]).resolve()
    return LaunchOptions(
        name=params["name"] or environment_name(project), image=image, project=project,
        volumes=tuple(params["volumes"]), host=params["host"], shm_size_mb=params["shm_size"],
        cpus=params["cpus"], cpu_set=params["cpu_set"], memory=params["memory"],
        gpus=params["gpus"], gpu_set=params["gpu_set"], no_gpu=params["no_gpu"],
        caps=tuple(params["caps"]),
    )


def _check_early(options: Any) -> None:
    """Every flag checked before a build or a runner call (a bad volume costs nothing)."""
    from envd_core.environments.spec import build_spec

    build_spec(options, {})


def _host_keys(runner: Any, name: str) -> Any:
    """The config dir's host keys, with ``name``'s key started on a thread when it has none and
    the runner takes one (``ssh-keygen`` then runs beside the build or the client's opening)."""
    from envd_core.contexts.store import config_dir
    from envd_core.environments.hostkeys import HostKeys

    keys = HostKeys(config_dir())
    if runner.accepts_host_key:
        keys.prepare(name)
    return keys


def _start(app: Any, runner: Any, options: Any, params: dict[str, Any], timeout: float,
           alias: str, host_keys: Any, image_labels: dict[str, str] | None = None,
           opened: Any = None) -> Any:
    from envd_core import timings
    from envd_core.contexts.store import config_dir
    from envd_core.environments.keys import ensure_key_pair
    from envd_core.environments.operations import launch

    key = ensure_key_pair(config_dir())
    if opened is not None:
        opened.result()  # the runner's client, opened on a thread (run)
    environment = launch(runner, options, force=params["force"], timeout=timeout,
                         ssh_config=ssh_config(), identity_file=key, ssh_alias=alias,
                         image_labels=image_labels, progress=info, host_keys=host_keys)
    info(f"Environment {environment.name} is running ({environment.image})")
    if environment.ssh is not None:
        info(f"SSH entry: ssh {alias}.envd (port {environment.ssh.port})")
    timings.mark("launch output")
    timings.dump()  # what follows (sync, attach) is the user's time, not envd's
    if params["sync"]:
        from envd_core.cli.sync import sync_once

        sync_once(options.project, alias)
    if not params["detach"]:
        code = attach(runner, environment, alias)
        if code:
            sys.exit(code)  # run() drops click.Exit codes (main returns them)
    return environment


def _runner_ready(builder: Any, runner: Any, name: str, force: bool) -> None:
    """What ``up`` checks before its solve, on a thread while the build file evaluates: the
    pair can work together, the name can be (re)used. The runner's client (for Docker: the SDK
    import and the version request) is opened here, so ``launch`` finds it ready."""
    from envd_core.environments.operations import check_pair, check_replaceable

    check_pair(builder, runner)
    check_replaceable(runner, name, force=force)


@click.command("up")
@click.option("--tag", "-t", default=None, help="Image name:tag (default: <dir>:dev).")
@click.option("--from", "-f", "from_spec", default=None, metavar="FILE[:FUNC]",
              help="Build file and function (default: build.envd:build).")
@_launch_options
@click.option("--timeout", default="30s", show_default=True,
              help="How long to wait for the environment to run.")
@click.option("--use-proxy", "--proxy", "use_proxy", is_flag=True,
              help="Pass HTTP_PROXY/HTTPS_PROXY/NO_PROXY to build steps.")
@click.option("--export-cache", "--ec", "export_cache", multiple=True, metavar="SPEC",
              help="Export the build cache, e.g. type=registry,ref=host/cache:tag.")
@click.option("--import-cache", "--ic", "import_cache", multiple=True, metavar="SPEC",
              help="Import a build cache, e.g. type=registry,ref=host/cache:tag.")
@click.option("--platform", default=None, metavar="OS/ARCH", help="Target platform.")
@click.option("--ca-bundle", default=None, type=click.Path(),
              help="Extra CA bundle for networked build steps (never stored in the image).")
@click.option("--progress", default=None, type=click.Choice(["auto", "tty", "plain", "json"]),
              help="Build progress output.")
@click.pass_obj
def up(app: Any, /, **params: Any) -> None:
    """Build the environment, start it, write its SSH entry and attach."""
    from envd_core import timings

    timings.start()
    import attrs

    from envd_core.envdfile.buildflags import default_tag, normalize_tag
    from envd_core.environments.operations import Background
    from envd_core.environments.spec import parse_duration

    timeout = parse_duration(params["timeout"])
    project = Path(params["path"])
    if not project.is_dir():
        raise click.BadParameter(f"`{params['path']}` is not a directory", param_hint="--path")
    tag = normalize_tag(params["tag"] or default_tag(project.resolve()))
    options = _options(tag, params)
    _check_early(options)
    resolved = app.resolve()
    builder = app.contexts.builder_for(resolved.context)
    runner = app.contexts.runner_for(resolved.context)
    timings.mark("up: flags, context")
    # checked on a thread while the build file evaluates (in a forked child: the other core),
    # and joined before the solve, so a pair that cannot work still fails before any building
    ready = Background(_runner_ready, builder, runner, options.name, params["force"])
    host_keys = _host_keys(runner, options.name)
    # imported after the thread starts: it begins its docker SDK import meanwhile
    from envd_core.pipeline.execute import BuildRequest, run_build

    timings.mark("up: build imports")
    mode = params["progress"] or os.environ.get("BUILDKIT_PROGRESS") or "auto"
    request = BuildRequest(
        path=project, from_spec=params["from_spec"], tag=tag,
        export_cache=params["export_cache"], import_cache=params["import_cache"],
        platform=params["platform"], progress=mode, use_proxy=params["use_proxy"],
        # upstream's `up --force` is "force rebuild and run": it never skips the build
        ca_bundle=params["ca_bundle"], reuse=not params["force"],
    )
    if runner.pulls_images:
        # as upstream for envd-server: the runner pulls the image, so the build pushes it
        request = attrs.evolve(request, output=f"type=image,name={tag},push=true")
    told: list[str] = []

    def announce(platform: str) -> None:
        ready.result()
        timings.mark("up: wait for the runner checks")
        if not told:
            told.append(platform)
            info(f"Building {tag} on {builder.url} (context `{resolved.context.name}`)")

    try:
        try:
            results = run_build(request, builder=builder, runner=runner,
                                extra_functions=app.plugins.build_functions(),
                                warn=lambda message: info(f"warning: {message}"),
                                announce=announce)
            ready.result()
        except BaseException:
            host_keys.discard_prepared(options.name)  # no environment was made: leave no key
            raise
        if results and results[0].reused:
            info(f"{tag} is up to date: same definition as its last build, nothing to solve")
        timings.mark("up: build done")
        # upstream names `up`'s SSH host after the raw directory name; ours is the environment
        # name for both commands, so `down` always finds the entry it must remove
        _start(app, runner, options, params, timeout, options.name, host_keys,
               image_labels=results[0].labels if results else None)
    finally:
        timings.dump()


@click.command("run")
@click.option("--image", default=None, help="Image to run (default: <dir>:dev).")
@_launch_options
@click.option("--timeout", default="30m0s", show_default=True,
              help="How long to wait for the environment to run.")
@click.pass_obj
def run(app: Any, /, **params: Any) -> None:
    """Start an environment from an existing image."""
    from envd_core import timings

    timings.start()
    from envd_core.environments.operations import Background
    from envd_core.environments.spec import parse_duration

    timeout = parse_duration(params["timeout"])
    image = params["image"]
    if not image:  # the build-file package (~25 ms of imports) only for the default tag
        from envd_core.envdfile.buildflags import default_tag, normalize_tag

        image = normalize_tag(default_tag(Path(params["path"]).resolve()))
    options = _options(image, params)
    _check_early(options)
    runner = runner_of(app)
    # the runner's client (the docker SDK import, the version request) opens on a thread while
    # this one makes the key pair and the host key
    client = Background(runner.status)
    host_keys = _host_keys(runner, options.name)
    timings.mark("run: flags, context")
    try:
        _start(app, runner, options, params, timeout, options.name, host_keys, opened=client)
    except BaseException:
        host_keys.discard_prepared(options.name)  # unless launch took it (no such image…)
        raise
    finally:
        timings.dump()


def attach(runner: Any, environment: Any, alias: str) -> int:
    """An interactive shell: ``ssh <alias>.envd`` with the system OpenSSH client when the
    environment's SSH server answers (dev images), else the runner's exec with a terminal."""
    import shutil
    import subprocess

    from envd_core.environments.names import ssh_host
    from envd_core.environments.operations import shell_argv, ssh_answers

    ssh = environment.ssh
    answers = False
    if ssh is not None:
        host = "127.0.0.1" if ssh.host in ("0.0.0.0", "") else ssh.host
        answers = ssh_answers(host, ssh.port)
    if answers and shutil.which("ssh"):
        import pwd

        # OpenSSH reads ~/.ssh/config from the passwd entry's home, never from $HOME: name the
        # file whenever ours is elsewhere (HOME changed, ENVD's own ssh config path)
        config = ssh_config().path
        home = Path(pwd.getpwuid(os.getuid()).pw_dir)
        extra = [] if config == home / ".ssh" / "config" else ["-F", str(config)]
        return subprocess.call(["ssh", *extra, ssh_host(alias)])
    why = ("no `ssh` client is installed here" if answers else
           "its image has no SSH server (built without base(dev=True))")
    info(f"Attaching to `{environment.name}` through runner `{runner.name}`'s exec: {why}; "
         "leave with `exit`")
    return exec_shell(runner, environment.name, shell_argv(environment),
                      workdir=None)


class _TextSink:
    """A binary writer onto a text stream (stdout replaced in-process, e.g. by tests)."""

    def __init__(self, text: Any) -> None:
        self.text = text

    def write(self, data: bytes) -> int:
        self.text.write(data.decode("utf-8", "replace"))
        return len(data)

    def flush(self) -> None:
        self.text.flush()


def _binary(stream: Any) -> Any:
    return getattr(stream, "buffer", None) or _TextSink(stream)


def _stdin_tty() -> int | None:
    """The file descriptor of stdin when it is a terminal."""
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):
        return None
    return fd if os.isatty(fd) else None


def exec_shell(runner: Any, name: str, argv: list[str], *, workdir: str | None,
               interactive: bool = True) -> int:
    """Run ``argv`` in ``name``: wired to this terminal in raw mode when stdin is one (and the
    runner has TTYs); otherwise with our pipes, stdin only when ``interactive``."""
    stdin_fd = _stdin_tty() if interactive else None
    out = _binary(sys.stdout)
    if stdin_fd is None or not runner.supports_tty:
        source = getattr(sys.stdin, "buffer", None) if interactive else None
        return int(runner.exec(name, argv, stdin=source, stdout=out,
                               stderr=_binary(sys.stderr), workdir=workdir))
    import termios
    import tty

    saved = termios.tcgetattr(stdin_fd)
    raw_in = open(stdin_fd, "rb", buffering=0, closefd=False)  # noqa: SIM115 - reads return at once
    columns, lines = os.get_terminal_size(stdin_fd)
    env = {"TERM": os.environ.get("TERM", "xterm"), "COLUMNS": str(columns), "LINES": str(lines)}
    try:
        tty.setraw(stdin_fd, termios.TCSANOW)  # keep what the user typed ahead
        return int(runner.exec(name, argv, tty=True, stdin=raw_in, stdout=out, env=env,
                               workdir=workdir))
    finally:
        termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved)
