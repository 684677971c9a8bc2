// Plays an HLS URL with hls.js (lowLatencyMode) in headless Chromium for a number of seconds and prints,
// as one JSON line, what the player saw: parts and fragments buffered, stalls, the playhead, and each
// second hls.js's latency estimate and the glass-to-glass delay (now minus the playhead's
// EXT-X-PROGRAM-DATE-TIME). Used by tests/low_latency_browser.rs and benches/llhls_latency.rs.
//
//   node tests/browser/play.mjs URL SECONDS [low|plain]
import { chromium } from 'playwright-core';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const [url, seconds = '20', mode = 'low'] = process.argv.slice(2);
const here = path.dirname(fileURLToPath(import.meta.url));
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--autoplay-policy=no-user-gesture-required', '--disable-gpu'],
});
try {
  const page = await browser.newPage();
  await page.setContent('<video id="v" muted playsinline></video>');
  await page.addScriptTag({ path: path.join(here, 'node_modules/hls.js/dist/hls.min.js') });
  const result = await page.evaluate(async ([url, seconds, low]) => {
    const video = document.getElementById('v');
    const seen = { parts: 0, fragments: 0, stalls: 0, errors: [], latency: [], glass: [], started: null };
    const hls = new Hls({ lowLatencyMode: low });
    hls.on(Hls.Events.FRAG_BUFFERED, (_, data) => { if (data.part) seen.parts++; else seen.fragments++; });
    hls.on(Hls.Events.ERROR, (_, data) => {
      if (data.details === 'bufferStalledError') seen.stalls++;
      seen.errors.push(`${data.type}/${data.details}${data.fatal ? ' (fatal)' : ''}`);
    });
    video.addEventListener('playing', () => { if (seen.started === null) seen.started = performance.now(); });
    video.addEventListener('waiting', () => { if (seen.started !== null) seen.stalls++; });
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
    seen.played = video.currentTime - from;
    seen.currentTime = video.currentTime;
    hls.destroy();
    return seen;
  }, [url, Number(seconds), mode !== 'plain']);
  console.log(JSON.stringify(result));
} finally {
  await browser.close();
}
