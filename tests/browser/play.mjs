// Plays an HLS URL with hls.js (lowLatencyMode) in headless Chromium for a number of seconds and prints,
// as one JSON line, what the player saw: parts and fragments buffered, stalls, seeks, the playhead, each
// second hls.js's latency estimate and the glass-to-glass delay (now minus the playhead's
// EXT-X-PROGRAM-DATE-TIME), and a timeline of loads, playlist updates and playback events (the first 400,
// in milliseconds from the start) to read a failure by. Used by tests/low_latency_browser.rs,
// tests/https.rs and benches/llhls.rs.
//
// A stall is the playhead stopping for 80 ms or more once playback runs ('waiting' while not seeking). A
// seek is hls.js moving the playhead itself: a stream a few seconds old can only be started at its first
// keyframe, the start of the newest segment, and hls.js then jumps to its target latency, before or just
// after the first frame shows. That jump fires 'waiting' too, with `seeking` set, and is no stall.
//
//   node tests/browser/play.mjs URL SECONDS [low|plain]
//
// CHROMIUM_FLAGS adds flags to Chromium's, space-separated (tests/https.rs trusts its test certificate's key
// with --ignore-certificate-errors-spki-list).
import { chromium } from 'playwright-core';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const [url, seconds = '20', mode = 'low'] = process.argv.slice(2);
// A wait for media this long or longer is a stall: two frames of the demo's 25 fps. Shorter ones (the
// decoder a frame behind on a busy machine, with media buffered) show no frozen picture; they are listed
// in `waits`, in milliseconds.
const STALL_MS = 80;
const here = path.dirname(fileURLToPath(import.meta.url));
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: [
    '--no-sandbox', '--autoplay-policy=no-user-gesture-required', '--disable-gpu',
    ...(process.env.CHROMIUM_FLAGS || '').split(' ').filter(Boolean),
  ],
});
try {
  const page = await browser.newPage();
  await page.setContent('<video id="v" muted playsinline></video>');
  await page.addScriptTag({ path: path.join(here, 'node_modules/hls.js/dist/hls.min.js') });
  const result = await page.evaluate(async ([url, seconds, low, STALL_MS]) => {
    const video = document.getElementById('v');
    const hls = new Hls({ lowLatencyMode: low });
    const seen = { parts: 0, fragments: 0, stalls: 0, errors: [], latency: [], glass: [], seeks: 0, waits: [], started: null, events: [] };
    const t0 = performance.now();
    const ahead = () => {
      const b = video.buffered;
      return b.length ? +(b.end(b.length - 1) - video.currentTime).toFixed(3) : 0;
    };
    const note = (what) => seen.events.length < 400 && seen.events.push(`${Math.round(performance.now() - t0)} ${what} ahead=${ahead()}`);
    hls.on(Hls.Events.FRAG_LOADED, (_, d) => {
      const f = d.part || d.frag;
      const s = f.stats;
      note(`loaded ${d.frag.sn}.${d.part ? d.part.index : '-'} req=${Math.round(s.loading.start - t0)} first=${Math.round(s.loading.first - s.loading.start)} end=${Math.round(s.loading.end - s.loading.start)}`);
    });
    hls.on(Hls.Events.LEVEL_LOADED, (_, d) => note(`playlist ${d.details.endSN}.${d.details.partList ? d.details.partList.length : 0} took=${Math.round(d.stats.loading.end - d.stats.loading.start)}`));
    hls.on(Hls.Events.FRAG_BUFFERED, (_, data) => { if (data.part) seen.parts++; else seen.fragments++; });
    hls.on(Hls.Events.ERROR, (_, data) => {
      note(`error ${data.details}`);
      seen.errors.push(`${data.type}/${data.details}${data.fatal ? ' (fatal)' : ''}`);
    });
    let waitingSince = null;
    video.addEventListener('waiting', () => {
      note(`waiting at ${video.currentTime.toFixed(3)}${video.seeking ? ' (seeking)' : ''}`);
      if (seen.started !== null && !video.seeking && waitingSince === null) waitingSince = performance.now();
    });
    // How long each wait lasted; one that a viewer sees (two frames at 25 fps or more) is a stall.
    const waited = () => {
      if (waitingSince === null) return;
      const ms = Math.round(performance.now() - waitingSince);
      waitingSince = null;
      seen.waits.push(ms);
      if (ms >= STALL_MS) seen.stalls++;
    };
    video.addEventListener('playing', () => {
      note('playing');
      if (seen.started === null) seen.started = performance.now();
      waited();
    });
    video.addEventListener('seeking', () => {
      note(`seeking to ${video.currentTime.toFixed(3)}`);
      if (seen.started !== null) seen.seeks++;
    });
    video.addEventListener('seeked', () => note('seeked'));
    hls.loadSource(url);
    hls.attachMedia(video);
    hls.on(Hls.Events.MANIFEST_PARSED, () => video.play().catch((e) => seen.errors.push(String(e))));
    const start = performance.now();
    // Wait (up to 20 s) for playback to start, then watch it for `seconds`.
    while (seen.started === null && performance.now() - start < 20000) await new Promise((r) => setTimeout(r, 100));
    if (seen.started === null) return { ...seen, currentTime: video.currentTime, error: 'playback never started' };
    const from = video.currentTime;
    for (let i = 0; i < seconds; i++) {
      await new Promise((r) => setTimeout(r, 1000));
      seen.latency.push(hls.latency);
      const date = hls.playingDate;
      if (date) seen.glass.push((Date.now() - date.getTime()) / 1000);
    }
    waited();
    seen.played = video.currentTime - from;
    seen.currentTime = video.currentTime;
    hls.destroy();
    return seen;
  }, [url, Number(seconds), mode !== 'plain', STALL_MS]);
  console.log(JSON.stringify(result));
} finally {
  await browser.close();
}
