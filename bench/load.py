"""Concurrent sessions through the real app: N headless Chromium sessions paste links at once.

`python bench/load.py --config config/fashion.yml --sessions 1,2,4,8,16`

Starts `streamlit run front_end.py` on the config's index, serves distinct catalog images from a
local HTTP server, and for each N opens N browser sessions, then makes all N paste a different
image link at the same moment. Reported per N: page load until the search input shows, time from
pressing Enter until all k results (distances and thumbnails) are on screen (p50/p95/max), errors
(timeouts, exception boxes, error messages), the server process's CPU seconds and its peak RSS,
the CPU seconds of every Chromium process (the clients' share of the machine) and the websocket
messages and kilobytes one search receives.
Before the rounds, the first visitor after the server reports ready (`/api/ready`: the model
and the index are loaded) is timed the same way; on another server start, a visitor who opens
the page as soon as the server answers at all (what they see first, and when the input); and on
`--starts` more, the first visitor after ready beside three later ones, each in its own browser.

Why a browser and not Streamlit's websocket protocol: the figure users feel includes what the
browser fetches after the websocket delta (thumbnails, media) and the page's own rendering; the
clients share the machine's two cores with the server, as in a demo on one laptop.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from common import config_parser, emit, environment, int_list, log, markdown_table

from config import load_config  # importable once `common` has put the repo on sys.path
from config.schema import PathsConfig
from util.local_servers import running_app, served_folder

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
INPUT_LABEL = "Product page or image link"
LOADING_OR_INPUT = f"""() => document.body.innerText.includes('Starting up')
  || document.querySelector('input[aria-label="{INPUT_LABEL}"]') !== null"""
STEP_TIMEOUT_MS = 180_000
RESULTS_OR_ERROR = """k => {
  if (document.querySelector('[data-testid="stException"], [data-testid="stAlertContentError"]'))
    return true;
  const shown = [...document.querySelectorAll('p')]
    .filter(p => / · distance \\d+\\.\\d{3}/.test(p.textContent)).length;  // result cards only
  const images = [...document.images].filter(i => i.alt.startsWith('Result: '));
  return shown === k && images.length === k && images.every(i => i.complete && i.naturalWidth > 0);
}"""


def bench_config(config_path: Path, folder: Path) -> Path:
    """A copy of the config with absolute paths that may download from 127.0.0.1."""
    config = load_config(config_path)
    raw = yaml.safe_load(Path(config_path).read_text())
    raw["paths"] = {key: str(getattr(config.paths, key)) for key in PathsConfig.model_fields}
    raw["download"]["allow_private_networks"] = ["127.0.0.0/8"]
    path = folder / "load-config.yml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def query_images(config_path: Path, count: int, seed: int) -> tuple[Path, list[str]]:
    """A folder and `count` distinct catalog image paths relative to it (to serve over HTTP)."""
    import pandas as pd

    config = load_config(config_path)
    table_path = Path(config.paths.images_dataframe_path)
    table = pd.read_csv(table_path, dtype=str)
    paths = table[config.dataframe.path_field].dropna().unique()
    rng = np.random.default_rng(seed)
    chosen = [(table_path.parent / p).resolve()
              for p in rng.choice(paths, min(count, len(paths)), replace=False)]
    folder = Path(os.path.commonpath([str(p.parent) for p in chosen]))
    return folder, [str(p.relative_to(folder)) for p in chosen]


def stat_cpu_seconds(stat_text: str) -> tuple[str, float]:
    """(command name, user + system CPU seconds) from the text of a /proc/<pid>/stat file."""
    name, rest = stat_text.split(" (", 1)[1].rsplit(")", 1)
    fields = rest.split()
    return name, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    return stat_cpu_seconds(Path(f"/proc/{pid}/stat").read_text())[1]


def browser_cpu_seconds() -> float:
    """CPU seconds of every Chromium process on the machine (the clients' share of a round)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            name, seconds = stat_cpu_seconds(stat.read_text())
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
        total += seconds if name.startswith("chrom") else 0.0
    return total


def process_peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def open_session(browser, url: str) -> tuple[object, float]:
    """A new browser session on the app; seconds until the search input shows."""
    context = await browser.new_context(viewport={"width": 1440, "height": 1000})
    page = await context.new_page()
    page.set_default_timeout(STEP_TIMEOUT_MS)
    page.frames_received = []  # (size) of each websocket message from the server
    page.on("websocket", lambda socket: socket.on(
        "framereceived", lambda frame: page.frames_received.append(len(frame))))
    began = time.perf_counter()
    await page.goto(url)
    await page.get_by_label(INPUT_LABEL).wait_for()
    return page, time.perf_counter() - began


async def search(page, link: str, k: int, start: asyncio.Event) -> tuple[float, str]:
    """Paste `link` when `start` is set; seconds until k results show, and an error or ''."""
    box = page.get_by_label(INPUT_LABEL)
    await box.fill(link)
    await start.wait()
    page.frames_received.clear()
    began = time.perf_counter()
    await box.press("Enter")
    try:
        await page.wait_for_function(RESULTS_OR_ERROR, arg=k)
    except Exception as error:  # a timeout is a measured failure, not a crash of the bench
        return time.perf_counter() - began, f"no results ({type(error).__name__})"
    seconds = time.perf_counter() - began
    if await page.locator('[data-testid="stException"]').count():
        return seconds, "exception box"
    if await page.locator('[data-testid="stAlertContentError"]').count():
        return seconds, "error message"
    return seconds, ""


def summary(seconds: list[float]) -> dict[str, float]:
    values = np.asarray(seconds)
    return {"p50_s": float(np.percentile(values, 50)), "p95_s": float(np.percentile(values, 95)),
            "max_s": float(values.max())}


async def one_round(browser, url: str, links: list[str], k: int, pid: int) -> dict:
    opened = await asyncio.gather(*(open_session(browser, url) for _ in links))
    pages = [page for page, _ in opened]
    start = asyncio.Event()
    cpu_before, browser_before = process_cpu_seconds(pid), browser_cpu_seconds()
    searches = [asyncio.create_task(search(page, link, k, start))
                for page, link in zip(pages, links, strict=True)]
    await asyncio.sleep(0.5)  # every session has its link typed in
    start.set()
    answers = await asyncio.gather(*searches)
    cpu = process_cpu_seconds(pid) - cpu_before
    browser_cpu = browser_cpu_seconds() - browser_before
    messages = [len(page.frames_received) for page in pages]
    kilobytes = [sum(page.frames_received) / 1024 for page in pages]
    for page in pages:
        await page.context.close()
    errors = [error for _, error in answers if error]
    return {"sessions": len(links), "page_load": summary([s for _, s in opened]),
            "results": summary([s for s, _ in answers]), "errors": len(errors),
            "error_kinds": sorted(set(errors)), "server_cpu_s": cpu,
            "browser_cpu_s": browser_cpu, "messages_per_search": float(np.median(messages)),
            "kb_per_search": float(np.median(kilobytes)),
            "server_peak_rss_mb": process_peak_rss_mb(pid)}


async def run_rounds(url: str, pid: int, links: list[str], counts: list[int], k: int) -> dict:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            rounds, used = [], 0
            for count in counts:
                log(f"{count} session(s)…")
                rounds.append(await one_round(browser, url, links[used:used + count], k, pid))
                used += count
        finally:
            await browser.close()
    return {"rounds": rounds}


def visits_in_own_browsers(url: str, count: int) -> list[float]:
    """Seconds from opening the page to the search input for `count` visitors one after the
    other, each in a browser of its own (none has anything cached)."""
    async def visits() -> list[float]:
        from playwright.async_api import async_playwright

        seconds = []
        async with async_playwright() as playwright:
            for _ in range(count):
                browser = await playwright.chromium.launch(executable_path=CHROMIUM,
                                                           args=CHROMIUM_ARGS)
                try:
                    seconds.append((await open_session(browser, url))[1])
                finally:
                    await browser.close()
        return seconds
    return asyncio.run(visits())


def first_and_later_visitors(config_copy: Path, folder: Path, starts: int, later: int = 3
                             ) -> dict:
    """On `starts` fresh server starts: the first visitor after ready, then `later` more (the
    same kind of visit), so that "the first waits no longer" is judged beside this machine's
    visit-to-visit noise."""
    runs = []
    for start in range(starts):
        with running_app(config_copy, folder / f"start{start}.log", timeout_s=300) as (url, _):
            runs.append(visits_in_own_browsers(url, 1 + later))
    firsts, others = [run[0] for run in runs], [s for run in runs for s in run[1:]]
    return {"visits_per_start_s": runs, "first_mean_s": float(np.mean(firsts)),
            "later_mean_s": float(np.mean(others)), "later_min_s": float(np.min(others)),
            "later_max_s": float(np.max(others))}


def start_up_visit(config_copy: Path, log_path: Path) -> dict:
    """A server started anew; a visitor opens the page the moment it answers: seconds until
    the page shows something (the loading state or the input) and until the input."""
    async def visit(url: str) -> dict:
        from playwright.async_api import async_playwright

        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM,
                                                       args=CHROMIUM_ARGS)
            try:
                page = await (await browser.new_context()).new_page()
                page.set_default_timeout(STEP_TIMEOUT_MS)
                began = time.perf_counter()
                await page.goto(url)
                await page.wait_for_function(LOADING_OR_INPUT)
                shown = time.perf_counter() - began
                saw_loading = "Starting up" in await page.inner_text("body")
                await page.get_by_label(INPUT_LABEL).wait_for()
                return {"first_shown_s": shown, "saw_loading_state": saw_loading,
                        "input_s": time.perf_counter() - began}
            finally:
                await browser.close()

    started = time.perf_counter()
    with running_app(config_copy, log_path, timeout_s=300, ready=False) as (url, _server):
        healthy = time.perf_counter() - started
        return {"server_answers_after_s": healthy, **asyncio.run(visit(url))}


def measure(config_path: Path, counts: list[int], seed: int, starts: int) -> dict:
    config = load_config(config_path)
    k = min(config.ann_index.k, config.ui.max_k)
    folder, images = query_images(config_path, sum(counts), seed)
    with tempfile.TemporaryDirectory() as scratch, served_folder(folder) as url_of:
        copy = bench_config(config_path, Path(scratch))
        log_path = Path(scratch) / "streamlit.log"
        started = time.perf_counter()
        with running_app(copy, log_path, timeout_s=300) as (url, server):
            ready_s = time.perf_counter() - started
            first = visits_in_own_browsers(url, 1)[0]
            links = [url_of(path) for path in images]
            result = asyncio.run(run_rounds(url, server.pid, links, counts, k))
        result.update(server_ready_after_s=ready_s, first_visitor_page_load_s=first)
        result["visitor_during_start_up"] = start_up_visit(copy, Path(scratch) / "second.log")
        if starts:
            result["first_and_later_visitors"] = first_and_later_visitors(copy, Path(scratch),
                                                                          starts)
    result.update(config=str(config_path), k=k, environment=environment())
    return result


def render(result: dict) -> str:
    rows = [(r["sessions"], r["page_load"]["p50_s"], r["page_load"]["max_s"],
             r["results"]["p50_s"], r["results"]["p95_s"], r["results"]["max_s"],
             r["errors"], r["server_cpu_s"], r["browser_cpu_s"], r["messages_per_search"],
             r["kb_per_search"], r["server_peak_rss_mb"])
            for r in result["rounds"]]
    table = markdown_table(["sessions", "page load p50 s", "page load max s", "results p50 s",
                            "results p95 s", "results max s", "errors", "server CPU s",
                            "browser CPU s", "messages per search", "kB per search",
                            "server peak RSS MB"], rows)
    early = result["visitor_during_start_up"]
    return (f"server ready after {result['server_ready_after_s']:.1f} s; the first visitor "
            f"after that: search input after {result['first_visitor_page_load_s']:.1f} s; a "
            f"visitor arriving when the server first answers ({early['server_answers_after_s']:.1f}"
            f" s): {'the loading state' if early['saw_loading_state'] else 'the page'} after "
            f"{early['first_shown_s']:.1f} s, the input after {early['input_s']:.1f} s"
            f"{visitors_line(result.get('first_and_later_visitors'))}\n\n{table}")


def visitors_line(visitors: dict | None) -> str:
    if not visitors:
        return ""
    return (f"; over {len(visitors['visits_per_start_s'])} server starts the first visitor "
            f"after ready took {visitors['first_mean_s']:.2f} s on average, later ones "
            f"{visitors['later_mean_s']:.2f} s ({visitors['later_min_s']:.2f}-"
            f"{visitors['later_max_s']:.2f})")


def main() -> None:
    parser = config_parser(__doc__, "1 and 2 sessions only")
    parser.add_argument("--sessions", type=int_list, default=[1, 2, 4, 8, 16])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--starts", type=int, default=3,
                        help="server starts on which the first and three later visitors are "
                             "timed (0: none)")
    args = parser.parse_args()
    counts = [1, 2] if args.quick else args.sessions
    emit(measure(Path(args.config), counts, args.seed, 1 if args.quick else args.starts),
         args.json, render)


if __name__ == "__main__":
    main()
