"""The container image keeps its promises.

Statically (the normal suite; building the image is scripts/ci-image-smoke, a CI step of its
own): a non-root fixed uid, HEALTHCHECK on /readyz, STOPSIGNAL SIGTERM, OCI labels, a pinned
base, no build tools in the final stage, and the paths README, the image's config and
examples/compose.yaml name are the ones the Containerfile sets.

Behaviour: `serve --generate-admin-token` writes a token once (0600, never printed) and the
daemon then refuses requests without it on a non-loopback listener; the HEALTHCHECK probe
follows the configured port and fails on anything but 200.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import stat
import tomllib
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from nessus_pool.cli import main as cli_main
from nessus_pool.config import load_config, parse_listen
from nessus_pool.container import generate_admin_tokens, healthcheck, probe_url
from nessus_pool.daemon import Daemon
from nessus_pool.errors import ConfigError
from nessus_pool.simulator.ports import free_port_range
from tests.acceptance.test_acceptance import spawn, stop
from tests.acceptance.test_readme_walkthrough import walkthrough
from tests.conftest import DaemonFactory, sim_config, write_config

ROOT = Path(__file__).resolve().parents[2]
CONTAINERFILE = ROOT / "Containerfile"
README = ROOT / "README.md"
IMAGE_TOML = ROOT / "examples" / "nessus-pool.container.toml"
COMPOSE = ROOT / "examples" / "compose.yaml"
COMPOSE_TOML = ROOT / "examples" / "compose.nessus-pool.toml"
CONFIG_PATH = "/etc/nessus-pool/nessus-pool.toml"
STATE_PATH = "/var/lib/nessus-pool"


def instructions(text: str) -> list[list[tuple[str, str]]]:
    """The Containerfile as stages of (INSTRUCTION, arguments), continuation lines joined and
    comments dropped. Stage 0 holds what comes before the first FROM (global ARGs)."""
    stages: list[list[tuple[str, str]]] = [[]]
    logical = re.sub(r"\\\n(\s*#[^\n]*\n)*", " ", text)
    for line in logical.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, args = line.partition(" ")
        if word.upper() == "FROM":
            stages.append([])
        stages[-1].append((word.upper(), args.strip()))
    return stages


STAGES = instructions(CONTAINERFILE.read_text(encoding="utf-8"))
FINAL = STAGES[-1]


def final(word: str) -> list[str]:
    return [args for w, args in FINAL if w == word]


def exec_form(args: str) -> list[str]:
    m = re.fullmatch(r"\[(.*)\]", args)
    assert m, f"{args!r} is not exec form (a JSON array): signals would go to a shell"
    return [s.strip().strip('"') for s in m.group(1).split(",")]


def labels() -> dict[str, str]:
    out: dict[str, str] = {}
    for args in final("LABEL"):
        for key, value in re.findall(r'([\w.-]+)="([^"]*)"', args):
            out[key] = value
    return out


def test_base_is_an_argument_defaulting_to_a_pinned_slim_python() -> None:
    global_args = dict(a.split("=", 1) for w, a in STAGES[0] if w == "ARG" and "=" in a)
    base = global_args["BASE"]
    # an exact version (3.11.14), not a moving tag (3.11, latest), or a digest
    assert re.search(r"python:3\.\d+\.\d+-slim(-\w+)?$", base) or "@sha256:" in base, base
    assert [a.split(" ")[0] for w, a in FINAL if w == "FROM"] == ["${BASE}"]


def test_multi_stage_and_the_final_stage_installs_nothing() -> None:
    assert len(STAGES) >= 3, "a build stage and a final stage"
    build = " ".join(a for w, a in STAGES[1] if w == "RUN")
    assert "--no-index" in build and "--find-links" in build, "offline install from wheels"
    final_runs = " ".join(final("RUN"))
    for tool in ("pip", "apt-get", "apk", "gcc", "curl", "wget"):
        assert not re.search(rf"\b{tool}\b", final_runs), f"{tool} in the final stage"
    copies = final("COPY")
    assert not any("wheels" in c for c in copies), "wheels copied into the final stage"
    assert any(c.startswith("--from=build /opt/nessus-pool") for c in copies)


def test_runs_as_a_fixed_non_root_uid() -> None:
    (user,) = final("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and gid.isdigit(), "numeric, so runAsNonRoot can check it"
    assert int(uid) >= 1000 and int(gid) >= 1000
    runs = " ".join(final("RUN"))
    assert f"--uid {uid}" in runs and f"--gid {gid}" in runs
    assert f"chown {uid}:{gid} {STATE_PATH}" in runs


def test_healthcheck_probes_readyz_and_stop_signal_is_sigterm() -> None:
    (hc,) = final("HEALTHCHECK")
    options, _, cmd = hc.partition("CMD ")
    argv = exec_form(cmd)
    assert argv[1:] == ["-m", "nessus_pool.container", "healthcheck"]
    assert argv[0] == "/opt/nessus-pool/bin/python"
    assert "--start-period=" in options and "--timeout=" in options
    assert probe_url("0.0.0.0:8835").endswith("/readyz")
    assert final("STOPSIGNAL") == ["SIGTERM"]


def test_entry_point_serves_the_documented_config() -> None:
    (entry,) = final("ENTRYPOINT")
    (cmd,) = final("CMD")
    assert exec_form(entry) == ["/opt/nessus-pool/bin/nessus-pool"]
    assert exec_form(cmd) == ["serve", "--config", CONFIG_PATH, "--generate-admin-token"]
    env = " ".join(final("ENV"))
    assert f"NESSUS_POOL_CONFIG={CONFIG_PATH}" in env
    assert final("VOLUME") == [f'["{STATE_PATH}"]']
    assert f"examples/nessus-pool.container.toml {CONFIG_PATH}" in final("COPY")


def test_oci_labels() -> None:
    got = labels()
    for key in ("source", "version", "revision", "licenses", "title"):
        assert f"org.opencontainers.image.{key}" in got, key
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    licence = re.search(r'^license = "([^"]+)"', pyproject, re.M)
    assert licence and got["org.opencontainers.image.licenses"] == licence.group(1)
    assert got["org.opencontainers.image.version"] == "${VERSION}"


def test_build_context_sends_only_what_the_containerfile_copies() -> None:
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    allowed = [p[1:].rstrip("/") for p in ignore if p.startswith("!")]
    assert "*" in ignore
    copies = [args.split()[0] for stage in STAGES for word, args in stage if word == "COPY"]
    sources = [s for s in copies if not s.startswith("--from")]
    assert sorted(s.rstrip("/") for s in sources) == sorted(allowed)
    assert IMAGE_TOML.exists()
    assert "build/image-wheels" in (ROOT / "scripts" / "build-image").read_text()


def test_image_config_needs_a_token_on_the_volume() -> None:
    cfg = load_config(IMAGE_TOML).config
    host, port = parse_listen(cfg.server.listen)
    assert (host, port) == ("0.0.0.0", 8835)
    assert cfg.storage.path == STATE_PATH
    assert [getattr(t, "file", None) for t in cfg.server.admin_tokens] == [
        f"{STATE_PATH}/admin-token"
    ]
    assert cfg.simulator is not None, "docker run IMAGE serves the walkthrough, no licence"
    (expose,) = final("EXPOSE")
    assert expose == str(port)


def test_compose_example_matches_the_image() -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    assert f"nessus-pool-data:{STATE_PATH}" in text
    assert f"./compose.nessus-pool.toml:{CONFIG_PATH}:ro" in text
    grace = re.search(r"stop_grace_period: (\d+)s", text)
    assert grace and int(grace.group(1)) > 30, "longer than the daemon's 30 s deadline"
    secret_names = set(re.findall(r"^  ([\w-]+):\n    file: ", text, re.M))
    cfg = load_config(COMPOSE_TOML).config
    referenced = {
        Path(ref.file).name
        for ref in [*cfg.server.admin_tokens, *[c.password for c in cfg.credentials.values()]]
        if ref is not None and not isinstance(ref, str) and ref.file is not None
    }
    assert referenced and referenced <= secret_names
    assert all(
        ref.file.startswith("/run/secrets/")
        for ref in cfg.server.admin_tokens
        if not isinstance(ref, str) and ref.file
    )
    assert "PostgreSQL" in text, "the two-daemon variant is noted for later"


def test_readme_container_section_names_the_same_paths() -> None:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Container image", 1)[1].split("\n## ", 1)[0]
    (user,) = final("USER")
    for needle in (
        CONFIG_PATH,
        STATE_PATH,
        f"{STATE_PATH}/admin-token",
        "scripts/build-image",
        "/readyz",
        "examples/compose.yaml",
        "SIGTERM",
        "kill -s HUP",
        f"uid {user.split(':')[0]}",
    ):
        assert needle in section, needle
    commands = re.findall(r"```sh\n(.*?)```", section, re.S)[0]
    lines = [ln for ln in commands.splitlines() if ln and not ln.startswith("#")]
    assert len(lines) == 3, "build and run in three commands"
    assert re.search(r"image is [\d.]+ MB", section), "size measured and stated"
    assert re.search(r"ready in [\d.]+ s", section), "start-up time measured and stated"


def test_build_image_and_smoke_scripts_are_executable_and_parse() -> None:
    for name in ("build-image", "ci-image-smoke"):
        path = ROOT / "scripts" / name
        assert os.access(path, os.X_OK), name
    compile((ROOT / "scripts" / "ci-image-smoke").read_text(), "ci-image-smoke", "exec")
    build = (ROOT / "scripts" / "build-image").read_text()
    for var in ("BASE", "CONTAINER_ENGINE", "ENGINE_FLAGS"):
        assert "${" + var in build, var
    assert 'pip" wheel' in build and '--tag "$tag:latest"' in build


# --- behaviour: the first-start token --------------------------------------------------------


def token_config(tmp_path: Path, token_file: Path, listen: str = "0.0.0.0:0") -> Path:
    data = sim_config(tmp_path, scan_seconds=0.5)
    data["server"] = {"listen": listen, "admin-tokens": [{"file": str(token_file)}]}
    return write_config(tmp_path / "nessus-pool.toml", data)


def test_generate_admin_token_writes_once_0600(tmp_path: Path) -> None:
    token_file = tmp_path / "state" / "admin-token"
    cfg = token_config(tmp_path, token_file)
    assert generate_admin_tokens(str(cfg)) == [token_file]
    token = token_file.read_text().strip()
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
    assert len(token) >= 43 and re.fullmatch(r"[A-Za-z0-9_-]+", token)
    # a second start keeps it; a token put there by the operator is never replaced
    assert generate_admin_tokens(str(cfg)) == []
    assert token_file.read_text().strip() == token


def test_generate_admin_token_never_follows_a_planted_symlink(tmp_path: Path) -> None:
    """Someone with write access to the volume plants admin-token -> a file elsewhere: the
    token is not written through it (O_EXCL), and the daemon then fails on the dangling link
    rather than running with a token someone else chose the place of."""
    state = tmp_path / "state"
    state.mkdir()
    elsewhere = tmp_path / "elsewhere" / "planted"
    elsewhere.parent.mkdir()
    (state / "admin-token").symlink_to(elsewhere)
    cfg = token_config(tmp_path, state / "admin-token")
    assert generate_admin_tokens(str(cfg)) == []
    assert not elsewhere.exists()


def test_generate_admin_token_cannot_write_names_file_and_field(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    cfg = token_config(tmp_path, blocker / "admin-token")
    with pytest.raises(ConfigError) as err:
        generate_admin_tokens(str(cfg))
    assert err.value.path == "$.server.admin-tokens[0]"
    assert str(blocker / "admin-token") in str(err.value)
    assert cli_main(["serve", "--config", str(cfg), "--generate-admin-token"]) == 2


def test_probe_url_follows_the_listen_address() -> None:
    assert probe_url("0.0.0.0:9000") == "http://127.0.0.1:9000/readyz"
    assert probe_url("[::]:9000") == "http://[::1]:9000/readyz"
    assert probe_url("10.0.0.5:8835") == "http://10.0.0.5:8835/readyz"


async def test_healthcheck_is_healthy_on_200_only(tmp_path: Path) -> None:
    answer = {"status": 503}

    async def readyz(_: web.Request) -> web.Response:
        return web.json_response({"ready": answer["status"] == 200}, status=answer["status"])

    app = web.Application()
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    cfg = token_config(tmp_path, tmp_path / "t", listen=f"0.0.0.0:{port}")
    try:
        assert await asyncio.to_thread(healthcheck, str(cfg)) == 1
        answer["status"] = 200
        assert await asyncio.to_thread(healthcheck, str(cfg)) == 0
    finally:
        await runner.cleanup()
    # nothing listening any more
    assert await asyncio.to_thread(healthcheck, str(cfg)) == 1


@pytest.mark.acceptance
async def test_serve_generates_a_token_and_requires_it_on_0_0_0_0(tmp_path: Path) -> None:
    port = free_port_range(1, host="0.0.0.0")
    token_file = tmp_path / "data" / "admin-token"
    cfg = token_config(tmp_path, token_file, listen=f"0.0.0.0:{port}")
    proc = await spawn(
        "serve", "--config", str(cfg), "--generate-admin-token", ready="daemon_ready"
    )
    try:
        token = token_file.read_text().strip()
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/api/v1/scans") as r:
                assert r.status == 401
            headers = {"Authorization": f"Bearer {token}"}
            async with http.post(
                f"{base}/api/v1/scans", json={"targets": "10.0.0.1"}, headers=headers
            ) as r:
                assert r.status == 202, await r.text()
        assert await asyncio.to_thread(healthcheck, str(cfg)) == 0
    finally:
        assert await stop(proc, signal.SIGTERM) == 0
    assert await asyncio.to_thread(healthcheck, str(cfg)) == 1
    assert token_file.stat().st_size > 0


def test_first_start_says_where_the_token_is_never_what(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from nessus_pool.cli import cmd_generate_admin_token

    token_file = tmp_path / "data" / "admin-token"
    cfg = token_config(tmp_path, token_file)
    assert cmd_generate_admin_token(str(cfg)) == 0
    err = capsys.readouterr().err
    token = token_file.read_text().strip()
    assert str(token_file) in err and token not in err
    assert cmd_generate_admin_token(str(cfg)) == 0
    assert capsys.readouterr().err == "", "later starts print nothing"


@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("bash")), reason="needs curl")
async def test_readme_walkthrough_runs_against_the_image_config_with_its_token(
    tmp_path: Path, start_daemon: DaemonFactory
) -> None:
    """README's "Try it with curl" block, as the container section says to run it: the image's
    own config (only the port, storage folder and scan length changed), its generated token,
    and the section's curl() function. Without the function the first request is a 401."""
    data = tomllib.loads(IMAGE_TOML.read_text(encoding="utf-8"))
    token_file = tmp_path / "state" / "admin-token"
    data["server"].update(listen="0.0.0.0:0", **{"admin-tokens": [{"file": str(token_file)}]})
    data["storage"]["path"] = str(tmp_path / "state")
    data["simulator"]["scan-seconds"] = 3
    assert generate_admin_tokens(str(write_config(tmp_path / "image.toml", data))) == [token_file]
    d: Daemon = await start_daemon(data)
    section = README.read_text(encoding="utf-8").split("## Container image", 1)[1]
    m = re.search(r"`(curl\(\) \{ command curl [^`]*\})`", section)
    assert m, "the container section gives a curl() function sending the token"
    port = d.url.rsplit(":", 1)[1]
    script = walkthrough().replace("localhost:8835", f"127.0.0.1:{port}")
    script = script.replace("curl -s ", "curl -sSf ")
    token_line = f"TOKEN=$(cat {token_file})\n"

    async def bash(text: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            "bash",
            "-c",
            "set -euo pipefail\n" + text,
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 90)
        return int(proc.returncode or 0), out.decode()

    code, out = await bash(token_line + script)
    assert code != 0 and "401" in out, "without the token the walkthrough is refused"
    code, out = await bash(token_line + m.group(1) + "\n" + script)
    assert code == 0, out
    assert '"items":[' in out
    assert (tmp_path / "scan.nessus").read_bytes().find(b"NessusClientData_v2") >= 0


def test_an_empty_token_file_left_by_a_crash_is_written(tmp_path: Path) -> None:
    """A crash between creating the token file and writing it left it empty: the next start
    writes a token instead of failing on the empty file for ever. A symlink to an empty file
    is still never followed, and no temporary file is left behind."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    token_file = state / "admin-token"
    token_file.touch(mode=0o600)
    cfg = token_config(tmp_path, token_file)
    assert generate_admin_tokens(str(cfg)) == [token_file]
    token = token_file.read_text().strip()
    assert len(token) >= 43 and stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert sorted(p.name for p in state.iterdir()) == ["admin-token"]
    assert generate_admin_tokens(str(cfg)) == []
    assert token_file.read_text().strip() == token
    # an empty file reached through a planted symlink: neither followed nor replaced
    empty_elsewhere = tmp_path / "elsewhere-empty"
    empty_elsewhere.touch()
    link = state / "linked-token"
    link.symlink_to(empty_elsewhere)
    assert generate_admin_tokens(str(token_config(tmp_path, link))) == []
    assert link.is_symlink() and empty_elsewhere.read_bytes() == b""
