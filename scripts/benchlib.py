"""What scripts/bench and scripts/drill share: tools, builds, processes, wrk, CPU and memory
readings, and writing their section of BENCHMARKS.md."""

import json
import os
import pathlib
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Where cargo puts the release build: $CARGO_TARGET_DIR (relative to the workspace) or target/.
BIN = ROOT / os.environ.get("CARGO_TARGET_DIR", "target") / "release"
BENCHMARKS = ROOT / "BENCHMARKS.md"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def ensure_tools(tools):
    """Installs missing tools from Debian packages (as root, or with sudo)."""
    missing = [t for t in tools if shutil.which(t) is None and not pathlib.Path(f"/usr/sbin/{t}").exists()]
    if not missing:
        return
    prefix = [] if os.geteuid() == 0 else ["sudo"]
    print(f"installing {' '.join(missing)} from Debian packages", flush=True)
    subprocess.run(prefix + ["apt-get", "update", "-qq"], check=True)
    subprocess.run(prefix + ["apt-get", "install", "-y", "-qq"] + missing, check=True,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def ensure_oha():
    """The path of oha (the open-loop load generator); installs it with cargo when missing."""
    found = shutil.which("oha")
    cargo_bin = pathlib.Path(os.environ.get("CARGO_HOME", pathlib.Path.home() / ".cargo")) / "bin" / "oha"
    if found:
        return found
    if not cargo_bin.exists():
        print(f"installing oha with `cargo install oha --locked` into {cargo_bin.parent}", flush=True)
        subprocess.run(["cargo", "install", "oha", "--locked"], check=True)
    return str(cargo_bin)


def build():
    print("building release binaries", flush=True)
    subprocess.run(["cargo", "build", "--release", "--workspace", "--bins", "--examples"], cwd=ROOT, check=True)


def spawn(argv, log, cwd=None, env=None, ports=()):
    """Starts `argv` in its own session; `ports` it is to listen on must be free (else another
    process would answer what is measured)."""
    for port in ports:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                raise SystemExit(f"127.0.0.1:{port} is already taken by another process: stop it first")
    out = open(log, "ab")
    if argv[0] == "nginx" and shutil.which("nginx") is None:
        argv = ["/usr/sbin/nginx"] + argv[1:]
    return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                            env={**os.environ, **(env or {})}, start_new_session=True)


def stop(proc, sig=signal.SIGTERM):
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_port(port, deadline=60):
    end = time.time() + deadline
    while time.time() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port} after {deadline} s")


def http_get(url):
    return urllib.request.urlopen(url, timeout=10).read()


def shadow_counts(admin_port, token_file, route):
    """The store's shadow counts of `route` (`compared`, `unmirrored:throttled`, ...), read
    from the proxy's /metrics once they stop moving (the recorder writes in batches)."""
    token = pathlib.Path(token_file).read_text().strip()

    def read():
        request = urllib.request.Request(f"http://127.0.0.1:{admin_port}/metrics",
                                         headers={"Authorization": f"Bearer {token}"})
        text = urllib.request.urlopen(request, timeout=10).read().decode()
        counts = {}
        pattern = re.compile(r'^strangler_shadow_total\{(.*)\} (\d+)$')
        for line in text.splitlines():
            m = pattern.match(line)
            if m and f'route="{route}"' in m.group(1):
                result = re.search(r'result="([^"]*)"', m.group(1))
                if result:
                    counts[result.group(1)] = int(m.group(2))
        return counts

    deadline = time.monotonic() + 10
    last = read()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = read()
        if now == last:
            break
        last = now
    return last


def strangler(plan, args, check=True):
    return subprocess.run([str(BIN / "strangler"), "--plan", str(plan)] + args, check=check,
                          capture_output=True, text=True)


def children_and_self(pid):
    pids = [pid]
    for proc in pathlib.Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                stat = (proc / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                pids.append(int(proc.name))
    return pids


def cpu_seconds(pids):
    total = 0.0
    for pid in pids:
        try:
            fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
        except OSError:
            pass
    return total


def settle(pids, busy=0.05, step=0.5, deadline=5.0):
    """Waits (up to `deadline` s) until `pids` use under `busy` of a core: work left queued by
    a saturated run (mirrored requests, comparisons) would otherwise land on the next one."""
    end = time.time() + deadline
    before = cpu_seconds(pids)
    while time.time() < end:
        time.sleep(step)
        now = cpu_seconds(pids)
        if now - before < busy * step:
            return
        before = now


def rss_kib(pid):
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _ms(text):
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        return float("nan")
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def wrk(url, seconds, connections, threads=2, script=None):
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if script:
        argv += ["-s", str(script)]
    out = subprocess.run(argv + [url], check=True, capture_output=True, text=True).stdout
    result = {"rps": 0.0, "requests": 0, "p50_ms": float("nan"), "p99_ms": float("nan"), "non_2xx": 0, "socket_errors": 0}
    for line in out.splitlines():
        parts = line.split()
        if line.startswith("Requests/sec:"):
            result["rps"] = float(parts[1])
        elif " requests in " in line:
            result["requests"] = int(parts[0])
        elif parts[:1] == ["50%"]:
            result["p50_ms"] = _ms(parts[1])
        elif parts[:1] == ["99%"]:
            result["p99_ms"] = _ms(parts[1])
        elif line.strip().startswith("Non-2xx or 3xx responses:"):
            result["non_2xx"] = int(parts[-1])
        elif line.strip().startswith("Socket errors:"):
            result["socket_errors"] = sum(int(n) for n in re.findall(r"\d+", line))
    return result


def oha(binary, url, rate, seconds, connections):
    """An open-loop run: `rate` requests/s for `seconds` over `connections` keep-alive
    connections, each latency measured from when its request was due (corrected for
    coordinated omission). Requests still in flight at the deadline are waited for rather
    than counted as errors."""
    argv = [binary, "-q", str(rate), "-z", f"{seconds}s", "-c", str(connections), "--latency-correction",
            "--wait-ongoing-requests-after-deadline", "--no-tui", "--output-format", "json", url]
    out = json.loads(subprocess.run(argv, check=True, capture_output=True, text=True).stdout)
    statuses = {int(k): v for k, v in (out.get("statusCodeDistribution") or {}).items()}
    ok = sum(v for k, v in statuses.items() if 200 <= k < 400)
    errors = sum((out.get("errorDistribution") or {}).values()) + sum(statuses.values()) - ok
    percentiles = out.get("latencyPercentiles") or {}

    def ms(key):
        value = percentiles.get(key)
        return float("nan") if value is None else value * 1000

    return {
        "rate": rate,
        "achieved": ok / max(out["summary"].get("total") or seconds, 1e-9),
        "requests": ok,
        "errors": errors,
        "p50_ms": ms("p50"), "p99_ms": ms("p99"), "p999_ms": ms("p99.9"),
    }


def machine_section():
    model = "unknown CPU"
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"Machine: {os.cpu_count()} cores ({model}), {mem:.0f} GiB, {platform.system()} "
            f"{platform.release()}; measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.\n")


def write_section(name, body):
    """Replaces the section between `<!-- NAME:start -->` and `<!-- NAME:end -->`."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else "# Benchmarks\n"
    block = f"{start}\n{body.strip()}\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    BENCHMARKS.write_text(text)


def criterion_section():
    """Runs the criterion hot-path benchmarks and renders their medians as a table."""
    print("criterion hot paths", flush=True)
    out = subprocess.run(
        ["cargo", "bench", "-p", "strangler-dataplane", "--bench", "hot_paths", "--",
         "--warm-up-time", "1", "--measurement-time", "3", "--output-format", "bencher"],
        cwd=ROOT, check=True, capture_output=True, text=True).stdout
    rows = ["| benchmark | time per iteration |", "|---|---:|"]
    for line in out.splitlines():
        m = re.match(r"test (.+?) \.\.\. bench:\s+([\d,]+) ns/iter \(\+/- ([\d,]+)\)", line)
        if m:
            ns = int(m.group(2).replace(",", ""))
            shown = f"{ns / 1000:.1f} µs" if ns >= 10_000 else f"{ns} ns"
            rows.append(f"| {m.group(1)} | {shown} (± {m.group(3)} ns) |")
    return ("Command: `cargo bench -p strangler-dataplane --bench hot_paths` (criterion; route matching "
            "includes normalizing the path; the shadow tee passes an answer on in 8 KiB frames without and with "
            "keeping a copy; a shadow comparison is what the leg does with two answers under the route's rules: "
            "`diff::compare`, then `shadow::compared`, which sorts out noise and builds a sample when a "
            "difference counts).\n\n" + "\n".join(rows) + "\n")
